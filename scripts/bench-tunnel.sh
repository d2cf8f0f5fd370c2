#!/usr/bin/env bash
# Tunnel benchmark in one run on the same namespaces (scripts/lib/sites.sh), iperf3 from
# alice's host to bob's, through
#   - raw veth: the gateways only route, no tunnel (the ceiling),
#   - esptun <-> esptun, ESP in UDP and raw ESP (AES-128-GCM),
#   - esptun <-> esptun in kernel mode (dataplane.mode = "xfrm"), where this kernel has ESP,
#   - strongSwan <-> strongSwan with kernel-libipsec (its userspace ESP),
#   - boringtun <-> boringtun (userspace WireGuard, for those choosing between the two),
# each measured with TCP (1, 4 and 8 streams), UDP at fixed rates (loss and jitter), and
# 64-byte UDP packets as fast as examples/udpflood offers them (sendmmsg; iperf3's one
# syscall per datagram is slower than the gateways), with each gateway's CPU seconds per
# GB carried (user + system of its daemon; "-" where the kernel does the work) and its RSS;
# for 64-byte UDP also packets offered and delivered, each gateway's CPU seconds per
# million packets and the packets its interfaces dropped (a full TUN queue counts there).
# Results: a table on stdout, OUT/bench.json, and OUT/bench.png (gnuplot).
#
# usage: scripts/bench-tunnel.sh [--esptun PATH] [--udpflood PATH] [--out DIR] [--quick]
#                                [seconds per run]
#   (as root or with sudo; installs what it uses first: scripts/deps.sh bench, and
#   boringtun-cli with cargo). Without --esptun it builds esptun; with it, that binary (to
#   compare builds); likewise examples/udpflood without --udpflood. --quick: 1 s runs,
#   1 TCP stream, one UDP rate — a check that every setup works (what CI runs), no
#   figures worth quoting. Default seconds per run 10, OUT target/bench-tunnel.
#   SETUPS="esptun-udp ..." runs only those setups (default all): veth, esptun-udp,
#   esptun-raw, esptun-per-resource, esptun-spread, xfrm, strongswan, boringtun.
#   LAN_GRO=0 runs the 64-byte test on plain veth LAN links too (see lan_batches);
#   LAN_MODERATION_US sets how often those links poll (default 20, 0 per packet).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/sites.sh
source "$ROOT/scripts/lib/sites.sh"
# shellcheck source=lib/charon.sh
source "$ROOT/scripts/lib/charon.sh"
ESPTUN= UDPFLOOD= OUT=$ROOT/target/bench-tunnel QUICK=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --esptun) ESPTUN=$2; shift 2; [[ -x $ESPTUN ]] || { echo "no esptun binary at $ESPTUN" >&2; exit 2; } ;;
    --udpflood) UDPFLOOD=$2; shift 2; [[ -x $UDPFLOOD ]] || { echo "no udpflood binary at $UDPFLOOD" >&2; exit 2; } ;;
    --out) OUT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -*) echo "usage: $0 [--esptun PATH] [--udpflood PATH] [--out DIR] [--quick] [seconds per run]" >&2; exit 2 ;;
    *) break ;;
    esac
done
DURATION=${1:-10}
STREAMS=(1 4 8) UDP_RATES=(100M 1G)
if [[ $QUICK == 1 ]]; then DURATION=1 STREAMS=(1) UDP_RATES=(100M); fi
# want setup: whether SETUPS (a space-separated list; empty: all) names it.
want() { [[ -z ${SETUPS:-} || " $SETUPS " == *" $1 "* ]]; }
[[ $(id -u) == 0 ]] || { echo "run as root: sudo scripts/bench-tunnel.sh, or as root scripts/bench-tunnel.sh" >&2; exit 1; }
"$ROOT/scripts/deps.sh" bench
# boringtun is a crate, not a Debian package: the same version every time.
BORINGTUN_VERSION=0.7.1
if want boringtun && ! boringtun-cli --version 2>/dev/null | grep -q " $BORINGTUN_VERSION"; then
    echo "installing boringtun-cli $BORINGTUN_VERSION (cargo install, a minute or two)"
    cargo install --quiet --locked boringtun-cli --version "$BORINGTUN_VERSION"
fi
BORINGTUN=$(command -v boringtun-cli || echo "$HOME/.cargo/bin/boringtun-cli")

RUN=$(mktemp -d /tmp/esptun-bench.XXXXXX)
cleanup() {
    [[ -n ${IPERF_PID:-} ]] && kill "$IPERF_PID" 2>/dev/null
    sites_down
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [[ -z $ESPTUN ]]; then
    (cd "$ROOT" && cargo build --release --quiet --bins)
    ESPTUN=$TARGET/esptun
fi
if [[ -z $UDPFLOOD ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example udpflood)
    UDPFLOOD=$TARGET/examples/udpflood
fi
mkdir -p "$OUT"
: >"$RUN/results.jsonl"
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

# rss_kib pid: resident memory of a process, KiB (null if there is none).
rss_kib() {
    [[ -n ${1:-} ]] && awk '/^VmRSS:/ {print $2; found = 1} END {if (!found) print "null"}' "/proc/$1/status" 2>/dev/null || echo null
}

# iperf test-args...: one iperf3 run from alice's host, its JSON in RUN/iperf.json.
iperf() {
    ip netns exec "$NS_AH" iperf3 -c "$HOST_B" -t "$DURATION" -J "$@" >"$RUN/iperf.json" 2>/dev/null || true
}

# worker_packets ns: packets each of the esptun gateway's workers moved so far, as a
# JSON array (null for other gateways).
worker_packets() {
    ip netns exec "$1" "$ESPTUN" status --json 2>/dev/null | jq -c '[.workers[] | .packets_out + .packets_in]' 2>/dev/null || echo null
}

# table_row: the last record of RUN/results.jsonl as a row of the table, printed and kept in ROWS.
table_row() {
    local row
    row=$(tail -n 1 "$RUN/results.jsonl" | jq -r '[.setup, .test, .param, (.gbit_s * 100 | round / 100),
        (.cpu_s_per_gb.alice // "-"), (.cpu_s_per_gb.bob // "-"), (.rss_kib.alice // "-"),
        (.loss_percent // "-" | tostring | .[0:6]), (.packets_per_s // "-")] | @tsv')
    ROWS+=("$row")
    awk -F'\t' '{printf "%-30s %-5s %-5s %7s %8s %8s %8s %8s %9s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}' <<<"$row"
}

# measure setup alice-pid bob-pid [esptun]: every test through one setup; appends JSON
# lines to RUN/results.jsonl and table rows to ROWS. Empty pids: CPU and RSS are the
# kernel's. With "esptun", TCP records also carry each worker's share of the packets.
ROWS=()
measure() {
    local setup=$1 a=${2:-} b=${3:-} esptun=${4:-} hz
    hz=$(getconf CLK_TCK)
    # cpu_per_gb ticks gbits: CPU seconds per GB carried, null without a daemon.
    cpu_per_gb() {
        awk -v t="$1" -v hz="$hz" -v g="$2" -v d="$DURATION" -v pid="$3" \
            'BEGIN { if (pid == "" || g <= 0) print "null"; else printf "%.2f", (t / hz) / (g * d / 8) }'
    }
    run() { # kind param a0 b0 [shares [more]]: one record from RUN/iperf.json (and the JSON object more)
        local kind=$1 param=$2 a0=$3 b0=$4 shares=${5:-null} more=${6:-"{}"} a1 b1 gbits
        a1=$(cpu_ticks $a) b1=$(cpu_ticks $b)
        # What the receiver got (an iperf3 that failed left no JSON: zero).
        jq -e . "$RUN/iperf.json" >/dev/null 2>&1 || echo '{}' >"$RUN/iperf.json"
        gbits=$(jq -r '(.end.sum_received // .end.sum // {}).bits_per_second // 0 | . / 1e9' "$RUN/iperf.json")
        jq -nc --arg setup "$setup" --arg kind "$kind" --arg param "$param" \
            --argjson gbits "$gbits" \
            --argjson cpu_a "$(cpu_per_gb $((a1 - a0)) "$gbits" "$a")" \
            --argjson cpu_b "$(cpu_per_gb $((b1 - b0)) "$gbits" "$b")" \
            --argjson rss_a "$(rss_kib "$a")" --argjson rss_b "$(rss_kib "$b")" \
            --argjson shares "$shares" --argjson more "$more" \
            --slurpfile iperf "$RUN/iperf.json" '
            ($iperf[0].end.sum_received // {}) as $r |
            {setup: $setup, test: $kind, param: $param, gbit_s: $gbits,
             cpu_s_per_gb: {alice: $cpu_a, bob: $cpu_b}, rss_kib: {alice: $rss_a, bob: $rss_b}}
            + (if $shares then {worker_share_percent: $shares} else {} end)
            + (if $kind == "tcp" then {retransmits: ($iperf[0].end.sum_sent.retransmits // null)} else
               {loss_percent: ($r.lost_percent // null), jitter_ms: ($r.jitter_ms // null),
                packets_per_s: (if $r.packets then (($r.packets - $r.lost_packets) / $r.seconds | floor) else null end)} end)
            + $more' \
            >>"$RUN/results.jsonl"
        table_row
        [[ $kind != tcp ]] || echo "    TCP retransmits: $(tail -n 1 "$RUN/results.jsonl" | jq '.retransmits')"
        [[ $shares == null ]] || echo "    each worker's share of the packets, %: $(jq -c . <<<"$shares")"
        [[ $kind != udp ]] || tail -n 1 "$RUN/results.jsonl" | jq -r '"    datagrams dropped: at the receiving iperf3 (its socket buffer full) \(.drops.receiver_socket), at the gateways: alice \(.drops.alice), bob \(.drops.bob)"'
    }
    local streams rate a0 b0 wa wb shares
    for streams in "${STREAMS[@]}"; do
        a0=$(cpu_ticks $a) b0=$(cpu_ticks $b)
        [[ -n $esptun ]] && { wa=$(worker_packets "$NS_AG"); wb=$(worker_packets "$NS_BG"); }
        iperf -P "$streams"
        shares=null
        if [[ -n $esptun ]]; then
            shares=$(jq -nc --argjson a0 "$wa" --argjson a1 "$(worker_packets "$NS_AG")" \
                --argjson b0 "$wb" --argjson b1 "$(worker_packets "$NS_BG")" '
                def share(x; y): [range(x | length) | y[.] - x[.]] as $d | ($d | add) as $t
                    | $d | map(if $t > 0 then (. * 100 / $t | round) else 0 end);
                {alice: share($a0; $a1), bob: share($b0; $b1)}')
        fi
        run tcp "$streams" "$a0" "$b0" "$shares"
    done
    # 1300-byte datagrams fit every tunnel's MTU (esptun's TUN 1415, boringtun 1420,
    # libipsec 1400): the test measures the tunnels, not IP fragmentation. Its drops
    # say where datagrams were lost: at the receiving iperf3's socket (its buffer, the
    # default 208 KiB, full: the receiver shares the cores with the gateways, which
    # deliver in batches), or at the gateways (interfaces and UDP sockets).
    local r0 ga0 gb0
    for rate in "${UDP_RATES[@]}"; do
        a0=$(cpu_ticks $a) b0=$(cpu_ticks $b) r0=$(rcvbuf_drops "$NS_BH")
        ga0=$(gateway_drops "$NS_AG") gb0=$(gateway_drops "$NS_BG")
        iperf -u -b "$rate" -l 1300
        run udp "$rate" "$a0" "$b0" null "{\"drops\": {\"receiver_socket\": $(($(rcvbuf_drops "$NS_BH") - r0)),
            \"alice\": $(($(gateway_drops "$NS_AG") - ga0)), \"bob\": $(($(gateway_drops "$NS_BG") - gb0))}}"
    done
    # As fast as the sender goes: what the path delivers of 64-byte datagrams.
    local da0 db0 dh0 rpid
    ip netns exec "$NS_BH" "$UDPFLOOD" recv --bind "$HOST_B:$FLOOD_PORT" --secs $((DURATION + 5)) \
        >"$RUN/flood-recv.json" 2>"$RUN/flood-recv.err" &
    rpid=$!
    lan_batches on
    for _ in $(seq 50); do ip netns exec "$NS_BH" ss -lun | grep -q ":$FLOOD_PORT" && break; sleep 0.1; done
    a0=$(cpu_ticks $a) b0=$(cpu_ticks $b) da0=$(iface_drops "$NS_AG") db0=$(iface_drops "$NS_BG") dh0=$(iface_drops "$NS_AH")
    ip netns exec "$NS_AH" "$UDPFLOOD" send --to "$HOST_B:$FLOOD_PORT" --secs "$DURATION" \
        >"$RUN/flood-send.json" 2>/dev/null || true
    wait "$rpid" || true
    lan_batches off
    local a1 b1 da1 db1 dh1
    a1=$(cpu_ticks $a) b1=$(cpu_ticks $b) da1=$(iface_drops "$NS_AG") db1=$(iface_drops "$NS_BG") dh1=$(iface_drops "$NS_AH")
    for f in send recv; do jq -e . "$RUN/flood-$f.json" >/dev/null 2>&1 || echo '{}' >"$RUN/flood-$f.json"; done
    # Gbit/s of payload; CPU seconds per GB of payload and per million packets delivered.
    jq -nc --arg setup "$setup" --slurpfile s "$RUN/flood-send.json" --slurpfile r "$RUN/flood-recv.json" \
        --argjson hz "$hz" --arg a "$a" --arg b "$b" --argjson ta $((a1 - a0)) --argjson tb $((b1 - b0)) \
        --argjson da $((da1 - da0)) --argjson db $((db1 - db0)) --argjson dh $((dh1 - dh0)) \
        --argjson rss_a "$(rss_kib "$a")" --argjson rss_b "$(rss_kib "$b")" '
        ($s[0].sent // 0) as $sent | ($r[0].received // 0) as $got | ($s[0].seconds // 0) as $secs
        | (if $secs > 0 then $got / $secs else 0 end) as $pps
        | def per_m(t; pid): if pid == "" or $got == 0 then null
              else (t / $hz / ($got / 1e6) * 1000 | round / 1000) end;
        def per_gb(t; pid): if pid == "" or $got == 0 then null
              else (t / $hz / ($got * 64 / 1e9) * 100 | round / 100) end;
        {setup: $setup, test: "udp64", param: "max", gbit_s: ($pps * 64 * 8 / 1e9),
         cpu_s_per_gb: {alice: per_gb($ta; $a), bob: per_gb($tb; $b)},
         rss_kib: {alice: $rss_a, bob: $rss_b},
         loss_percent: (if $sent > 0 then (($sent - $got) * 100 / $sent * 100 | round / 100) else null end),
         packets_per_s: ($pps | floor),
         offered_per_s: (if $secs > 0 then ($sent / $secs | floor) else 0 end),
         cpu_s_per_mpkt: {alice: per_m($ta; $a), bob: per_m($tb; $b)},
         interface_drops: {sender: $dh, alice: $da, bob: $db}}' >>"$RUN/results.jsonl"
    table_row
    tail -n 1 "$RUN/results.jsonl" | jq -r 'def per_s(m): if m then (1e6 / m | floor) else "-" end;
        "    offered \(.offered_per_s) pkt/s; CPU s per million packets: alice \(.cpu_s_per_mpkt.alice // "-"), bob \(.cpu_s_per_mpkt.bob // "-")"
        + " (packets per gateway CPU-second: alice \(per_s(.cpu_s_per_mpkt.alice)), bob \(per_s(.cpu_s_per_mpkt.bob))); interface drops: sender \(.interface_drops.sender) (its link to alice full), alice \(.interface_drops.alice), bob \(.interface_drops.bob)"'
}

# gateway_drops ns: packets a gateway's namespace dropped so far, on transmit or in
# its sockets' receive buffers.
gateway_drops() {
    echo $(($(iface_drops "$1") + $(rcvbuf_drops "$1")))
}
# iface_drops ns: packets the namespace's interfaces dropped on transmit so far (a TUN
# whose reader falls behind drops here, its queue full).
iface_drops() {
    ip netns exec "$1" sh -c 'cat /sys/class/net/*/statistics/tx_dropped' 2>/dev/null | awk '{s += $1} END {print s + 0}'
}
# rcvbuf_drops ns: UDP datagrams the namespace's sockets dropped so far, their
# receive buffers full (RcvbufErrors, IPv4 and IPv6).
rcvbuf_drops() {
    ip netns exec "$1" cat /proc/net/snmp /proc/net/snmp6 | awk '
        $1 == "Udp:" && $2 !~ /^[0-9]/ { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") col = i; next }
        $1 == "Udp:" && col { s += $col }
        $1 == "Udp6RcvbufErrors" { s += $2 }
        END { print s + 0 }'
}
# lan_batches on|off: whether the gateways' LAN links receive as a NIC does, in NAPI
# batches (threaded, as a NIC's interrupt comes on another core than the sender) where
# GRO joins the datagrams of a flow (rx-udp-gro-forwarding) before they are routed, so
# that through a TUN with USO one read carries many small packets. A veth pair
# otherwise hands each packet up on its own from inside the sender's send, which no NIC
# does. On for the 64-byte test of every setup (LAN_GRO=0: never); TCP keeps the veth's
# way: the sender's TSO batches already, and the thread between cost one stream
# through esptun 5.35 -> 4.28 Gbit/s in an A/B (raw veth 12.4 -> 13.2).
# A NIC also moderates its interrupts (tens of microseconds as shipped): the LAN links
# poll every LAN_MODERATION_US (20) while packets keep coming (gro_flush_timeout with
# napi_defer_hard_irqs), where a veth would wake its thread for each packet; 0 wakes
# per packet. See the README for what it changes.
# (GRO is on in a veth's features but off in fact: off and on again turns its NAPI on.)
lan_batches() {
    [[ ${LAN_GRO:-1} == 1 ]] || return 0
    local ns
    for ns in "$NS_AG" "$NS_BG"; do
        if [[ $1 == on ]]; then
            ip netns exec "$ns" ethtool -K lan gro off
            ip netns exec "$ns" ethtool -K lan gro on rx-udp-gro-forwarding on
            ip netns exec "$ns" sh -c 'echo 1 >/sys/class/net/lan/threaded'
            ip netns exec "$ns" sh -c "echo $((${LAN_MODERATION_US:-20} * 1000)) >/sys/class/net/lan/gro_flush_timeout
                echo 2 >/sys/class/net/lan/napi_defer_hard_irqs"
        else
            ip netns exec "$ns" sh -c 'echo 0 >/sys/class/net/lan/gro_flush_timeout
                echo 0 >/sys/class/net/lan/napi_defer_hard_irqs
                echo 0 >/sys/class/net/lan/threaded'
            ip netns exec "$ns" ethtool -K lan gro off rx-udp-gro-forwarding off
        fi
    done
}
FLOOD_PORT=5301

gateway_routes() { # add|del: the gateways route between the LANs themselves
    ip -n "$NS_AG" route "$1" 10.2.0.0/24 via $WAN_B
    ip -n "$NS_BG" route "$1" 10.1.0.0/24 via $WAN_A
}

echo "setup                          test  param  Gbit/s  CPU s/GB (alice, bob)  RSS KiB  loss %  pkt/s"
if want veth; then
    gateway_routes add
    measure "raw veth, no tunnel"
    gateway_routes del
fi

# esptun_setup setup label encap [child toml]: esptun at both ends, measured as `label`.
esptun_setup() {
    want "$1" || return 0
    mkdir -p "$RUN/$1"; ln -s "$RUN/pki" "$RUN/$1/pki"
    SITES_CHILD=${4:-} sites_start "$ESPTUN" "$RUN/$1" alice "$3"
    sleep 1 # with per_resource_sas the initiator adds the second SA right after the first
    measure "$2" "$ALICE_PID" "$BOB_PID" esptun
    sites_stop
}
esptun_setup esptun-udp "esptun userspace (udp)" "encap = true"
esptun_setup esptun-raw "esptun userspace (raw)" ""
# One Child SA per worker (RFC 9611): the tunnel's flows spread over both workers.
esptun_setup esptun-per-resource "esptun per-resource SAs (udp)" "encap = true" "per_resource_sas = true"
# One Child SA, each side's inbound packets spread over its workers by sequence number
# (spread_inbound, for peers without RFC 9611).
esptun_setup esptun-spread "esptun spread SA (udp)" "encap = true" "spread_inbound = true"

# kernel_has_esp: whether an ESP state can be added here (in a scratch namespace).
kernel_has_esp() {
    local ns=esptun-espprobe-$$ rc=0
    ip netns add $ns || return 1
    ip -n $ns xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 mode tunnel \
        aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f1011121314 128 2>/dev/null || rc=1
    ip netns del $ns
    return $rc
}

if ! want xfrm; then
    :
elif kernel_has_esp; then
    mkdir -p "$RUN/xfrm"; ln -s "$RUN/pki" "$RUN/xfrm/pki"
    # The host's routing reaches the far LAN; the kernel's policies take the packets.
    gateway_routes add
    SITES_DATAPLANE='mode = "xfrm"' sites_start "$ESPTUN" "$RUN/xfrm" alice "encap = true"
    measure "esptun xfrm (kernel ESP, udp)"
    sites_stop
    gateway_routes del
else
    echo "(this kernel has no ESP: ip xfrm state add ... proto esp fails; kernel mode skipped)"
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

if want strongswan; then
    charon_gateway bob "$NS_BG" $WAN_B $WAN_A "$NETS_B" "$NETS_A"; BOB_CHARON=$CHARON_PID
    charon_gateway alice "$NS_AG" $WAN_A $WAN_B "$NETS_A" "$NETS_B"; ALICE_CHARON=$CHARON_PID
    charon_sw "$RUN/charon-alice" --initiate --child lan --timeout 20 >/dev/null 2>&1
    measure "strongSwan libipsec (udp)" "$ALICE_CHARON" "$BOB_CHARON"
    sites_stop
fi

# boringtun_gateway ns name my-key peer-pub peer-wan peer-nets: userspace WireGuard on
# interface NAME (each its own name: the UAPI sockets share /var/run/wireguard), routing
# the peer's LAN into it; appends its PID to SITES_PIDS and sets WG_PID.
boringtun_gateway() {
    local ns=$1 name=$2 net
    ip netns exec "$ns" "$BORINGTUN" --foreground --disable-drop-privileges --log "$RUN/$name.log" \
        "$name" >>"$RUN/$name.stdout" 2>&1 &
    WG_PID=$!
    SITES_PIDS+=("$WG_PID")
    for _ in $(seq 50); do [[ -S /var/run/wireguard/$name.sock ]] && break; sleep 0.1; done
    ip netns exec "$ns" wg set "$name" private-key "$3" listen-port 51820 \
        peer "$4" endpoint "$5:51820" allowed-ips "${6// /,}"
    ip -n "$ns" link set "$name" up mtu 1420
    for net in $6; do ip -n "$ns" route add "$net" dev "$name"; done
}

if want boringtun; then
    for side in a b; do
        (umask 077 && wg genkey >"$RUN/wg-$side.key")
        wg pubkey <"$RUN/wg-$side.key" >"$RUN/wg-$side.pub"
    done
    boringtun_gateway "$NS_AG" bta "$RUN/wg-a.key" "$(cat "$RUN/wg-b.pub")" $WAN_B "$NETS_B"; WG_A=$WG_PID
    boringtun_gateway "$NS_BG" btb "$RUN/wg-b.key" "$(cat "$RUN/wg-a.pub")" $WAN_A "$NETS_A"; WG_B=$WG_PID
    for _ in $(seq 50); do ip netns exec "$NS_AH" ping -c1 -W1 -q "$HOST_B" >/dev/null 2>&1 && break; done
    measure "boringtun (WireGuard)" "$WG_A" "$WG_B"
    sites_stop
fi

jq -s --arg host "$(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)" --argjson seconds "$DURATION" \
    '{machine: $host, seconds_per_run: $seconds, results: .}' "$RUN/results.jsonl" >"$OUT/bench.json"

# The chart: TCP throughput per setup and stream count, and 64-byte packets per second.
# One row per setup (in the order measured), one column per stream count.
jq -r '[.results[] | select(.test == "tcp")] as $tcp
    | ($tcp | map(.param | tonumber) | unique) as $streams
    | ($tcp | reduce .[].setup as $s ([]; if index([$s]) then . else . + [$s] end)) as $setups
    | (["setup"] + ($streams | map("\(.) stream" + (if . == 1 then "" else "s" end)))),
      ($setups[] as $s | ["\"\($s)\""] + ($streams | map(tostring as $n
          | ($tcp | map(select(.setup == $s and .param == $n) | .gbit_s) | first // 0))))
    | @tsv' "$OUT/bench.json" >"$RUN/tcp.dat"
jq -r '.results[] | select(.test == "udp64") | ["\"\(.setup)\"", (.packets_per_s // 0) / 1000] | @tsv' \
    "$OUT/bench.json" >"$RUN/pps.tsv"
columns=$(head -1 "$RUN/tcp.dat" | awk -F'\t' '{print NF}')
gnuplot <<PLOT
set terminal pngcairo size 1200,700 font ",10"
set output "$OUT/bench.png"
set multiplot layout 1,2 title "esptun tunnel benchmark ($(nproc) cores, $DURATION s per run)"
set datafile separator "\t"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set xtics rotate by -30
set key top right
set ylabel "TCP Gbit/s"
set yrange [0:*]
set title "TCP, alice host -> bob host"
plot for [i=2:$columns] "$RUN/tcp.dat" using i:xtic(1) title columnhead(i)
set ylabel "thousand packets/s delivered"
set yrange [0:*]
set title "64-byte UDP"
unset key
plot "$RUN/pps.tsv" using 2:xtic(1) lc rgb "#4477aa"
unset multiplot
PLOT

echo
echo "$(nproc) cores, $DURATION s per run; results in $OUT/bench.json, chart in $OUT/bench.png"
