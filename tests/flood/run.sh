#!/usr/bin/env bash
# An IKE_SA_INIT flood against bob's esptun gateway while a legitimate initiator
# connects, in the demo's namespaces (scripts/lib/sites.sh: alice host - alice gw =
# WAN = bob gw - bob host). The flood (tests/flood/flood.rs, a raw socket in alice's
# gateway namespace) sends --rate IKE_SA_INITs a second to bob's UDP 500, from
# sources spoofed over 198.18.0.0/15 and, one in ten, from alice's own address
# (random ports and SPIs), cycling through four kinds: no KE, an empty KE, a
# random x25519 value, a KE for another group. Bob routes the spoofed range into
# a veth whose other end sits in a namespace of its own that drops everything, so
# his answers leave as they would to the Internet and go nowhere.
#
# connect/PEER: bob's esptun (default [ike] settings: COOKIEs under load) is flooded;
#   after 2 s, alice's gateway (esptun started with start = true, or charon told
#   `swanctl --initiate`) must have the Child SA up within 2 s (CONNECT_LIMIT) of
#   its start, and a ping from alice's host to bob's must cross the tunnel; at the
#   end of the flood the tunnel must still carry pings and the generator must have
#   sent at least 10 000/s (MIN_RATE). Reports the rate sent and received, the
#   answers bob sent by kind (COOKIE, INVALID_KE_PAYLOAD, other errors, full
#   IKE_SA_INIT answers: nft counters on their UDP length), UDP receive-buffer
#   drops, and over the flood bob's CPU (whole process and its control thread,
#   in % of one core), RSS and log growth.
# ramp (--ramp): what the control thread sustains before COOKIEs: bob with
#   cookie_threshold and half_open_limit out of reach (half-open SAs live 1 s) is
#   flooded with valid x25519 KEs only, all from alice's address (bob refuses other
#   sources before any key exchange: no connection names them), each a full
#   IKE_SA_INIT (one shared secret, keys, a half-open SA, an answer), at rising
#   rates (--ramp-rates) for --ramp-step seconds each; reports per step the answers
#   a second (until the queue drained), the receive-buffer drops and the control
#   thread's CPU. The sustained rate is the best step's; nothing is asserted.
#
# usage: tests/flood/run.sh [--seconds N] [--rate R] [--peer esptun|strongswan|both]
#            [--short] [--ramp] [--ramp-rates "R R ..."] [--ramp-step S] [--keep]
#            [--esptun PATH] [--flood PATH]
#   --seconds N   flood length per connect case (default 20)   --rate R  packets/s (20000)
#   --short       CI: 8 s floods, ramp 2000 8000 at 2 s         --keep   keep logs
#   --ramp        the ramp too (--ramp-rates "2000 4000 8000 16000", --ramp-step 4)
# Root only; traffic stays in the namespaces. Exits 1 if a connect case fails.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/lib/sites.sh
source "$HERE/../../scripts/lib/sites.sh"
# shellcheck source=../../scripts/lib/charon.sh
source "$HERE/../../scripts/lib/charon.sh"
ESPTUN=${ESPTUN:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/esptun}
FLOOD=${FLOOD:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/examples/flood}
SECONDS_FLOOD=20 RATE=20000 PEERS=both KEEP=0 RAMP=0 RAMP_RATES="2000 4000 8000 16000" RAMP_STEP=4
CONNECT_LIMIT=${CONNECT_LIMIT:-2} MIN_RATE=${MIN_RATE:-10000}
usage() { sed -n '/^# usage:/,/^# Root only/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do case $1 in
    --seconds) SECONDS_FLOOD=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --peer) PEERS=$2; shift 2 ;;
    --short) SECONDS_FLOOD=8 RAMP=1 RAMP_RATES="2000 8000" RAMP_STEP=2; shift ;;
    --ramp) RAMP=1; shift ;;
    --ramp-rates) RAMP_RATES=$2; shift 2 ;;
    --ramp-step) RAMP_STEP=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --esptun) ESPTUN=$2; shift 2 ;;
    --flood) FLOOD=$2; shift 2 ;;
    *) usage ;;
esac; done
case $PEERS in esptun | strongswan) ;; both) PEERS="esptun strongswan" ;; *) usage ;; esac
[[ $(id -u) == 0 ]] || { echo "flood: needs root (namespaces, raw sockets, TUN)" >&2; exit 1; }
[[ -x $ESPTUN ]] || { echo "flood: no esptun binary at $ESPTUN (cargo build --release)" >&2; exit 1; }
[[ -x $FLOOD ]] || { echo "flood: no generator at $FLOOD (cargo build --release --example flood)" >&2; exit 1; }
tools="nft nstat jq"
[[ $PEERS == *strongswan* ]] && tools+=" charon-systemd swanctl"
for tool in $tools; do
    command -v "$tool" >/dev/null || { echo "flood: $tool missing (scripts/deps.sh test installs it)" >&2; exit 1; }
done

RUN=$(mktemp -d /tmp/esptun-flood.XXXXXX)
NS_SINK=$SITES_ID-sink SPOOFED=198.18.0.0/15
BG=()
bg_stop() {
    local pid
    for pid in "${BG[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${BG[@]}"; do wait "$pid" 2>/dev/null || true; done
    BG=()
}
cleanup() {
    bg_stop
    sites_down
    ip netns del "$NS_SINK" 2>/dev/null || true
    if (( KEEP )); then echo "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
PASSED=0 FAILED=() SUMMARY=()
pass() { PASSED=$((PASSED + 1)); log "PASS $1: $2"; SUMMARY+=("PASS $1: $2"); }
fail() {
    FAILED+=("$1"); log "FAIL $1: $2"; SUMMARY+=("FAIL $1: $2")
    local f
    # alice's esptun log with each line's time of day (.ts), bob's as it is.
    for f in "$CASE"/alice.log.ts "$CASE"/bob.log "$CASE"/charon/charon.log; do
        [[ -f $f ]] || continue
        echo "----- ${f#"$CASE"/} (last lines) -----"
        grep -v ' DEBUG ' "$f" | tail -n 15 || true
    done
}
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# spoof_sink: bob's answers to the spoofed range leave by a veth into a namespace
# that has no address and forwards nothing, so they are dropped there, and never
# reach alice's side (whose kernel would answer them with ICMP). Bob accepts the
# spoofed sources (no reverse-path filter), as a gateway on the Internet would.
spoof_sink() {
    ip netns add "$NS_SINK"
    ip -n "$NS_BG" link add spoofed type veth peer name in netns "$NS_SINK"
    ip -n "$NS_BG" link set spoofed up arp off
    ip -n "$NS_SINK" link set in up
    ip -n "$NS_BG" route add $SPOOFED dev spoofed
    ip netns exec "$NS_BG" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.wan.rp_filter=0
}

# answer_counters: nft counters in bob's namespace for what leaves UDP 500, by the
# UDP length that tells the kinds apart: 77 a COOKIE (a 33-byte notify), 46
# INVALID_KE_PAYLOAD (2 bytes), 44 an error notify without data, above 100 a full
# IKE_SA_INIT answer. Reset for each case.
answer_counters() {
    ip netns exec "$NS_BG" nft -f - <<NFT
table ip flood
delete table ip flood
table ip flood {
    counter cookie {}
    counter invalid_ke {}
    counter refused {}
    counter answer {}
    chain out {
        type filter hook output priority 0; policy accept;
        udp sport 500 udp length 77 counter name cookie
        udp sport 500 udp length 46 counter name invalid_ke
        udp sport 500 udp length 44 counter name refused
        udp sport 500 udp length > 100 counter name answer
    }
}
NFT
}
answers() { # "cookie=N invalid_ke=N refused=N answer=N"
    ip netns exec "$NS_BG" nft -j list counters table ip flood |
        jq -r '[.nftables[] | select(.counter) | "\(.counter.name)=\(.counter.packets)"] | join(" ")'
}
# udp_stats: bob's UDP datagrams delivered to sockets and dropped on full receive buffers.
udp_stats() {
    ip netns exec "$NS_BG" nstat -asz UdpInDatagrams UdpRcvbufErrors 2>/dev/null |
        awk 'NR > 1 { printf "%s=%s ", $1, $2 }'
}
field() { grep -o "\b$1=[0-9]*" <<<"$2" | cut -d= -f2; } # name "a=1 b=2"

# cpu_ticks pid [tid]: user + system clock ticks of a process (or one of its threads).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/task/${2:-}/stat" 2>/dev/null || awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kb() { awk -v k="$2" '$1 == k ":" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
pct() { awk -v d="$1" -v s="$2" -v hz="$HZ" 'BEGIN { printf "%.0f", d / hz / s * 100 }'; }

# Load snapshot: others' builds and tests on this machine disturb the figures.
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# snapshot: "time cpu-ticks control-thread-ticks UdpIn:RcvbufErrors log-bytes
# log-lines rss-kB peak-rss-kB" of bob's esptun (the control thread is its main one).
snapshot() {
    local udp; udp=$(udp_stats)
    echo "$(now) $(cpu_ticks "$BOB_PID") $(cpu_ticks "$BOB_PID" "$BOB_PID") $(field UdpInDatagrams "$udp"):$(field UdpRcvbufErrors "$udp")" \
        "$(wc -c <"$CASE/bob.log") $(wc -l <"$CASE/bob.log") $(rss_kb "$BOB_PID" VmRSS) $(rss_kb "$BOB_PID" VmHWM)"
}

# bob_start [ike lines]: bob's esptun answering on the WAN; sets BOB_PID.
bob_start() {
    SITES_IKE=${1:-} sites_config "$CASE" "$RUN/pki" bob alice "$WAN_B" "$WAN_A" false "$NETS_B" "$NETS_A"
    sites_gateway "$ESPTUN" "$CASE" bob
    sites_wait "$CASE/bob.log" "data plane:"
}

# flood_start rate seconds [kinds [peer-share]]: the generator in alice's gateway
# namespace (a tenth of the packets from alice's address unless told otherwise);
# its report goes to $CASE/flood.txt, bob's snapshot at its end to $CASE/after.txt.
flood_start() {
    {
        ip netns exec "$NS_AG" "$FLOOD" --to "$WAN_B" --rate "$1" --seconds "$2" \
            --spoof $SPOOFED --peer "$WAN_A" --peer-share "${4:-0.1}" ${3:+--kinds "$3"} >"$CASE/flood.txt" 2>&1
        snapshot >"$CASE/after.txt"
    } &
    FLOOD_PID=$!
    BG+=("$FLOOD_PID")
}

ping_ok() { ip netns exec "$NS_AH" ping -c 1 -W 1 -q "$HOST_B" >/dev/null 2>&1; }

# alice_connect esptun|strongswan: starts alice's side initiating and waits (5 s at
# most) for the Child SA, then for a ping through it. Sets UP_AFTER and PING_AFTER
# (seconds from the start, empty if never).
alice_connect() {
    local t0
    UP_AFTER="" PING_AFTER=""
    if [[ $1 == esptun ]]; then
        sites_config "$CASE" "$RUN/pki" alice bob "$WAN_A" "$WAN_B" true "$NETS_A" "$NETS_B"
        t0=$(now)
        SITES_STAMP=1 sites_gateway "$ESPTUN" "$CASE" alice
        for _ in $(seq 250); do
            grep -q 'CHILD_SA .* UP' "$CASE/alice.log" 2>/dev/null && { UP_AFTER=$(since "$t0"); break; }
            sleep 0.02
        done
    else
        t0=$(now)
        # swanctl --initiate returns once the Child SA is up (or the attempt failed).
        charon_sw "$CASE/charon" --initiate --child lan --timeout 5 >"$CASE/initiate.log" 2>&1 &&
            UP_AFTER=$(since "$t0")
    fi
    [[ -n $UP_AFTER ]] || return 0
    for _ in $(seq 50); do
        ping_ok && { PING_AFTER=$(since "$t0"); return 0; }
    done
}

# connect_case esptun|strongswan
connect_case() {
    local peer=$1 name="connect/$1"
    CASE=$RUN/connect-$peer; mkdir -p "$CASE"
    log "case $name: ${RATE}/s for ${SECONDS_FLOOD} s against bob's esptun; alice's $peer starts after 2 s (load $(loadavg))"
    answer_counters
    bob_start || { fail "$name" "bob's esptun did not start"; sites_stop; return; }
    if [[ $peer == strongswan ]]; then
        charon_strongswan_conf "$CASE/charon"
        charon_site_conf "$CASE/charon" "$RUN/pki" alice bob "$WAN_A" "$WAN_B" "$NETS_A" "$NETS_B"
        charon_start "$CASE/charon" "$NS_AG" || { fail "$name" "charon did not start"; sites_stop; return; }
        SITES_PIDS+=("$CHARON_PID")
    fi
    snapshot >"$CASE/before.txt"
    flood_start "$RATE" "$SECONDS_FLOOD"
    sleep 2
    local load; load=$(loadavg)
    alice_connect "$peer"
    local rss_mid; rss_mid=$(rss_kb "$BOB_PID" VmRSS)
    wait "$FLOOD_PID" 2>/dev/null || true
    local t0 cpu0 main0 udp0 log_b0 log_l0 rss0 t cpu main udp log_b log_l rss hwm
    read -r t0 cpu0 main0 udp0 log_b0 log_l0 rss0 _ <"$CASE/before.txt"
    read -r t cpu main udp log_b log_l rss hwm <"$CASE/after.txt"
    t=$(awk -v a="$t0" -v b="$t" 'BEGIN { printf "%.2f", b - a }')
    cpu=$(pct $((cpu - cpu0)) "$t"); main=$(pct $((main - main0)) "$t")
    log_b=$((log_b - log_b0)); log_l=$((log_l - log_l0))
    local why=() facts=() sent rate
    sent=$(cat "$CASE/flood.txt")
    rate=$(grep -o '[0-9]*/s' <<<"$sent" | head -1 | tr -d '/s')
    facts+=("flood: $sent")
    (( ${rate:-0} >= MIN_RATE )) || why+=("the flood sent ${rate:-0}/s, below $MIN_RATE/s")
    local got dropped
    got=$((${udp%:*} - ${udp0%:*})) dropped=$((${udp#*:} - ${udp0#*:}))
    facts+=("bob took $got datagrams ($(awk -v n="$got" -v t="$t" 'BEGIN { printf "%.0f", n / t }')/s), $dropped dropped on a full receive buffer; answers: $(answers)")
    facts+=("$peer: Child SA up after ${UP_AFTER:-never} s, ping through it after ${PING_AFTER:-never} s (load $load)")
    if [[ -z $UP_AFTER ]]; then
        why+=("alice's $peer got no Child SA within 5 s")
    elif awk -v u="$UP_AFTER" -v l="$CONNECT_LIMIT" 'BEGIN { exit !(u > l) }'; then
        why+=("the Child SA took $UP_AFTER s, more than $CONNECT_LIMIT s")
    fi
    [[ -n $UP_AFTER && -z $PING_AFTER ]] && why+=("no ping through the tunnel")
    if [[ -n $UP_AFTER ]]; then ping_ok || why+=("the tunnel carried no ping after the flood"); fi
    facts+=("bob over the flood ($t s): CPU $cpu% of a core ($main% in the control thread), RSS $(mb "$rss0") MB before, $(mb "$rss_mid") MB at connect, $(mb "$rss") MB at the end, peak $(mb "$hwm") MB; log +$log_l lines, +$log_b bytes")
    local msg; msg=$(joined "${facts[@]}")
    if (( ${#why[@]} == 0 )); then pass "$name" "$msg"; else log "  $msg"; fail "$name" "$(joined "${why[@]}")"; fi
    bg_stop
    sites_stop
}

# ramp_case: full IKE_SA_INITs (no COOKIEs) at rising rates.
ramp_case() {
    local name=ramp
    CASE=$RUN/ramp; mkdir -p "$CASE"
    log "case $name: valid x25519 KEs, no COOKIEs, rates $RAMP_RATES for $RAMP_STEP s each (load $(loadavg))"
    answer_counters
    bob_start "cookie_threshold = 9999999
half_open_limit = 10000000
half_open_timeout = 1" || { fail "$name" "bob's esptun did not start"; sites_stop; return; }
    local r best=0 lines=() a0 a1 u0 u1 m0 t0 t answered dropped
    for r in $RAMP_RATES; do
        a0=$(answers); u0=$(udp_stats); m0=$(cpu_ticks "$BOB_PID" "$BOB_PID"); t0=$(now)
        flood_start "$r" "$RAMP_STEP" ke 1
        wait "$FLOOD_PID" 2>/dev/null || true
        # What is still queued (up to 4 MB) is answered late: until the answers stop.
        a1=$(answers) t=$(since "$t0")
        for _ in $(seq 25); do
            sleep 0.2
            [[ $(answers) == "$a1" ]] && break
            a1=$(answers) t=$(since "$t0")
        done
        u1=$(udp_stats)
        answered=$(($(field answer "$a1") - $(field answer "$a0")))
        dropped=$(($(field UdpRcvbufErrors "$u1") - $(field UdpRcvbufErrors "$u0")))
        local per_s; per_s=$(awk -v n="$answered" -v s="$t" 'BEGIN { printf "%.0f", n / s }')
        (( per_s > best )) && best=$per_s
        lines+=("offered $(grep -o '[0-9]*/s' "$CASE/flood.txt" | head -1): answered $answered (${per_s}/s), dropped $dropped, control thread $(pct $(($(cpu_ticks "$BOB_PID" "$BOB_PID") - m0)) "$t")% (load $(loadavg))")
        log "  ${lines[-1]}"
        sleep 1.5   # the step's half-open SAs expire
    done
    pass "$name" "the control thread sustains $best full IKE_SA_INITs/s (steps: $(joined "${lines[@]}")); RSS peak $(mb "$(rss_kb "$BOB_PID" VmHWM)") MB"
    sites_stop
}

joined() { local text="" x; for x in "$@"; do text+="${text:+; }$x"; done; echo "$text"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

log "$("$ESPTUN" --version); peers: $PEERS; ${RATE}/s for ${SECONDS_FLOOD} s; $(nproc) cores, load $(loadavg)"
sites_pki "$RUN/pki" "$ESPTUN"
sites_up
spoof_sink
for p in $PEERS; do connect_case "$p"; done
(( RAMP )) && ramp_case

echo
printf '%s\n' "${SUMMARY[@]}"
echo "${PASSED} passed, ${#FAILED[@]} failed"
(( ${#FAILED[@]} == 0 ))
