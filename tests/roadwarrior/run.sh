#!/bin/bash
# esptun as a road-warrior gateway handing out virtual IPs from address pools to
# strongSwan clients (charon with kernel-libipsec, and charon-cmd), and esptun as a
# road-warrior client, each in network namespaces of their own on one WAN bridge:
#
#   gw        esptun (or, for esptun-client-strongswan-gw, charon) on 192.0.2.1, the
#             protected LAN 10.1.0.1 and fd00:1::1 on its lo
#   c1..cN    clients on the WAN, 192.0.2.(10+k)
#   nat       a NAT router (nft masquerade) on 192.0.2.254, with n1 and n2
#             (172.16.0.11, .12) behind it on 172.16.0.0/24
#   wan       the bridge br0 joining them, where each case's capture is taken
#
# Every host has a default route over the WAN, so a packet the tunnel does not catch
# leaves in clear and is seen. The cases:
#
#   vips                 one charon client gets a v4 VIP from 10.3.0.0/24 and a v6 VIP
#                        from fd00:3::/112, pings 10.1.0.1 and fd00:1::1 from them;
#                        the CP reply holds DNS, DNS6, SUBNET and SUBNET6; `esptun status`
#                        shows the VIPs on the IKE SA
#   same-address         the client disconnects (esptun logs the IKE SA down) and
#                        connects again: it gets the same VIPs
#   clients              N charon clients connect at once: distinct VIPs, each pings;
#                        reports the time to all established and the gateway's RSS per
#                        client; then n1 and n2, behind one NAT, up side by side, pinging
#   pool-exhausted       a 2-address v4 pool, no v6 pool: two clients work, the third is
#                        refused with INTERNAL_ADDRESS_FAILURE
#   rekeys               a charon client and the gateway both rekey IKE and Child SAs
#                        every few seconds for 20 s under pings: none lost, the VIPs
#                        stay the client's
#   wrong-identity       a client certified as someone@other.example (not *@example.org)
#                        is refused with AUTHENTICATION_FAILED and gets nothing
#   charon-cmd           charon-cmd (ikev2-pub, PKCS#12 credentials) gets both VIPs, pings
#   esptun-client-strongswan-gw  esptun as a client of a charon gateway with a pool:
#                        the VIP on esptun0, pings with and without -I VIP
#   esptun-client-esptun-gw      two esptun clients (c1, c2) of the esptun gateway at
#                        once: distinct VIPs, both ping
#   esptun-client-dual-stack     an esptun client asks for both families: both on
#                        esptun0, both ping with the kernel choosing the source
#   esptun-client-reconnects     an esptun client's updown hook is told its VIP and
#                        DNS server; the gateway is killed and restarted: the client
#                        notices (DPD), its hook runs "down", and it connects again
#   mobike-strongswan-client     a charon client's WAN address changes in the middle
#                        of a 40 MiB TCP transfer: MOBIKE moves the SAs, the transfer
#                        arrives whole
#   esptun-client-full-tunnel    an esptun client with remote_ts 0.0.0.0/0: its pings
#                        to the LAN and to the gateway's own address go through the
#                        tunnel, its IKE still reaches the gateway
#   mobike-esptun-client the same with an esptun client, which notices by itself
#   mobike-esptun-client-strongswan-gw   the same against a charon gateway
#   nat-rebind           the NAT in front of n1 maps it anew mid-transfer (another
#                        public address): the gateway follows its authentic ESP
#
# Then charon as each platform's built-in client would connect (proposals, identities,
# AUTH methods; no real device here), against a gateway certificate made with
# `pki issue --profile gateway` (vpn.example.org) and client certificates made with
# `--profile client`:
#
#   windows              Windows 10/11's defaults: exactly aes256-sha1-modp1024 (IKE) and
#                        aes256-sha1 (ESP), the certificate's subject DN as identity, no
#                        RFC 7427; the gateway has legacy_windows_proposals = true and warns:
#                        VIP, ping, charon shows HMAC_SHA1_96/MODP_1024 negotiated
#   windows-no-opt-in    the same client against a gateway without the opt-in (whose
#                        `esptun check` refuses the legacy proposals, naming the opt-in):
#                        refused with NO_PROPOSAL_CHOSEN
#   macos                macOS/iOS: aes256-sha256-ecp256 and aes256-sha256-modp2048 (IKE),
#                        aes256-sha256 (ESP), e-mail identity, no RFC 7427
#                        (signature_authentication = no: plain ECDSA AUTH both ways): VIP, ping
#   android              the strongSwan app's defaults (`default` proposals, RFC 7427), its
#                        certificate and key taken out of an `esptun pki export` PKCS#12
#                        bundle with openssl: VIP, ping
#
# After each case the WAN capture must hold no packet whose outer IP header carries an
# inner address (10.1.0.0/24, 10.3.0.0/24, fd00::/8), and, where traffic flowed, ESP.
# Root only; traffic stays in the namespaces (esptun-rw-PID-*), removed on exit.
#
# usage: tests/roadwarrior/run.sh [--esptun PATH] [--clients N] [--keep]
#   --clients N  clients of the clients case (default 8, up to 200)
#   --keep       keep the run directory (configurations, logs, captures, key logs)
#   ONLY=REGEX   runs only the cases whose names match
# Exits 1 if any case fails.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/lib/charon.sh
source "$HERE/../../scripts/lib/charon.sh"
ESPTUN=${ESPTUN:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/esptun}
CLIENTS=8 KEEP=0
usage() { sed -n '/^# usage:/,/^# Exits/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do case $1 in
    --esptun) [[ $# -ge 2 ]] || usage; ESPTUN=$2; shift 2 ;;
    --clients) [[ ${2:-} =~ ^[0-9]+$ ]] || usage; (( $2 >= 1 && $2 <= 200 )) || usage; CLIENTS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) usage ;;
esac; done
[[ $(id -u) == 0 ]] || { echo "roadwarrior: needs root (namespaces)" >&2; exit 1; }
[[ -x $ESPTUN ]] || { echo "roadwarrior: no esptun binary at $ESPTUN (cargo build --release)" >&2; exit 1; }
ESPTUN=$(realpath "$ESPTUN")
for tool in ip ping sysctl tcpdump nft jq openssl timeout charon-systemd swanctl charon-cmd nc ss sha256sum conntrack; do
    command -v $tool >/dev/null || { echo "roadwarrior: $tool missing (scripts/deps.sh test installs it)" >&2; exit 1; }
done
ONLY=${ONLY:-.}   # a regex over case names, to rerun a few

RUN=$(mktemp -d /tmp/esptun-rw.XXXXXX)
PKI=$RUN/pki
P=esptun-rw-$$                        # the namespaces: $P-gw, $P-wan, $P-nat, $P-c1.., $P-n1, $P-n2
HOSTS=$(( CLIENTS > 3 ? CLIENTS : 3 ))  # client namespaces (pool-exhausted needs three)
GW4=192.0.2.1 GW6=2001:db8::1 NAT4=192.0.2.254 NAT6=2001:db8::fe
INNER='net 10.1.0.0/24 or net 10.3.0.0/24 or net fd00::/8'
ESP_UDP='udp port 4500 and udp[8:4] != 0'   # ESP in UDP (not IKE: no non-ESP marker)
NSS=()      # the namespaces made
BG=()       # background processes of the current case
TCPDUMP_PID=""
PASSED=0 FAILED=()
WHY="" NOTE="" FOCUS=""   # a case's reason to fail, its report, the host whose log tells most

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
pass() { PASSED=$((PASSED + 1)); log "PASS $1${2:+ ($2)}"; }
fail() { FAILED+=("$1"); log "FAIL $1: $2"; }

ns_of() { echo "$P-${1##*/}"; }   # a host's namespace, from its name or its directory's

# stop_all: every process in the namespaces (SIGTERM, SIGKILL after 3 s), the capture first.
stop_all() {
    local round pids ns
    [[ -z $TCPDUMP_PID ]] || capture_stop
    for round in $(seq 60); do
        pids=$(for ns in "${NSS[@]}"; do ip netns pids "$ns" 2>/dev/null || true; done)
        [[ -z $pids ]] && break
        # shellcheck disable=SC2086 # one pid a word
        if (( round == 1 )); then kill $pids 2>/dev/null || true
        elif (( round > 30 )); then kill -9 $pids 2>/dev/null || true; fi
        sleep 0.1
    done
    if (( ${#BG[@]} )); then wait "${BG[@]}" 2>/dev/null || true; fi
    BG=()
}

cleanup() {
    local ns
    stop_all
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if (( KEEP )); then log "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- topology ------------------------------------------------------------------------
ns_add() {
    ip netns add "$1"; NSS+=("$1")
    ip -n "$1" link set lo up
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}

# wan_port host addr4 addr6: host's eth0, a port of the WAN bridge
wan_port() {
    local ns; ns=$(ns_of "$1")
    ip -n "$ns" link add eth0 type veth peer name "$1" netns "$P-wan"
    ip -n "$P-wan" link set "$1" master br0 up
    ip -n "$ns" addr add "$2/24" dev eth0
    ip -n "$ns" addr add "$3/64" dev eth0 nodad
    ip -n "$ns" link set eth0 up
}

topology() {
    local k i ns
    ns_add "$P-wan"
    ip netns exec "$P-wan" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$P-wan" link add br0 type bridge
    ip -n "$P-wan" link set br0 up
    # the gateway, its protected LAN on lo; default routes to the NAT router, so that
    # whatever the tunnel does not catch leaves in clear (onto the capture)
    ns_add "$P-gw"; wan_port gw $GW4 $GW6
    ip -n "$P-gw" addr add 10.1.0.1/32 dev lo; ip -n "$P-gw" addr add fd00:1::1/128 dev lo
    ip -n "$P-gw" route add default via $NAT4; ip -n "$P-gw" -6 route add default via $NAT6
    # the NAT router and its LAN with n1 and n2
    ns_add "$P-nat"; wan_port nat $NAT4 $NAT6
    ip netns exec "$P-nat" sysctl -qw net.ipv4.ip_forward=1
    ip -n "$P-nat" link add lan0 type bridge
    ip -n "$P-nat" addr add 172.16.0.1/24 dev lan0
    ip -n "$P-nat" link set lan0 up
    ip netns exec "$P-nat" nft -f - <<'NFT'
table ip nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" ip saddr 172.16.0.0/24 masquerade
    }
}
NFT
    for i in 1 2; do
        ns=$P-n$i; ns_add "$ns"
        ip -n "$ns" link add eth0 type veth peer name "n$i" netns "$P-nat"
        ip -n "$P-nat" link set "n$i" master lan0 up
        ip -n "$ns" addr add "172.16.0.1$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via 172.16.0.1
    done
    for k in $(seq "$HOSTS"); do
        ns_add "$P-c$k"; wan_port "c$k" "192.0.2.$((10 + k))" "2001:db8::$((10 + k))"
        ip -n "$P-c$k" route add default via $NAT4; ip -n "$P-c$k" -6 route add default via $NAT6
    done
    # every host reaches the gateway (the NAT'd ones through the NAT)
    local hosts=(nat n1 n2) pids=() bad=() h
    for k in $(seq "$HOSTS"); do hosts+=("c$k"); done
    for h in "${hosts[@]}"; do
        ( for _ in $(seq 30); do ip netns exec "$(ns_of "$h")" ping -c1 -W1 -q $GW4 >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1 ) &
        pids+=($!)
    done
    for i in "${!hosts[@]}"; do wait "${pids[i]}" || bad+=("${hosts[i]}"); done
    (( ${#bad[@]} == 0 )) || { echo "roadwarrior: no route to $GW4 from ${bad[*]}" >&2; exit 1; }
}

# --- PKI: made by `esptun pki` (ECDSA P-256) ----------------------------------------------
make_pki() {
    local k
    "$ESPTUN" pki ca --out "$PKI" >/dev/null
    "$ESPTUN" pki issue --dir "$PKI" --id gw.example >/dev/null
    "$ESPTUN" pki issue --dir "$PKI" --id someone@other.example >/dev/null
    "$ESPTUN" pki issue --dir "$PKI" --id client-n1@example.org >/dev/null
    "$ESPTUN" pki issue --dir "$PKI" --id client-n2@example.org >/dev/null
    for k in $(seq "$HOSTS"); do "$ESPTUN" pki issue --dir "$PKI" --id "client-$k@example.org" >/dev/null; done
    # the native-client cases: what Windows, macOS/iOS and Android check on each side
    "$ESPTUN" pki issue --dir "$PKI" --profile gateway --san vpn.example.org >/dev/null
    local os
    for os in windows mac android; do
        "$ESPTUN" pki issue --dir "$PKI" --profile client --san "$os-1@example.org" >/dev/null
    done
    # charon-cmd loads RSA keys (--rsa) or PKCS#12 containers (--p12): the ECDSA key in one,
    # whose password charon-cmd reads from stdin (with no terminal; it fails on an empty one)
    (umask 077; echo roadwarrior >"$PKI/p12.pass")
    openssl pkcs12 -export -inkey "$PKI/client-1@example.org.key" -in "$PKI/client-1@example.org.crt" \
        -passout "file:$PKI/p12.pass" -out "$PKI/client-1@example.org.p12"
    chmod 600 "$PKI/client-1@example.org.p12"
}

# --- the WAN capture ---------------------------------------------------------------------
capture_start() { # file
    ip netns exec "$P-wan" tcpdump -i br0 -n -U --immediate-mode -Z root -w "$1" >"$1.log" 2>&1 &
    TCPDUMP_PID=$!
    for _ in $(seq 50); do grep -q "listening on" "$1.log" 2>/dev/null && return 0; sleep 0.1; done
    echo "roadwarrior: tcpdump did not start: $(cat "$1.log")" >&2; exit 1
}

capture_stop() {
    sleep 0.2   # the last packets
    kill -INT "$TCPDUMP_PID" 2>/dev/null || true
    wait "$TCPDUMP_PID" 2>/dev/null || true
    TCPDUMP_PID=""
}

# wan_check pcap esp|noesp: the capture shows no inner address in an outer IP header,
# and (esp) holds ESP, so that the first check is not vacuous. Prints a summary, or
# why not (and fails).
wan_check() {
    local leaked total udp raw
    leaked=$(tcpdump -r "$1" -n "$INNER" 2>/dev/null) || { echo "tcpdump cannot read $1"; return 1; }
    if [[ -n $leaked ]]; then
        echo "$(wc -l <<<"$leaked") packets on the WAN with an inner address in clear, e.g. $(head -1 <<<"$leaked")"
        return 1
    fi
    total=$(tcpdump -r "$1" -n 2>/dev/null | wc -l)
    udp=$(tcpdump -r "$1" -n "$ESP_UDP" 2>/dev/null | wc -l)
    raw=$(tcpdump -r "$1" -n esp 2>/dev/null | wc -l)
    if [[ $2 == esp ]] && (( udp + raw == 0 )); then
        echo "no ESP in the WAN capture ($total packets): the check for inner addresses would prove nothing"
        return 1
    fi
    echo "WAN clean: $total packets, ESP: $udp in UDP, $raw raw"
}

# --- esptun ------------------------------------------------------------------------------
# esptun_gw_conf dir v4-pool [v6-pool]: the road-warrior gateway, pools rw4 (and rw6).
# GW_ID (default gw.example, its certificate and key from $PKI), GW_REMOTE_ID (default
# *@example.org), GW_PROPOSALS and GW_ESP (TOML array items, default the AES-GCM ones)
# and GW_EXTRA (connection lines) change it.
esptun_gw_conf() {
    local d=$1 pools='"rw4"'
    local proposals=${GW_PROPOSALS:-'"aes128gcm16-prfsha256-x25519"'} esp=${GW_ESP:-'"aes128gcm16"'}
    mkdir -p "$d"
    {
        printf '[listen]\naddrs = ["%s"]\n\n' $GW4
        printf '[[pool]]\nname = "rw4"\naddrs = "%s"\ndns = ["10.1.0.53"]\n\n' "$2"
        if [[ -n ${3:-} ]]; then
            printf '[[pool]]\nname = "rw6"\naddrs = "%s"\ndns = ["fd00:1::53"]\n\n' "$3"
            pools+=', "rw6"'
        fi
        cat <<TOML
[[connection]]
name = "rw"
pools = [$pools]
proposals = [$proposals]
${GW_EXTRA:-}
[connection.local]
auth = "pubkey"
id = "${GW_ID:-gw.example}"
certs = ["$PKI/${GW_ID:-gw.example}.crt"]
key = "$PKI/${GW_ID:-gw.example}.key"
[connection.remote]
auth = "pubkey"
id = "${GW_REMOTE_ID:-*@example.org}"
cacerts = ["$PKI/ca.crt"]
[[connection.children]]
name = "net"
local_ts = ["10.1.0.0/24", "fd00:1::/64"]
esp_proposals = [$esp]
TOML
    } >"$d/esptun.toml"
}

# esptun_client_conf dir k: esptun on ck, a road-warrior client of 192.0.2.1 asking for an
# IPv4 virtual IP, as client-k@example.org
esptun_client_conf() {
    local d=$1 id=client-$2@example.org
    mkdir -p "$d"
    cat >"$d/esptun.toml" <<TOML
[listen]
addrs = ["192.0.2.$((10 + $2))"]

[[connection]]
name = "home"
remote_addrs = ["$GW4"]
vips = ["0.0.0.0"]
proposals = ["aes128gcm16-prfsha256-x25519"]
start = true
[connection.local]
auth = "pubkey"
id = "$id"
certs = ["$PKI/$id.crt"]
key = "$PKI/$id.key"
[connection.remote]
auth = "pubkey"
id = "gw.example"
cacerts = ["$PKI/ca.crt"]
[[connection.children]]
name = "net"
remote_ts = ["10.1.0.0/24"]
esp_proposals = ["aes128gcm16"]
TOML
}

# esptun_start dir listen-address: esptun in the namespace of dir's host, on dir/esptun.toml;
# waits until it listens. Sets ESPTUN_PID.
esptun_start() {
    local d=$1
    ip netns exec "$(ns_of "$d")" "$ESPTUN" run --config "$d/esptun.toml" --keylog "$d/keys" >"$d/esptun.log" 2>&1 &
    ESPTUN_PID=$!; BG+=("$ESPTUN_PID")
    for _ in $(seq 100); do
        grep -q "listening on $2:4500" "$d/esptun.log" 2>/dev/null && return 0
        kill -0 "$ESPTUN_PID" 2>/dev/null || break
        sleep 0.05
    done
    WHY="esptun did not start on ${d##*/}: $(tail -n 3 "$d/esptun.log" | tr '\n' ' ')"; FOCUS=$d
    return 1
}

# gw_up dir v4-pool [v6-pool]: the esptun gateway running in gw, as GW_DIR
gw_up() {
    GW_DIR=$1
    esptun_gw_conf "$@"
    esptun_start "$GW_DIR" $GW4
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# esptun_vips id: the virtual IPs `esptun status --json` shows on the IKE SA of that
# remote identity, sorted, on one line
esptun_vips() {
    ip netns exec "$P-gw" "$ESPTUN" status --json 2>/dev/null \
        | jq -r --arg id "$1" '.ike_sas[]? | select(.remote_id | tostring | contains($id)) | .virtual_ips[]?' \
        | sort | paste -sd' '
}

# gw_remotes: the peers (address:port) of the gateway's IKE SAs, one a line
gw_remotes() { ip netns exec "$P-gw" "$ESPTUN" status --json 2>/dev/null | jq -r '.ike_sas[]? | .remote'; }

# esptun_client_vip dir: the IPv4 address on the esptun client's TUN
esptun_client_vip() {
    ip -n "$(ns_of "$1")" -o -4 addr show dev esptun0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1
}

# esptun_client_up dir...: each dir's esptun client logged its virtual IP (20 s) and has it
# on esptun0 in 10.3.0.0/24; sets VIPS (one per dir, in order)
esptun_client_up() {
    local d vip
    VIPS=()
    for d; do
        if ! wait_for 20 grep -qs 'virtual IP' "$d/esptun.log"; then
            WHY="${d##*/}: esptun logged no virtual IP"; FOCUS=$d; return 1
        fi
        vip=""
        for _ in $(seq 20); do vip=$(esptun_client_vip "$d"); [[ -n $vip ]] && break; sleep 0.1; done
        [[ $vip == 10.3.0.* ]] || { WHY="${d##*/}: esptun0 has '${vip}', not a VIP of 10.3.0.0/24 ($(grep -m1 'virtual IP' "$d/esptun.log"))"; FOCUS=$d; return 1; }
        VIPS+=("$vip")
    done
}

# --- charon clients ----------------------------------------------------------------------
# charon_client_conf dir id [vips]: a charon road-warrior client of 192.0.2.1 (connection
# rw, child net) asking for virtual IPs (default 0.0.0.0,::) as id (its certificate
# $PKI/id.crt). CLIENT_ID (the IKE identity, default id), CLIENT_GW_ID (default
# gw.example), CLIENT_PROPOSALS and CLIENT_ESP (swanctl lists, default the AES-GCM ones)
# and CLIENT_CHARON (strongswan.conf lines) change it.
charon_client_conf() {
    local d=$1 id=$2
    mkdir -p "$d"
    charon_strongswan_conf "$d" "retransmit_tries = 3
    retransmit_timeout = 2
    ${CLIENT_CHARON:-}"
    cp "$PKI/ca.crt" "$d/swanctl/x509ca/"
    cp "$PKI/$id.crt" "$d/swanctl/x509/client.crt"
    cp "$PKI/$id.key" "$d/swanctl/private/client.key"
    cat >"$d/swanctl/swanctl.conf" <<CONF
connections {
    rw {
        version = 2
        remote_addrs = $GW4
        vips = ${3:-0.0.0.0,::}
        proposals = ${CLIENT_PROPOSALS:-aes128gcm16-prfsha256-x25519}
        rekey_time = 0
        reauth_time = 0
        local {
            auth = pubkey
            certs = client.crt
            id = "${CLIENT_ID:-$id}"
        }
        remote {
            auth = pubkey
            id = ${CLIENT_GW_ID:-gw.example}
        }
        children {
            net {
                remote_ts = 10.1.0.0/24,fd00:1::/64
                esp_proposals = ${CLIENT_ESP:-aes128gcm16}
                rekey_time = 0
                start_action = none
            }
        }
    }
}
secrets {
    private-client {
        file = client.key
    }
}
CONF
}

# charons_start dir...: charon in each dir's host namespace (dir named c1, n2, gw), in parallel
charons_start() {
    local d pids=() bad=() i
    for d; do
        ( charon_start "$d" "$(ns_of "$d")" ) >"$d/start.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        d=${*:i+1:1}
        # (swanctl --load-all succeeds when a connection fails to load)
        if ! wait "${pids[i]}" || grep -Eq 'config discarded|[1-9][0-9]* failed to load' "$d/load.log" 2>/dev/null; then
            bad+=("${d##*/}"); FOCUS=$d
        fi
    done
    (( ${#bad[@]} == 0 )) || { WHY="charon did not start on ${bad[*]}: $(grep -h -E "loading .* failed|error" "$FOCUS/load.log" "$FOCUS/start.log" 2>/dev/null | awk '!seen[$0]++' | head -2 | tr '\n' ' ')"; return 1; }
}

# clients dir k...: charon client conf for ck (client-k@example.org) in dir/ck, and their dirs in DIRS
clients() {
    local d=$1 k
    shift
    DIRS=()
    for k; do charon_client_conf "$d/c$k" "client-$k@example.org"; DIRS+=("$d/c$k"); done
}

# charon_vips dir: the virtual IPs charon holds (local-vips), space-separated
charon_vips() {
    charon_sw "$1" --list-sas --raw 2>/dev/null | tr -d '\n' | grep -o 'local-vips=\[[^]]*\]' | head -1 \
        | sed 's/^local-vips=\[//; s/\]$//'
}
charon_installed() { charon_sw "$1" --list-sas --raw 2>/dev/null | grep 'state=INSTALLED' >/dev/null; }

# initiate dir...: swanctl --initiate in each dir at once (output in dir/initiate.log);
# fails naming the ones that did not come up
initiate() {
    local d pids=() bad=() i
    for d; do
        charon_sw "$d" --initiate --child net --timeout 20 >"$d/initiate.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do wait "${pids[i]}" || bad+=("${*:i+1:1}"); done
    if (( ${#bad[@]} )); then
        WHY="not established: $(for d in "${bad[@]}"; do printf '%s ' "${d##*/}"; done)($(charon_why "${bad[0]}"))"
        FOCUS=${bad[0]}
        return 1
    fi
}

# up dir...: initiate, then each has its Child SA installed and an IPv4 VIP in 10.3.0.0/24
# (and an IPv6 one in fd00:3::/112 when it has any); sets VIP4 and VIP6 (arrays, in order)
up() {
    local d v vip4 vip6
    VIP4=() VIP6=()
    initiate "$@" || return 1
    for d; do
        vip4="" vip6=""
        for v in $(charon_vips "$d"); do
            if [[ $v == *:* ]]; then vip6=$v; else vip4=$v; fi
        done
        charon_installed "$d" || { WHY="${d##*/}: no Child SA installed"; FOCUS=$d; return 1; }
        [[ $vip4 == 10.3.0.* ]] || { WHY="${d##*/}: IPv4 virtual IP '$vip4' not in 10.3.0.0/24"; FOCUS=$d; return 1; }
        [[ -z $vip6 || $vip6 =~ ^fd00:3::[0-9a-f]{1,4}$ ]] || { WHY="${d##*/}: IPv6 virtual IP '$vip6' not in fd00:3::/112"; FOCUS=$d; return 1; }
        VIP4+=("$vip4"); VIP6+=("$vip6")
    done
}

# charon_why dir: the line of charon's log that tells best why nothing came up
charon_why() {
    local re line=""
    for re in 'received [A-Z_]+ notify error' 'received [A-Z_]+ notify, no CHILD_SA' 'giving up after' \
        'retransmit [0-9]+ of request' 'failed to establish|establishing .* failed|no .* found|unable to|failed'; do
        line=$(grep -E "$re" "$1/charon.log" 2>/dev/null | grep -v "plugin '" | tail -1) && [[ -n $line ]] && break
    done
    [[ -n $line ]] || line=$(grep -v "^plugin '" "$1/initiate.log" 2>/dev/null | tail -1)
    sed -E 's/^[0-9:. ]*[0-9]+\[[A-Z]+\] (<[^>]*> )?//' <<<"${line:-nothing logged}"
}

# cp_reply dir: the attributes of the CP payload in the IKE_AUTH response charon parsed
cp_reply() { grep -m1 'parsed IKE_AUTH response .*CPRP(' "$1/charon.log" | grep -o 'CPRP([^)]*)' | sed 's/^CPRP(//; s/)$//'; }

# --- traffic -------------------------------------------------------------------------------
# ping_ok host|dir [source] destination: a few pings (three tries) from the host's
# namespace, from source when given
ping_ok() {
    local ns fam=() src=()
    ns=$(ns_of "$1")
    [[ ${*: -1} == *:* ]] && fam=(-6)
    (( $# == 3 )) && src=(-I "$2")
    for _ in 1 2 3; do
        ip netns exec "$ns" ping "${fam[@]}" -c 2 -i 0.2 -W 2 -q "${src[@]}" "${*: -1}" >/dev/null 2>&1 && return 0
        sleep 0.3
    done
    return 1
}

# pings_ok "host source" ...: ping_ok 10.1.0.1 for each at once; fails naming the failed
pings_ok() {
    local spec pids=() bad=() i
    for spec; do
        # shellcheck disable=SC2086 # "host source"
        ping_ok $spec 10.1.0.1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do wait "${pids[i]}" || bad+=("${*:i+1:1}"); done
    (( ${#bad[@]} == 0 )) || { WHY="no ping through to 10.1.0.1 from: ${bad[*]}"; FOCUS=$CASE/${bad[0]%% *}; return 1; }
}

# wait_for seconds command...: polls until the command succeeds.
wait_for() { local t=$1; shift; for _ in $(seq $((t * 5))); do "$@" && return 0; sleep 0.2; done; return 1; }

no_duplicates() { # what values...
    local what=$1 dup
    shift
    dup=$(printf '%s\n' "$@" | sort | uniq -d | paste -sd' ')
    [[ -z $dup ]] || { WHY="$what given twice: $dup"; return 1; }
}

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# --- cases -----------------------------------------------------------------------------------
case_vips() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    clients "$CASE" 1; FOCUS=${DIRS[0]}
    charons_start "${DIRS[@]}" || return 1
    up "${DIRS[@]}" || return 1
    local v4=${VIP4[0]} v6=${VIP6[0]} cp attr theirs
    [[ -n $v6 ]] || { WHY="no IPv6 virtual IP (local-vips: $(charon_vips "${DIRS[0]}"))"; return 1; }
    ping_ok c1 "$v4" 10.1.0.1 || { WHY="no IPv4 ping from $v4 to 10.1.0.1"; return 1; }
    ping_ok c1 "$v6" fd00:1::1 || { WHY="no IPv6 ping from $v6 to fd00:1::1"; return 1; }
    cp=$(cp_reply "${DIRS[0]}")
    for attr in ADDR ADDR6 DNS DNS6 SUBNET SUBNET6; do
        [[ " $cp " == *" $attr "* ]] || { WHY="the CP reply lacks $attr: CPRP($cp)"; return 1; }
    done
    theirs=$(esptun_vips client-1@example.org)
    [[ $theirs == "$(printf '%s\n' "$v4" "$v6" | sort | paste -sd' ')" ]] \
        || { WHY="esptun status shows virtual_ips '$theirs', charon holds $v4 $v6"; FOCUS=$GW_DIR; return 1; }
    NOTE="VIPs $v4 $v6, CPRP($cp), pings v4/v6, esptun status agrees"
    # the attributes' values (charon logs only their types), from the capture decrypted
    # with the gateway's keys, when `esptun inspect` shows them
    local reply want
    reply=$("$ESPTUN" inspect --keys "$GW_DIR/keys/keys.json" "$CASE/wan.pcap" 2>/dev/null | grep -m1 'CP type=CFG_REPLY' || true)
    if [[ -z $reply ]]; then NOTE+=" (values unchecked: esptun inspect shows no CFG_REPLY)"; return 0; fi
    for want in INTERNAL_IP4_DNS=10.1.0.53 INTERNAL_IP6_DNS=fd00:1::53 INTERNAL_IP4_SUBNET=10.1.0.0/255.255.255.0 INTERNAL_IP6_SUBNET=fd00:1::/64; do
        [[ $reply == *"$want"* ]] || { WHY="the CP reply lacks $want: ${reply#"${reply%%[! ]*}"}"; FOCUS=$GW_DIR; return 1; }
    done
    NOTE+=", DNS 10.1.0.53 fd00:1::53 and SUBNET 10.1.0.0/24 fd00:1::/64 in it (esptun inspect)"
}

case_same_address() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    clients "$CASE" 1; FOCUS=${DIRS[0]}
    local d=${DIRS[0]} before after
    charons_start "$d" || return 1
    up "$d" || return 1
    before="${VIP4[0]} ${VIP6[0]}"
    charon_sw "$d" --terminate --ike rw --timeout 10 >"$d/terminate.log" 2>&1 || { WHY="swanctl --terminate failed"; return 1; }
    wait_for 10 grep -qs ' DOWN rw' "$GW_DIR/esptun.log" || { WHY="esptun did not log the IKE SA down"; FOCUS=$GW_DIR; return 1; }
    up "$d" || return 1
    after="${VIP4[0]} ${VIP6[0]}"
    [[ $after == "$before" ]] || { WHY="VIPs $before before, $after after reconnecting"; return 1; }
    ping_ok c1 "${VIP4[0]}" 10.1.0.1 || { WHY="no ping after reconnecting"; return 1; }
    NOTE="VIPs $before again after the IKE SA went down ($(grep -m1 ' DOWN rw' "$GW_DIR/esptun.log" | sed -E 's/^.* DOWN rw: //'))"
}

case_clients() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local k t0 ms rss0 rss1 specs=() nat=("$CASE/n1" "$CASE/n2") nat4 natted ks
    mapfile -t ks < <(seq "$CLIENTS")
    clients "$CASE" "${ks[@]}"; FOCUS=${DIRS[0]}
    charon_client_conf "$CASE/n1" client-n1@example.org
    charon_client_conf "$CASE/n2" client-n2@example.org
    charons_start "${DIRS[@]}" "${nat[@]}" || return 1
    rss0=$(rss_kib "$ESPTUN_PID")
    t0=$(date +%s%N)
    up "${DIRS[@]}" || return 1
    ms=$(ms_since "$t0")
    rss1=$(rss_kib "$ESPTUN_PID")
    no_duplicates "IPv4 VIP" "${VIP4[@]}" || return 1
    no_duplicates "IPv6 VIP" "${VIP6[@]}" || return 1
    for k in $(seq "$CLIENTS"); do specs+=("c$k ${VIP4[k-1]}"); done
    pings_ok "${specs[@]}" || return 1
    NOTE="$CLIENTS clients established in $ms ms from the first initiate, distinct VIPs, all ping; gateway RSS $rss0 -> $rss1 KiB, $(( (rss1 - rss0) / CLIENTS )) KiB per client"
    # two clients behind one NAT, side by side: one address, two ports
    up "${nat[@]}" || return 1
    nat4=("${VIP4[@]}")
    no_duplicates "IPv4 VIP" "${nat4[@]}" || return 1
    pings_ok "n1 ${nat4[0]}" "n2 ${nat4[1]}" || return 1
    natted=$(grep -l 'local host is behind NAT' "$CASE/n1/charon.log" "$CASE/n2/charon.log" | wc -l)
    (( natted == 2 )) || { WHY="n1 and n2 do not both see the NAT ($natted do)"; FOCUS=${nat[0]}; return 1; }
    natted=$(gw_remotes | grep "^$NAT4:" | sort -u | paste -sd' ')
    [[ $natted =~ ^[^\ ]+\ [^\ ]+$ ]] || { WHY="the gateway's IKE SAs from the NAT: '$natted' (n1 and n2 need one each)"; FOCUS=$GW_DIR; return 1; }
    NOTE+="; n1, n2 behind the NAT up at once ($natted: ${nat4[*]}), both ping"
}

case_pool_exhausted() {
    gw_up "$CASE/gw" 10.3.0.10-10.3.0.11 || return 1
    clients "$CASE" 1 2 3; FOCUS=${DIRS[2]}
    local d3=${DIRS[2]} got=()
    charons_start "${DIRS[@]}" || return 1
    up "${DIRS[0]}" || return 1; got+=("${VIP4[0]}")
    up "${DIRS[1]}" || return 1; got+=("${VIP4[0]}")
    [[ $(printf '%s\n' "${got[@]}" | sort | paste -sd' ') == "10.3.0.10 10.3.0.11" ]] \
        || { WHY="the first two got ${got[*]}, not 10.3.0.10 and 10.3.0.11"; return 1; }
    pings_ok "c1 ${got[0]}" "c2 ${got[1]}" || return 1
    if initiate "$d3"; then WHY="the third client got a Child SA (VIPs: $(charon_vips "$d3"))"; return 1; fi
    grep -q INTERNAL_ADDRESS_FAILURE "$d3/charon.log" || { WHY="c3 was not refused with INTERNAL_ADDRESS_FAILURE"; return 1; }
    [[ -z $(charon_vips "$d3") ]] || { WHY="c3 holds VIPs $(charon_vips "$d3")"; return 1; }
    WHY=""
    NOTE="c1, c2 got ${got[*]} and ping; c3: $(grep -m1 INTERNAL_ADDRESS_FAILURE "$d3/charon.log" | sed -E 's/^.*\] //')"
}

case_rekeys() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    clients "$CASE" 1; FOCUS=${DIRS[0]}
    local d=${DIRS[0]} ikes children
    # both sides rekey: charon its IKE SA every ~6 s and its Child SA every ~4 s, the
    # gateway its IKE SA every ~5 s and its Child SA every ~3 s (collisions included)
    sed -i '0,/rekey_time = 0/s//rekey_time = 6s/; 0,/reauth_time = 0/s//reauth_time = 0\n        over_time = 30s/' "$d/swanctl/swanctl.conf"
    sed -i 's/^                rekey_time = 0$/                rekey_time = 4s\n                life_time = 30s\n                rand_time = 1s/' "$d/swanctl/swanctl.conf"
    sed -i 's/^proposals = \(.*\)$/proposals = \1\nrekey_time = "5s"\nover_time = "30s"\nrand_time = "2s"/' "$GW_DIR/esptun.toml"
    printf 'rekey_time = "3s"\nlife_time = "30s"\nrand_time = "1s"\n' >>"$GW_DIR/esptun.toml"
    kill "$ESPTUN_PID"; wait "$ESPTUN_PID" 2>/dev/null || true
    esptun_start "$GW_DIR" $GW4 || return 1
    charons_start "$d" || return 1
    up "$d" || return 1
    local v4=${VIP4[0]} v6=${VIP6[0]}
    ip netns exec "$(ns_of "$d")" ping -c 100 -i 0.2 -q -I "$v4" 10.1.0.1 >"$CASE/ping.out" 2>&1 || true
    ikes=$(grep -c ' REKEYED ' "$GW_DIR/esptun.log" || true)
    children=$(grep -c 'CHILD_SA .* UP .*(rekeys' "$GW_DIR/esptun.log" || true)
    (( ikes >= 2 && children >= 2 )) || { WHY="only $ikes IKE and $children Child SA rekeys in 20 s"; FOCUS=$GW_DIR; return 1; }
    grep -q ' 0% packet loss' "$CASE/ping.out" || { WHY="pings lost across the rekeys: $(grep 'packet loss' "$CASE/ping.out")"; return 1; }
    [[ $(esptun_vips client-1@example.org) == "$(printf '%s\n' "$v4" "$v6" | sort | paste -sd' ')" ]] \
        || { WHY="after the rekeys esptun status shows virtual_ips '$(esptun_vips client-1@example.org)', charon holds $v4 $v6"; FOCUS=$GW_DIR; return 1; }
    [[ $(charon_vips "$d") == "$v4 $v6" || $(charon_vips "$d") == "$v6 $v4" ]] || { WHY="charon now holds $(charon_vips "$d")"; return 1; }
    NOTE="$ikes IKE and $children Child SA rekeys in 20 s (both sides start them), 100/100 pings from $v4, the lease stays with the current IKE SA"
}

case_wrong_identity() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local d=$CASE/c1
    FOCUS=$d
    charon_client_conf "$d" someone@other.example
    charons_start "$d" || return 1
    if initiate "$d"; then WHY="someone@other.example got a Child SA"; return 1; fi
    grep -q AUTHENTICATION_FAILED "$d/charon.log" || { WHY="not refused with AUTHENTICATION_FAILED"; return 1; }
    [[ -z $(charon_vips "$d") ]] || { WHY="it holds VIPs $(charon_vips "$d")"; return 1; }
    WHY=""
    NOTE="refused: $(grep -m1 AUTHENTICATION_FAILED "$d/charon.log" | sed -E 's/^.*\] //')"
}

case_charon_cmd() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local d=$CASE/c1 id=client-1@example.org v4 v6
    FOCUS=$d
    charon_strongswan_conf "$d" "retransmit_tries = 3
    retransmit_timeout = 2" charon-cmd
    ip netns exec "$(ns_of "$d")" env STRONGSWAN_CONF="$d/strongswan.conf" charon-cmd --host $GW4 \
        --identity $id --remote-identity gw.example --cert "$PKI/ca.crt" --p12 "$PKI/$id.p12" \
        --profile ikev2-pub --remote-ts 10.1.0.0/24 --remote-ts fd00:1::/64 \
        --ike-proposal aes128gcm16-prfsha256-x25519 --esp-proposal aes128gcm16 \
        <"$PKI/p12.pass" >"$d/charon-cmd.out" 2>&1 &
    BG+=($!)
    wait_for 20 grep -qs 'CHILD_SA cmd{[0-9]*} established' "$d/charon.log" \
        || { WHY="charon-cmd did not establish ($(charon_why "$d"))"; return 1; }
    v4=$(grep -o 'installing new virtual IP [0-9.]*$' "$d/charon.log" | awk '{print $NF}' | head -1)
    v6=$(grep -o 'installing new virtual IP [0-9a-f:]*:[0-9a-f:]*$' "$d/charon.log" | awk '{print $NF}' | head -1)
    [[ $v4 == 10.3.0.* ]] || { WHY="IPv4 virtual IP '$v4' not in 10.3.0.0/24"; return 1; }
    [[ $v6 =~ ^fd00:3::[0-9a-f]{1,4}$ ]] || { WHY="IPv6 virtual IP '$v6' not in fd00:3::/112"; return 1; }
    ping_ok c1 "$v4" 10.1.0.1 || { WHY="no IPv4 ping from $v4"; return 1; }
    ping_ok c1 "$v6" fd00:1::1 || { WHY="no IPv6 ping from $v6"; return 1; }
    NOTE="VIPs $v4 $v6, pings v4/v6"
}

# charon_gw_conf dir: charon as the road-warrior gateway in gw, pool rw4
charon_gw_conf() {
    local d=$1
    mkdir -p "$d"
    charon_strongswan_conf "$d"
    cp "$PKI/ca.crt" "$d/swanctl/x509ca/"
    cp "$PKI/gw.example.crt" "$d/swanctl/x509/"
    cp "$PKI/gw.example.key" "$d/swanctl/private/"
    cat >"$d/swanctl/swanctl.conf" <<CONF
connections {
    rw {
        version = 2
        local_addrs = $GW4
        pools = rw4
        proposals = aes128gcm16-prfsha256-x25519
        rekey_time = 0
        reauth_time = 0
        local {
            auth = pubkey
            certs = gw.example.crt
            id = gw.example
        }
        remote {
            auth = pubkey
            id = %any
            cacerts = ca.crt
        }
        children {
            net {
                local_ts = 10.1.0.0/24
                esp_proposals = aes128gcm16
                rekey_time = 0
            }
        }
    }
}
pools {
    rw4 {
        addrs = 10.3.0.0/24
        dns = 10.1.0.53
    }
}
secrets {
    private-gw {
        file = gw.example.key
    }
}
CONF
}

case_esptun_client_strongswan_gw() {
    local gw=$CASE/gw d=$CASE/c1 vip theirs
    FOCUS=$d
    charon_gw_conf "$gw"
    charons_start "$gw" || return 1
    esptun_client_conf "$d" 1
    esptun_start "$d" 192.0.2.11 || return 1
    esptun_client_up "$d" || return 1
    vip=${VIPS[0]}
    theirs=$(charon_sw "$gw" --list-sas --raw 2>/dev/null | tr -d '\n' | grep -o 'remote-vips=\[[^]]*\]' | head -1)
    [[ $theirs == "remote-vips=[$vip]" ]] || { WHY="esptun0 has $vip, charon gave ${theirs:-nothing}"; FOCUS=$gw; return 1; }
    ping_ok c1 10.1.0.1 || { WHY="no ping to 10.1.0.1 (source by route)"; return 1; }
    ping_ok c1 "$vip" 10.1.0.1 || { WHY="no ping to 10.1.0.1 from $vip"; return 1; }
    NOTE="VIP $vip on esptun0 (charon: ${theirs#remote-vips=}), pings with and without -I"
}

case_esptun_client_esptun_gw() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local d1=$CASE/c1 d2=$CASE/c2
    FOCUS=$d1
    esptun_client_conf "$d1" 1; esptun_client_conf "$d2" 2
    esptun_start "$d1" 192.0.2.11 || return 1
    esptun_start "$d2" 192.0.2.12 || return 1
    esptun_client_up "$d1" "$d2" || return 1
    no_duplicates "VIP" "${VIPS[@]}" || return 1
    pings_ok c1 c2 || return 1
    ping_ok c1 "${VIPS[0]}" 10.1.0.1 || { WHY="no ping from c1's VIP ${VIPS[0]}"; return 1; }
    local k theirs
    for k in 1 2; do
        theirs=$(esptun_vips "client-$k@example.org")
        [[ $theirs == "${VIPS[k-1]}" ]] || { WHY="esptun status shows virtual_ips '$theirs' for c$k, which has ${VIPS[k-1]}"; FOCUS=$GW_DIR; return 1; }
    done
    NOTE="c1 ${VIPS[0]}, c2 ${VIPS[1]}, both ping, esptun status agrees"
}

case_esptun_client_dual_stack() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local d=$CASE/c1 v6
    FOCUS=$d
    esptun_client_conf "$d" 1
    sed -i 's|^vips = .*|vips = ["0.0.0.0", "::"]|; s|^remote_ts = .*|remote_ts = ["10.1.0.0/24", "fd00:1::/64"]|' "$d/esptun.toml"
    esptun_start "$d" 192.0.2.11 || return 1
    esptun_client_up "$d" || return 1
    for _ in $(seq 20); do
        v6=$(ip -n "$(ns_of "$d")" -o -6 addr show dev esptun0 scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1)
        [[ -n $v6 ]] && break; sleep 0.1
    done
    [[ $v6 =~ ^fd00:3::[0-9a-f]{1,4}$ ]] || { WHY="esptun0 has IPv6 '${v6}', not a VIP of fd00:3::/112"; return 1; }
    ping_ok c1 10.1.0.1 || { WHY="no IPv4 ping (source by route)"; return 1; }
    ping_ok c1 fd00:1::1 || { WHY="no IPv6 ping (source by route)"; return 1; }
    [[ $(esptun_vips client-1@example.org) == "$(printf '%s\n' "${VIPS[0]}" "$v6" | sort | paste -sd' ')" ]] \
        || { WHY="esptun status shows '$(esptun_vips client-1@example.org)'"; FOCUS=$GW_DIR; return 1; }
    NOTE="esptun client got ${VIPS[0]} and $v6 on esptun0, pings both families with the kernel choosing them as sources"
}

case_esptun_client_reconnects() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local d=$CASE/c1 first gw_pid=$ESPTUN_PID
    FOCUS=$d
    esptun_client_conf "$d" 1
    # an updown hook that records what it is told; a dead gateway is noticed in seconds
    cat >"$d/updown" <<'HOOK'
#!/bin/sh
echo "$ESPTUN_EVENT vips=$ESPTUN_VIRTUAL_IPS dns=$ESPTUN_DNS tun=$ESPTUN_TUN" >>"$(dirname "$0")/updown.log"
HOOK
    chmod 755 "$d/updown"
    sed -i 's/^start = true$/start = true\nupdown = "updown"\ndpd_delay = "1s"/; s/^\[\[connection\]\]$/[ike]\nretransmit_timeout = 0.5\nretransmit_tries = 2\n\n[[connection]]/' "$d/esptun.toml"
    sed -i 's/^esp_proposals = \["aes128gcm16"\]$/esp_proposals = ["aes128gcm16"]\ndpd_action = "restart"/' "$d/esptun.toml"
    esptun_start "$d" 192.0.2.11 || return 1
    ESPTUN_CLIENT_PID=$ESPTUN_PID
    esptun_client_up "$d" || return 1
    first=${VIPS[0]}
    wait_for 5 grep -qs "^up vips=$first dns=10.1.0.53 tun=esptun0$" "$d/updown.log" \
        || { WHY="the updown hook was not told 'up vips=$first dns=10.1.0.53 tun=esptun0': $(cat "$d/updown.log" 2>/dev/null)"; return 1; }
    # The gateway dies and comes back without its state.
    kill -9 "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
    gw_up "$CASE/restarted/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    wait_for 30 grep -qs '^down ' "$d/updown.log" || { WHY="the client never noticed the dead gateway (no down hook)"; return 1; }
    wait_for 30 grep -qs ' ESTABLISHED ' "$GW_DIR/esptun.log" || { WHY="the client did not come back to the restarted gateway"; FOCUS=$GW_DIR; return 1; }
    wait_for 10 ping_ok c1 10.1.0.1 || { WHY="no ping after reconnecting"; return 1; }
    kill -0 "$ESPTUN_CLIENT_PID" || { WHY="the client is gone"; return 1; }
    NOTE="VIP $first; hook: $(paste -sd';' "$d/updown.log"); gateway killed and restarted: the client saw it dead, reconnected by itself, pings again"
}

case_esptun_client_full_tunnel() {
    gw_up_full() {
        esptun_gw_conf "$CASE/gw" 10.3.0.0/24
        sed -i 's|^local_ts = .*|local_ts = ["0.0.0.0/0"]|' "$CASE/gw/esptun.toml"
        esptun_start "$CASE/gw" $GW4
    }
    gw_up_full || return 1
    local d=$CASE/c1 dpds
    FOCUS=$d
    esptun_client_conf "$d" 1
    sed -i 's|^remote_ts = .*|remote_ts = ["0.0.0.0/0"]|; s/^start = true$/start = true\ndpd_delay = "1s"/' "$d/esptun.toml"
    esptun_start "$d" 192.0.2.11 || return 1
    esptun_client_up "$d" || return 1
    ping_ok c1 10.1.0.1 || { WHY="no ping to 10.1.0.1 through the full tunnel"; return 1; }
    # the gateway's own address is tunnelled too; only esptun's IKE and ESP go around
    ping_ok c1 $GW4 || { WHY="no ping to the gateway's address through the tunnel"; return 1; }
    answered() { (( $(grep -c 'received INFORMATIONAL response' "$d/esptun.log") > $1 )); }
    dpds=$(grep -c 'received INFORMATIONAL response' "$d/esptun.log")
    wait_for 5 answered $((dpds + 1)) \
        || { WHY="IKE stopped reaching the gateway under the full tunnel (no DPD answered)"; return 1; }
    capture_stop
    local clear
    clear=$(tcpdump -r "$CASE/wan.pcap" -n 'icmp and host 192.0.2.11' 2>/dev/null | wc -l)
    (( clear == 0 )) || { WHY="$clear ICMP packets between the client and the gateway in clear"; return 1; }
    NOTE="VIP ${VIPS[0]}, remote_ts 0.0.0.0/0: pings to 10.1.0.1 and to the gateway's own address $GW4 tunnelled (no ICMP in clear), IKE liveness checks still answered"
}

case_mobike_esptun_client_strongswan_gw() {
    local gw=$CASE/gw d=$CASE/c1
    FOCUS=$d
    charon_gw_conf "$gw"
    charons_start "$gw" || return 1
    esptun_client_conf "$d" 1
    sed -i 's/^addrs = .*/addrs = ["0.0.0.0"]/' "$d/esptun.toml"
    esptun_start "$d" 0.0.0.0 || return 1
    esptun_client_up "$d" || return 1
    transfer_start c1 "${VIPS[0]}"
    sleep 1
    move_host c1 192.0.2.11 192.0.2.111
    wait_for 15 grep -qs 'MOVED to 192.0.2.111:' "$d/esptun.log" || { WHY="the client did not move its SA (charon: $(charon_why "$gw"))"; return 1; }
    transfer_ok || return 1
    move_host c1 192.0.2.111 192.0.2.11
    NOTE="esptun client moved to 192.0.2.111 mid-transfer, charon gateway followed ($(grep -m1 -o 'UPD_SA_ADDR[^]]*' "$gw/charon.log" | head -1)); 40 MiB TCP intact"
}

# --- roaming: a TCP transfer that must survive a move ------------------------------------
# transfer_start host source: 40 MiB, 1 MiB every 0.1 s (so that it lasts ~4 s), from
# source on host to 10.1.0.1:5001 in gw; the listener writes its SHA-256 to CASE/received
transfer_start() {
    local ns; ns=$(ns_of "$1")
    [[ -f $RUN/chunk ]] || head -c 1M /dev/urandom >"$RUN/chunk"
    [[ -f $RUN/stream.sum ]] || for _ in $(seq 40); do cat "$RUN/chunk"; done | sha256sum | cut -d' ' -f1 >"$RUN/stream.sum"
    ip netns exec "$P-gw" sh -c "timeout 60 nc -l 10.1.0.1 5001 | sha256sum | cut -d' ' -f1 >'$CASE/received'" &
    XFER_LISTENER=$!; BG+=("$XFER_LISTENER")
    for _ in $(seq 50); do ip netns exec "$P-gw" ss -ltn | grep -q ':5001 ' && break; sleep 0.1; done
    ( for _ in $(seq 40); do cat "$RUN/chunk"; sleep 0.1; done ) \
        | timeout 60 ip netns exec "$ns" nc -N -s "$2" 10.1.0.1 5001 2>"$CASE/nc.err" &
    XFER_SENDER=$!; BG+=("$XFER_SENDER")
}

# transfer_ok: the transfer ended and arrived whole
transfer_ok() {
    wait "$XFER_SENDER" 2>/dev/null || true
    wait "$XFER_LISTENER" 2>/dev/null || true
    [[ -s $CASE/received && $(cat "$CASE/received") == "$(cat "$RUN/stream.sum")" ]] \
        || { WHY="the 40 MiB TCP transfer did not survive the move (SHA-256 $(cat "$CASE/received" 2>/dev/null) vs $(cat "$RUN/stream.sum")$(sed 's/^/; nc: /' "$CASE/nc.err" 2>/dev/null | head -1))"; return 1; }
}

# move_host host old new: the host's WAN address changes from old to new (/24), its
# default route with it. The new one comes first: with the old one gone first, a
# virtual IP would for a moment be the host's only IPv4 address, and its kernel would
# ARP for the router from it, onto the WAN.
move_host() {
    local ns; ns=$(ns_of "$1")
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.eth0.promote_secondaries=1
    ip -n "$ns" addr add "$3/24" dev eth0
    ip -n "$ns" addr del "$2/24" dev eth0
    ip -n "$ns" route replace default via $NAT4
}

case_mobike_strongswan_client() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    clients "$CASE" 1; FOCUS=${DIRS[0]}
    charons_start "${DIRS[@]}" || return 1
    up "${DIRS[@]}" || return 1
    transfer_start c1 "${VIP4[0]}"
    sleep 1
    move_host c1 192.0.2.11 192.0.2.111
    wait_for 15 grep -qs 'MOVED to 192.0.2.1:4500 <-> 192.0.2.111:' "$GW_DIR/esptun.log" \
        || { WHY="the gateway did not move the SA to 192.0.2.111"; FOCUS=$GW_DIR; return 1; }
    transfer_ok || return 1
    move_host c1 192.0.2.111 192.0.2.11
    NOTE="charon moved to 192.0.2.111 mid-transfer ($(grep -c 'UPDATE_SA_ADDRESSES\|UPD_SA_ADDR' "${DIRS[0]}/charon.log") log lines name UPDATE_SA_ADDRESSES); gateway: $(grep -m1 'MOVED' "$GW_DIR/esptun.log" | sed -E 's/^.*: MOVED/MOVED/'); 40 MiB TCP intact"
}

case_mobike_esptun_client() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local d=$CASE/c1
    FOCUS=$d
    esptun_client_conf "$d" 1
    # any address: the one it has now goes away
    sed -i 's/^addrs = .*/addrs = ["0.0.0.0"]/' "$d/esptun.toml"
    esptun_start "$d" 0.0.0.0 || return 1
    esptun_client_up "$d" || return 1
    transfer_start c1 "${VIPS[0]}"
    sleep 1
    move_host c1 192.0.2.11 192.0.2.111
    wait_for 15 grep -qs 'MOVED to 192.0.2.1:[0-9]* <-> 192.0.2.111:' "$GW_DIR/esptun.log" \
        || { WHY="the gateway did not move the SA to 192.0.2.111"; FOCUS=$GW_DIR; return 1; }
    wait_for 5 grep -qs 'MOVED to 192.0.2.111:' "$d/esptun.log" || { WHY="the client did not move its SA"; return 1; }
    transfer_ok || return 1
    move_host c1 192.0.2.111 192.0.2.11
    NOTE="esptun client moved to 192.0.2.111 mid-transfer: $(grep -m1 'our address is now' "$d/esptun.log" | sed -E 's/^.*IKE_SA [0-9a-f]*: //'); 40 MiB TCP intact"
}

case_nat_rebind() {
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local d=$CASE/n1
    FOCUS=$d
    charon_client_conf "$d" client-n1@example.org
    charons_start "$d" || return 1
    up "$d" || return 1
    transfer_start n1 "${VIP4[0]}"
    sleep 1
    # The NAT router gets another public address and forgets its mappings: n1's next
    # packets come from there, a port of its choice.
    ip -n "$P-nat" addr add 192.0.2.253/24 dev eth0
    nat_rule "snat to 192.0.2.253"
    wait_for 15 grep -qs 'MOVED to 192.0.2.1:4500 <-> 192.0.2.253:' "$GW_DIR/esptun.log" \
        || { WHY="the gateway did not follow the NAT to 192.0.2.253"; FOCUS=$GW_DIR; return 1; }
    transfer_ok || return 1
    NOTE="the NAT mapped n1 anew mid-transfer; gateway: $(grep 'MOVED' "$GW_DIR/esptun.log" | tail -1 | sed -E 's/^.*: MOVED/MOVED/'); 40 MiB TCP intact"
    nat_rule masquerade
    ip -n "$P-nat" addr del 192.0.2.253/24 dev eth0
}

# nat_rule action: the NAT router translates its LAN with `action` from now on, and
# forgets the mappings it made (in one step: no packet leaves untranslated)
nat_rule() {
    ip netns exec "$P-nat" nft -f - <<NFT
flush chain ip nat postrouting
add rule ip nat postrouting oifname "eth0" ip saddr 172.16.0.0/24 $1
NFT
    ip netns exec "$P-nat" conntrack -F >/dev/null 2>&1 || true
}

# --- native clients: charon configured as each platform's built-in client ---------------
# raw_field text name n: the value of the n-th name=value in swanctl's raw output
raw_field() { grep -o "$2=[^ ]*" <<<"$1" | sed -n "${3}p" | cut -d= -f2; }

# charon_algs dir: the IKE and ESP algorithms of charon's SAs, as
# "IKE encr-bits/integ/prf/group ESP encr-bits/integ"
charon_algs() {
    local raw
    raw=$(charon_sw "$1" --list-sas --raw 2>/dev/null | tr -d '\n')
    echo "IKE $(raw_field "$raw" encr-alg 1)-$(raw_field "$raw" encr-keysize 1)/$(raw_field "$raw" integ-alg 1)/$(raw_field "$raw" prf-alg 1)/$(raw_field "$raw" dh-group 1)" \
        "ESP $(raw_field "$raw" encr-alg 2)-$(raw_field "$raw" encr-keysize 2)/$(raw_field "$raw" integ-alg 2)"
}

# native_up dir what: up, pings 10.1.0.1 from the IPv4 VIP, and the gateway's status
# shows that VIP on the client's IKE SA (id: the identity esptun saw); what names the
# client in WHY
native_up() {
    local d=$1 what=$2 id=$3 theirs
    up "$d" || return 1
    ping_ok "${d##*/}" "${VIP4[0]}" 10.1.0.1 || { WHY="$what: no ping from ${VIP4[0]} to 10.1.0.1"; return 1; }
    theirs=$(esptun_vips "$id")
    [[ " $theirs " == *" ${VIP4[0]} "* ]] \
        || { WHY="esptun status shows virtual_ips '$theirs' for $id, charon holds ${VIP4[0]}"; FOCUS=$GW_DIR; return 1; }
}

# The Windows client: its default proposals, its certificate's subject DN as identity
# (Windows sends ID_DER_ASN1_DN with machine certificates), no RFC 7427.
windows_client() {
    local CLIENT_PROPOSALS=aes256-sha1-modp1024 CLIENT_ESP=aes256-sha1 CLIENT_GW_ID=vpn.example.org
    local CLIENT_ID="CN=windows-1@example.org, O=esptun" CLIENT_CHARON="signature_authentication = no"
    charon_client_conf "$1" windows-1@example.org
}

case_windows() {
    local GW_ID=vpn.example.org GW_REMOTE_ID="CN=*@example.org, O=esptun"
    local GW_PROPOSALS='"aes256gcm16-prfsha256-ecp256", "aes256-sha1-modp1024"'
    local GW_ESP='"aes256gcm16", "aes256-sha1"' GW_EXTRA="legacy_windows_proposals = true"
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local d=$CASE/c1 warned algs
    FOCUS=$d
    wait_for 5 grep -qs 'legacy_windows_proposals = true' "$GW_DIR/esptun.log" \
        || { WHY="esptun did not warn about the opt-in at start"; FOCUS=$GW_DIR; return 1; }
    warned=$(grep -m1 'legacy_windows_proposals = true' "$GW_DIR/esptun.log")
    [[ $warned == *"rw: "*"HMAC_SHA1_96, MODP_1024, PRF_HMAC_SHA1"* ]] \
        || { WHY="the warning does not name the connection and the weak algorithms: $warned"; FOCUS=$GW_DIR; return 1; }
    windows_client "$d"
    charons_start "$d" || return 1
    native_up "$d" windows "windows-1@example.org" || return 1
    algs=$(charon_algs "$d")
    [[ $algs == "IKE AES_CBC-256/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024 ESP AES_CBC-256/HMAC_SHA1_96" ]] \
        || { WHY="negotiated $algs, not Windows' defaults"; return 1; }
    grep -q "authentication of 'vpn.example.org' with ECDSA-256 signature successful" "$d/charon.log" \
        || { WHY="charon did not authenticate the gateway with a plain ECDSA-256 AUTH"; return 1; }
    NOTE="VIP ${VIP4[0]}, ping; $algs; gateway warned: ${warned#*WARN }"
}

case_windows_no_opt_in() {
    local d=$CASE/c1 refused
    FOCUS=$d
    # The opt-in is what lets the legacy proposals load at all.
    local GW_ID=vpn.example.org GW_REMOTE_ID="CN=*@example.org, O=esptun"
    local GW_PROPOSALS='"aes256gcm16-prfsha256-ecp256", "aes256-sha1-modp1024"' GW_ESP='"aes256gcm16", "aes256-sha1"'
    esptun_gw_conf "$CASE/check" 10.3.0.0/24
    if refused=$("$ESPTUN" check --config "$CASE/check/esptun.toml" 2>&1); then
        WHY="esptun check took aes256-sha1-modp1024 without legacy_windows_proposals"; return 1
    fi
    [[ $refused == *"proposals[1]: \`aes256-sha1-modp1024\` uses"*"Set legacy_windows_proposals = true"* ]] \
        || { WHY="esptun check's refusal does not name the proposal and the opt-in: $refused"; return 1; }
    # A gateway with strong proposals only: the Windows client finds nothing it offers.
    local GW_PROPOSALS='"aes256gcm16-prfsha256-ecp256", "aes256-sha256-modp2048"' GW_ESP='"aes256gcm16", "aes256-sha256"'
    gw_up "$CASE/gw" 10.3.0.0/24 || return 1
    windows_client "$d"
    charons_start "$d" || return 1
    if initiate "$d"; then WHY="the Windows client got a Child SA from a gateway without the opt-in"; return 1; fi
    grep -q 'received NO_PROPOSAL_CHOSEN notify error' "$d/charon.log" \
        || { WHY="not refused with NO_PROPOSAL_CHOSEN ($(charon_why "$d"))"; return 1; }
    grep -q 'no acceptable proposal' "$GW_DIR/esptun.log" \
        || { WHY="esptun did not log why it refused"; FOCUS=$GW_DIR; return 1; }
    WHY=""
    NOTE="esptun check: ${refused%%: weak*}...; charon: $(grep -m1 NO_PROPOSAL_CHOSEN "$d/charon.log" | sed -E 's/^.*\] //')"
}

case_macos() {
    local GW_ID=vpn.example.org
    local GW_PROPOSALS='"aes256-sha256-ecp256", "aes256-sha256-modp2048"' GW_ESP='"aes256-sha256"'
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local d=$CASE/c1 algs
    FOCUS=$d
    local CLIENT_PROPOSALS="aes256-sha256-ecp256, aes256-sha256-modp2048" CLIENT_ESP=aes256-sha256
    local CLIENT_GW_ID=vpn.example.org CLIENT_CHARON="signature_authentication = no"
    charon_client_conf "$d" mac-1@example.org
    charons_start "$d" || return 1
    native_up "$d" macos mac-1@example.org || return 1
    algs=$(charon_algs "$d")
    [[ $algs == "IKE AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/ECP_256 ESP AES_CBC-256/HMAC_SHA2_256_128" ]] \
        || { WHY="negotiated $algs"; return 1; }
    # No RFC 7427 either way: charon signs and verifies with the plain ECDSA method.
    grep -q "authentication of 'vpn.example.org' with ECDSA-256 signature successful" "$d/charon.log" \
        || { WHY="charon did not verify a plain ECDSA-256 AUTH from the gateway"; return 1; }
    grep -q "authentication of 'mac-1@example.org' (myself) with ECDSA-256 signature successful" "$d/charon.log" \
        || { WHY="charon did not sign with a plain ECDSA-256 AUTH"; return 1; }
    NOTE="VIP ${VIP4[0]}, ping; $algs; plain ECDSA-256 AUTH both ways"
}

case_android() {
    local GW_ID=vpn.example.org
    local GW_PROPOSALS='"aes256gcm16-prfsha384-ecp384", "aes128gcm16-prfsha256-x25519"' GW_ESP='"aes256gcm16", "aes128gcm16"'
    gw_up "$CASE/gw" 10.3.0.0/24 fd00:3::/112 || return 1
    local d=$CASE/c1 id=android-1@example.org p12=$CASE/android.p12 algs
    FOCUS=$d
    (umask 077; echo "android p12 password" >"$CASE/p12.pass")
    "$ESPTUN" pki export --dir "$PKI" --name $id --out "$p12" --password-file "$CASE/p12.pass" >"$CASE/export.out" 2>&1 \
        || { WHY="pki export failed: $(cat "$CASE/export.out")"; return 1; }
    local CLIENT_PROPOSALS=default CLIENT_ESP=default CLIENT_GW_ID=vpn.example.org
    charon_client_conf "$d" $id
    # What the app imports is the bundle: charon gets certificate, key and CA from it.
    rm -f "$d"/swanctl/x509/* "$d"/swanctl/x509ca/* "$d"/swanctl/private/*
    if ! { openssl pkcs12 -in "$p12" -passin "file:$CASE/p12.pass" -clcerts -nokeys 2>/dev/null \
            | openssl x509 -out "$d/swanctl/x509/client.crt" \
        && openssl pkcs12 -in "$p12" -passin "file:$CASE/p12.pass" -cacerts -nokeys 2>/dev/null \
            | openssl x509 -out "$d/swanctl/x509ca/ca.crt" \
        && openssl pkcs12 -in "$p12" -passin "file:$CASE/p12.pass" -nocerts -nodes 2>/dev/null \
            | openssl pkey -out "$d/swanctl/private/client.key"; }; then
        WHY="openssl could not take certificate, CA and key out of $p12"; return 1
    fi
    chmod 600 "$d/swanctl/private/client.key"
    charons_start "$d" || return 1
    native_up "$d" android $id || return 1
    algs=$(charon_algs "$d")
    # RFC 7427 (the app's default): charon names the signature scheme it verified.
    grep -q "authentication of 'vpn.example.org' with ECDSA_WITH_SHA" "$d/charon.log" \
        || { WHY="the gateway's AUTH was not an RFC 7427 signature"; return 1; }
    NOTE="VIP ${VIP4[0]}, ping; $algs; certificate and key from the PKCS#12 bundle, RFC 7427 AUTH"
}

show_logs() {
    local f shown=" "
    for f in "$GW_DIR/esptun.log" "$GW_DIR/charon.log" "$FOCUS/esptun.log" "$FOCUS/charon.log" "$FOCUS/charon-cmd.out"; do
        [[ -s $f && $shown != *" $f "* ]] || continue
        shown+="$f "
        echo "----- ${f#"$RUN"/} -----"; tail -n 25 "$f"
    done
}

# run_case name function esp|noesp: the case in its own directory, under a WAN capture
run_case() {
    local name=$1 fn=$2 rc=0 wan
    [[ $name =~ $ONLY ]] || return 0
    CASE=$RUN/$name GW_DIR=$RUN/$name/gw WHY="" NOTE="" FOCUS=""
    mkdir -p "$CASE"
    capture_start "$CASE/wan.pcap"
    "$fn" || rc=$?
    capture_stop
    if (( rc )); then
        fail "$name" "${WHY:-failed}"; show_logs
    elif ! wan=$(wan_check "$CASE/wan.pcap" "$3"); then
        fail "$name" "$wan"; show_logs
    else
        pass "$name" "$NOTE; $wan"
    fi
    stop_all
}

log "$("$ESPTUN" --version) against charon $(dpkg-query -W -f '${Version}' charon-systemd 2>/dev/null), $CLIENTS clients, in $RUN"
topology
make_pki
run_case vips case_vips esp
run_case same-address case_same_address esp
run_case clients case_clients esp
run_case pool-exhausted case_pool_exhausted esp
run_case rekeys case_rekeys esp
run_case wrong-identity case_wrong_identity noesp
run_case charon-cmd case_charon_cmd esp
run_case esptun-client-strongswan-gw case_esptun_client_strongswan_gw esp
run_case esptun-client-esptun-gw case_esptun_client_esptun_gw esp
run_case esptun-client-dual-stack case_esptun_client_dual_stack esp
run_case esptun-client-reconnects case_esptun_client_reconnects esp
# before the MOBIKE and NAT cases, whose TCP transfers may still be closing afterwards
run_case windows case_windows esp
run_case windows-no-opt-in case_windows_no_opt_in noesp
run_case macos case_macos esp
run_case android case_android esp
run_case esptun-client-full-tunnel case_esptun_client_full_tunnel esp
run_case mobike-strongswan-client case_mobike_strongswan_client esp
run_case mobike-esptun-client case_mobike_esptun_client esp
run_case mobike-esptun-client-strongswan-gw case_mobike_esptun_client_strongswan_gw esp
run_case nat-rebind case_nat_rebind esp

log "$PASSED passed, ${#FAILED[@]} failed"
(( ${#FAILED[@]} == 0 )) || { printf '  failed: %s\n' "${FAILED[@]}"; exit 1; }
