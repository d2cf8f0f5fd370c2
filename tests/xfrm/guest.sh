#!/bin/sh
# Runs inside the XFRM VM (../../../shared/xfrm-vm, kernel with ESP) as root, from
# tests/xfrm/run.sh: esptun with dataplane.mode = "xfrm" in namespace xa against
# esptun in namespace xb, userspace or xfrm. Busybox ash: POSIX sh only.
#
#   xa (esptun) 192.0.2.1 / 2001:db8::1 --veth-- 192.0.2.2 / 2001:db8::2 (esptun) xb
#   lan 10.1.0.1/24 fd00:1::1/64                    lan 10.2.0.1/24 fd00:2::1/64
#
# Every case checks pings of both families from LAN to LAN, a TCP transfer whose
# SHA-256 matches, the kernel's SA counters, and that after both daemons stop no
# state or policy is left in the namespaces that ran in xfrm mode.
# ONLY=substring runs the cases whose name holds it.
ip() { /usr/local/sbin/ip "$@"; }
FAILS=0
W=/tmp/esptun-xfrm
mkdir -p $W
say() { echo "ESPTUN-XFRM $*"; }
pass() { say "PASS $*"; }
fail() { say "FAIL $*"; FAILS=$((FAILS + 1)); }

setup() {
    ip netns add xa
    ip netns add xb
    ip link add wan netns xa type veth peer name wan netns xb
    for n in xa xb; do
        ip -n $n link set lo up
        ip -n $n link set wan up
        ip -n $n link add lan type dummy
        ip -n $n link set lan up
    done
    ip -n xa addr add 192.0.2.1/24 dev wan
    ip -n xb addr add 192.0.2.2/24 dev wan
    ip -n xa addr add 2001:db8::1/64 dev wan nodad
    ip -n xb addr add 2001:db8::2/64 dev wan nodad
    ip -n xa addr add 10.1.0.1/24 dev lan
    ip -n xb addr add 10.2.0.1/24 dev lan
    ip -n xa addr add fd00:1::1/64 dev lan nodad
    ip -n xb addr add fd00:2::1/64 dev lan nodad
}

# route_other NS: in xfrm mode the host's routing reaches the other LAN (a site's
# default route would); the policies then catch the packets.
route_other() {
    case $1 in
    xa) ip -n xa route replace 10.2.0.0/24 via 192.0.2.2 src 10.1.0.1
        ip -n xa route replace fd00:2::/64 via 2001:db8::2 src fd00:1::1 ;;
    xb) ip -n xb route replace 10.1.0.0/24 via 192.0.2.1 src 10.2.0.1
        ip -n xb route replace fd00:1::/64 via 2001:db8::1 src fd00:2::1 ;;
    esac
}

unroute() {
    ip -n xa route flush 10.2.0.0/24 2>/dev/null
    ip -n xa -6 route flush fd00:2::/64 2>/dev/null
    ip -n xb route flush 10.1.0.0/24 2>/dev/null
    ip -n xb -6 route flush fd00:1::/64 2>/dev/null
}

# conf NS MODE START ESP CHILD_MODE ENCAP
conf() {
    ns=$1 mode=$2 start=$3 esp=$4 child_mode=$5 encap=$6
    if [ "$ns" = xa ]; then
        me=192.0.2.1 peer=192.0.2.2 mine='"10.1.0.0/24", "fd00:1::/64"' theirs='"10.2.0.0/24", "fd00:2::/64"'
    else
        me=192.0.2.2 peer=192.0.2.1 mine='"10.2.0.0/24", "fd00:2::/64"' theirs='"10.1.0.0/24", "fd00:1::/64"'
    fi
    selectors="local_ts = [$mine]
remote_ts = [$theirs]"
    # Transport mode: the selectors are the IKE addresses (left out).
    [ "$child_mode" = transport ] && selectors=
    printf '%s\n' '0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f' >$W/psk
    chmod 600 $W/psk
    listen="addrs = [\"$me\"]" local="local_addrs = [\"$me\"]"
    # ROAM: xa binds wildcards and sends from whichever address routes to its peer.
    [ -n "${ROAM:-}" ] && [ "$ns" = xa ] && listen= local=
    cat >$W/$ns.toml <<CONF
[listen]
$listen

[dataplane]
tun = "t$ns"
mode = "$mode"
workers = 1

[[connection]]
name = "site"
$local
remote_addrs = ["$peer"]
start = $start
encap = $encap
psk_file = "$W/psk"

[connection.local]
auth = "psk"
id = "$ns.example"

[connection.remote]
auth = "psk"
id = "$([ "$ns" = xa ] && echo xb || echo xa).example"

[[connection.children]]
name = "lan"
mode = "$child_mode"
$selectors
esp_proposals = ["$esp"]
${CHILD_EXTRA:-}
CONF
}

# wait_for FILE PATTERN [SECONDS]
wait_for() {
    i=0
    while [ $i -lt $((${3:-20} * 5)) ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.2
        i=$((i + 1))
    done
    say "no \"$2\" in $1:"
    tail -n 15 "$1" | sed 's/^/ESPTUN-XFRM   /'
    return 1
}

# xfrm_left NS: our states and policies still in the kernel, if any.
xfrm_left() {
    ip -n "$1" xfrm state
    ip -n "$1" xfrm policy
}

# traffic CASE SRC4 DST4 SRC6 DST6: pings, and 1 MiB over TCP from xa to xb.
traffic() {
    what=$1
    ip netns exec xa ping -c 3 -A -W 2 -w 8 -I "$2" "$3" >$W/ping4 2>&1 ||
        { cat $W/ping4; fail "$what: ping $2 -> $3"; return 1; }
    ip netns exec xa ping6 -c 3 -A -W 2 -w 8 -I "$4" "$5" >$W/ping6 2>&1 ||
        { cat $W/ping6; fail "$what: ping $4 -> $5"; return 1; }
    ip netns exec xb xfer listen "$3:5001" >$W/got 2>&1 &
    listener=$!
    sleep 0.3
    ip netns exec xa xfer send "$3:5001" 1048576 >$W/sent 2>&1
    wait $listener
    if [ "$(cat $W/sent)" != "$(cat $W/got)" ]; then
        fail "$what: TCP transfer: sent $(cat $W/sent), received $(cat $W/got)"
        ip netns exec xb esptun counters --tun txb 2>&1 | sed 's/^/ESPTUN-XFRM   xb counters: /'
        for n in xa xb; do
            ip netns exec $n cat /proc/net/xfrm_stat | grep -v "[^0-9]0$" | sed "s/^/ESPTUN-XFRM   $n xfrm_stat: /"
        done
        return 1
    fi
    return 0
}

# esp_packets NS: packets counted by the namespace's ESP states, both directions.
esp_packets() {
    ip -n "$1" -s xfrm state | sed -n 's/^[[:space:]]*[0-9]*(bytes), *\([0-9]*\)(packets).*/\1/p' | awk '{s+=$1} END {print s+0}'
}

start_pair() {
    ip netns exec xb esptun run --config $W/xb.toml >$W/xb.log 2>&1 &
    echo $! >$W/xb.pid
    wait_for $W/xb.log "data plane:" || return 1
    ip netns exec xa esptun run --config $W/xa.toml >$W/xa.log 2>&1 &
    echo $! >$W/xa.pid
    wait_for $W/xa.log "CHILD_SA .* UP" 30 && wait_for $W/xb.log "CHILD_SA .* UP" 5
}

stop_pair() {
    for n in xa xb; do
        # `ip netns exec` forks: the daemon's own PID is in its instance file.
        [ -f $W/$n.pid ] && cat /run/esptun/*-t$n.pid >$W/$n.pid 2>/dev/null
        [ -f $W/$n.pid ] && kill -TERM "$(cat $W/$n.pid)" 2>/dev/null
    done
    for n in xa xb; do
        if [ -f $W/$n.pid ]; then
            i=0
            while kill -0 "$(cat $W/$n.pid)" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
            if kill -KILL "$(cat $W/$n.pid)" 2>/dev/null; then
                say "$n did not stop within 10 s of SIGTERM"
                sleep 0.5
            fi
            rm -f $W/$n.pid
        fi
    done
}

# run_case NAME XB_MODE ESP CHILD_MODE ENCAP [check]: xa in xfrm mode, xb in XB_MODE.
run_case() {
    name=$1 xb_mode=$2 esp=$3 child_mode=$4 encap=$5 extra=${6:-}
    if [ -n "${ONLY:-}" ] && ! echo "$name" | grep -q "$ONLY"; then return 0; fi
    conf xa xfrm true "$esp" "$child_mode" "$encap"
    conf xb "$xb_mode" false "$esp" "$child_mode" "$encap"
    unroute
    route_other xa
    [ "$xb_mode" = xfrm ] && route_other xb
    if ! start_pair; then
        fail "$name: no Child SA"
        stop_pair
        return
    fi
    ok=1
    if [ "$child_mode" = transport ]; then
        traffic "$name" 192.0.2.1 192.0.2.2 2001:db8::1 2001:db8::2 || ok=0
    else
        traffic "$name" 10.1.0.1 10.2.0.1 fd00:1::1 fd00:2::1 || ok=0
    fi
    if [ "$child_mode" = transport ] && ! ip -n xa xfrm state | grep -q "mode transport"; then
        fail "$name: the kernel's states are not in transport mode"
        ok=0
    fi
    # What `esptun status` shows is read from the kernel's states.
    # (Summed over the Child SAs: a rekey may have replaced the one that carried it.)
    status_packets=$(ip netns exec xa esptun status --tun txa --json | grep -o '"packets_in": *[0-9]*' | grep -o '[0-9]*$' | awk '{s+=$1} END {print s+0}')
    if [ "${status_packets:-0}" -lt 5 ]; then
        fail "$name: esptun status counts ${status_packets:-no} packets in"
        ok=0
    fi
    packets=$(esp_packets xa)
    if [ "$ok" = 1 ] && [ "$packets" -lt 12 ]; then
        fail "$name: the kernel's SAs counted $packets packets"
        ok=0
    fi
    if [ "$ok" = 1 ] && [ -n "$extra" ]; then
        $extra "$name" || ok=0
    fi
    ip -n xa -s xfrm state | grep -E "^src|proto esp|encap|(packets)" | sed 's/^/ESPTUN-XFRM   xa: /' | head -12
    stop_pair
    for n in xa $([ "$xb_mode" = xfrm ] && echo xb); do
        left=$(xfrm_left $n)
        if [ -n "$left" ]; then
            echo "$left" | sed "s/^/ESPTUN-XFRM   $n left: /"
            fail "$name: $n left XFRM state or policy behind"
            tail -n 8 $W/$n.log | sed "s/^/ESPTUN-XFRM   $n.log: /"
            ok=0
        fi
    done
    [ "$ok" = 1 ] && pass "$name ($packets ESP packets in xa's kernel SAs)"
}

# A rekey: the transfer crossed the kernel's soft byte limit (rekey_bytes), whose
# EXPIRE had the Child SA rekeyed; traffic goes on, and the old states go.
rekey_check() {
    wait_for $W/xa.log "(rekeys " 15 || wait_for $W/xb.log "(rekeys " 1 || { fail "$1: no rekey"; return 1; }
    # The old SA's Delete, then its stragglers' grace.
    sleep 5
    ip netns exec xa ping -c 3 -A -W 2 -w 8 -I 10.1.0.1 10.2.0.1 >$W/ping4 2>&1 ||
        { cat $W/ping4; fail "$1: ping after the rekey"; return 1; }
    for n in xa xb; do
        states=$(ip -n $n xfrm state | grep -c '^src')
        [ "$states" -eq 2 ] || { ip -n $n xfrm state | sed 's/^/ESPTUN-XFRM   /'; fail "$1: $n has $states states after the rekey, not 2"; return 1; }
    done
    return 0
}

# trap_case NAME: a trap child's first packet raises the kernel's ACQUIRE, which
# has esptun negotiate; the packets then go through the SA.
trap_case() {
    name=$1
    if [ -n "${ONLY:-}" ] && ! echo "$name" | grep -q "$ONLY"; then return 0; fi
    CHILD_EXTRA='start_action = "trap"' conf xa xfrm false aes128gcm16 tunnel false
    conf xb userspace false aes128gcm16 tunnel false
    unroute
    route_other xa
    ok=1
    ip netns exec xb esptun run --config $W/xb.toml >$W/xb.log 2>&1 &
    echo $! >$W/xb.pid
    ip netns exec xa esptun run --config $W/xa.toml >$W/xa.log 2>&1 &
    echo $! >$W/xa.pid
    wait_for $W/xb.log "data plane:" && wait_for $W/xa.log "data plane:" || ok=0
    sleep 1
    if grep -q "CHILD_SA .* UP" $W/xa.log; then
        fail "$name: a Child SA came up before any traffic"
        ok=0
    fi
    # The first pings are held by the kernel's larval state while IKE runs.
    ip netns exec xa ping -c 1 -W 1 -I 10.1.0.1 10.2.0.1 >/dev/null 2>&1
    wait_for $W/xa.log "CHILD_SA .* UP" 20 || { fail "$name: no Child SA after the ACQUIRE"; ok=0; }
    [ "$ok" = 1 ] && { traffic "$name" 10.1.0.1 10.2.0.1 fd00:1::1 fd00:2::1 || ok=0; }
    stop_pair
    left=$(xfrm_left xa)
    [ -z "$left" ] || { fail "$name: xa left XFRM state or policy behind"; ok=0; }
    [ "$ok" = 1 ] && pass "$name"
}

# mobike_case NAME: xa's address changes under an SA; MOBIKE moves the IKE SA, and
# esptun moves the kernel's states and policies to the new address, keeping their
# sequence numbers.
mobike_case() {
    name=$1
    if [ -n "${ONLY:-}" ] && ! echo "$name" | grep -q "$ONLY"; then return 0; fi
    ROAM=1 conf xa xfrm true aes128gcm16 tunnel true
    conf xb userspace false aes128gcm16 tunnel true
    unroute
    route_other xa
    ok=1
    start_pair || { fail "$name: no Child SA"; ok=0; }
    [ "$ok" = 1 ] && { traffic "$name before" 10.1.0.1 10.2.0.1 fd00:1::1 fd00:2::1 || ok=0; }
    ip netns exec xa sh -c 'echo 1 >/proc/sys/net/ipv4/conf/wan/promote_secondaries'
    ip -n xa addr add 192.0.2.11/24 dev wan
    ip -n xa addr del 192.0.2.1/24 dev wan
    route_other xa
    if [ "$ok" = 1 ]; then
        wait_for $W/xa.log "MOVED to 192.0.2.11" 20 || { fail "$name: no MOBIKE move"; ok=0; }
    fi
    [ "$ok" = 1 ] && { traffic "$name after" 10.1.0.1 10.2.0.1 fd00:1::1 fd00:2::1 || ok=0; }
    if [ "$ok" = 1 ]; then
        ip -n xa xfrm state | grep -q "^src 192.0.2.11 dst 192.0.2.2" &&
            ip -n xa xfrm state | grep -q "^src 192.0.2.2 dst 192.0.2.11" &&
            ip -n xa xfrm policy | grep -q "tmpl src 192.0.2.11 dst 192.0.2.2" ||
            { ip -n xa xfrm state | grep "^src"; fail "$name: states or policies not moved"; ok=0; }
        [ "$(ip -n xa xfrm state | grep -c '^src')" -eq 2 ] || { fail "$name: old states left"; ok=0; }
    fi
    stop_pair
    left=$(xfrm_left xa)
    [ -z "$left" ] || { fail "$name: xa left XFRM state or policy behind"; ok=0; }
    ip -n xa addr add 192.0.2.1/24 dev wan
    ip -n xa addr del 192.0.2.11/24 dev wan
    [ "$ok" = 1 ] && pass "$name"
}

# out_no_states NS: packets the namespace's policies dropped for want of a state.
out_no_states() {
    ip netns exec "$1" cat /proc/net/xfrm_stat | sed -n 's/^XfrmOutNoStates[[:space:]]*//p'
}

# crash_case NAME: esptun killed with SIGKILL leaves its policies, so the LAN stays
# blocked, never in clear; the next run removes the dead run's states, takes the
# policies over, and leaves nothing when it stops.
crash_case() {
    name=$1
    if [ -n "${ONLY:-}" ] && ! echo "$name" | grep -q "$ONLY"; then return 0; fi
    conf xa xfrm true aes128gcm16 tunnel false
    conf xb userspace false aes128gcm16 tunnel false
    unroute
    route_other xa
    ok=1
    start_pair || { fail "$name: no Child SA"; ok=0; }
    sleep 1
    kill -KILL "$(cat /run/esptun/*-txa.pid)"
    sleep 0.5
    old=$(ip -n xa xfrm state | sed -n 's/.*proto esp spi \(0x[0-9a-f]*\).*/\1/p')
    policies=$(ip -n xa xfrm policy | grep -c 'tmpl src')
    [ "$policies" -eq 6 ] || { fail "$name: $policies policies left after SIGKILL, not 6"; ok=0; }
    ip netns exec xa esptun run --config $W/xa.toml >$W/xa2.log 2>&1 &
    echo $! >$W/xa.pid
    wait_for $W/xa2.log "CHILD_SA .* UP" 30 || ok=0
    sleep 1
    states=$(ip -n xa xfrm state | grep -c '^src')
    [ "$states" -eq 2 ] || { fail "$name: $states states after the restart, not 2"; ok=0; }
    for spi in $old; do
        ip -n xa xfrm state | grep -q "spi $spi " && { fail "$name: the dead run's state $spi is still there"; ok=0; }
    done
    [ "$ok" = 1 ] && { traffic "$name" 10.1.0.1 10.2.0.1 fd00:1::1 fd00:2::1 || ok=0; }
    # Dead again, and its SAs gone too: the policies alone drop the LAN's packets.
    kill -KILL "$(cat /run/esptun/*-txa.pid)"
    sleep 0.5
    ip -n xa xfrm state flush
    blocked=$(out_no_states xa)
    if ip netns exec xa ping -c 2 -W 1 -I 10.1.0.1 10.2.0.1 >/dev/null 2>&1; then
        fail "$name: a ping went through with no esptun and no SA"
        ok=0
    fi
    [ "$(out_no_states xa)" -gt "$blocked" ] || { fail "$name: no packet met a policy without state"; ok=0; }
    ip netns exec xa esptun run --config $W/xa.toml >$W/xa3.log 2>&1 &
    echo $! >$W/xa.pid
    wait_for $W/xa3.log "CHILD_SA .* UP" 30 || ok=0
    stop_pair
    left=$(xfrm_left xa)
    [ -z "$left" ] || { fail "$name: xa left XFRM state or policy behind"; ok=0; }
    [ "$ok" = 1 ] && pass "$name ($policies policies survived SIGKILL; the dead run's states $(echo $old) went)"
}

# charon_conf INITIATE CHILD_MODE ESP: strongSwan (charon with kernel-netlink: the
# kernel's IPsec too) in xb, as xb.toml would configure esptun.
charon_conf() {
    d=$W/charon
    mkdir -p $d/swanctl
    cat >$d/strongswan.conf <<CONF
charon-systemd {
    load = random nonce openssl aes gcm sha1 sha2 hmac kdf pubkey pem kernel-netlink socket-default vici
    load_modular = no
    journal {
        default = -1
    }
    filelog {
        charon {
            path = $d/charon.log
            default = 1
            ike = 2
        }
    }
    plugins {
        vici {
            socket = unix://$d/charon.vici
        }
    }
}
CONF
    if [ "$2" = transport ]; then
        ts=""
    else
        ts="local_ts = 10.2.0.0/24,fd00:2::/64
                remote_ts = 10.1.0.0/24,fd00:1::/64"
    fi
    cat >$d/swanctl/swanctl.conf <<CONF
connections {
    site {
        local_addrs = 192.0.2.2
        remote_addrs = 192.0.2.1
        local {
            auth = psk
            id = xb.example
        }
        remote {
            auth = psk
            id = xa.example
        }
        children {
            lan {
                $ts
                mode = $2
                esp_proposals = $3
                start_action = $([ "$1" = yes ] && echo start || echo none)
            }
        }
    }
}
secrets {
    ike-site {
        id-1 = xa.example
        id-2 = xb.example
        secret = 0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
    }
}
CONF
}

# strongswan_case NAME INITIATOR CHILD_MODE ESP ENCAP: esptun (xfrm) in xa against
# strongSwan's charon with kernel-netlink in xb; INITIATOR is xa or xb.
strongswan_case() {
    name=$1 initiator=$2 child_mode=$3 esp=$4 encap=$5
    if [ -n "${ONLY:-}" ] && ! echo "$name" | grep -q "$ONLY"; then return 0; fi
    command -v charon-systemd >/dev/null || { say "SKIP $name: no strongSwan in the VM"; return 0; }
    conf xa xfrm "$([ "$initiator" = xa ] && echo true || echo false)" "$esp" "$child_mode" "$encap"
    charon_conf "$([ "$initiator" = xb ] && echo yes || echo no)" "$child_mode" "$esp"
    unroute
    route_other xa
    route_other xb
    ok=1
    d=$W/charon
    rm -f $d/charon.vici $d/charon.log
    ip netns exec xa esptun run --config $W/xa.toml >$W/xa.log 2>&1 &
    echo $! >$W/xa.pid
    wait_for $W/xa.log "data plane:" || ok=0
    ip netns exec xb env STRONGSWAN_CONF=$d/strongswan.conf charon-systemd >$d/stdout 2>&1 &
    charon=$!
    i=0
    while [ $i -lt 50 ] && ! STRONGSWAN_CONF=$d/strongswan.conf ip netns exec xb swanctl --stats --uri unix://$d/charon.vici >/dev/null 2>&1; do
        sleep 0.2
        i=$((i + 1))
    done
    STRONGSWAN_CONF=$d/strongswan.conf SWANCTL_DIR=$d/swanctl ip netns exec xb \
        swanctl --load-all --noprompt --uri unix://$d/charon.vici >$d/load.log 2>&1 ||
        { sed 's/^/ESPTUN-XFRM   /' $d/load.log; ok=0; }
    wait_for $W/xa.log "CHILD_SA .* UP" 30 ||
        { cat $d/stdout $d/load.log; tail -n 20 $d/charon.log; } 2>&1 | sed 's/^/ESPTUN-XFRM   charon: /'
    grep -q "CHILD_SA .* UP" $W/xa.log || ok=0
    if [ "$ok" = 1 ]; then
        if [ "$child_mode" = transport ]; then
            traffic "$name" 192.0.2.1 192.0.2.2 2001:db8::1 2001:db8::2 || ok=0
        else
            traffic "$name" 10.1.0.1 10.2.0.1 fd00:1::1 fd00:2::1 || ok=0
        fi
        if [ "$ok" = 0 ]; then
            grep "CHILD_SA\|MOVED\|float" $W/xa.log | sed 's/^/ESPTUN-XFRM   xa.log: /'
            for n in xa xb; do
                ip -n $n -s xfrm state | grep -E "^src|encap|packets|mode" | sed "s/^/ESPTUN-XFRM   $n state: /"
            done
            grep -i "nat\|CHILD_SA\|installed\|encap" $d/charon.log | tail -n 15 | sed 's/^/ESPTUN-XFRM   charon: /'
        fi
    fi
    [ "$(esp_packets xb)" -ge 12 ] || { fail "$name: strongSwan's kernel SAs counted $(esp_packets xb) packets"; ok=0; }
    # `ip netns exec` forks: the daemon is charon-systemd itself.
    kill -TERM $(pidof charon-systemd) 2>/dev/null
    stop_pair
    i=0
    while pidof charon-systemd >/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
    kill -KILL $(pidof charon-systemd) 2>/dev/null
    wait $charon 2>/dev/null
    left=$(xfrm_left xa)
    [ -z "$left" ] || { echo "$left" | sed 's/^/ESPTUN-XFRM   xa left: /'; fail "$name: xa left XFRM state or policy behind"; ok=0; }
    ip -n xb xfrm state flush
    ip -n xb xfrm policy flush
    [ "$ok" = 1 ] && pass "$name"
}

setup
# strongSwan in the VM, if run.sh could bring it: a true kernel-IPsec peer.
if [ -f /usr/local/bin/strongswan.tar ]; then
    tar -xf /usr/local/bin/strongswan.tar -C /
fi
strongswan_case "strongswan: esptun initiates, tunnel" xa tunnel aes128gcm16 false
strongswan_case "strongswan: strongswan initiates, tunnel in udp" xb tunnel aes256gcm16 true
strongswan_case "strongswan: transport" xa transport chacha20poly1305 false
crash_case "crash: policies stay closed, the next run takes over"
mobike_case "mobike: states and policies follow the address"
trap_case "trap: ACQUIRE starts the SA"
# esptun(xfrm) <-> esptun(userspace): our ESP byte for byte against the kernel's.
run_case "gcm128 esp" userspace "aes128gcm16" tunnel false
run_case "gcm128 udp" userspace "aes128gcm16" tunnel true
run_case "gcm256 esp" userspace "aes256gcm16" tunnel false
run_case "chacha20poly1305 udp" userspace "chacha20poly1305" tunnel true
run_case "cbc+sha256 esp" userspace "aes128-sha256" tunnel false
run_case "cbc256+sha512 udp" userspace "aes256-sha512" tunnel true
run_case "gcm128 esn udp" userspace "aes128gcm16-esn" tunnel true
# esptun(xfrm) <-> esptun(xfrm), both modes, and a rekey.
CHILD_EXTRA='rekey_bytes = 300000
life_bytes = 100000000' run_case "xfrm pair tunnel rekey" xfrm "aes128gcm16" tunnel false rekey_check
run_case "xfrm pair transport" xfrm "aes256gcm16" transport false
run_case "xfrm pair transport udp" xfrm "chacha20poly1305" transport true
ip netns del xa
ip netns del xb
say "done: $FAILS failed"
[ "$FAILS" = 0 ]
