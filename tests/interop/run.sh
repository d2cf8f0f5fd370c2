#!/bin/bash
# esptun against strongSwan's charon (kernel-libipsec), each in its own network
# namespace: every auth method x proposal, esptun initiating and charon initiating,
# with pings (and one 200 MB TCP transfer per role) through each tunnel, then the
# failures that must fail cleanly. Each SA as `esptun status --json` shows it must be
# the one `swanctl --list-sas` shows. Last, deploy/examples/strongswan, rendered as a
# newcomer would, must carry traffic. Root only; traffic stays in the namespaces.
#
# usage: tests/interop/run.sh [--esptun PATH] [--keep]   (exit 1 if any case fails)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/lib/charon.sh
source "$HERE/../../scripts/lib/charon.sh"
ESPTUN=${ESPTUN:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/esptun}
KEEP=0
while [[ $# -gt 0 ]]; do case $1 in
    --esptun) ESPTUN=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--esptun PATH] [--keep]" >&2; exit 2 ;;
esac; done
[[ $(id -u) == 0 ]] || { echo "interop: needs root (namespaces)" >&2; exit 1; }
[[ -x $ESPTUN ]] || { echo "interop: no esptun binary at $ESPTUN (cargo build --release)" >&2; exit 1; }
for tool in ip ping ss nc sha256sum timeout charon-systemd swanctl jq; do
    command -v $tool >/dev/null || { echo "interop: $tool missing (scripts/deps.sh test installs it)" >&2; exit 1; }
done

RUN=$(mktemp -d /tmp/esptun-interop.XXXXXX)
NS_E=esptun-$$-e          # esptun's namespace
NS_C=esptun-$$-c          # charon's namespace
ADDR_E=192.0.2.1 ADDR_C=192.0.2.2
NETS_E="10.1.0.0/24 fd00:1::/64" NETS_C="10.2.0.0/24 fd00:2::/64"
PIDS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS_E" 2>/dev/null || true
    ip netns del "$NS_C" 2>/dev/null || true
    if (( KEEP )); then log "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- namespaces -------------------------------------------------------------
ip netns add "$NS_E"; ip netns add "$NS_C"
ip -n "$NS_E" link add eth0 type veth peer name eth0 netns "$NS_C"
for ns in "$NS_E" "$NS_C"; do ip -n "$ns" link set lo up; done
ip -n "$NS_E" addr add $ADDR_E/24 dev eth0; ip -n "$NS_C" addr add $ADDR_C/24 dev eth0
ip -n "$NS_E" link set eth0 up; ip -n "$NS_C" link set eth0 up
# The protected hosts, on lo: libipsec installs its policies and routes for them.
ip -n "$NS_E" addr add 10.1.0.1/32 dev lo; ip -n "$NS_E" addr add fd00:1::1/128 dev lo
ip -n "$NS_C" addr add 10.2.0.1/32 dev lo; ip -n "$NS_C" addr add fd00:2::1/128 dev lo
for _ in $(seq 50); do ip netns exec "$NS_E" ping -c1 -W1 -q $ADDR_C >/dev/null 2>&1 && break; sleep 0.1; done

# --- PKI, made by `esptun pki`, so charon also judges the certificates esptun issues ---
pki() { # dir ecdsa|rsa
    local d=$1 alg=() h
    [[ $2 == rsa ]] && alg=(--rsa)
    "$ESPTUN" pki ca --out "$d" "${alg[@]}" >/dev/null
    "$ESPTUN" pki ca --out "$d/rogue" --cn "rogue CA" "${alg[@]}" >/dev/null
    for h in esptun charon; do
        "$ESPTUN" pki host --dir "$d" --id $h.example "${alg[@]}" >/dev/null
        "$ESPTUN" pki host --dir "$d/rogue" --id $h.example "${alg[@]}" >/dev/null
        mv "$d/$h.example.crt" "$d/$h.crt"; mv "$d/$h.example.key" "$d/$h.key"
        mv "$d/rogue/$h.example.crt" "$d/rogue-$h.crt"; mv "$d/rogue/$h.example.key" "$d/rogue-$h.key"
    done
}
log "making ECDSA P-256 and RSA-3072 PKIs"
pki "$RUN/pki-ecdsa" ecdsa
pki "$RUN/pki-rsa" rsa
(umask 077; echo "an interop pre-shared key" >"$RUN/psk")

esp_for() { case $1 in
    aes128gcm16-*) echo aes128gcm16 ;;
    aes256-sha256-*) echo aes256-sha256 ;;
    chacha20poly1305-*) echo chacha20poly1305 ;;
esac; }

toml_list() { local out="" x; for x in "$@"; do out+="\"$x\", "; done; echo "[${out%, }]"; }

# --- esptun side ---------------------------------------------------------------
# esptun_conf dir auth proposal start [variant]
esptun_conf() {
    local d=$1 auth=$2 prop=$3 start=$4 variant=${5:-} p=$RUN/pki-$2 cert=esptun id=esptun.example peer=charon.example
    local esp; esp=$(esp_for "$prop")
    # esptun initiating: charon must refuse what esptun presents (esptun itself refuses to
    # start with an identity its certificate does not hold, so for id-mismatch charon
    # expects another identity).
    [[ $variant == untrusted && $start == true ]] && cert=rogue-esptun
    # charon initiating: esptun must refuse charon's certificate or identity.
    [[ $variant == id-mismatch && $start == false ]] && peer=other.example
    [[ $variant == no-proposal ]] && prop=aes256gcm16-prfsha512-ecp521
    mkdir -p "$d"
    {
        printf '[listen]\naddrs = ["%s"]\n[[connection]]\nname = "interop"\n' $ADDR_E
        printf 'local_addrs = ["%s"]\nremote_addrs = ["%s"]\nproposals = ["%s"]\nstart = %s\n' $ADDR_E $ADDR_C "$prop" "$start"
        if [[ -n ${ESPTUN_CONN:-} ]]; then printf '%s\n' "$ESPTUN_CONN"; fi
        if [[ $auth == psk ]]; then
            local psk=$RUN/psk
            [[ $variant == wrong-psk ]] && { (umask 077; echo "not the same key" >"$d/psk"); psk=$d/psk; }
            printf 'psk_file = "%s"\n[connection.local]\nauth = "psk"\nid = "%s"\n' "$psk" $id
            printf '[connection.remote]\nauth = "psk"\nid = "%s"\n' $peer
        else
            printf '[connection.local]\nauth = "pubkey"\nid = "%s"\ncerts = ["%s"]\nkey = "%s"\n' $id "$p/$cert.crt" "$p/$cert.key"
            printf '[connection.remote]\nauth = "pubkey"\nid = "%s"\ncacerts = ["%s"]\n' $peer "$p/ca.crt"
        fi
        # shellcheck disable=SC2086
        printf '[[connection.children]]\nname = "net"\nlocal_ts = %s\nremote_ts = %s\nesp_proposals = ["%s"]\n' \
            "$(toml_list $NETS_E)" "$(toml_list $NETS_C)" "${ESP:-$esp}"
        if [[ -n ${ESPTUN_CHILD:-} ]]; then printf '%s\n' "$ESPTUN_CHILD"; fi
        if [[ -n ${ESPTUN_TOP:-} ]]; then printf '%s\n' "$ESPTUN_TOP"; fi
    } >"$d/esptun.toml"
}

# --- charon side -----------------------------------------------------------------
# charon_conf dir auth proposal [variant] [initiator]
charon_conf() {
    local d=$1 auth=$2 prop=$3 variant=${4:-} initiator=${5:-} p=$RUN/pki-$2 peer=esptun.example cert=charon
    local esp; esp=$(esp_for "$prop")
    [[ $variant == no-proposal ]] && prop=aes128-sha256-modp3072 esp=aes128-sha256
    charon_strongswan_conf "$d" "retransmit_tries = 2
    retransmit_timeout = 1"
    local local_auth remote_auth secrets
    if [[ $auth == psk ]]; then
        local_auth="auth = psk"; remote_auth="auth = psk"
        secrets="ike-psk { id-1 = charon.example
            id-2 = esptun.example
            secret = \"$(cat "$RUN/psk")\" }"
    else
        [[ $variant == untrusted && -n $initiator ]] && cert=rogue-charon
        [[ $variant == id-mismatch && -z $initiator ]] && peer=someone-else.example
        cp "$p/ca.crt" "$d/swanctl/x509ca/"; cp "$p/$cert.crt" "$d/swanctl/x509/charon.crt"; cp "$p/$cert.key" "$d/swanctl/private/charon.key"
        local_auth="auth = pubkey
            certs = charon.crt"
        remote_auth="auth = pubkey"
        secrets="private-charon { file = charon.key }"
    fi
    cat >"$d/swanctl/swanctl.conf" <<CONF
connections {
    interop {
        version = 2
        local_addrs = $ADDR_C
        remote_addrs = $ADDR_E
        proposals = $prop
        fragmentation = yes
        rekey_time = ${CHARON_IKE_REKEY:-0}
        reauth_time = 0
        dpd_delay = ${CHARON_DPD:-0}
        local {
            $local_auth
            id = charon.example
        }
        remote {
            $remote_auth
            id = $peer
        }
        children {
            net {
                mode = tunnel
                local_ts = ${NETS_C// /,}
                remote_ts = ${NETS_E// /,}
                esp_proposals = ${ESP:-$esp}
                rekey_time = ${CHARON_CHILD_REKEY:-0}
                start_action = none
            }
        }
    }
}
secrets {
    $secrets
}
CONF
}

sw() { charon_sw "$@"; }

start_charon() { # dir
    local rc=0
    charon_start "$1" "$NS_C" || rc=$?
    PIDS+=("$CHARON_PID")
    return $rc
}

start_esptun() { # dir
    local d=$1
    ip netns exec "$NS_E" "$ESPTUN" run --config "$d/esptun.toml" --keylog "$d/keys" >"$d/esptun.log" 2>&1 &
    PIDS+=($!); ESPTUN_PID=$!
    for _ in $(seq 100); do grep -q "listening on $ADDR_E:4500" "$d/esptun.log" 2>/dev/null && return 0; sleep 0.05; done
    cat "$d/esptun.log"; return 1
}

stop_all() {
    kill "$ESPTUN_PID" "$CHARON_PID" 2>/dev/null || true
    wait "$ESPTUN_PID" "$CHARON_PID" 2>/dev/null || true
    # A charon a case restarted in a subshell (lifecycle/peer-dead) is no child of ours.
    local _
    for _ in $(seq 50); do
        [[ -z $(ip netns pids "$NS_C" 2>/dev/null) ]] && break
        ip netns pids "$NS_C" 2>/dev/null | xargs -r kill 2>/dev/null || true
        sleep 0.1
    done
    PIDS=()
}

# charon's view: "<spi_i> <spi_r> <spi_in> <spi_out> <local_ts> <remote_ts>" once INSTALLED
charon_sa() {
    local raw; raw=$(sw "$1" --list-sas --raw 2>/dev/null | tr -d '\n')
    [[ $raw == *"state=ESTABLISHED"* && $raw == *"state=INSTALLED"* ]] || return 1
    local spi_i spi_r spi_in spi_out lts rts
    spi_i=$(grep -o 'initiator-spi=[0-9a-f]*' <<<"$raw" | head -1 | cut -d= -f2)
    spi_r=$(grep -o 'responder-spi=[0-9a-f]*' <<<"$raw" | head -1 | cut -d= -f2)
    spi_in=$(grep -o 'spi-in=[0-9a-f]*' <<<"$raw" | head -1 | cut -d= -f2)
    spi_out=$(grep -o 'spi-out=[0-9a-f]*' <<<"$raw" | head -1 | cut -d= -f2)
    lts=$(grep -o 'local-ts=\[[^]]*\]' <<<"$raw" | head -1 | sed 's/local-ts=\[//; s/\]//' | tr ' ' '\n' | sort | paste -sd,)
    rts=$(grep -o 'remote-ts=\[[^]]*\]' <<<"$raw" | head -1 | sed 's/remote-ts=\[//; s/\]//' | tr ' ' '\n' | sort | paste -sd,)
    echo "$spi_i $spi_r $spi_in $spi_out $lts $rts"
}

# esptun's view, from `esptun status --json` (so that it shows what charon's --list-sas
# does), in the same order (its in/out and local/remote swapped)
esptun_sa() {
    local status fields
    status=$(ip netns exec "$NS_E" "$ESPTUN" status --json 2>/dev/null) || return 1
    fields=$(jq -r '.ike_sas[0] as $ike | $ike.child_sas[0] // empty | select(.state == "INSTALLED")
        | [$ike.spi_i, $ike.spi_r, .spi_out, .spi_in, (.remote_ts | join(",")), (.local_ts | join(","))] | join(" ")' <<<"$status")
    [[ -n $fields ]] || return 1
    local spi_i spi_r spi_out spi_in rts lts
    read -r spi_i spi_r spi_out spi_in rts lts <<<"$fields"
    sorted() { tr ',' '\n' <<<"$1" | sort | paste -sd,; }
    echo "$spi_i $spi_r $spi_out $spi_in $(sorted "$rts") $(sorted "$lts")"
}

PASSED=0 FAILED=()

pass() { PASSED=$((PASSED + 1)); log "PASS $1${2:+ ($2)}"; }
fail() { FAILED+=("$1"); log "FAIL $1: $2"; }

show_logs() { # dir
    echo "----- esptun -----"; tail -n 30 "$1/esptun.log" 2>/dev/null || true
    echo "----- charon -----"; tail -n 30 "$1/charon.log" 2>/dev/null || true
}

# run_case initiator auth proposal [label]: the label names a variant (ESPTUN_CHILD set)
run_case() {
    local who=$1 auth=$2 prop=$3 name="$1-initiates/$2/$3${4:+/$4}" d=$RUN/case-$1-$2-$3${4:+-$4}
    mkdir -p "$d"
    esptun_conf "$d" "$auth" "$prop" "$([[ $who == esptun ]] && echo true || echo false)"
    charon_conf "$d" "$auth" "$prop"
    start_charon "$d" || { fail "$name" "charon did not start"; stop_all; return; }
    start_esptun "$d" || { fail "$name" "esptun did not start"; stop_all; return; }
    if [[ $who == charon ]]; then
        sw "$d" --initiate --child net --timeout 20 >"$d/initiate.log" 2>&1 || true
    fi
    local theirs="" ours="" why spread=""
    for _ in $(seq 100); do
        theirs=$(charon_sa "$d" || true); ours=$(esptun_sa "$d" || true)
        [[ -n $theirs && -n $ours ]] && break
        sleep 0.1
    done
    if [[ -z $theirs || -z $ours ]]; then
        fail "$name" "not established (charon: '${theirs}', esptun: '${ours}')"; show_logs "$d"
    elif [[ $theirs != "$ours" ]]; then
        fail "$name" "views differ: charon '$theirs' vs esptun '$ours'"; show_logs "$d"
    elif ! why=$(traffic "$d" "$auth/$prop"); then
        fail "$name" "$why"; show_logs "$d"
    elif [[ ${4:-} == spread ]] && ! spread=$(spread_check); then
        fail "$name" "$spread"; show_logs "$d"
    else
        local frag=""
        grep -q 'fragments)' "$d/esptun.log" && frag="IKE_AUTH fragmented"
        pass "$name" "${frag:+$frag, }SPIs $(cut -d' ' -f3-4 <<<"$ours"), $why${spread:+, $spread}"
    fi
    stop_all
}

# traffic dir auth/proposal: pings both families from esptun's protected addresses to
# charon's; for the first ECDSA suite also a 200 MB TCP transfer whose SHA-256 must
# match. Prints what passed, or why not (and fails).
traffic() {
    local d=$1
    ip netns exec "$NS_E" ping -c 2 -i 0.2 -W 2 -q -I 10.1.0.1 10.2.0.1 >/dev/null || { echo "IPv4 ping through the tunnel failed"; return 1; }
    ip netns exec "$NS_E" ping -6 -c 2 -i 0.2 -W 2 -q -I fd00:1::1 fd00:2::1 >/dev/null || { echo "IPv6 ping through the tunnel failed"; return 1; }
    [[ $2 == ecdsa/aes128gcm16-prfsha256-x25519 ]] || { echo "pings v4/v6"; return 0; }
    [[ -f $RUN/payload ]] || { head -c 200M /dev/urandom >"$RUN/payload"; sha256sum <"$RUN/payload" | cut -d' ' -f1 >"$RUN/payload.sum"; }
    ip netns exec "$NS_C" sh -c "nc -l 10.2.0.1 5001 | sha256sum | cut -d' ' -f1 >'$d/received'" &
    local listener=$! start
    for _ in $(seq 50); do ip netns exec "$NS_C" ss -ltn | grep -q ":5001" && break; sleep 0.1; done
    start=$(date +%s%N)
    timeout 120 ip netns exec "$NS_E" nc -N -s 10.1.0.1 10.2.0.1 5001 <"$RUN/payload" || true
    wait $listener || true
    local ms=$((($(date +%s%N) - start) / 1000000))
    [[ $(cat "$d/received") == "$(cat "$RUN/payload.sum")" ]] || { echo "200 MB transfer: SHA-256 differs"; return 1; }
    echo "pings v4/v6, 200 MB TCP intact in $ms ms"
}

# spread_check: esptun's one SA is spread, and both of its workers received ESP.
spread_check() {
    local status; status=$(ip netns exec "$NS_E" "$ESPTUN" status --json)
    jq -e '[.ike_sas[].child_sas[] | .spread] == [true]' <<<"$status" >/dev/null ||
        { echo "esptun's SA is not spread"; return 1; }
    jq -e '[.workers[] | .packets_in] | length == 2 and all(. > 100)' <<<"$status" >/dev/null ||
        { echo "esptun's workers received $(jq -c '[.workers[] | .packets_in]' <<<"$status") packets: not both"; return 1; }
    echo "esptun's workers received $(jq -c '[.workers[] | .packets_in]' <<<"$status") packets"
}

# run_failure initiator variant auth expected-notify
run_failure() {
    local who=$1 variant=$2 auth=$3 notify=$4 prop=aes128gcm16-prfsha256-x25519
    local name="$1-initiates/$2" d=$RUN/fail-$1-$2
    mkdir -p "$d"
    esptun_conf "$d" "$auth" "$prop" "$([[ $who == esptun ]] && echo true || echo false)" "$variant"
    charon_conf "$d" "$auth" "$prop" "$variant" "$([[ $who == charon ]] && echo yes)"
    start_charon "$d" || { fail "$name" "charon did not start"; stop_all; return; }
    start_esptun "$d" || { fail "$name" "esptun did not start"; stop_all; return; }
    if [[ $who == charon ]]; then
        sw "$d" --initiate --child net --timeout 10 >"$d/initiate.log" 2>&1 || true
    fi
    local ok=""
    for _ in $(seq 60); do
        if grep -Eq "DOWN interop|refused" "$d/esptun.log" && grep -Eq "$notify" "$d/charon.log"; then ok=1; break; fi
        sleep 0.1
    done
    if [[ -z $ok ]]; then
        fail "$name" "expected $notify on both sides"; show_logs "$d"
    elif grep -q ' ESTABLISHED ' "$d/esptun.log" && [[ $variant != untrusted && $variant != id-mismatch ]]; then
        fail "$name" "esptun reports an established SA"; show_logs "$d"
    else
        pass "$name" "esptun: $(grep -E -m1 'DOWN interop|refused' "$d/esptun.log" | sed -E 's/^.* IKE_SA [0-9a-f]*: //')"
    fi
    stop_all
}

# --- the SA lifecycle ---------------------------------------------------------------
# The newest Child SA esptun logged, as "spi_in spi_out"; and its newest IKE SA's SPIs.
esptun_child() { grep 'CHILD_SA .* UP ' "$1/esptun.log" | tail -1 | grep -o 'spi_in [0-9a-f]* spi_out [0-9a-f]*' | awk '{print $2, $4}'; }
esptun_ike() { grep -E ' (ESTABLISHED|REKEYED) ' "$1/esptun.log" | tail -1 | grep -o 'spi_i [0-9a-f]* spi_r [0-9a-f]*' | awk '{print $2, $4}'; }
# charon's installed Child SAs as "spi_out spi_in" lines (esptun's in/out order), and its
# IKE SAs (charon keeps a rekeyed SA's inbound side a while, listed but not INSTALLED).
charon_children() { sw "$1" --list-sas --raw 2>/dev/null | tr -d '\n' | grep -o 'state=INSTALLED[^}]*spi-in=[0-9a-f]* spi-out=[0-9a-f]*' | grep -o 'spi-in=[0-9a-f]* spi-out=[0-9a-f]*' | sed 's/spi-in=//; s/spi-out=//' | awk '{print $2, $1}' | sort; }
charon_ikes() { sw "$1" --list-sas --raw 2>/dev/null | tr -d '\n' | grep -o 'state=ESTABLISHED[^}]*initiator-spi=[0-9a-f]* responder-spi=[0-9a-f]*' | grep -o 'initiator-spi=[0-9a-f]* responder-spi=[0-9a-f]*' | sed 's/[a-z]*-spi=//g' | sort; }

# wait_for seconds command...: polls until the command succeeds.
wait_for() { local t=$1; shift; for _ in $(seq $((t * 5))); do "$@" && return 0; sleep 0.2; done; return 1; }

# settled dir: charon holds exactly one Child SA and one IKE SA, the ones esptun logged last.
settled() {
    [[ $(charon_children "$1") == "$(esptun_child "$1")" && $(charon_ikes "$1") == "$(esptun_ike "$1")" ]]
}

# lifecycle name action: esptun initiates; then `action dir` does something to the
# tunnel and must leave both sides agreeing on new SAs that carry pings.
lifecycle() {
    local name="lifecycle/$1" action=$2 d=$RUN/life-$1 before
    [[ $name =~ $ONLY ]] || return 0
    mkdir -p "$d"
    esptun_conf "$d" psk aes128gcm16-prfsha256-x25519 true
    charon_conf "$d" psk aes128gcm16-prfsha256-x25519
    start_charon "$d" || { fail "$name" "charon did not start"; stop_all; return; }
    start_esptun "$d" || { fail "$name" "esptun did not start"; stop_all; return; }
    if ! wait_for 10 settled "$d"; then
        fail "$name" "not established"; show_logs "$d"; stop_all; return
    fi
    before="child $(esptun_child "$d") ike $(esptun_ike "$d")"
    local why
    if ! why=$($action "$d" 2>&1); then
        fail "$name" "$why"; show_logs "$d"
    elif [[ "child $(esptun_child "$d") ike $(esptun_ike "$d")" == "$before" && $1 != *dead* ]]; then
        fail "$name" "nothing changed ($before)"; show_logs "$d"
    elif ! wait_for 15 settled "$d"; then
        fail "$name" "views differ: charon children '$(charon_children "$d" | paste -sd,)' IKE '$(charon_ikes "$d" | paste -sd,)', esptun child '$(esptun_child "$d")' IKE '$(esptun_ike "$d")'"; show_logs "$d"
    elif ! traffic "$d" psk >/dev/null; then
        fail "$name" "no traffic afterwards"; show_logs "$d"
    else
        pass "$name" "$why; now child $(esptun_child "$d"), IKE $(esptun_ike "$d")"
    fi
    stop_all
}

rekeyed_child() { wait_for 20 grep -q 'CHILD_SA .* UP .*(rekeys' "$1/esptun.log" || { echo "esptun logged no Child SA rekey"; return 1; }; echo "Child SA rekeyed"; }
rekeyed_ike() { wait_for 20 grep -q ' REKEYED ' "$1/esptun.log" || { echo "esptun logged no IKE SA rekey"; return 1; }; echo "IKE SA rekeyed"; }
charon_rekeys_child() { sw "$1" --rekey --child net >/dev/null 2>&1; rekeyed_child "$1"; }
charon_rekeys_ike() { sw "$1" --rekey --ike interop >/dev/null 2>&1; rekeyed_ike "$1"; }
charon_deletes_child() {
    local old; old=$(esptun_child "$1")
    sw "$1" --terminate --child net >/dev/null 2>&1
    wait_for 20 bash -c "[[ \$(grep 'CHILD_SA .* UP ' '$1/esptun.log' | tail -1 | grep -o 'spi_in [0-9a-f]*') != 'spi_in ${old%% *}' ]]" \
        || { echo "esptun did not bring the child back"; return 1; }
    echo "deleted by charon, esptun re-created it"
}
charon_dies() {
    kill -9 "$CHARON_PID"; wait "$CHARON_PID" 2>/dev/null || true
    local t0=$SECONDS
    wait_for 30 grep -q 'DOWN interop: peer not answering' "$1/esptun.log" || { echo "esptun never declared charon dead"; return 1; }
    local dead=$((SECONDS - t0))
    start_charon "$1" || { echo "charon did not restart"; return 1; }
    wait_for 30 settled "$1" || { echo "no new SA after charon came back"; return 1; }
    echo "declared dead after ${dead} s (dpd_delay 2 s, retransmits 1 s x 2), reconnected"
}

run_lifecycle() {
    lifecycle charon-rekeys-child charon_rekeys_child
    ESP=aes128gcm16-x25519 lifecycle charon-rekeys-child-pfs charon_rekeys_child
    local child_lifetime='rekey_time = "6s"
life_time = "30s"
rand_time = "2s"'
    ESPTUN_CHILD=$child_lifetime lifecycle esptun-rekeys-child rekeyed_child
    ESP=aes128gcm16-x25519 ESPTUN_CHILD=$child_lifetime lifecycle esptun-rekeys-child-pfs rekeyed_child
    lifecycle charon-rekeys-ike charon_rekeys_ike
    ESPTUN_CONN='rekey_time = "6s"
over_time = "30s"
rand_time = "2s"' lifecycle esptun-rekeys-ike rekeyed_ike
    lifecycle charon-deletes-child charon_deletes_child
    ESPTUN_CONN='dpd_delay = "2s"' ESPTUN_CHILD='dpd_action = "restart"' ESPTUN_TOP='[ike]
retransmit_timeout = 1
retransmit_tries = 2' lifecycle peer-dead charon_dies
}

# deploy/examples/strongswan as README tells a newcomer to use it: a PKI from `esptun
# pki ca` and `esptun pki issue`, both files rendered by render.sh with this test's
# addresses, the certificates where swanctl.conf's comments say; nothing else.
run_deploy_example() {
    local name=deploy/examples/strongswan d=$RUN/deploy-example theirs="" ours="" why
    [[ $name =~ $ONLY ]] || return 0
    mkdir -p "$d"
    "$ESPTUN" pki ca --out "$d/pki" >/dev/null
    "$ESPTUN" pki issue --dir "$d/pki" --san left.example >/dev/null
    "$ESPTUN" pki issue --dir "$d/pki" --san right.example >/dev/null
    LEFT_ADDR=$ADDR_E RIGHT_ADDR=$ADDR_C CERT_DIR=$d/pki \
        "$HERE/../../deploy/examples/render.sh" "$HERE/../../deploy/examples/strongswan" "$d/rendered"
    cp "$d/rendered/esptun.toml" "$d/esptun.toml"
    charon_strongswan_conf "$d"
    cp "$d/rendered/swanctl.conf" "$d/swanctl/swanctl.conf"
    cp "$d/pki/ca.crt" "$d/swanctl/x509ca/"
    cp "$d/pki/right.example.crt" "$d/swanctl/x509/"
    cp "$d/pki/right.example.key" "$d/swanctl/private/"
    start_charon "$d" || { fail "$name" "charon did not load the rendered swanctl.conf"; stop_all; return; }
    start_esptun "$d" || { fail "$name" "esptun did not start on the rendered esptun.toml"; stop_all; return; }
    for _ in $(seq 100); do
        theirs=$(charon_sa "$d" || true); ours=$(esptun_sa "$d" || true)
        [[ -n $theirs && -n $ours ]] && break
        sleep 0.1
    done
    if [[ -z $theirs || $theirs != "$ours" ]]; then
        fail "$name" "charon '${theirs}', esptun '${ours}'"; show_logs "$d"
    elif ! why=$(traffic "$d" example); then
        fail "$name" "$why"; show_logs "$d"
    else
        pass "$name" "$why"
    fi
    stop_all
}

log "$("$ESPTUN" --version) against charon $(dpkg-query -W -f '${Version}' charon-systemd 2>/dev/null)"
ONLY=${ONLY:-.}   # a regex over case names, to rerun a few
for who in esptun charon; do
    for auth in ecdsa rsa psk; do
        for prop in aes128gcm16-prfsha256-x25519 aes256-sha256-modp2048 chacha20poly1305-prfsha384-ecp384; do
            [[ "$who-initiates/$auth/$prop" =~ $ONLY ]] && run_case "$who" "$auth" "$prop"
        done
    done
done
# esptun offering per-resource Child SAs (RFC 9611) to a charon 5.9, which knows no
# SA_RESOURCE_INFO: one Child SA, the same on both sides (run_case compares them).
for who in esptun charon; do
    prop=aes128gcm16-prfsha256-x25519
    [[ "$who-initiates/psk/$prop/per-resource" =~ $ONLY ]] || continue
    ESPTUN_CHILD="per_resource_sas = true" run_case "$who" psk $prop per-resource
done
# esptun spreading its inbound SA over two workers by sequence number (spread_inbound),
# with a charon 5.9 that sends with one SA: the same SA on both sides, and the pings and
# the 200 MB transfer's ACKs through it.
for who in esptun charon; do
    prop=aes128gcm16-prfsha256-x25519
    [[ "$who-initiates/ecdsa/$prop/spread" =~ $ONLY ]] || continue
    ESPTUN_CHILD="spread_inbound = true" ESPTUN_TOP=$'[dataplane]\nworkers = 2' run_case "$who" ecdsa $prop spread
done
for who in esptun charon; do
    [[ "$who-initiates/failures" =~ $ONLY ]] || continue
    run_failure "$who" untrusted ecdsa 'AUTH_FAILED|AUTHENTICATION_FAILED'
    run_failure "$who" id-mismatch ecdsa 'AUTH_FAILED|AUTHENTICATION_FAILED|no trusted .* public key found'
    run_failure "$who" wrong-psk psk 'AUTH_FAILED|AUTHENTICATION_FAILED'
    run_failure "$who" no-proposal psk 'NO_PROP|received proposals unacceptable'
done

run_lifecycle
run_deploy_example

log "$PASSED passed, ${#FAILED[@]} failed"
(( ${#FAILED[@]} == 0 )) || { printf '  failed: %s\n' "${FAILED[@]}"; exit 1; }
