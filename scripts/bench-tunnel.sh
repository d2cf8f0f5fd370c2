#!/usr/bin/env bash
# Tunnel throughput in one run on the same namespaces (scripts/lib/sites.sh): iperf3 TCP
# from alice's host to bob's, 1 and 4 streams, through
#   - raw veth: the gateways only route, no tunnel (the ceiling),
#   - esptun <-> esptun (AES-128-GCM, UDP-encapsulated unless ESP=raw),
#   - strongSwan <-> strongSwan with kernel-libipsec (its userspace ESP), when installed,
# and the gateways' CPU seconds (user + system, both gateways) per GB carried.
#
# usage: scripts/bench-tunnel.sh [seconds per run, default 10]   (as root, or with sudo;
# installs what the demo uses first, scripts/deps.sh demo; strongSwan comes with
# scripts/deps.sh test)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/sites.sh
source "$ROOT/scripts/lib/sites.sh"
DURATION=${1:-10}
[[ $(id -u) == 0 ]] || { echo "run as root: sudo scripts/bench-tunnel.sh, or as root scripts/bench-tunnel.sh" >&2; exit 1; }
"$ROOT/scripts/deps.sh" demo

RUN=$(mktemp -d /tmp/esptun-bench.XXXXXX)
cleanup() {
    [[ -n ${IPERF_PID:-} ]] && kill "$IPERF_PID" 2>/dev/null
    sites_down
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$ROOT" && cargo build --release --quiet)
ESPTUN=$ROOT/target/release/esptun
sites_pki "$RUN/pki" "$ESPTUN"
sites_up
ip netns exec "$NS_BH" iperf3 -s -B "$HOST_B" >"$RUN/iperf3-server.log" 2>&1 &
IPERF_PID=$!
for _ in $(seq 50); do ip netns exec "$NS_BH" ss -ltn | grep -q ":5201" && break; sleep 0.1; done

# cpu_ticks pid...: user + system clock ticks of these processes (all their threads).
cpu_ticks() {
    local pid total=0
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        # Fields 14 and 15, counted after the ")" that ends the command name.
        read -r -a f <<<"$(sed 's/.*) //' "/proc/$pid/stat")"
        total=$((total + f[11] + f[12]))
    done
    echo $total
}

ROWS=()
# measure label pids...: one iperf3 run per stream count; appends table rows.
measure() {
    local label=$1 streams; shift
    for streams in 1 4; do
        local before after out gbits
        before=$(cpu_ticks "$@")
        out=$(ip netns exec "$NS_AH" iperf3 -c "$HOST_B" -t "$DURATION" -P "$streams" -f m)
        after=$(cpu_ticks "$@")
        # The receiver's total (SUM with several streams).
        gbits=$(grep receiver <<<"$out" | tail -1 | awk '{for (i = 1; i < NF; i++) if ($(i+1) == "Mbits/sec") print $i / 1000}')
        local cpu="-"
        if (( $# > 0 )); then
            local ticks=$((after - before)) hz; hz=$(getconf CLK_TCK)
            cpu=$(awk -v t="$ticks" -v hz="$hz" -v g="$gbits" -v d="$DURATION" \
                'BEGIN { gb = g * d / 8; printf "%.2f", (t / hz) / gb }')
        fi
        ROWS+=("$(printf '%-34s %7s %9.2f %14s' "$label" "$streams" "$gbits" "$cpu")")
        echo "${ROWS[-1]}"
    done
}

echo "== raw veth (gateways route, no tunnel)"
ip -n "$NS_AG" route add 10.2.0.0/24 via $WAN_B
ip -n "$NS_BG" route add 10.1.0.0/24 via $WAN_A
measure "raw veth, no tunnel"
ip -n "$NS_AG" route del 10.2.0.0/24 via $WAN_B
ip -n "$NS_BG" route del 10.1.0.0/24 via $WAN_A

echo "== esptun <-> esptun"
mkdir -p "$RUN/esptun"; ln -s "$RUN/pki" "$RUN/esptun/pki"
encap="encap = true"; [[ ${ESP:-udp} == raw ]] && encap=""
sites_start "$ESPTUN" "$RUN/esptun" alice "$encap"
measure "esptun <-> esptun (${ESP:-udp})" "$ALICE_PID" "$BOB_PID"
sites_stop

# charon_gateway name ns my-wan peer-wan my-nets peer-nets: a charon with
# kernel-libipsec in a namespace, using the same certificates; sets CHARON_PID.
charon_gateway() {
    local d=$RUN/charon-$1 me=$1 peer=$2
    [[ $me == alice ]] && peer=bob || peer=alice
    mkdir -p "$d/swanctl/x509" "$d/swanctl/x509ca" "$d/swanctl/private"
    cp "$RUN/pki/ca.crt" "$d/swanctl/x509ca/"
    cp "$RUN/pki/$me.example.crt" "$d/swanctl/x509/"
    cp "$RUN/pki/$me.example.key" "$d/swanctl/private/"
    cat >"$d/strongswan.conf" <<CONF
charon-systemd {
    load = random nonce openssl aes gcm sha1 sha2 hmac kdf curve25519 x509 pubkey pkcs1 pkcs8 pem constraints kernel-libipsec kernel-netlink socket-default vici
    load_modular = no
    install_routes = yes
    journal { default = -1 }
    plugins { vici { socket = unix://$d/charon.vici } }
}
CONF
    cat >"$d/swanctl/swanctl.conf" <<CONF
connections {
    site {
        local_addrs = $4
        remote_addrs = $5
        proposals = aes128gcm16-prfsha256-x25519
        rekey_time = 0
        local { auth = pubkey
                certs = $me.example.crt
                id = $me.example }
        remote { auth = pubkey
                 id = $peer.example }
        children { lan { local_ts = ${6// /,}
                         remote_ts = ${7// /,}
                         esp_proposals = aes128gcm16
                         rekey_time = 0 } }
    }
}
secrets { private-$me { file = $me.example.key } }
CONF
    ip netns exec "$3" env STRONGSWAN_CONF="$d/strongswan.conf" charon-systemd >"$d/charon.log" 2>&1 &
    SITES_PIDS+=($!); CHARON_PID=$!
    for _ in $(seq 100); do
        STRONGSWAN_CONF=$d/strongswan.conf swanctl --stats --uri "unix://$d/charon.vici" >/dev/null 2>&1 && break
        sleep 0.05
    done
    STRONGSWAN_CONF=$d/strongswan.conf SWANCTL_DIR=$d/swanctl \
        swanctl --load-all --noprompt --uri "unix://$d/charon.vici" >/dev/null 2>&1
}

if command -v charon-systemd >/dev/null; then
    echo "== strongSwan <-> strongSwan (kernel-libipsec)"
    charon_gateway bob "" "$NS_BG" $WAN_B $WAN_A "$NETS_B" "$NETS_A"; BOB_CHARON=$CHARON_PID
    charon_gateway alice "" "$NS_AG" $WAN_A $WAN_B "$NETS_A" "$NETS_B"; ALICE_CHARON=$CHARON_PID
    STRONGSWAN_CONF=$RUN/charon-alice/strongswan.conf swanctl --initiate --child lan \
        --uri "unix://$RUN/charon-alice/charon.vici" --timeout 20 >/dev/null 2>&1
    measure "strongSwan <-> strongSwan (libipsec)" "$ALICE_CHARON" "$BOB_CHARON"
    sites_stop
else
    echo "== strongSwan not installed (scripts/deps.sh test installs it): skipped"
fi

echo
echo "$(nproc) cores, $DURATION s per run, iperf3 TCP alice host -> bob host"
printf '%-34s %7s %9s %14s\n' "setup" "streams" "Gbit/s" "CPU s/GB"
printf '%s\n' "${ROWS[@]}"
