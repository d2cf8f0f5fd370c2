#!/usr/bin/env bash
# The control plane's handshake rate and memory per SA (issue 15): examples/loadgen.rs,
# the crate's own engine as --sources clients (one address, identity and inner address
# each, whose Child SA joins it to the responder's 10.0.0.0/24), keeps --in-flight
# handshakes going against one responder until it holds --sas IKE+Child SAs, which stay up
# (no rekeys, no DPD, no traffic). The responders: esptun, and strongSwan's
# charon (kernel-libipsec, as in tests/interop), each pinned to one core with taskset and
# the generator to another, in two network namespaces joined by a veth (198.18.0.0/15,
# the benchmarking range: the clients are 198.19.0.1 on, on the generator's lo). For each
# responder and authentication: the rate overall and at 1 k, 10 k and 50 k SAs (the
# generator's figures), each process's share of its core during the run, and the
# responder's RSS (/proc) before and after over the SAs it reports up: memory per
# IKE+Child SA. Both responders log nothing per SA (esptun --log-level warn, charon's
# levels -1), and meter nothing: COOKIEs and half-open caps are off.
#   psk   PSK, x25519, AES-GCM-128 (IKE and ESP)
#   ecdsa ECDSA P-256 certificates both ways (a CA made here; the generator issues one
#         per client), x25519
#   modp  PSK, MODP-2048
# Results: a table on stdout and OUT/bench-ike.json (one object per run).
#
# usage: scripts/bench-ike.sh [esptun|strongswan|both] [--auth psk,ecdsa,modp|all]
#            [--sas N] [--sources N] [--in-flight N] [--quick] [--esptun PATH]
#            [--loadgen PATH] [--out DIR] [--keep]
#   defaults: both, all, --sas 10000, --sources 1000, --in-flight 100, OUT
#   target/bench-ike. --quick: 40 SAs from 20 clients, 10 in flight, psk unless
#   --auth says otherwise: a check that the tool works (no figures). Without --esptun
#   and --loadgen it builds both (cargo build --release). --keep keeps the logs;
#   ESPTUN_LOG_LEVEL=info and CHARON_LOG_LEVEL=2 make them say something.
# Root only (installs what it uses first: scripts/deps.sh bench-ike); traffic stays in
# the namespaces. Exits 1 if a run did not reach its SAs on both ends.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/charon.sh
source "$ROOT/scripts/lib/charon.sh"
usage() { sed -n '/^# usage:/,/^# Root only/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
PEERS=both AUTHS=all SAS=10000 SOURCES=1000 IN_FLIGHT=100 QUICK=0 KEEP=0 ESPTUN= LOADGEN=
OUT=$ROOT/target/bench-ike
while [[ $# -gt 0 ]]; do case $1 in
    esptun | strongswan | both) PEERS=$1; shift ;;
    --auth) AUTHS=$2; shift 2 ;;
    --sas) SAS=$2; shift 2 ;;
    --sources) SOURCES=$2; shift 2 ;;
    --in-flight) IN_FLIGHT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --esptun) ESPTUN=$2; shift 2 ;;
    --loadgen) LOADGEN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) usage ;;
esac; done
if [[ $QUICK == 1 ]]; then
    SAS=40 SOURCES=20 IN_FLIGHT=10
    [[ $AUTHS == all ]] && AUTHS=psk
fi
[[ $PEERS == both ]] && PEERS="esptun strongswan"
[[ $AUTHS == all ]] && AUTHS=psk,ecdsa,modp
for auth in ${AUTHS//,/ }; do [[ $auth =~ ^(psk|ecdsa|modp)$ ]] || usage; done
(( SOURCES >= 1 && SOURCES <= 65000 )) || { echo "--sources: 1 to 65000" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "run as root: sudo scripts/bench-ike.sh, or as root scripts/bench-ike.sh" >&2; exit 1; }
"$ROOT/scripts/deps.sh" bench-ike

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z $ESPTUN || -z $LOADGEN ]]; then
    (cd "$ROOT" && cargo build --release --quiet --bins --example loadgen)
    ESPTUN=${ESPTUN:-$TARGET/release/esptun} LOADGEN=${LOADGEN:-$TARGET/release/examples/loadgen}
fi
for bin in "$ESPTUN" "$LOADGEN"; do [[ -x $bin ]] || { echo "no binary at $bin" >&2; exit 2; }; done

# The responder's core and the generator's: the last one and the first.
CORES=$(nproc)
CORE_R=$((CORES - 1)) CORE_G=0
(( CORES >= 2 )) || echo "one core: the responder and the generator share it, figures are meaningless" >&2

ID=esptun-ike-$$
NS_G=$ID-gen NS_R=$ID-resp
RESP=198.18.0.1 GEN=198.18.0.2 CLIENTS=198.19.0.0/16 FIRST_CLIENT=198.19.0.1
PSK="esptun bench-ike pre-shared key"
RUN=$(mktemp -d /tmp/esptun-bench-ike.XXXXXX)
RESPONDER_PID=
cleanup() {
    [[ -n $RESPONDER_PID ]] && stop_responder
    net_down
    if (( KEEP )); then echo "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Each client takes two sockets (IKE and NAT-T ports).
ulimit -n $((2 * SOURCES + 1024))

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

# net_up: the generator's and the responder's namespaces, a veth between them, the
# clients' addresses on the generator's lo (routed there by the responder: one neighbour),
# and the responder's LAN address on its lo.
net_up() {
    local ns i
    for ns in "$NS_G" "$NS_R"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
    ip -n "$NS_G" link add wan type veth peer name wan netns "$NS_R"
    ip -n "$NS_G" addr add $GEN/24 dev wan
    ip -n "$NS_R" addr add $RESP/24 dev wan
    ip -n "$NS_G" link set wan up
    ip -n "$NS_R" link set wan up
    for ((i = 1; i <= SOURCES; i++)); do
        echo "address add 198.19.$((i >> 8)).$((i & 255))/32 dev lo"
    done | ip -n "$NS_G" -batch -
    ip -n "$NS_R" route add $CLIENTS via $GEN
    # The responder's LAN (the Child SAs' local side), which charon's routes take their
    # source address from.
    ip -n "$NS_R" addr add 10.0.0.1/32 dev lo
    for _ in $(seq 50); do
        ip netns exec "$NS_G" ping -c1 -W1 -q -I $FIRST_CLIENT $RESP >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench-ike: the veth does not answer" >&2
    return 1
}

net_down() {
    ip netns del "$NS_G" 2>/dev/null || true
    ip netns del "$NS_R" 2>/dev/null || true
}

# pki: a CA and the responder's certificate (gw.example), by `esptun pki`; the
# generator issues its clients' own from the CA.
"$ESPTUN" pki ca --out "$RUN/pki" --cn "bench-ike CA" >/dev/null
"$ESPTUN" pki issue --dir "$RUN/pki" --san gw.example >/dev/null

proposal() { # auth: the IKE proposal
    case $1 in modp) echo aes128gcm16-prfsha256-modp2048 ;; *) echo aes128gcm16-prfsha256-x25519 ;; esac
}

# esptun_responder dir auth: esptun in the responder's namespace; sets RESPONDER_PID
# once its control socket answers.
esptun_responder() {
    local d=$1 auth=$2 local_auth remote_auth
    printf '%s\n' "$PSK" >"$d/psk"
    chmod 600 "$d/psk"
    if [[ $auth == ecdsa ]]; then
        local_auth="auth = \"pubkey\"
id = \"gw.example\"
certs = [\"$RUN/pki/gw.example.crt\"]
key = \"$RUN/pki/gw.example.key\""
        remote_auth="auth = \"pubkey\"
id = \"%any\"
cacerts = [\"$RUN/pki/ca.crt\"]"
    else
        local_auth='auth = "psk"
id = "gw.example"'
        remote_auth='auth = "psk"
id = "%any"'
    fi
    cat >"$d/esptun.toml" <<TOML
[listen]
addrs = ["$RESP"]

# Admission off: COOKIEs and the half-open caps would meter what this measures.
[ike]
cookie_threshold = 100000000
half_open_limit = 100000001

[dataplane]
tun = "esptun0"

[[connection]]
name = "clients"
proposals = ["$(proposal "$auth")"]
rekey_time = 0
mobike = false
$([[ $auth != ecdsa ]] && echo 'psk_file = "psk"')

[connection.local]
$local_auth

[connection.remote]
$remote_auth

# Each client's inner address to our LAN (the generator's defaults); nothing is sent
# through them.
[[connection.children]]
name = "inner"
local_ts = ["10.0.0.0/24"]
remote_ts = ["10.128.0.0/16"]
esp_proposals = ["aes128gcm16"]
rekey_time = 0
TOML
    ip netns exec "$NS_R" "$ESPTUN" run --config "$d/esptun.toml" --log-level "${ESPTUN_LOG_LEVEL:-warn}" >"$d/esptun.log" 2>&1 &
    RESPONDER_PID=$!
    for _ in $(seq 100); do
        ip netns exec "$NS_R" "$ESPTUN" status >/dev/null 2>&1 && return 0
        kill -0 $RESPONDER_PID 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-ike: esptun did not start:" >&2
    tail -n 20 "$d/esptun.log" >&2
    return 1
}

# What charon needs to take thousands of clients at once: a hash table for its IKE SAs
# (one bucket by default, walked per message), no COOKIEs, no per-address or job-load
# limits on half-open SAs.
CHARON_LIMITS="ikesa_table_size = 65536
    ikesa_table_segments = 16
    dos_protection = no
    cookie_threshold = 100000000
    block_threshold = 100000000
    init_limit_half_open = 0
    init_limit_job_load = 0"

# charon_responder dir auth: charon-systemd (kernel-libipsec) in the responder's
# namespace; sets RESPONDER_PID once swanctl loaded its configuration.
charon_responder() {
    local d=$1 auth=$2 local_auth remote_auth secrets
    CHARON_LOG_LEVEL=${CHARON_LOG_LEVEL:--1} charon_strongswan_conf "$d" "$CHARON_LIMITS"
    if [[ $auth == ecdsa ]]; then
        cp "$RUN/pki/ca.crt" "$d/swanctl/x509ca/"
        cp "$RUN/pki/gw.example.crt" "$d/swanctl/x509/"
        cp "$RUN/pki/gw.example.key" "$d/swanctl/private/"
        local_auth="auth = pubkey
            certs = gw.example.crt"
        remote_auth="auth = pubkey"
        secrets="private-gw { file = gw.example.key }"
    else
        local_auth="auth = psk"
        remote_auth="auth = psk"
        secrets="ike-clients { secret = \"$PSK\" }"
    fi
    cat >"$d/swanctl/swanctl.conf" <<CONF
connections {
    clients {
        version = 2
        local_addrs = $RESP
        proposals = $(proposal "$auth")
        unique = never
        mobike = no
        dpd_delay = 0
        rekey_time = 0
        reauth_time = 0
        local {
            $local_auth
            id = gw.example
        }
        remote {
            $remote_auth
            id = %any
        }
        children {
            inner {
                local_ts = 10.0.0.0/24
                remote_ts = 10.128.0.0/16
                esp_proposals = aes128gcm16
                rekey_time = 0
                life_time = 0
            }
        }
    }
}
secrets {
    $secrets
}
CONF
    charon_start "$d" "$NS_R"
    RESPONDER_PID=$CHARON_PID
}

stop_responder() {
    kill "$RESPONDER_PID" 2>/dev/null || true
    # esptun deletes its SAs and waits up to 3 s for answers that will not come.
    for _ in $(seq 100); do kill -0 "$RESPONDER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$RESPONDER_PID" 2>/dev/null || true
    wait "$RESPONDER_PID" 2>/dev/null || true
    RESPONDER_PID=
}

# responder_sas peer dir: "IKE_SAs CHILD_SAs" the responder reports up.
responder_sas() {
    if [[ $1 == esptun ]]; then
        ip netns exec "$NS_R" "$ESPTUN" status --json |
            jq -r '[(.ike_sas | length), ([.ike_sas[].child_sas[]?] | length)] | @tsv'
    else
        # IKE_SAs: N total, M half-open
        local ike
        ike=$(charon_sw "$2" --stats 2>/dev/null | awk '/^IKE_SAs:/ {print $2 - $4}')
        echo "$ike $(charon_sw "$2" --list-sas --raw 2>/dev/null | grep -o 'state=INSTALLED' | wc -l)"
    fi
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# cpu_ticks pid: user + system clock ticks of a process (all its threads).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

mkdir -p "$OUT"
: >"$RUN/results.jsonl"
FAILED=0
HZ=$(getconf CLK_TCK)
log "$(nproc) cores (responder on $CORE_R, generator on $CORE_G), load $(cut -d' ' -f1-3 /proc/loadavg); $SAS SAs from $SOURCES clients, $IN_FLIGHT in flight"
for peer in $PEERS; do
    for auth in ${AUTHS//,/ }; do
        d=$RUN/$peer-$auth
        mkdir -p "$d"
        net_up
        "${peer/strongswan/charon}_responder" "$d" "$auth"
        taskset -a -cp "$CORE_R" "$RESPONDER_PID" >/dev/null
        sleep 0.5
        rss0=$(rss_kib "$RESPONDER_PID") cpu0=$(cpu_ticks "$RESPONDER_PID")
        log "$peer $auth: $SAS SAs (responder RSS $rss0 KiB)"
        rc=0
        {
            TIMEFORMAT='%R %U %S'
            time ip netns exec "$NS_G" taskset -c "$CORE_G" "$LOADGEN" --to $RESP --from $FIRST_CLIENT \
                --sources "$SOURCES" --sas "$SAS" --in-flight "$IN_FLIGHT" --auth "$auth" \
                --psk "$PSK" --pki "$RUN/pki" --json "$d/loadgen.json" >"$d/loadgen.log" 2>&1 || rc=$?
        } 2>"$d/time"
        rss1=$(rss_kib "$RESPONDER_PID") cpu1=$(cpu_ticks "$RESPONDER_PID")
        read -r up children < <(responder_sas "$peer" "$d") || true
        read -r wall user sys <"$d/time"
        stop_responder
        net_down
        if [[ $rc != 0 || ! -s $d/loadgen.json ]]; then
            echo "bench-ike: $peer $auth: the generator failed (exit $rc):" >&2
            tail -n 15 "$d/loadgen.log" >&2
            FAILED=1
            continue
        fi
        if [[ $up != "$SAS" || $children != "$SAS" ]]; then
            echo "bench-ike: $peer $auth: the responder reports $up IKE SAs and $children Child SAs, not $SAS" >&2
            FAILED=1
        fi
        # The responder works from the first IKE_SA_INIT to the last IKE_AUTH: its CPU
        # over the generator's seconds (which leave out the generator's start-up, its
        # certificates and sockets); the generator's over its whole run.
        seconds=$(jq .seconds "$d/loadgen.json")
        jq -c --arg peer "$peer" --argjson rss0 "$rss0" --argjson rss1 "$rss1" \
            --argjson up "${up:-0}" --argjson children "${children:-0}" \
            --argjson cpu_r "$(awk -v t=$((cpu1 - cpu0)) -v hz="$HZ" -v w="$seconds" 'BEGIN { printf "%.0f", 100 * t / hz / w }')" \
            --argjson cpu_g "$(awk -v u="$user" -v s="$sys" -v w="$wall" 'BEGIN { printf "%.0f", 100 * (u + s) / w }')" \
            '{responder: $peer} + . + {responder_sas: $up, responder_child_sas: $children,
              responder_cpu_percent: $cpu_r, generator_cpu_percent: $cpu_g,
              rss_kib: {before: $rss0, after: $rss1},
              kib_per_sa: (if $up > 0 then (($rss1 - $rss0) / $up * 10 | round / 10) else null end)}' \
            "$d/loadgen.json" | tee -a "$RUN/results.jsonl" >"$d/result.json"
        jq -r '"  \(.established) SAs in \(.seconds) s: \(.rate)/s; at " + (.rate_at | to_entries | map("\(.key): \(.value)") | join(", "))
            + "; responder CPU \(.responder_cpu_percent) %, generator \(.generator_cpu_percent) %; \(.kib_per_sa) KiB per SA"
            + (if .failed + .lost + .child_failed + .retransmits > 0 then
                "; failed \(.failed), lost \(.lost), Child SAs failed \(.child_failed), retransmits \(.retransmits)" else "" end)' \
            "$d/result.json"
    done
done

jq -s --arg host "$(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)" \
    '{machine: $host, results: .}' "$RUN/results.jsonl" >"$OUT/bench-ike.json"
echo
printf '%-10s %-5s %6s %8s %8s %8s %8s %9s %7s %9s %7s\n' responder auth SAs "SAs/s" "at 1k" "at 10k" "at 50k" "10k/1k" "CPU %" "KiB/SA" failed
jq -r '.results[] | [.responder, .auth, .established, (.rate | round),
        (.rate_at["1000"] // "-" | if type == "number" then round else . end),
        (.rate_at["10000"] // "-" | if type == "number" then round else . end),
        (.rate_at["50000"] // "-" | if type == "number" then round else . end),
        (if .rate_at["10000"] and .rate_at["1000"] then "\(.rate_at["10000"] / .rate_at["1000"] * 100 | round) %" else "-" end),
        "\(.responder_cpu_percent)/\(.generator_cpu_percent)", (.kib_per_sa // "-"), (.failed + .lost + .child_failed)] | @tsv' \
    "$OUT/bench-ike.json" |
    awk -F'\t' '{printf "%-10s %-5s %6s %8s %8s %8s %8s %9s %7s %9s %7s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11}'
echo "(CPU %: the responder's share of its core / the generator's of its own; results in $OUT/bench-ike.json)"
exit $FAILED
