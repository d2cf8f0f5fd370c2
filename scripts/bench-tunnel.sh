#!/usr/bin/env bash
# Tunnel throughput in one run on the same namespaces (scripts/lib/sites.sh): iperf3 TCP
# from alice's host to bob's, 1 and 4 streams, through
#   - raw veth: the gateways only route, no tunnel (the ceiling),
#   - esptun <-> esptun (AES-128-GCM, UDP-encapsulated unless ESP=raw),
#   - esptun <-> esptun in kernel mode (dataplane.mode = "xfrm"), where this kernel has ESP
#     (CPU s/GB "-": the kernel's softirqs do the work, not the daemons),
#   - strongSwan <-> strongSwan with kernel-libipsec (its userspace ESP), when installed,
# and the gateways' CPU seconds (user + system, both gateways) per GB carried.
#
# usage: scripts/bench-tunnel.sh [--esptun PATH] [seconds per run, default 10]   (as root,
# or with sudo; installs what the demo uses first, scripts/deps.sh demo; strongSwan comes
# with scripts/deps.sh test). Without --esptun it builds and runs target/release/esptun;
# with it, that binary (to compare two builds on the same machine).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/sites.sh
source "$ROOT/scripts/lib/sites.sh"
# shellcheck source=lib/charon.sh
source "$ROOT/scripts/lib/charon.sh"
ESPTUN=
if [[ ${1:-} == --esptun ]]; then
    ESPTUN=$2
    shift 2
    [[ -x $ESPTUN ]] || { echo "no esptun binary at $ESPTUN" >&2; exit 2; }
fi
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

if [[ -z $ESPTUN ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
    ESPTUN=$ROOT/target/release/esptun
fi
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

# kernel_has_esp: whether an ESP state can be added here (in a scratch namespace).
kernel_has_esp() {
    local ns=esptun-espprobe-$$ rc=0
    ip netns add $ns || return 1
    ip -n $ns xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 mode tunnel \
        aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 128 2>/dev/null || rc=1
    ip netns del $ns
    return $rc
}

if kernel_has_esp; then
    echo "== esptun <-> esptun, kernel mode (dataplane.mode = \"xfrm\")"
    mkdir -p "$RUN/xfrm"; ln -s "$RUN/pki" "$RUN/xfrm/pki"
    # The host's routing reaches the far LAN; the kernel's policies take the packets.
    ip -n "$NS_AG" route add 10.2.0.0/24 via $WAN_B
    ip -n "$NS_BG" route add 10.1.0.0/24 via $WAN_A
    SITES_DATAPLANE='mode = "xfrm"' sites_start "$ESPTUN" "$RUN/xfrm" alice "$encap"
    measure "esptun xfrm, kernel ESP (${ESP:-udp})"
    sites_stop
    ip -n "$NS_AG" route del 10.2.0.0/24 via $WAN_B
    ip -n "$NS_BG" route del 10.1.0.0/24 via $WAN_A
else
    echo "== this kernel has no ESP (ip xfrm state add ... proto esp fails): kernel mode skipped"
fi

# charon_gateway alice|bob ns my-wan peer-wan my-nets peer-nets: a charon with
# kernel-libipsec in a namespace (scripts/lib/charon.sh), using the same certificates;
# sets CHARON_PID.
charon_gateway() {
    local d=$RUN/charon-$1 peer=alice
    [[ $1 == alice ]] && peer=bob
    charon_strongswan_conf "$d"
    charon_site_conf "$d" "$RUN/pki" "$1" $peer "$3" "$4" "$5" "$6"
    local rc=0
    charon_start "$d" "$2" || rc=$?
    SITES_PIDS+=("$CHARON_PID")
    return $rc
}

if command -v charon-systemd >/dev/null; then
    echo "== strongSwan <-> strongSwan (kernel-libipsec)"
    charon_gateway bob "$NS_BG" $WAN_B $WAN_A "$NETS_B" "$NETS_A"; BOB_CHARON=$CHARON_PID
    charon_gateway alice "$NS_AG" $WAN_A $WAN_B "$NETS_A" "$NETS_B"; ALICE_CHARON=$CHARON_PID
    charon_sw "$RUN/charon-alice" --initiate --child lan --timeout 20 >/dev/null 2>&1
    measure "strongSwan <-> strongSwan (libipsec)" "$ALICE_CHARON" "$BOB_CHARON"
    sites_stop
else
    echo "== strongSwan not installed (scripts/deps.sh test installs it): skipped"
fi

echo
echo "$(nproc) cores, $DURATION s per run, iperf3 TCP alice host -> bob host"
printf '%-34s %7s %9s %14s\n' "setup" "streams" "Gbit/s" "CPU s/GB"
printf '%s\n' "${ROWS[@]}"
