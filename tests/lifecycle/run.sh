#!/usr/bin/env bash
# The SA lifecycle under load and under faults, in the demo's namespaces
# (scripts/lib/sites.sh: alice host - alice gw = WAN = bob gw - bob host). Alice's
# gateway is esptun; bob's is esptun or strongSwan's charon with kernel-libipsec
# (scripts/lib/charon.sh) with the equivalent swanctl.conf.
#
# soak/PEER: the Child SA rekeyed every ~10 s and the IKE SA every ~30 s, both sides
#   with these lifetimes (life_time 3 x rekey_time, over_time = rekey_time: nothing
#   expires) and a rand_time of 10 ms (against charon, whose times are whole seconds,
#   0 on both sides), so that either side initiates and some rekeys collide; for
#   --seconds under `ping -i 0.05` each way (IPv4 alice -> bob, IPv6 bob -> alice)
#   and an iperf3 TCP stream alice -> bob paced at --rate (100 Mbit/s; 20 Mbit/s
#   against charon: kernel-libipsec takes all ESP on charon's one UDP socket, whose
#   receive buffer, 208 KB and not settable in a namespace, overflows on unpaced
#   bursts). Asserts: no ping lost (each loss is shown with what both gateways
#   logged around it); no second of the stream below a tenth of the median (a
#   stall); each side back to one IKE SA and one Child SA, the same on both (esptun:
#   from its log and its data plane's USR1 report; charon: swanctl --list-sas); no
#   replay or bad_icv drops beyond DROP_SLACK; nothing on the WAN but IKE and ESP;
#   the gateways' RSS (sampled every --rss-every s) grown by at most RSS_LIMIT_MB
#   (4) over the soak's second half (the first warms the allocator up).
#   Reports the rekeys each side started, the collisions each side won and lost,
#   the drops (esptun's and the kernel's) and the RSS samples.
# faults/PEER/CASE, with dpd_delay 2 s and retransmissions after 1, 1.8 and 3.24 s
#   (retransmit_timeout 1, retransmit_tries 2) on both sides:
#   peer-killed          bob's gateway gets SIGKILL: alice logs it dead ("peer not
#                        answering") within dpd_delay + 6.04 s (+ DEAD_SLACK);
#   restart-we-redial    bob killed and restarted with start_action none; alice
#                        (dpd_action restart) finds out and connects again;
#   restart-peer-redials bob killed and restarted with start_action start: it
#                        connects with INITIAL_CONTACT and alice drops the stale SA;
#   peer-down-at-start   alice starts alone and keeps trying (keyingtries 0, back-off);
#                        bob appears after 15 s and alice connects.
#   In each, pings cross from alice's host to bob's (IPv4 and IPv6) from before the
#   fault until after it, new SAs must be up on both sides and carry pings within
#   seconds, both sides must end with one IKE SA and one Child SA (the stale ones
#   gone), and a capture of
#   alice's WAN must show no inner address in clear. The gateways have default routes
#   over the WAN, as gateways to the Internet do: a packet for bob's site that no
#   route into the tunnel catches leaves in clear and fails the case.
#
# usage: tests/lifecycle/run.sh [--seconds N] [--peer esptun|strongswan|both] [--keep]
#            [--only REGEX] [--child-rekey S] [--ike-rekey S] [--rand S] [--rate R]
#            [--rss-every S] [--esptun PATH]
#   --seconds N    soak length (default 180)          --only REGEX   cases to run (case names)
#   --child-rekey  Child SA rekey_time (default 10)    --ike-rekey    IKE SA rekey_time (default 30)
#   (against charon, both in whole seconds; --ike-rekey always)
#   --rand S       rand_time (0.01; strongswan 0)      --rate R       TCP rate (100M; strongswan 20M)
#   --rss-every S  RSS sampling period (default 30)    --keep         keep logs and captures
# Root only; traffic stays in the namespaces. Exits 1 if any case fails.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/lib/sites.sh
source "$HERE/../../scripts/lib/sites.sh"
# shellcheck source=../../scripts/lib/charon.sh
source "$HERE/../../scripts/lib/charon.sh"
ESPTUN=${ESPTUN:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/esptun}
SOAK=180 PEERS=both KEEP=0 ONLY=. CHILD_REKEY=10 IKE_REKEY=30 RAND="" RATE="" RSS_EVERY=30
RSS_LIMIT_MB=${RSS_LIMIT_MB:-4} DROP_SLACK=${DROP_SLACK:-2} DEAD_SLACK=${DEAD_SLACK:-1.5}
usage() { sed -n '/^# usage:/,/^# Root only/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do case $1 in
    --seconds) SOAK=$2; shift 2 ;;
    --peer) PEERS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    --child-rekey) CHILD_REKEY=$2; shift 2 ;;
    --ike-rekey) IKE_REKEY=$2; shift 2 ;;
    --rand) RAND=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --rss-every) RSS_EVERY=$2; shift 2 ;;
    --esptun) ESPTUN=$2; shift 2 ;;
    *) usage ;;
esac; done
case $PEERS in esptun | strongswan) ;; both) PEERS="esptun strongswan" ;; *) usage ;; esac
[[ $(id -u) == 0 ]] || { echo "lifecycle: needs root (namespaces, TUN)" >&2; exit 1; }
[[ -x $ESPTUN ]] || { echo "lifecycle: no esptun binary at $ESPTUN (cargo build --release)" >&2; exit 1; }
tools="iperf3 tcpdump jq perl timeout ss"
[[ $PEERS == *strongswan* ]] && tools+=" charon-systemd swanctl"
for tool in $tools; do
    command -v "$tool" >/dev/null || { echo "lifecycle: $tool missing (scripts/deps.sh test installs it)" >&2; exit 1; }
done

RUN=$(mktemp -d /tmp/esptun-lifecycle.XXXXXX)
BG=()   # background helpers of the current case (pings, iperf3, tcpdump, samplers)
bg_stop() {
    local pid
    for pid in "${BG[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${BG[@]}"; do wait "$pid" 2>/dev/null || true; done
    BG=()
}
cleanup() {
    bg_stop
    sites_down
    if (( KEEP )); then echo "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
PASSED=0 FAILED=() SUMMARY=()
pass() { PASSED=$((PASSED + 1)); log "PASS $1${2:+: $2}"; SUMMARY+=("PASS $1${2:+: $2}"); }
fail() {
    FAILED+=("$1"); log "FAIL $1: $2"; SUMMARY+=("FAIL $1: $2")
    local f
    for f in "$CASE"/alice.log "$CASE"/bob*.log "$CASE"/charon/charon.log; do
        [[ -f $f ]] || continue
        echo "----- ${f#"$CASE"/} (last lines) -----"
        grep -v ' DEBUG ' "$f" | tail -n 15 || true
    done
}
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# at epoch: the time of day of an epoch time, to the millisecond (as the .ts logs show it)
at() { date -d "@$1" +%T.%3N; }

# --- gateways ---------------------------------------------------------------------
# Every case has its directory $CASE; bob's gateway is $BOB_KIND (esptun or strongswan).
ESP=aes128gcm16 IKE_TOML=""

# esptun_site alice|bob true|false "connection lines" "child lines": $CASE/NAME.toml
esptun_site() {
    local me=$1 peer=bob wan=$WAN_A pwan=$WAN_B mine=$NETS_A theirs=$NETS_B
    [[ $me == bob ]] && { peer=alice wan=$WAN_B pwan=$WAN_A mine=$NETS_B theirs=$NETS_A; }
    SITES_CHILD=$4 SITES_IKE=$IKE_TOML SITES_ESP=$ESP \
        sites_config "$CASE" "$RUN/pki" "$me" $peer $wan $pwan "$2" "$mine" "$theirs" "$3"
}

# charon_bob start_action "connection lines" "child lines": charon's configuration
# for bob's gateway in $CASE/charon, the equivalent of esptun_site bob.
charon_bob() {
    local d=$CASE/charon
    charon_strongswan_conf "$d" "retransmit_timeout = 1
    retransmit_tries = 2
    retransmit_jitter = 0"
    CHARON_ESP=$ESP charon_site_conf "$d" "$RUN/pki" bob alice $WAN_B $WAN_A "$NETS_B" "$NETS_A" "$2" "$3
                start_action = $1"
}

start_alice() { SITES_STAMP=1 SITES_ESPTUN_ARGS=-v sites_gateway "$ESPTUN" "$CASE" alice; }

# start_bob: bob's gateway (esptun logs to $BOB_LOG, by default $CASE/bob.log); sets BOB_PID.
start_bob() {
    if [[ $BOB_KIND == esptun ]]; then
        SITES_STAMP=1 SITES_ESPTUN_ARGS=-v sites_gateway "$ESPTUN" "$CASE" bob "${BOB_LOG:-}"
    else
        local rc=0
        charon_start "$CASE/charon" "$NS_BG" || rc=$?
        SITES_PIDS+=("$CHARON_PID"); BOB_PID=$CHARON_PID
        return $rc
    fi
}

# bob_log: the file bob's gateway logs to now.
bob_log() { if [[ $BOB_KIND == esptun ]]; then echo "${BOB_LOG:-$CASE/bob.log}"; else echo "$CASE/charon/charon.log"; fi; }

# esptun_state ns: "IKE_SAs CHILD_SAs ike=SPI,... child=IN:OUT,..." of what the gateway in
# namespace ns lists with `esptun status` (none while it does not answer).
esptun_state() {
    local json
    json=$(ip netns exec "$1" "$ESPTUN" status --json 2>/dev/null) || { echo "0 0 ike= child="; return; }
    jq -r '[(.ike_sas | length), ([.ike_sas[].child_sas[]] | length),
        "ike=" + ([.ike_sas[].spi_i] | join(",")),
        "child=" + ([.ike_sas[].child_sas[] | .spi_in + ":" + .spi_out] | join(","))] | map(tostring) | join(" ")' <<<"$json"
}

# charon_state: the same for charon, from swanctl --list-sas (child as our IN:OUT, i.e.
# charon's spi-in:spi-out; IKE SAs by initiator SPI).
charon_state() {
    local raw ikes children
    raw=$(charon_sw "$CASE/charon" --list-sas --raw 2>/dev/null | tr -d '\n') || return 1
    ikes=$(grep -o 'initiator-spi=[0-9a-f]*' <<<"$raw" | cut -d= -f2 | sort | paste -sd, || true)
    children=$(grep -o 'spi-in=[0-9a-f]* spi-out=[0-9a-f]*' <<<"$raw" | sed 's/spi-in=//; s/ spi-out=/:/' | sort | paste -sd, || true)
    echo "$(grep -o 'initiator-spi=' <<<"$raw" | wc -l) $(grep -o 'spi-in=' <<<"$raw" | wc -l) ike=$ikes child=$children"
}

# mirror "ike=A child=IN:OUT,...": the other side's view of the same SAs.
mirror() {
    local ike=${1#ike=} child
    ike=${ike%% *}; child=${1##*child=}
    local c out=()
    IFS=, read -r -a pairs <<<"$child"
    for c in "${pairs[@]}"; do out+=("${c#*:}:${c%%:*}"); done
    echo "ike=$ike child=$(printf '%s\n' "${out[@]}" | sort | paste -sd,)"
}
sorted_view() { # "N M ike=.. child=.." -> "ike=sorted child=sorted"
    local ike=${1#* * ike=} child=${1##*child=}
    ike=${ike%% *}
    echo "ike=$(tr , '\n' <<<"$ike" | sort | paste -sd,) child=$(tr , '\n' <<<"$child" | sort | paste -sd,)"
}

# one_each: both sides hold exactly one IKE SA and one Child SA, and the same ones.
# Sets STATE_A and STATE_B.
one_each() {
    STATE_A=$(esptun_state "$NS_AG")
    if [[ $BOB_KIND == esptun ]]; then STATE_B=$(esptun_state "$NS_BG"); else STATE_B=$(charon_state) || return 1; fi
    [[ $STATE_A == "1 1 "* && $STATE_B == "1 1 "* ]] || return 1
    [[ $(sorted_view "$STATE_A") == "$(mirror "$(sorted_view "$STATE_B")")" ]]
}

# dataplane_sas log pid: how many Child SAs the gateway's data plane holds (USR1 report).
dataplane_sas() { sites_report "$1" "$2" | grep -c '^CHILD_SA' || true; }

# drops log pid: "no_sa=N replay=N bad_icv=N ..." from the gateway's USR1 report.
drops() { sites_report "$1" "$2" | grep '^drops:' | sed 's/^drops: //'; }
drop() { grep -o "\b$1=[0-9]*" <<<"$2" | cut -d= -f2; } # name "report"

# kernel_drops ns: the kernel's drop counters in a gateway's namespace, as "name=N ...":
# UDP receive buffer overflows, and each interface's receive and transmit drops.
kernel_drops() {
    ip netns exec "$1" nstat -asz UdpRcvbufErrors Udp6RcvbufErrors 2>/dev/null | awk 'NR > 1 { printf "%s=%s ", $1, $2 }'
    ip -n "$1" -s -j link show | jq -r '.[] | select(.ifname != "lo") | "\(.ifname).rx_drop=\(.stats64.rx.dropped) \(.ifname).tx_drop=\(.stats64.tx.dropped)"' | paste -sd' '
}
# grown before after: the counters of `after` that exceed those of `before`, as name+N.
grown() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        n = split(a, x, " "); for (i = 1; i <= n; i++) { split(x[i], kv, "="); old[kv[1]] = kv[2] }
        n = split(b, y, " "); for (i = 1; i <= n; i++) { split(y[i], kv, "="); d = kv[2] - old[kv[1]]; if (d > 0) { printf "%s%s+%d", sep, kv[1], d; sep = " " } }
    }'
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# settle seconds: waits until one_each holds (and the esptun data planes agree).
settle() {
    local until=$((SECONDS + $1))
    while (( SECONDS < until )); do
        if one_each; then
            local a b=1
            a=$(dataplane_sas "$CASE/alice.log" "$ALICE_PID")
            [[ $BOB_KIND == esptun ]] && b=$(dataplane_sas "$(bob_log)" "$BOB_PID")
            (( a == 1 && b == 1 )) && one_each && return 0
        fi
        sleep 0.2
    done
    return 1
}

# ping_ok: one IPv4 and one IPv6 ping from alice's host to bob's pass.
ping_ok() {
    ip netns exec "$NS_AH" ping -c 1 -W 1 -q "$HOST_B" >/dev/null 2>&1 &&
        ip netns exec "$NS_AH" ping -6 -c 1 -W 1 -q "$HOST6_B" >/dev/null 2>&1
}
# wait_tunnel seconds [old]: until both sides hold one IKE SA and one Child SA, the
# same ones and not those of `old` (a sorted_view of alice's), and pings pass: the
# pings cannot have gone in clear, since they are tried only once the SAs are there.
# Prints the seconds it took.
wait_tunnel() {
    local t0; t0=$(now)
    local until=$((SECONDS + $1))
    while (( SECONDS < until )); do
        if one_each && [[ $(sorted_view "$STATE_A") != "${2:-none}" ]] && ping_ok; then
            elapsed "$t0"; return 0
        fi
        sleep 0.1
    done
    return 1
}

# Gateways with a default route over the WAN: what no route into a tunnel catches
# leaves in clear (and is seen by the captures), as from a gateway to the Internet.
default_routes() {
    ip -n "$NS_AG" route add default via $WAN_B
    ip -n "$NS_AG" -6 route add default via $WAN6_B
    ip -n "$NS_BG" route add default via $WAN_A
    ip -n "$NS_BG" -6 route add default via $WAN6_A
}

# The WAN link's own IPv6 chatter (neighbour discovery, MLD), not tunnel traffic.
LINK_LOCAL="(icmp6 or src net fe80::/10 or dst net ff02::/16)"
INNER='10\.[12]\.0\.|fd00:'

# capture_start file [filter]: tcpdump on alice's WAN.
capture_start() {
    ip netns exec "$NS_AG" tcpdump -i wan -n -U -s 200 -w "$1" ${2:+"$2"} 2>/dev/null &
    BG+=($!); CAPTURE_PID=$!
    sleep 0.5
}
capture_stop() { sleep 0.3; kill "$CAPTURE_PID" 2>/dev/null || true; wait "$CAPTURE_PID" 2>/dev/null || true; }
# in_clear pcap: how many packets show an inner address (tcpdump's decoding); the
# first three go to stderr.
in_clear() {
    local lines
    lines=$(tcpdump -r "$1" -n 2>/dev/null | grep -E "$INNER" || true)
    if [[ -z $lines ]]; then echo 0; return; fi
    wc -l <<<"$lines"
    head -3 <<<"$lines" | sed 's/^/    /' >&2
}

# --- log figures -----------------------------------------------------------------------
count() { grep -c -E "$1" "$2" 2>/dev/null || true; }
# Child and IKE rekeys a side's esptun log shows it initiating (sent) or answering (received).
child_rekeys() { count "$1 CREATE_CHILD_SA request .*\[N\(REKEY_SA\)" "$2"; }
ike_rekeys() { count "$1 CREATE_CHILD_SA request [0-9]+ .*\[SA No KE\]" "$2"; }

# collisions esptun|strongswan log: "Child W/L, IKE W/L": rekey collisions the side
# won and lost, as it logged them.
collisions() {
    if [[ $1 == esptun ]]; then
        echo "Child $(count ': rekey collision: our' "$2")/$(count ': rekey collision: the peer' "$2"), IKE $(count 'IKE_SA rekey collision: our' "$2")/$(count 'IKE_SA rekey collision: the peer' "$2")"
    else
        echo "Child $(count 'CHILD_SA rekey collision won' "$2")/$(count 'CHILD_SA rekey collision lost' "$2"), IKE $(count 'IKE_SA rekey collision won' "$2")/$(count 'IKE_SA rekey collision lost' "$2")"
    fi
}

# loss_report pingfile label: each lost echo request (no reply at all), when it was
# sent, and the lines both gateways logged within 1 s of it.
loss_report() {
    local f=$1 seq t
    local lost
    lost=$(awk '/bytes from/ { for (i = 1; i <= NF; i++) if ($i ~ /^icmp_seq=/) { split($i, a, "="); got[a[2]] = 1 } }
        /no answer yet/ { for (i = 1; i <= NF; i++) if ($i ~ /^icmp_seq=/) { split($i, a, "="); t = $1; gsub(/[\[\]]/, "", t); sent[a[2]] = t } }
        END { for (s in sent) if (!(s in got)) print s, sent[s] }' "$f" | sort -n)
    [[ -n $lost ]] || return 0
    echo "  $2: lost icmp_seq (time the next request went out, ~50 ms after):"
    while read -r seq t; do
        echo "    seq $seq at $(at "$t")"
    done <<<"$lost" | head -20
    local first last
    first=$(head -1 <<<"$lost" | cut -d' ' -f2); last=$(tail -1 <<<"$lost" | cut -d' ' -f2)
    local from to g
    from=$(at "$(awk -v t="$first" 'BEGIN { printf "%.3f", t - 1.5 }')")
    to=$(at "$(awk -v t="$last" 'BEGIN { printf "%.3f", t + 0.5 }')")
    for g in "$CASE/alice.log.ts" "$(bob_log).ts"; do
        [[ -f $g ]] || continue
        echo "  ${g##*/} from $from to $to:"
        # head may close the pipe early: that is no failure.
        { awk -v a="$from" -v b="$to" '$1 >= a && $1 <= b && index($0, "{\"") == 0' "$g" | cut -c1-200 | head -30 | sed 's/^/    /'; } || true
    done
}

# --- soak ------------------------------------------------------------------------------
soak() {
    local peer=$1 name="soak/$1"
    [[ $name =~ $ONLY ]] || return 0
    CASE=$RUN/soak-$peer; BOB_KIND=$peer BOB_LOG=""; mkdir -p "$CASE"
    ESP=aes128gcm16-x25519 IKE_TOML=""
    local child_life; child_life=$(awk -v r="$CHILD_REKEY" 'BEGIN { print 3 * r }')
    # Against charon, whose times are whole seconds, rand_time is 0 on both sides: the
    # side that answered the last rekey installed first and is due first, by about
    # the time the answer took, which is about what a request takes to arrive.
    local rate=${RATE:-100M} rand=${RAND:-0.01}
    [[ $peer == strongswan ]] && rate=${RATE:-20M} rand=${RAND:-0}
    local conn="rekey_time = $IKE_REKEY
over_time = $IKE_REKEY
rand_time = $rand"
    local child="rekey_time = $CHILD_REKEY
life_time = $child_life
rand_time = $rand"
    log "case $name: $SOAK s; Child SA rekey_time ${CHILD_REKEY} s, IKE SA ${IKE_REKEY} s, rand_time $rand s$([[ $peer == strongswan ]] && echo " (charon 0)"), ESP $ESP; ping -i 0.05 both ways, iperf3 TCP paced at $rate"
    esptun_site alice true "$conn" "$child"
    if [[ $peer == esptun ]]; then
        esptun_site bob false "$conn" "$child"
    else
        charon_bob none "rekey_time = ${IKE_REKEY}s
        over_time = ${IKE_REKEY}s
        rand_time = 0" "rekey_time = ${CHILD_REKEY}s
                life_time = ${child_life%.*}s
                rand_time = 0"
    fi
    start_bob || { fail "$name" "bob's gateway did not start"; sites_stop; return; }
    [[ $peer == esptun ]] && sites_wait "$(bob_log)" "data plane:"
    start_alice
    if ! wait_tunnel 20 >/dev/null; then fail "$name" "no tunnel"; bg_stop; sites_stop; return; fi
    local before_a before_b="" state0
    settle 20 || true
    state0="alice $STATE_A, bob $STATE_B"
    before_a=$(drops "$CASE/alice.log" "$ALICE_PID")
    [[ $peer == esptun ]] && before_b=$(drops "$(bob_log)" "$BOB_PID")
    local kernel_a kernel_b
    kernel_a=$(kernel_drops "$NS_AG"); kernel_b=$(kernel_drops "$NS_BG")

    # Nothing but IKE and ESP on the WAN (the filter keeps only what is neither).
    capture_start "$CASE/wan-other.pcap" "(ip or ip6) and not (udp port 500 or udp port 4500 or esp) and not $LINK_LOCAL"
    ip netns exec "$NS_BH" iperf3 -s -1 -J -B "$HOST_B" >"$CASE/iperf-server.json" 2>&1 &
    BG+=($!); local server=$!
    for _ in $(seq 50); do ip netns exec "$NS_BH" ss -ltn | grep -q ":5201" && break; sleep 0.1; done
    local t0; t0=$(now)
    local npings=$((SOAK * 20))
    ip netns exec "$NS_AH" ping -D -O -i 0.05 -c $npings -W 2 "$HOST_B" >"$CASE/ping4.txt" 2>&1 &
    BG+=($!); local p4=$!
    ip netns exec "$NS_BH" ping -6 -D -O -i 0.05 -c $npings -W 2 "$HOST6_A" >"$CASE/ping6.txt" 2>&1 &
    BG+=($!); local p6=$!
    ip netns exec "$NS_AH" iperf3 -c "$HOST_B" -t "$SOAK" -i 1 -b "$rate" --fq-rate "$rate" -J >"$CASE/iperf-client.json" 2>&1 &
    BG+=($!); local client=$!
    # RSS samples: seconds since the start, alice's and bob's VmRSS in kB.
    (
        sleep 5
        while :; do
            echo "$(elapsed "$t0") $(rss_kb "$ALICE_PID") $(rss_kb "$BOB_PID")"
            sleep "$RSS_EVERY"
        done
    ) >"$CASE/rss.txt" &
    BG+=($!); local sampler=$!
    wait $p4 || true; wait $p6 || true; wait $client || true; wait $server || true
    echo "$(elapsed "$t0") $(rss_kb "$ALICE_PID") $(rss_kb "$BOB_PID")" >>"$CASE/rss.txt"
    kill $sampler 2>/dev/null || true; wait $sampler 2>/dev/null || true
    capture_stop

    local whys=() facts=()
    # Pings: every echo request answered.
    local fam f sent got
    for fam in 4 6; do
        f=$CASE/ping$fam.txt
        sent=$(grep -o '[0-9]* packets transmitted' "$f" | cut -d' ' -f1)
        got=$(grep -o '[0-9]* received' "$f" | cut -d' ' -f1)
        facts+=("ping IPv$fam ${got:-?}/${sent:-?}")
        if [[ -z $sent || $sent != "$got" ]]; then
            whys+=("IPv$fam pings lost: $((${sent:-0} - ${got:-0})) of ${sent:-?}")
            loss_report "$f" "IPv$fam"
        fi
    done
    # TCP: the receiver's per-second throughput (whole seconds only); a stall is a
    # second below a tenth of the median.
    local tput
    tput=$(jq -r '.intervals[].sum | select(.seconds > 0.9) | "\(.start) \(.bits_per_second)"' "$CASE/iperf-server.json" 2>/dev/null | sort -k2 -g || true)
    if [[ -z $tput ]]; then
        whys+=("iperf3 gave no intervals: $(head -c 300 "$CASE/iperf-client.json" | tr '\n' ' ')")
    else
        local n median min min_at stalls
        n=$(wc -l <<<"$tput")
        median=$(awk -v n="$n" 'NR == int((n + 1) / 2) { print $2 }' <<<"$tput")
        min=$(head -1 <<<"$tput" | cut -d' ' -f2); min_at=$(head -1 <<<"$tput" | cut -d' ' -f1)
        stalls=$(awk -v m="$median" '$2 < m / 10 { printf "%s%.0f s", sep, $1; sep = ", " }' <<<"$tput")
        local start_ts; start_ts=$(jq -r '.start.timestamp.timesecs' "$CASE/iperf-server.json")
        facts+=("TCP $n s, median $(awk -v b="$median" 'BEGIN { printf "%.0f", b / 1e6 }') Mbit/s, slowest second $(awk -v b="$min" 'BEGIN { printf "%.1f", b / 1e6 }') Mbit/s at +$(printf '%.0f' "$min_at") s, $(jq -r '.end.sum_sent.retransmits // "?"' "$CASE/iperf-client.json") retransmits")
        if [[ -n $stalls ]]; then
            whys+=("TCP stalled (a second below a tenth of the median) at ${stalls} after $(at "$start_ts")")
        fi
        (( n >= SOAK - 2 )) || whys+=("TCP ran $n whole seconds of $SOAK")
    fi
    # Rekeys and collisions, from the logs.
    local a=$CASE/alice.log b; b=$(bob_log)
    local ca cb ia ib
    ca=$(child_rekeys sent "$a"); cb=$(child_rekeys received "$a")
    ia=$(ike_rekeys sent "$a"); ib=$(ike_rekeys received "$a")
    facts+=("Child rekeys started by alice $ca, by bob $cb; IKE rekeys by alice $ia, by bob $ib")
    facts+=("collisions won/lost: alice $(collisions esptun "$a"), bob $(collisions "$peer" "$b")")
    local expect_child; expect_child=$(awk -v s="$SOAK" -v r="$CHILD_REKEY" 'BEGIN { print int(s / r / 2) }')
    (( ca + cb >= expect_child )) || whys+=("only $((ca + cb)) Child SA rekeys in $SOAK s")
    (( IKE_REKEY * 2 > SOAK || ia + ib >= 1 )) || whys+=("no IKE SA rekey in $SOAK s")
    # Nothing went down but IKE SAs replaced by a rekey (deleted), nothing failed
    # (a rekey refused with TEMPORARY_FAILURE in a collision is retried: counted only).
    local logs=("$a") bad retried
    [[ $peer == esptun ]] && logs+=("$b")
    bad=$(grep -h -E ' DOWN site: | FAILED|giving up|hard lifetime' "${logs[@]}" | grep -v -E 'DOWN site: (deleted|deleted by peer)$' | head -5 || true)
    [[ -z $bad ]] || whys+=("unexpected: $(tr '\n' ';' <<<"$bad")")
    retried=$(grep -h -o -E 'rekey failed: .*' "${logs[@]}" | sort | uniq -c | sed 's/^ *//' | paste -sd, || true)
    [[ -z $retried ]] || facts+=("rekeys refused and retried: $retried")
    # Back to one IKE SA and one Child SA on each side, the same ones.
    if settle "$(awk -v r="$CHILD_REKEY" 'BEGIN { print int(2 * r + 10) }')"; then
        facts+=("ends with 1 IKE SA + 1 Child SA each (began: $(cut -d' ' -f1-2 <<<"${STATE_A}") / $(cut -d' ' -f1-2 <<<"${STATE_B}"))")
    else
        whys+=("SAs at the end: alice $STATE_A, bob $STATE_B (began: $state0)")
    fi
    # Drops: before -> after.
    local after_a after_b="" r
    after_a=$(drops "$a" "$ALICE_PID")
    local dnote="alice"
    for r in no_sa replay bad_icv selector_mismatch; do
        dnote+=" $r+$(($(drop $r "$after_a") - $(drop $r "$before_a")))"
    done
    for r in replay bad_icv; do
        (( $(drop $r "$after_a") - $(drop $r "$before_a") <= DROP_SLACK )) || whys+=("alice counted $(($(drop $r "$after_a") - $(drop $r "$before_a"))) $r drops")
    done
    if [[ $peer == esptun ]]; then
        after_b=$(drops "$b" "$BOB_PID")
        dnote+=", bob"
        for r in no_sa replay bad_icv selector_mismatch; do
            dnote+=" $r+$(($(drop $r "$after_b") - $(drop $r "$before_b")))"
        done
        for r in replay bad_icv; do
            (( $(drop $r "$after_b") - $(drop $r "$before_b") <= DROP_SLACK )) || whys+=("bob counted $(($(drop $r "$after_b") - $(drop $r "$before_b"))) $r drops")
        done
    fi
    facts+=("drops $dnote")
    facts+=("kernel drops alice's gateway: $(grown "$kernel_a" "$(kernel_drops "$NS_AG")"), bob's: $(grown "$kernel_b" "$(kernel_drops "$NS_BG")")")
    # The WAN carried nothing else.
    local other inner
    other=$(tcpdump -r "$CASE/wan-other.pcap" -n 2>/dev/null | wc -l)
    inner=$(in_clear "$CASE/wan-other.pcap")
    (( other == 0 )) || whys+=("$other packets on the WAN neither IKE nor ESP, $inner showing an inner address")
    # Memory.
    local first last mid
    first=$(head -1 "$CASE/rss.txt"); last=$(tail -1 "$CASE/rss.txt")
    # Growth counts from the first sample of the soak's second half: the first half
    # warms up (the allocator's per-thread arenas fill) and then RSS must stay flat.
    mid=$(awk -v half=$((SOAK / 2)) '$1 >= half { print; exit }' "$CASE/rss.txt")
    local ga gb
    ga=$(( ($(cut -d' ' -f2 <<<"$last") - $(cut -d' ' -f2 <<<"$mid")) / 1024 ))
    gb=$(( ($(cut -d' ' -f3 <<<"$last") - $(cut -d' ' -f3 <<<"$mid")) / 1024 ))
    facts+=("RSS alice $(mb "$(cut -d' ' -f2 <<<"$first")") -> $(mb "$(cut -d' ' -f2 <<<"$last")") MB, bob ($peer) $(mb "$(cut -d' ' -f3 <<<"$first")") -> $(mb "$(cut -d' ' -f3 <<<"$last")") MB ($(wc -l <"$CASE/rss.txt") samples: $(awk '{ printf "%s%.0fs:%.1f/%.1f", sep, $1, $2 / 1024, $3 / 1024; sep = " " }' "$CASE/rss.txt"))")
    (( ga <= RSS_LIMIT_MB )) || whys+=("alice's RSS grew by $ga MB in the second half")
    (( gb <= RSS_LIMIT_MB )) || whys+=("bob's RSS grew by $gb MB in the second half")
    local msg; msg=$(joined "${facts[@]}")
    if (( ${#whys[@]} == 0 )); then pass "$name" "$msg"; else
        log "  $msg"
        fail "$name" "$(joined "${whys[@]}")"
    fi
    bg_stop
    sites_stop
}
joined() { local text="" x; for x in "$@"; do text+="${text:+; }$x"; done; echo "$text"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# --- faults ----------------------------------------------------------------------------
# dpd_delay 2 s; retransmissions after 1, 1.8 and 3.24 s: the peer is given up 6.04 s
# after the liveness check is sent.
FAULT_IKE="retransmit_timeout = 1
retransmit_base = 1.8
retransmit_tries = 2"
DEAD_BOUND=$(awk -v s="$DEAD_SLACK" 'BEGIN { print 2 + 1 + 1.8 + 3.24 + s }')

# fault_setup name alice-start alice-child bob-start: both configured, the case's
# directory made; bob-start is true (initiates) or false.
fault_setup() {
    CASE=$RUN/fault-$BOB_KIND-$1; BOB_LOG=""; mkdir -p "$CASE"
    ESP=aes128gcm16 IKE_TOML=$FAULT_IKE
    esptun_site alice "$2" 'dpd_delay = 2' "$3"
    if [[ $BOB_KIND == esptun ]]; then
        esptun_site bob "$4" 'dpd_delay = 2' ""
    else
        charon_bob "$([[ $4 == true ]] && echo start || echo none)" "rekey_time = 0
        dpd_delay = 2s" "rekey_time = 0"
    fi
}

# traffic_start: pings from alice's host to bob's, both families, every 0.1 s, and a
# capture of alice's WAN; traffic_stop ends both and prints the capture's verdict.
traffic_start() {
    capture_start "$CASE/wan.pcap"
    ip netns exec "$NS_AH" ping -D -O -i 0.1 "$HOST_B" >"$CASE/ping4.txt" 2>&1 &
    BG+=($!)
    ip netns exec "$NS_AH" ping -6 -D -O -i 0.1 "$HOST6_B" >"$CASE/ping6.txt" 2>&1 &
    BG+=($!)
}
# traffic_stop: sets CLEAR (packets showing an inner address) and CAPTURED.
traffic_stop() {
    capture_stop
    bg_stop
    CAPTURED=$(tcpdump -r "$CASE/wan.pcap" -n 2>/dev/null | wc -l)
    CLEAR=$(in_clear "$CASE/wan.pcap")
}

# fault_end name why notes: the verdict, capture included.
fault_end() {
    local name=$1 why=$2 notes=$3
    traffic_stop
    notes+="; WAN capture: $CAPTURED packets, $CLEAR with an inner address in clear"
    if (( CLEAR > 0 )); then
        why+="${why:+; }$CLEAR packets on the WAN show an inner address in clear"
    fi
    if [[ -z $why ]]; then pass "$name" "$notes"; else log "  $notes"; fail "$name" "$why"; fi
    sites_stop
}

# up_both alice-first: starts the gateways (the responder first) and waits for the tunnel.
up_both() {
    if [[ $1 == alice ]]; then
        start_alice; sites_wait "$CASE/alice.log" "data plane:" || return 1
        start_bob || return 1
    else
        start_bob || return 1
        if [[ $BOB_KIND == esptun ]]; then sites_wait "$(bob_log)" "data plane:" || return 1; fi
        start_alice
    fi
    wait_tunnel 20 >/dev/null && settle 10
}

# bob_dies: SIGKILL to bob's gateway.
bob_dies() {
    kill -9 "$BOB_PID"; wait "$BOB_PID" 2>/dev/null || true
    # Its TUN device and routes went with it; nothing more to clean.
}

fault_killed() {
    local name="faults/$BOB_KIND/peer-killed"
    [[ $name =~ $ONLY ]] || return 0
    log "case $name: bob's gateway killed; alice must declare it dead within $DEAD_BOUND s"
    fault_setup killed true "" false
    up_both bob || { fail "$name" "no tunnel at first"; sites_stop; return; }
    traffic_start
    sleep 1
    local t0 why="" notes; t0=$(now)
    bob_dies
    local dead=""
    for _ in $(seq 300); do
        grep -q 'DOWN site: peer not answering' "$CASE/alice.log" && { dead=$(elapsed "$t0"); break; }
        sleep 0.1
    done
    if [[ -z $dead ]]; then
        why="alice never declared bob dead"
    elif awk -v d="$dead" -v b="$DEAD_BOUND" 'BEGIN { exit !(d > b) }'; then
        why="declared dead after $dead s, more than $DEAD_BOUND s"
    fi
    notes="declared dead $dead s after the kill (bound $DEAD_BOUND s: dpd_delay 2 + 1 + 1.8 + 3.24 + $DEAD_SLACK)"
    notes+="; $(grep -c 'sent INFORMATIONAL request' "$CASE/alice.log") liveness checks sent"
    # Its SAs are gone, data plane included; pings go nowhere (and not in clear).
    sleep 3
    local state; state=$(esptun_state "$NS_AG")
    [[ $state == "0 0 "* ]] || why+="${why:+; }alice still holds SAs: $state"
    local sas; sas=$(dataplane_sas "$CASE/alice.log" "$ALICE_PID")
    (( sas == 0 )) || why+="${why:+; }alice's data plane still holds $sas Child SAs"
    fault_end "$name" "$why" "$notes"
}

# fault_restart who-redials: bob killed and started again; the tunnel must come back.
#   we:   bob answers only (start_action none), alice has dpd_action restart;
#   peer: bob initiates (start_action start) with INITIAL_CONTACT, alice dpd_action clear.
fault_restart() {
    local mode=$1 name
    if [[ $mode == we ]]; then name="faults/$BOB_KIND/restart-we-redial"; else name="faults/$BOB_KIND/restart-peer-redials"; fi
    [[ $name =~ $ONLY ]] || return 0
    if [[ $mode == we ]]; then
        log "case $name: bob (start_action none) killed and restarted; alice (dpd_action restart) redials"
        fault_setup restart-we true 'dpd_action = "restart"' false
        up_both bob || { fail "$name" "no tunnel at first"; sites_stop; return; }
    else
        log "case $name: bob (start_action start) killed and restarted; it connects with INITIAL_CONTACT"
        fault_setup restart-peer false "" true
        up_both alice || { fail "$name" "no tunnel at first"; sites_stop; return; }
    fi
    local old_a; old_a=$(sorted_view "$STATE_A")
    traffic_start
    sleep 1
    local t0 why="" notes=""; t0=$(now)
    bob_dies
    sleep 0.5
    local t1; t1=$(now)
    BOB_LOG=$CASE/bob-restarted.log
    start_bob || { why="bob did not restart"; }
    local back=""
    if [[ -z $why ]]; then
        back=$(wait_tunnel 20 "$old_a") || why="no new tunnel within 20 s of bob's restart"
    fi
    notes="bob restarted $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s after the kill; new SAs on both sides and pings through them ${back:-never} s after the restart"
    if [[ -z $why ]]; then
        settle 15 || why="SAs afterwards: alice $STATE_A, bob $STATE_B"
        local new_a; new_a=$(sorted_view "$STATE_A")
        [[ $new_a != "$old_a" ]] || why+="${why:+; }alice still has the SAs from before ($old_a)"
        notes+="; now alice ${STATE_A#* * }"
    fi
    local a=$CASE/alice.log
    if [[ $mode == we ]]; then
        local down; down=$(grep -m1 -o -E 'DOWN site: .*' "$a" || true)
        [[ $down == "DOWN site: peer not answering" ]] || why+="${why:+; }alice's old IKE SA: '${down:-not down}'"
        grep -q 'the peer has no such IKE_SA' "$a" && notes+="; alice learnt it from INVALID_IKE_SPI"
        grep -q 'initiating again' "$a" || why+="${why:+; }alice did not redial"
        grep -q 'sent IKE_AUTH request .*N(INITIAL_CONTACT)' "$a" || why+="${why:+; }alice's new IKE_AUTH had no INITIAL_CONTACT"
        notes+="; alice: $(grep -m1 -o 'initiating again in [0-9.]* s' "$a" || true)"
    else
        grep -q 'DOWN site: replaced: the peer sent INITIAL_CONTACT' "$a" || why+="${why:+; }alice did not drop the stale IKE SA on INITIAL_CONTACT ($(grep -o -E 'DOWN site.*' "$a" | paste -sd';' ))"
        grep -q 'received IKE_AUTH request .*N(INITIAL_CONTACT)' "$a" || why+="${why:+; }bob's IKE_AUTH carried no INITIAL_CONTACT"
    fi
    fault_end "$name" "$why" "$notes"
}

fault_down_at_start() {
    local name="faults/$BOB_KIND/peer-down-at-start"
    [[ $name =~ $ONLY ]] || return 0
    log "case $name: alice starts alone (keyingtries 0), bob appears after 15 s"
    fault_setup down-at-start true "" false
    start_alice
    sites_wait "$CASE/alice.log" "data plane:" || { fail "$name" "alice did not start"; sites_stop; return; }
    traffic_start
    sleep 15
    local tries retries why="" notes back=""
    tries=$(count 'sent IKE_SA_INIT request' "$CASE/alice.log")
    retries=$(count 'retransmitting request' "$CASE/alice.log")
    local again; again=$(grep -o 'initiating again in [0-9.]* s' "$CASE/alice.log" | sed 's/initiating again in //; s/ s$//' | paste -sd, || true)
    notes="in 15 s alone alice made $tries attempts ($retries retransmissions), waiting ${again:-never} s between them"
    (( tries >= 2 )) || why="alice did not try again"
    local t0; t0=$(now)
    start_bob || why+="${why:+; }bob did not start"
    back=$(wait_tunnel 30) || why+="${why:+; }no tunnel within 30 s of bob's start"
    notes+="; SAs up and pings through them ${back:-never} s after bob started"
    if settle 10; then notes+="; one IKE SA and one Child SA each"; else why+="${why:+; }SAs: alice $STATE_A, bob $STATE_B"; fi
    notes+="; $(count 'DOWN site: ' "$CASE/alice.log") failed attempts logged DOWN"
    fault_end "$name" "$why" "$notes"
}

# --- run ---------------------------------------------------------------------------------
log "$("$ESPTUN" --version); peers: $PEERS; soak $SOAK s"
sites_pki "$RUN/pki" "$ESPTUN"
sites_up
default_routes
for BOB_KIND in $PEERS; do
    soak "$BOB_KIND"
done
for BOB_KIND in $PEERS; do
    fault_killed
    fault_restart we
    fault_restart peer
    fault_down_at_start
done

echo
printf '%s\n' "${SUMMARY[@]}"
echo "${PASSED} passed, ${#FAILED[@]} failed"
(( ${#FAILED[@]} == 0 ))
