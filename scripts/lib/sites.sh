# shellcheck shell=bash
# Two sites joined by two esptun gateways, in network namespaces (sourced by
# scripts/demo.sh, scripts/bench-tunnel.sh and tests/e2e/run.sh).
#
#   alice host ── alice gw ══ ESP over 192.0.2.0/24, 2001:db8::/64 ══ bob gw ── bob host
#   10.1.0.2       10.1.0.1                                          10.2.0.1    10.2.0.2
#   fd00:1::2      fd00:1::1                                         fd00:2::1   fd00:2::2
#
# Namespace names carry the caller's PID, so parallel runs never collide; sites_down
# removes them (callers trap it on EXIT). Traffic never leaves the namespaces.

SITES_ID=${SITES_ID:-esptun-$$}
NS_AH=$SITES_ID-ah NS_AG=$SITES_ID-ag NS_BG=$SITES_ID-bg NS_BH=$SITES_ID-bh
WAN_A=192.0.2.1 WAN_B=192.0.2.2 WAN6_A=2001:db8::1 WAN6_B=2001:db8::2
# shellcheck disable=SC2034 # the HOST_* and *_PID variables are for the callers
HOST_A=10.1.0.2 HOST_B=10.2.0.2 HOST6_A=fd00:1::2 HOST6_B=fd00:2::2
NETS_A="10.1.0.0/24 fd00:1::/64" NETS_B="10.2.0.0/24 fd00:2::/64"
SITES_PIDS=()

# sites_up: the four namespaces, addressed and routed, waiting until links answer.
sites_up() {
    local tool ns
    for tool in ip ping sysctl awk; do
        command -v $tool >/dev/null || { echo "sites: $tool missing (scripts/deps.sh demo installs it)" >&2; return 1; }
    done
    for ns in "$NS_AH" "$NS_AG" "$NS_BG" "$NS_BH"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # No duplicate address detection: addresses are usable at once.
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    done
    _sites_link "$NS_AH" eth0 "$NS_AG" lan 10.1.0.2/24 fd00:1::2/64 10.1.0.1/24 fd00:1::1/64
    _sites_link "$NS_AG" wan "$NS_BG" wan $WAN_A/24 $WAN6_A/64 $WAN_B/24 $WAN6_B/64
    _sites_link "$NS_BG" lan "$NS_BH" eth0 10.2.0.1/24 fd00:2::1/64 10.2.0.2/24 fd00:2::2/64
    for ns in "$NS_AG" "$NS_BG"; do
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    done
    ip -n "$NS_AH" route add default via 10.1.0.1
    ip -n "$NS_AH" -6 route add default via fd00:1::1
    ip -n "$NS_BH" route add default via 10.2.0.1
    ip -n "$NS_BH" -6 route add default via fd00:2::1
    for _ in $(seq 50); do
        ip netns exec "$NS_AG" ping -c1 -W1 -q $WAN_B >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "sites: the WAN link does not answer: $(ip netns exec "$NS_AG" ping -c1 -W1 $WAN_B 2>&1 | tail -n1)" >&2
    return 1
}

# _sites_link ns1 if1 ns2 if2 v4-1 v6-1 v4-2 v6-2
_sites_link() {
    ip -n "$1" link add "$2" type veth peer name "$4" netns "$3"
    ip -n "$1" addr add "$5" dev "$2"; ip -n "$1" addr add "$6" dev "$2" nodad
    ip -n "$3" addr add "$7" dev "$4"; ip -n "$3" addr add "$8" dev "$4" nodad
    ip -n "$1" link set "$2" up; ip -n "$3" link set "$4" up
}

# sites_stop: stops what sites_start started (the gateways delete their SAs).
sites_stop() {
    local pid
    for pid in "${SITES_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${SITES_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    SITES_PIDS=()
}

# sites_down: sites_stop, then removes the namespaces.
sites_down() {
    local ns
    sites_stop
    for ns in "$NS_AH" "$NS_AG" "$NS_BG" "$NS_BH"; do ip netns del "$ns" 2>/dev/null || true; done
}

_toml_list() { local out="" x; for x in "$@"; do out+="\"$x\", "; done; echo "[${out%, }]"; }

# sites_pki dir esptun: a CA and a certificate for each gateway, by `esptun pki`.
sites_pki() {
    "$2" pki ca --out "$1" --cn "esptun demo CA" >/dev/null
    "$2" pki host --dir "$1" --id alice.example >/dev/null
    "$2" pki host --dir "$1" --id bob.example >/dev/null
}

# sites_config dir pki me peer my-wan peer-wan start "my nets" "peer nets" [extra toml for the connection]
# (SITES_DATAPLANE, SITES_IKE and SITES_CHILD: extra lines for [dataplane], [ike] and
# the child; SITES_ESP: its ESP proposal)
sites_config() {
    local d=$1 pki=$2 me=$3 peer=$4 start=$7
    # shellcheck disable=SC2086
    cat >"$d/$me.toml" <<CONF
[listen]
addrs = ["$5"]

[dataplane]
tun = "esptun0"
${SITES_DATAPLANE:-}
${SITES_IKE:+[ike]
$SITES_IKE}

[[connection]]
name = "site"
local_addrs = ["$5"]
remote_addrs = ["$6"]
start = $start
${10:-}

[connection.local]
auth = "pubkey"
id = "$me.example"
certs = ["$pki/$me.example.crt"]
key = "$pki/$me.example.key"

[connection.remote]
auth = "pubkey"
id = "$peer.example"
cacerts = ["$pki/ca.crt"]

[[connection.children]]
name = "lan"
local_ts = $(_toml_list $8)
remote_ts = $(_toml_list $9)
esp_proposals = ["${SITES_ESP:-aes128gcm16}"]
${SITES_CHILD:-}
CONF
}

# sites_configs dir [initiator] [extra toml]: both gateways' configurations. The
# selectors are each site's nets unless SITES_NETS_A / SITES_NETS_B say otherwise
# (empty: dynamic, the gateway's WAN address); SITES_ALICE_ASKS is alice's remote_ts
# when it differs from bob's local_ts (bob narrows it).
sites_configs() {
    local d=$1 initiator=${2:-alice} a_start=true b_start=false
    [[ $initiator == bob ]] && { a_start=false; b_start=true; }
    local nets_a=${SITES_NETS_A-$NETS_A} nets_b=${SITES_NETS_B-$NETS_B}
    # SITES_ALICE_SEEN: alice's address as bob sees it (behind a NAT).
    sites_config "$d" "$d/pki" bob alice $WAN_B "${SITES_ALICE_SEEN:-$WAN_A}" $b_start "$nets_b" "$nets_a" "${3:-}"
    sites_config "$d" "$d/pki" alice bob $WAN_A $WAN_B $a_start "$nets_a" "${SITES_ALICE_ASKS-$nets_b}" "${3:-}"
}

# sites_start esptun dir [initiator] [extra toml]: both gateways (configured by
# sites_configs), the responder first; the initiator (alice unless told bob) starts the
# SAs. Returns once both have the Child SA up.
sites_start() {
    local esptun=$1 d=$2 initiator=${3:-alice}
    sites_configs "$d" "$initiator" "${4:-}"
    local first=alice second=bob
    [[ $initiator == alice ]] && { first=bob; second=alice; }
    sites_gateway "$esptun" "$d" $first && sites_wait "$d/$first.log" "data plane:" || return 1
    sites_gateway "$esptun" "$d" $second
    sites_wait "$d/alice.log" "CHILD_SA .* UP" && sites_wait "$d/bob.log" "CHILD_SA .* UP"
}

# sites_gateway esptun dir alice|bob [log]: starts that gateway on dir/NAME.toml, its
# output in dir/NAME.log (or log); sets ALICE_PID or BOB_PID. SITES_ESPTUN_ARGS adds
# arguments (-v), SITES_KEYLOG=1 `--keylog dir/NAME.keys`; SITES_STAMP=1 also writes each line, prefixed with the time of day
# to the millisecond, to the log's .ts twin (the log itself stays as esptun wrote it).
sites_gateway() {
    local ns=$NS_AG log=${4:-$2/$3.log}
    [[ $3 == bob ]] && ns=$NS_BG
    local args=()
    read -r -a args <<<"${SITES_ESPTUN_ARGS:-}"
    [[ ${SITES_KEYLOG:-0} == 1 ]] && args+=(--keylog "$2/$3.keys")
    if [[ ${SITES_STAMP:-0} == 1 ]]; then
        # ip netns exec execs esptun, so $! is esptun's PID either way.
        ip netns exec "$ns" "$1" run --config "$2/$3.toml" "${args[@]}" \
            > >(tee "$log" | _sites_stamp >"$log.ts") 2>&1 &
    else
        ip netns exec "$ns" "$1" run --config "$2/$3.toml" "${args[@]}" >"$log" 2>&1 &
    fi
    SITES_PIDS+=($!)
    # shellcheck disable=SC2034
    if [[ $3 == alice ]]; then ALICE_PID=$!; else BOB_PID=$!; fi
}

# _sites_stamp: stdin to stdout, each line prefixed with HH:MM:SS.mmm.
_sites_stamp() {
    perl -MTime::HiRes=time -MPOSIX=strftime -ne \
        'BEGIN { $| = 1 } my $t = time; printf "%s.%03d %s", strftime("%H:%M:%S", localtime $t), ($t - int $t) * 1000, $_'
}

# sites_wait log regex [seconds, default 10]: until a line of the log matches.
sites_wait() {
    for _ in $(seq $((${3:-10} * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "sites: no \"$2\" in $1:" >&2; tail -n 20 "$1" >&2
    return 1
}

# sites_report log pid: the gateway's per-SA counters and drops, asked for with SIGUSR1:
# the report's CHILD_SA lines and its drops line, without their time and level. (A
# Child SA that is removed logs a line of the same form after its connection's name,
# which the awk below does not take.)
sites_report() {
    local before
    before=$(wc -l <"$1")
    kill -USR1 "$2"
    for _ in $(seq 50); do
        tail -n +"$((before + 1))" "$1" | sites_unstamp | grep -q '^drops:' && break
        sleep 0.1
    done
    tail -n +"$((before + 1))" "$1" | sites_unstamp | awk '/^CHILD_SA .* in [0-9]+ packets/ {buf = buf $0 "\n"; next}
         /^drops:/ {print buf $0; exit} {buf = ""}'
}

# sites_unstamp: stdin to stdout, each esptun log line without its time and level.
sites_unstamp() { sed -E 's/^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z [A-Z]+ +//'; }
