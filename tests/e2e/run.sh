#!/usr/bin/env bash
# esptun <-> esptun end to end, in network namespaces (scripts/lib/sites.sh): for raw
# ESP and UDP encapsulation, each side initiating, and with TUN offload off: ping
# over IPv4 and IPv6, a 200 MB TCP transfer whose SHA-256 must match on arrival, and
# a capture of the WAN link that must hold nothing but IKE and ESP; TCP over IPv6, TCP
# with a 500-byte MSS and UDP GSO, whose super-packets the gateway must segment. Then a peer
# sends garbage, a replayed packet and a wrong SPI at the ESP port: only the drop
# counters may change; and one GSO train of two Child SAs' ESP and IKE must reach
# each datagram's owner (worker or control thread). Last, a soft packet lifetime must
# rekey the Child SA without losing a ping, a DF packet too big for a CBC SA must get
# ICMP "fragmentation needed", and behind a source NAT (nftables) both sides must
# float to 4500 and the translated side must send NAT keepalives. Fail closed: with
# bob's gateway down, nothing of alice's sites leaves in clear (though her main table
# has a route for it) and the packets are held and counted; host to host, the
# gateways' own traffic to each other goes in ESP while their IKE still flows; no
# route of the main table is ever touched; and a trapped child is negotiated by its
# first packet, which arrives (and a second daemon for the same TUN is refused). A
# gateway whose TUN is deleted exits saying why, and one that is gone (deleted TUN,
# SIGKILL) leaves its prefixes blackholed, not open. Once up, the control thread
# keeps only its network capabilities, the workers none; `esptun status` shows on
# each side the SAs the logs name; `esptun reload` and SIGHUP leave an unchanged
# connection's SAs alone, refuse a broken file, replace a changed connection's SAs,
# and remove and add connections with their routes.
# Root only; traffic stays in the namespaces.
#
# usage: tests/e2e/run.sh [--esptun PATH] [--keep]   (exit 1 if any case fails)
#        ONLY=regex picks cases by name
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/lib/sites.sh
source "$HERE/../../scripts/lib/sites.sh"
ESPTUN=${ESPTUN:-${CARGO_TARGET_DIR:-$HERE/../../target}/release/esptun}
KEEP=0
while [[ $# -gt 0 ]]; do case $1 in
    --esptun) ESPTUN=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--esptun PATH] [--keep]" >&2; exit 2 ;;
esac; done
[[ $(id -u) == 0 ]] || { echo "e2e: needs root (namespaces, TUN)" >&2; exit 1; }
[[ -x $ESPTUN ]] || { echo "e2e: no esptun binary at $ESPTUN (cargo build --release)" >&2; exit 1; }
for tool in nc tcpdump nft ss sha256sum timeout jq curl; do
    command -v $tool >/dev/null || { echo "e2e: $tool missing (scripts/deps.sh test installs it)" >&2; exit 1; }
done

RUN=$(mktemp -d /tmp/esptun-e2e.XXXXXX)
cleanup() {
    sites_down
    if (( KEEP )); then echo "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
PASSED=0 FAILED=()
want() { [[ -z ${ONLY:-} || $1 =~ $ONLY ]]; }
pass() { PASSED=$((PASSED + 1)); log "PASS $1"; }
fail() {
    FAILED+=("$1"); log "FAIL $1: $2"
    echo "----- alice -----"; tail -n 15 "$CASE/alice.log" 2>/dev/null || true
    echo "----- bob -----"; tail -n 15 "$CASE/bob.log" 2>/dev/null || true
}

head -c 200M /dev/urandom >"$RUN/payload"
SUM=$(sha256sum <"$RUN/payload" | cut -d' ' -f1)
sites_pki "$RUN/pki" "$ESPTUN"

# transfer [address]: 200 MB alice host -> bob host (HOST_B unless given) over TCP;
# prints the received SHA-256.
transfer() {
    local to=${1:-$HOST_B}
    ip netns exec "$NS_BH" sh -c "nc -l $to 5001 | sha256sum | cut -d' ' -f1 >'$CASE/received'" &
    local listener=$!
    for _ in $(seq 50); do ip netns exec "$NS_BH" ss -ltn | grep -q ":5001" && break; sleep 0.1; done
    timeout 120 ip netns exec "$NS_AH" nc -N "$to" 5001 <"$RUN/payload" || true
    wait $listener || true
    cat "$CASE/received"
}

# worker_packets NS FIELD: each worker's packets_out or packets_in, as a JSON array.
worker_packets() {
    ip netns exec "$1" "$ESPTUN" status --json | jq -c "[.workers[] | .$2]"
}

# since BEFORE AFTER: each worker's count between two worker_packets.
since() {
    jq -nc --argjson a "$1" --argjson b "$2" '[range($b | length) | $b[.] - $a[.]]'
}

# even COUNTS: two workers' counts, each within 25 % of half their sum.
even() {
    jq -e 'length == 2 and (add / 2) as $half | all(. >= $half * 0.75 and . <= $half * 1.25)' <<<"$1" >/dev/null
}

# streams: eight TCP streams of 25 MB at once, alice's host to bob's; fails, naming
# the streams in STREAMS_DAMAGED, unless each arrives whole.
streams() {
    head -c 25000000 "$RUN/payload" >"$CASE/part"
    local part port listeners=() senders=()
    part=$(sha256sum <"$CASE/part" | cut -d' ' -f1)
    for port in $(seq 5101 5108); do
        ip netns exec "$NS_BH" sh -c "nc -l $HOST_B $port | sha256sum | cut -d' ' -f1 >'$CASE/received-$port'" &
        listeners+=($!)
    done
    for _ in $(seq 50); do
        (( $(ip netns exec "$NS_BH" ss -ltnH "sport >= :5101 and sport <= :5108" | wc -l) == 8 )) && break
        sleep 0.1
    done
    for port in $(seq 5101 5108); do
        timeout 60 ip netns exec "$NS_AH" nc -N "$HOST_B" "$port" <"$CASE/part" &
        senders+=($!)
    done
    wait "${senders[@]}" "${listeners[@]}" || true
    STREAMS_DAMAGED=""
    for port in $(seq 5101 5108); do
        [[ $(cat "$CASE/received-$port") == "$part" ]] || STREAMS_DAMAGED+="${STREAMS_DAMAGED:+, }$port"
    done
    [[ -z $STREAMS_DAMAGED ]] || { STREAMS_DAMAGED="streams $STREAMS_DAMAGED arrived damaged or short"; return 1; }
}

# The WAN link's own IPv6 chatter (neighbour discovery, MLD), not tunnel traffic.
LINK_LOCAL="(icmp6 or src net fe80::/10 or dst net ff02::/16)"

# only_ike_and_esp pcap raw|udp: the capture holds no IP packet but IKE and ESP
# (link-local chatter aside), and tcpdump finds no inner address in it.
only_ike_and_esp() {
    local allowed="udp port 500 or udp port 4500"
    [[ $2 == raw ]] && allowed+=" or esp"
    local other inner total
    total=$(tcpdump -r "$1" -n 2>/dev/null | wc -l)
    other=$(tcpdump -r "$1" -n "(ip or ip6) and not ($allowed) and not $LINK_LOCAL" 2>/dev/null | wc -l)
    inner=$(tcpdump -r "$1" -n 2>/dev/null | grep -c -E '10\.[12]\.0\.|fd00:' || true)
    echo "$total packets captured, $other neither IKE nor ESP, $inner showing an inner address"
    (( other == 0 )) || tcpdump -r "$1" -n "(ip or ip6) and not ($allowed) and not $LINK_LOCAL" 2>/dev/null | head -3
    (( total > 1000 && other == 0 && inner == 0 ))
}

# case name initiator transport [dataplane toml]
run_case() {
    local name=$1 initiator=$2 transport=$3 extra="" why=""
    want "$name" || return 0
    [[ $transport == udp ]] && extra="encap = true"
    CASE=$RUN/$name; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE=${4:-}
    log "case $name: $initiator initiates, ESP over $transport${4:+, $4}"
    if ! sites_start "$ESPTUN" "$CASE" "$initiator" "$extra"; then
        fail "$name" "no Child SA"; sites_stop; return
    fi
    ip netns exec "$NS_AG" tcpdump -i wan -n -s 128 -w "$CASE/wan.pcap" 2>/dev/null &
    local dump=$!
    sleep 0.5
    if ! ip netns exec "$NS_AH" ping -c 3 -i 0.2 -W 2 -q "$HOST_B" >/dev/null; then
        why="IPv4 ping failed"
    elif ! ip netns exec "$NS_AH" ping -6 -c 3 -i 0.2 -W 2 -q "$HOST6_B" >/dev/null; then
        why="IPv6 ping failed"
    elif ! ip netns exec "$NS_BH" ping -c 3 -i 0.2 -W 2 -q "$HOST_A" >/dev/null; then
        why="IPv4 ping from bob's side failed"
    else
        local got; got=$(transfer)
        [[ $got == "$SUM" ]] || why="200 MB transfer: SHA-256 $got, sent $SUM"
    fi
    sleep 0.5; kill $dump 2>/dev/null || true; wait $dump 2>/dev/null || true
    if [[ -z $why ]]; then
        local verdict
        verdict=$(only_ike_and_esp "$CASE/wan.pcap" "$transport") || why="capture: $verdict"
        log "  capture: $verdict"
    fi
    local report; report=$(sites_report "$CASE/bob.log" "$BOB_PID")
    log "  bob: ${report//$'\n'/ | }"
    if [[ -z $why ]]; then pass "$name"; else fail "$name" "$why"; fi
    sites_stop
}

sites_up
run_case raw-alice alice raw
run_case raw-bob bob raw
run_case udp-alice alice udp
run_case udp-bob bob udp
run_case no-offload alice udp "offload = false"
run_case one-worker bob raw "workers = 1"
# The same over an IPv6 WAN (outer IPv6; raw ESP sockets see no IP header there).
WAN4_A=$WAN_A WAN4_B=$WAN_B
WAN_A=$WAN6_A WAN_B=$WAN6_B
run_case raw-ipv6-outer alice raw
run_case udp-ipv6-outer bob udp
WAN_A=$WAN4_A WAN_B=$WAN4_B

# --- TSO super-packets of every shape -------------------------------------------------
# The gateway segments what the TUN hands it (dataplane::segment): TCP over IPv6 (TSO
# for IPv6), TCP with a 500-byte MSS (bob's host advertises it), whose 64 KiB
# super-packets have more segments than a batch has buffers, and UDP GSO. Each transfer
# must arrive whole, and alice's gateway must count nothing malformed.
segments() {
    CASE=$RUN/segments; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE=""
    log "case segments: TCP over IPv6, TCP with a 500-byte MSS, UDP GSO"
    sites_start "$ESPTUN" "$CASE" alice "encap = true" || { fail segments "no Child SA"; sites_stop; return; }
    local got why="" malformed
    got=$(transfer "$HOST6_B")
    [[ $got == "$SUM" ]] || why="IPv6 transfer: SHA-256 $got, sent $SUM"
    ip -n "$NS_BH" route change default via 10.2.0.1 advmss 500
    got=$(transfer)
    ip -n "$NS_BH" route change default via 10.2.0.1
    [[ -n $why || $got == "$SUM" ]] || why="MSS 500 transfer: SHA-256 $got, sent $SUM"
    # UDP GSO (USO): 50 sends of ten 1200-byte datagrams each reach the TUN as 12 000-byte
    # super-packets; bob's host counts what arrives whole (its kernel drops a datagram
    # whose checksum is wrong).
    ip netns exec "$NS_BH" python3 - "$HOST_B" >"$CASE/udp" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 5002))
s.settimeout(3)
whole = 0
try:
    while True:
        d = s.recv(65535)
        whole += len(d) == 1200 and d == d[:1] * 1200
except socket.timeout:
    print(whole)
PY
    local listener=$!
    sleep 0.5
    ip netns exec "$NS_AH" python3 - "$HOST_B" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 1200)  # UDP_SEGMENT
for k in range(50):
    s.sendto(b"".join(bytes([(k * 10 + i) % 256]) * 1200 for i in range(10)), (sys.argv[1], 5002))
    time.sleep(0.002)
PY
    wait $listener || true
    got=$(cat "$CASE/udp")
    [[ -n $why || $got == 500 ]] || why="UDP GSO: $got of 500 datagrams arrived whole"
    malformed=$(sites_report "$CASE/alice.log" "$ALICE_PID" | grep -o ' malformed=[0-9]*' | cut -d= -f2)
    [[ -n $why || $malformed == 0 ]] || why="alice counted $malformed malformed packets"
    if [[ -z $why ]]; then pass segments; else fail segments "$why"; fi
    sites_stop
}
want segments && segments

# --- hostile traffic at bob's ESP port ----------------------------------------------
# drops: the named counter of bob's last report.
drops() { sites_report "$CASE/bob.log" "$BOB_PID" | grep -o " $1=[0-9]*" | cut -d= -f2; }
# bob's inbound packet count.
inbound() { sites_report "$CASE/bob.log" "$BOB_PID" | grep -o 'in [0-9]* packets' | head -1 | cut -d' ' -f2; }
send_udp() { # file: its bytes in one datagram from alice's gateway to bob's NAT-T port
    ip netns exec "$NS_AG" bash -c "cat '$1' >/dev/udp/$WAN_B/4500"
}

hostile() {
    CASE=$RUN/hostile; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE=""
    log "case hostile: garbage, a replay and a wrong SPI at bob's ESP port"
    sites_start "$ESPTUN" "$CASE" alice "encap = true" || { fail hostile "no Child SA"; sites_stop; return; }
    # One real ESP packet, captured on its way to bob.
    ip netns exec "$NS_BG" tcpdump -i wan -n -c 1 -w "$CASE/one.pcap" \
        "udp dst port 4500 and greater 100" 2>/dev/null &
    local dump=$!
    sleep 0.5
    ip netns exec "$NS_AH" ping -c 2 -i 0.2 -q "$HOST_B" >/dev/null
    wait $dump || true
    # pcap header 24 + record header 16 + Ethernet 14 + IPv4 20 + UDP 8: the ESP packet.
    tail -c +83 "$CASE/one.pcap" >"$CASE/replay"
    { printf '\xde\xad\xbe\xef'; tail -c +87 "$CASE/one.pcap"; } >"$CASE/wrong-spi"
    head -c 300 /dev/urandom >"$CASE/garbage"
    head -c 3 /dev/urandom >"$CASE/short"
    local replay0 nosa0 in0 bad0 mal0
    replay0=$(drops replay); nosa0=$(drops no_sa); bad0=$(drops bad_icv); mal0=$(drops malformed)
    in0=$(inbound)
    send_udp "$CASE/replay"; send_udp "$CASE/wrong-spi"; send_udp "$CASE/garbage"; send_udp "$CASE/short"
    sleep 0.5
    local replay1 nosa1 in1 bad1 mal1
    replay1=$(drops replay); nosa1=$(drops no_sa); bad1=$(drops bad_icv); mal1=$(drops malformed)
    in1=$(inbound)
    log "  replay $replay0->$replay1, no_sa $nosa0->$nosa1, bad_icv $bad0->$bad1, malformed $mal0->$mal1, SA inbound $in0->$in1"
    local why=""
    (( replay1 == replay0 + 1 )) || why="the replay was not counted as one"
    # The wrong SPI and the random 300 bytes name SPIs bob does not have (2^-32 odds
    # otherwise); the 3-byte datagram cannot hold an SPI and goes to the control thread.
    # (The TUN's own MLD reports count as no_sa too, so at least two.)
    (( nosa1 >= nosa0 + 2 )) || why+="${why:+; }wrong SPI and garbage were not counted as no_sa"
    (( in1 == in0 )) || why+="${why:+; }the SA counted hostile packets as traffic"
    ip netns exec "$NS_AH" ping -c 2 -i 0.2 -W 2 -q "$HOST_B" >/dev/null || why+="${why:+; }the tunnel broke"
    grep -q 'DOWN\|panicked' "$CASE/bob.log" && why+="${why:+; }bob logged a failure"
    if [[ -z $why ]]; then pass hostile; else fail hostile "$why"; fi
    sites_stop
}
want hostile && hostile

# --- a train that mixes two Child SAs and IKE ----------------------------------------
# The kernel hands a train (a GSO run, or what GRO coalesced by addresses and ports
# alone) to the socket its first datagram is steered to: bob's worker that owns the
# first SPI must pass the other SA's ESP to the worker that owns it, and IKE to the
# control thread. Alice's ESP of two Child SAs (IPv4 and IPv6 pings of one size; SPIs
# of different workers) is captured and kept from bob; alice is killed and the packets
# go again from her address and port as one GSO train with IKE (garbage behind the
# non-ESP marker) in the middle. Both SAs must count theirs, nothing be dropped, and
# the engine see the IKE message (as malformed).
mixed_train() {
    CASE=$RUN/mixed-train; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    log "case mixed-train: two SAs' ESP and IKE in one train to bob's NAT-T port"
    local try spis="" lan6=$'[[connection.children]]\nname = "lan6"\nesp_proposals = ["aes128gcm16"]'
    for try in 1 2 3 4 5 6 7 8; do
        SITES_DATAPLANE="workers = 2" SITES_NETS_A=10.1.0.0/24 SITES_NETS_B=10.2.0.0/24 \
            sites_configs "$CASE" alice "encap = true"
        printf '%s\nlocal_ts = ["fd00:2::/64"]\nremote_ts = ["fd00:1::/64"]\n' "$lan6" >>"$CASE/bob.toml"
        printf '%s\nlocal_ts = ["fd00:1::/64"]\nremote_ts = ["fd00:2::/64"]\n' "$lan6" >>"$CASE/alice.toml"
        sites_gateway "$ESPTUN" "$CASE" bob && sites_wait "$CASE/bob.log" "data plane:" &&
            sites_gateway "$ESPTUN" "$CASE" alice && sites_wait "$CASE/bob.log" "CHILD_SA site/lan UP" &&
            sites_wait "$CASE/bob.log" "CHILD_SA site/lan6 UP" ||
            { fail mixed-train "no Child SAs"; sites_stop; return; }
        # Bob's inbound SPIs, one per worker (SPI % 2) or try again.
        spis=$(grep -o 'CHILD_SA site/lan6\? UP spi_in [0-9a-f]*' "$CASE/bob.log" | awk '{print $NF}')
        (( ($(head -1 <<<"$spis" | sed 's/^/0x/') ^ $(tail -1 <<<"$spis" | sed 's/^/0x/')) & 1 )) && break
        sites_stop; rm -f "$CASE"/*.log; spis=""
    done
    [[ -n $spis ]] || { fail mixed-train "no two SAs of different workers in 8 tries"; return; }
    ip netns exec "$NS_BG" nft -f - <<'NFT'
table inet esptun_train {
    chain input { type filter hook input priority 0; udp sport 4500 udp dport 4500 drop; }
}
NFT
    ip netns exec "$NS_BG" tcpdump -i wan -n -w "$CASE/esp.pcap" "src host $WAN_A and udp port 4500 and greater 100" 2>/dev/null &
    local dump=$!
    sleep 0.5
    # 104-byte inner packets both: an ICMP echo of 76 bytes, an ICMPv6 one of 56 (no
    # answers: bob drops them).
    ip netns exec "$NS_AH" ping -c 2 -i 0.2 -W 1 -s 76 -q "$HOST_B" >/dev/null || true
    ip netns exec "$NS_AH" ping -6 -c 2 -i 0.2 -W 1 -s 56 -q "$HOST6_B" >/dev/null || true
    sleep 0.3; kill $dump; wait $dump 2>/dev/null || true
    kill -KILL "$ALICE_PID"; wait "$ALICE_PID" 2>/dev/null || true
    ip netns exec "$NS_BG" nft delete table inet esptun_train
    local before after why="" sent
    before=$(sites_report "$CASE/bob.log" "$BOB_PID")
    local malformed0; malformed0=$(ip netns exec "$NS_BG" "$ESPTUN" counters --json | jq .ike_malformed)
    # The captured ESP, alternating between the SAs, an IKE datagram of their size in
    # the middle, as one GSO send from alice's NAT-T address.
    sent=$(ip netns exec "$NS_AG" python3 - "$CASE/esp.pcap" "$WAN_A" "$WAN_B" <<'PY'
import socket, struct, sys
data = open(sys.argv[1], "rb").read()
at, esp = 24, {}
while at + 16 <= len(data):
    n = struct.unpack_from("<I", data, at + 8)[0]
    frame = data[at + 16 : at + 16 + n]
    at += 16 + n
    ip = frame[14:]
    payload = ip[(ip[0] & 15) * 4 + 8 :]
    esp.setdefault(payload[:4], []).append(payload)
(a, b) = esp.values()
assert len(a) == len(b) == 2 and len({len(p) for p in a + b}) == 1, [len(p) for p in a + b]
ike = bytes(4) + b"\xee" * (len(a[0]) - 4)
train = [a[0], b[0], ike, a[1], b[1]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], 4500))
s.sendmsg(train, [(socket.SOL_UDP, 103, struct.pack("H", len(ike)))], 0, (sys.argv[3], 4500))
print(len(train), "datagrams of", len(ike), "bytes")
PY
) || why="the train was not sent: $sent"
    sleep 0.5
    after=$(sites_report "$CASE/bob.log" "$BOB_PID")
    log "  sent $sent; bob before: ${before//$'\n'/ | }"
    log "  bob after: ${after//$'\n'/ | }"
    local spi n0 n1
    for spi in $spis; do
        n0=$(grep -o "${spi}_i .*: in [0-9]*" <<<"$before" | awk '{print $NF}')
        n1=$(grep -o "${spi}_i .*: in [0-9]*" <<<"$after" | awk '{print $NF}')
        (( n1 == n0 + 2 )) || why+="${why:+; }SA ${spi}_i opened $((n1 - n0)) of its 2"
    done
    [[ $(grep '^drops:' <<<"$before") == "$(grep '^drops:' <<<"$after")" ]] || why+="${why:+; }bob dropped some"
    (( $(ip netns exec "$NS_BG" "$ESPTUN" counters --json | jq .ike_malformed) == malformed0 + 1 )) ||
        why+="${why:+; }the IKE datagram did not reach the engine"
    if [[ -z $why ]]; then pass mixed-train; else fail mixed-train "$why"; fi
    sites_stop
}
want mixed-train && mixed_train

# --- lifetimes: the soft packet limit rekeys, make-before-break, before the hard one --
lifetime() {
    CASE=$RUN/lifetime; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE="" SITES_CHILD=$'rekey_packets = 100\nlife_packets = 300'
    log "case lifetime: rekey_packets = 100, life_packets = 300, 400 pings"
    sites_start "$ESPTUN" "$CASE" alice || { fail lifetime "no Child SA"; sites_stop; return; }
    SITES_CHILD=""
    local out why="" rekeys
    out=$(ip netns exec "$NS_AH" ping -c 400 -i 0.005 -W 1 -q "$HOST_B" 2>&1 || true)
    # The old SAs go 3 s after their rekey.
    sleep 4
    grep -q '400 packets transmitted, 400 received' <<<"$out" || why="pings lost across the rekeys: $(grep -o '[0-9]* received' <<<"$out")"
    rekeys=$(cat "$CASE/alice.log" "$CASE/bob.log" | grep -c 'soft lifetime (packets) reached, rekeying' || true)
    # The data plane reports crossings once a second: 2 s of pings make 2 rekeys.
    (( rekeys >= 2 )) || why+="${why:+; }only $rekeys rekeys"
    grep -q 'hard lifetime' "$CASE/alice.log" "$CASE/bob.log" && why+="${why:+; }a hard lifetime was reached"
    # Every replaced SA is gone on both sides (its final counters line); the IKE SA stays.
    for gw in alice bob; do
        local ups downs
        ups=$(grep -c 'CHILD_SA site/lan UP' "$CASE/$gw.log" || true)
        downs=$(grep -c 'CHILD_SA lan .* in [0-9]* packets' "$CASE/$gw.log" || true)
        (( ups == downs + 1 )) || why+="${why:+; }$gw has $ups Child SAs up and $downs removed"
        grep -q ' DOWN ' "$CASE/$gw.log" && why+="${why:+; }$gw lost the IKE SA"
    done
    log "  $rekeys rekeys, $(grep -o '[0-9]* received' <<<"$out") of 400 pings"
    if [[ -z $why ]]; then pass lifetime; else fail lifetime "$why"; fi
    sites_stop
}
want lifetime && lifetime

# --- path MTU: a DF packet the SA cannot fit gets ICMP "fragmentation needed" --------------
# AES-256-CBC/HMAC-SHA-512 in UDP needs more room than the TUN MTU (sized for AEAD) leaves:
# max inner = 1500 - 20 - 8 - (8 + 16 + 32) rounded down to 16, minus 2 = 1406 < 1415.
too_big() {
    CASE=$RUN/too-big; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE="" SITES_ESP=aes256-sha512
    log "case too-big: ESP aes256-sha512 in UDP, a 1415-byte ping with DF"
    sites_start "$ESPTUN" "$CASE" alice "encap = true" || { fail too-big "no Child SA"; sites_stop; return; }
    SITES_ESP=""
    local out why=""
    out=$(ip netns exec "$NS_AH" ping -M "do" -s 1387 -c 2 -i 0.2 -W 1 "$HOST_B" 2>&1 || true)
    grep -q 'mtu = 1406' <<<"$out" || why="no ICMP fragmentation needed with mtu 1406: $(tail -n 3 <<<"$out")"
    ip netns exec "$NS_AH" ping -M "do" -s 1378 -c 2 -i 0.2 -W 2 -q "$HOST_B" >/dev/null || why+="${why:+; }a 1406-byte ping did not pass"
    local drops; drops=$(sites_report "$CASE/alice.log" "$ALICE_PID" | grep -o 'too_big=[0-9]*')
    [[ $drops != too_big=0 ]] || why+="${why:+; }too_big not counted"
    log "  alice: $drops; $(grep -m1 -o 'Frag needed.*' <<<"$out" || true)"
    if [[ -z $why ]]; then pass too-big; else fail too-big "$why"; fi
    sites_stop
}
want too-big && too_big

# --- NAT: alice's gateway is behind a source NAT (nftables, 192.0.2.1 -> 192.0.2.3) ------
# Both sides must detect it and float to UDP 4500, traffic must pass, and alice, whose
# address is translated, must send NAT keepalives (RFC 3948 §2.3: every 20 s).
nat() {
    CASE=$RUN/nat; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE=""
    log "case nat: alice behind SNAT to 192.0.2.3; keepalives within 25 s"
    ip -n "$NS_AG" addr add 192.0.2.3/32 dev wan
    ip netns exec "$NS_AG" nft -f - <<NFT
table ip esptun_nat {
    chain post { type nat hook postrouting priority srcnat; oifname "wan" ip saddr $WAN_A snat to 192.0.2.3; }
}
NFT
    ip netns exec "$NS_BG" tcpdump -i wan -n -c 1 -w "$CASE/keepalive.pcap" \
        "src host 192.0.2.3 and udp dst port 4500 and udp[4:2] = 9" 2>/dev/null &
    local dump=$! why=""
    # Bob's remote_addrs names the address he sees.
    if ! SITES_ALICE_SEEN=192.0.2.3 sites_start "$ESPTUN" "$CASE" alice; then
        why="no Child SA"
    else
        grep -q 'NAT detected on our side' "$CASE/alice.log" || why="alice did not see her NAT"
        grep -q 'NAT detected on the peer' "$CASE/bob.log" || why+="${why:+; }bob did not see alice's NAT"
        grep -q 'CHILD_SA .* UP .*192.0.2.3:4500' "$CASE/bob.log" || why+="${why:+; }bob's SA is not to 192.0.2.3:4500"
        ip netns exec "$NS_AH" ping -c 3 -i 0.2 -W 2 -q "$HOST_B" >/dev/null || why+="${why:+; }ping through the NAT failed"
        ip netns exec "$NS_BH" ping -6 -c 3 -i 0.2 -W 2 -q "$HOST6_A" >/dev/null || why+="${why:+; }IPv6 ping from bob failed"
        local waited=0
        while kill -0 $dump 2>/dev/null && (( waited < 250 )); do sleep 0.1; waited=$((waited + 1)); done
        if kill -0 $dump 2>/dev/null; then
            why+="${why:+; }no keepalive from alice within 25 s"
        else
            log "  keepalive after $((waited / 10)) s: $(tcpdump -r "$CASE/keepalive.pcap" -n -X 2>/dev/null | tail -1)"
        fi
        local drops; drops=$(sites_report "$CASE/bob.log" "$BOB_PID" | grep '^drops:')
        [[ $drops == *" bad_icv=0 "*" malformed=0 "* ]] || why+="${why:+; }bob counted the keepalives as drops: $drops"
    fi
    kill $dump 2>/dev/null || true; wait $dump 2>/dev/null || true
    if [[ -z $why ]]; then pass nat; else fail nat "$why"; fi
    sites_stop
    ip netns exec "$NS_AG" nft delete table ip esptun_nat
    ip -n "$NS_AG" addr del 192.0.2.3/32 dev wan
}
want nat && nat

# --- fail closed: bob's gateway is down; alice's main table even has a route to bob's
# site over the WAN. Nothing with an inner address may leave alice's gateway (from her
# host or from the gateway itself), the packets are held (32 per child and worker, the
# oldest pushed out and counted); once bob starts, traffic flows.
fail_closed() {
    CASE=$RUN/fail-closed; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE=""
    log "case fail-closed: bob's gateway down, a clear route in alice's main table; then bob starts"
    ip -n "$NS_AG" route add 10.2.0.0/24 via $WAN_B
    ip -n "$NS_AG" -6 route add fd00:2::/64 via $WAN6_B
    sites_configs "$CASE" alice
    ip netns exec "$NS_AG" tcpdump -i wan -n -s 128 -w "$CASE/wan.pcap" 2>/dev/null &
    local dump=$! why=""
    sleep 0.5
    sites_gateway "$ESPTUN" "$CASE" alice
    # Logged once every child of the connection is protected.
    sites_wait "$CASE/alice.log" "initiating" || why="alice did not start"
    local from dst flag
    for from in "$NS_AH" "$NS_AG"; do
        for dst in "$HOST_B" "$HOST6_B"; do
            flag=""; [[ $dst == *:* ]] && flag=-6
            if ip netns exec "$from" ping $flag -c 40 -i 0.01 -W 1 -q "$dst" >/dev/null 2>&1; then
                why+="${why:+; }a ping to $dst was answered with bob down"
            fi
        done
    done
    local drops; drops=$(sites_report "$CASE/alice.log" "$ALICE_PID" | grep '^drops:')
    log "  alice with bob down: $drops"
    local overflow; overflow=$(grep -o 'hold_overflow=[0-9]*' <<<"$drops" | cut -d= -f2)
    (( ${overflow:-0} > 0 )) || why+="${why:+; }no held packet was pushed out and counted"
    sites_gateway "$ESPTUN" "$CASE" bob
    local i
    for i in $(seq 300); do
        grep -q "CHILD_SA .* UP" "$CASE/alice.log" && grep -q "CHILD_SA .* UP" "$CASE/bob.log" && break
        # A packet asks for the SA should alice's first attempt have given up.
        (( i % 20 )) || ip netns exec "$NS_AH" ping -c 1 -W 1 -q "$HOST_B" >/dev/null 2>&1 || true
        sleep 0.1
    done
    if ! grep -q "CHILD_SA .* UP" "$CASE/bob.log"; then
        why+="${why:+; }no Child SA once bob started"
    else
        for from in "$NS_AH" "$NS_AG"; do
            for dst in "$HOST_B" "$HOST6_B"; do
                flag=""; [[ $dst == *:* ]] && flag=-6
                ip netns exec "$from" ping $flag -c 3 -i 0.2 -W 2 -q "$dst" >/dev/null ||
                    why+="${why:+; }ping $dst from $from failed with bob up"
            done
        done
    fi
    sleep 0.5; kill $dump 2>/dev/null || true; wait $dump 2>/dev/null || true
    local inner other
    inner=$(tcpdump -r "$CASE/wan.pcap" -n 2>/dev/null | grep -c -E '10\.[12]\.0\.|fd00:' || true)
    # Bob's kernel answers IKE with port unreachable while esptun is down there.
    other=$(tcpdump -r "$CASE/wan.pcap" -n "(ip or ip6) and not (udp port 500 or udp port 4500 or esp) and not $LINK_LOCAL and not (src host $WAN_B and icmp[icmptype] == icmp-unreach)" 2>/dev/null | wc -l)
    log "  capture: $inner packets showing an inner address, $other neither IKE nor ESP"
    (( inner == 0 && other == 0 )) || why+="${why:+; }clear traffic on the WAN"
    if [[ -z $why ]]; then pass fail-closed; else fail fail-closed "$why"; fi
    sites_stop
    ip -n "$NS_AG" route del 10.2.0.0/24 via $WAN_B
    ip -n "$NS_AG" -6 route del fd00:2::/64 via $WAN6_B
}
want fail-closed && fail_closed

# --- a gateway that dies never opens its tunnels: alice's main table has a clear route
# to bob's site. Her TUN deleted under her, alice must exit (not spin) saying why, and
# while she is gone her protected prefixes stay blackholed (rule and blackholes kept); a
# new alice takes them over and tunnels again; SIGKILLed, the same; stopped cleanly,
# she leaves nothing behind.
crash() {
    CASE=$RUN/crash; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE=""
    log "case crash: alice's TUN deleted, then alice killed: nothing leaves in clear"
    ip -n "$NS_AG" route add 10.2.0.0/24 via $WAN_B
    ip -n "$NS_AG" -6 route add fd00:2::/64 via $WAN6_B
    sites_configs "$CASE" alice
    ip netns exec "$NS_AG" tcpdump -i wan -n -s 128 -w "$CASE/wan.pcap" 2>/dev/null &
    local dump=$! why="" from dst flag round
    sleep 0.5
    sites_gateway "$ESPTUN" "$CASE" bob
    tunnel_up() { # log: alice's Child SA is up and carries pings both families
        sites_wait "$1" "CHILD_SA .* UP" 15 || { why+="${why:+; }no Child SA in $1"; return; }
        ip netns exec "$NS_AH" ping -c 3 -i 0.2 -W 2 -q "$HOST_B" >/dev/null &&
            ip netns exec "$NS_AH" ping -6 -c 3 -i 0.2 -W 2 -q "$HOST6_B" >/dev/null ||
            why+="${why:+; }no ping through the tunnel ($1)"
    }
    closed() { # what: nothing to bob's site is answered while alice is gone
        for from in "$NS_AH" "$NS_AG"; do
            for dst in "$HOST_B" "$HOST6_B"; do
                flag=""; [[ $dst == *:* ]] && flag=-6
                if ip netns exec "$from" ping $flag -c 20 -i 0.01 -W 1 -q "$dst" >/dev/null 2>&1; then
                    why+="${why:+; }a ping to $dst was answered $1"
                fi
            done
        done
        grep -q '^blackhole 10.2.0.0/24' <<<"$(ip -n "$NS_AG" route show table 4500)" ||
            why+="${why:+; }no blackhole for 10.2.0.0/24 $1"
    }
    for round in tun-deleted killed; do
        sites_gateway "$ESPTUN" "$CASE" alice "$CASE/alice-$round.log"
        local pid=$ALICE_PID
        tunnel_up "$CASE/alice-$round.log"
        if [[ $round == tun-deleted ]]; then
            ip -n "$NS_AG" link del esptun0
            local status=0 i
            for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then
                why+="${why:+; }alice still runs 3 s after her TUN was deleted"
            else
                wait "$pid" || status=$?
                (( status != 0 )) || why+="${why:+; }alice exited 0 with her TUN deleted"
                grep -q 'ESP worker [0-9]* stopped: TUN device deleted' "$CASE/alice-$round.log" ||
                    why+="${why:+; }alice did not say why she stopped"
                log "  TUN deleted: alice exited $status in ${i}00 ms: $(grep -m1 'ESP worker' "$CASE/alice-$round.log")"
            fi
            closed "after alice's TUN was deleted"
        else
            kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
            closed "after alice was killed"
        fi
        log "  alice's table 4500 with alice gone: $(ip -n "$NS_AG" route show table 4500 | tr '\n' ' ')"
    done
    sites_gateway "$ESPTUN" "$CASE" alice "$CASE/alice-last.log"
    tunnel_up "$CASE/alice-last.log"
    sites_stop
    [[ -z $(ip -n "$NS_AG" route show table 4500; ip -n "$NS_AG" -6 route show table 4500) ]] ||
        why+="${why:+; }table 4500 left behind by a clean stop"
    ip -n "$NS_AG" rule | grep 'lookup 4500' >/dev/null && why+="${why:+; }rule left behind by a clean stop"
    sleep 0.5; kill $dump 2>/dev/null || true; wait $dump 2>/dev/null || true
    local inner
    inner=$(tcpdump -r "$CASE/wan.pcap" -n "not (udp port 500 or udp port 4500 or esp)" 2>/dev/null | grep -c -E '10\.[12]\.0\.|fd00:' || true)
    log "  capture: $inner packets with an inner address in clear"
    (( inner == 0 )) || why+="${why:+; }inner addresses in clear on the WAN"
    if [[ -z $why ]]; then pass crash; else fail crash "$why"; fi
    ip -n "$NS_AG" route del 10.2.0.0/24 via $WAN_B
    ip -n "$NS_AG" -6 route del fd00:2::/64 via $WAN6_B
}
want crash && crash

# --- host to host: dynamic selectors on both sides, so the peer's own address is
# tunnelled: the gateways' pings to each other go in ESP, and their IKE (marked, routed
# by the main table) still reaches the peer, to the Delete at the end.
host_to_host() {
    CASE=$RUN/host-to-host; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE=""
    log "case host-to-host: selectors are the gateways' WAN addresses, raw ESP"
    if ! SITES_NETS_A="" SITES_NETS_B="" sites_start "$ESPTUN" "$CASE" alice; then
        fail host-to-host "no Child SA"; sites_stop; return
    fi
    ip netns exec "$NS_AG" tcpdump -i wan -n -s 128 -w "$CASE/wan.pcap" 2>/dev/null &
    local dump=$! why=""
    sleep 0.5
    log "  alice's table 4500: $(ip -n "$NS_AG" route show table 4500 | tr '\n' ' ')"
    ip netns exec "$NS_AG" ping -c 5 -i 0.2 -W 2 -q "$WAN_B" >/dev/null || why="ping alice -> bob failed"
    ip netns exec "$NS_BG" ping -c 5 -i 0.2 -W 2 -q "$WAN_A" >/dev/null || why+="${why:+; }ping bob -> alice failed"
    # IKE over the tunnelled address: bob's Delete reaches alice, her answer reaches him.
    kill "$BOB_PID"; wait "$BOB_PID" 2>/dev/null || true
    grep -q 'DOWN site: deleted by peer' "$CASE/alice.log" || why+="${why:+; }bob's Delete did not reach alice"
    grep -q 'received INFORMATIONAL response' "$CASE/bob.log" || why+="${why:+; }alice's answer did not reach bob"
    sleep 0.5; kill $dump 2>/dev/null || true; wait $dump 2>/dev/null || true
    local icmp esp other
    icmp=$(tcpdump -r "$CASE/wan.pcap" -n icmp 2>/dev/null | wc -l)
    esp=$(tcpdump -r "$CASE/wan.pcap" -n esp 2>/dev/null | wc -l)
    other=$(tcpdump -r "$CASE/wan.pcap" -n "ip and not (udp port 500 or udp port 4500 or esp)" 2>/dev/null | wc -l)
    log "  capture: $esp ESP, $icmp ICMP, $other neither IKE nor ESP"
    (( icmp == 0 && other == 0 )) || why+="${why:+; }clear traffic between the gateways"
    # 20 pings and answers; tcpdump may miss the first while it starts.
    (( esp >= 10 )) || why+="${why:+; }the pings were not in ESP ($esp packets)"
    if [[ -z $why ]]; then pass host-to-host; else fail host-to-host "$why"; fi
    sites_stop
}
want host-to-host && host_to_host

# --- routes: alice asks for 10.0.0.0/8 and fd00::/8, bob narrows them to both sites'
# nets, alice's own LAN included. Her main table must stay as it was while the tunnel is
# up, after bob deletes it and after she stops; then her table and rule are gone too.
routes_untouched() {
    CASE=$RUN/routes-untouched; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE=""
    log "case routes-untouched: alice asks for 10.0.0.0/8, bob narrows to his and alice's LANs"
    main_routes() { ip -n "$NS_AG" route show table main; ip -n "$NS_AG" -6 route show table main; }
    local before why=""
    before=$(main_routes)
    if ! SITES_NETS_B="10.2.0.0/24 10.1.0.0/24 fd00:2::/64 fd00:1::/64" \
        SITES_ALICE_ASKS="10.0.0.0/8 fd00::/8" sites_start "$ESPTUN" "$CASE" alice; then
        fail routes-untouched "no Child SA"; sites_stop; return
    fi
    grep -q 'remote_ts 10.2.0.0/24,10.1.0.0/24' "$CASE/alice.log" || why="bob did not narrow as expected"
    [[ $(main_routes) == "$before" ]] || why+="${why:+; }main table changed with the tunnel up"
    grep -q '^10.0.0.0/8 dev esptun0' <<<"$(ip -n "$NS_AG" route show table 4500)" || why+="${why:+; }10.0.0.0/8 not in table 4500"
    kill "$BOB_PID"; wait "$BOB_PID" 2>/dev/null || true
    sites_wait "$CASE/alice.log" "DOWN" >/dev/null || why+="${why:+; }alice kept the SA"
    [[ $(main_routes) == "$before" ]] || why+="${why:+; }main table changed after the deletion"
    sites_stop
    [[ $(main_routes) == "$before" ]] || why+="${why:+; }main table changed after alice stopped"
    [[ -z $(ip -n "$NS_AG" route show table 4500) ]] || why+="${why:+; }table 4500 left behind"
    ! ip -n "$NS_AG" rule | grep 'lookup 4500' >/dev/null || why+="${why:+; }rule left behind"
    if [[ -z $why ]]; then pass routes-untouched; else
        diff <(echo "$before") <(main_routes) || true
        fail routes-untouched "$why"
    fi
}
want routes-untouched && routes_untouched

# --- privileges: once up, the control thread keeps NET_ADMIN, NET_BIND_SERVICE and
# NET_RAW (0x3400) in every set, bounding included, and the ESP workers keep nothing;
# the tunnel still works and a clean stop still removes the rules and routes.
privileges() {
    CASE=$RUN/privileges; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE=""
    log "case privileges: capabilities after start-up"
    if ! sites_start "$ESPTUN" "$CASE" alice; then fail privileges "no Child SA"; sites_stop; return; fi
    local why="" pid task name want set got
    for pid in "$ALICE_PID" "$BOB_PID"; do
        for task in /proc/"$pid"/task/*; do
            name=$(cat "$task/comm")
            want=0000000000003400; [[ $name == esp-worker-* ]] && want=0000000000000000
            for set in CapEff CapPrm CapBnd; do
                got=$(awk -v s="$set:" '$1 == s { print $2 }' "$task/status")
                [[ $got == "$want" ]] || why+="${why:+; }$pid/$name $set $got, not $want"
            done
            got=$(awk '$1 == "CapInh:" { print $2 }' "$task/status")
            [[ $got == 0000000000000000 ]] || why+="${why:+; }$pid/$name CapInh $got"
        done
    done
    log "  alice's threads: $(for t in /proc/"$ALICE_PID"/task/*; do printf '%s=%s ' "$(cat "$t/comm")" "$(awk '$1 == "CapEff:" { print $2 }' "$t/status")"; done)"
    ip netns exec "$NS_AH" ping -c 3 -i 0.2 -W 2 -q "$HOST_B" >/dev/null || why+="${why:+; }no ping"
    sites_stop
    [[ -z $(ip -n "$NS_AG" route show table 4500; ip -n "$NS_BG" route show table 4500) ]] ||
        why+="${why:+; }table 4500 left behind by a clean stop"
    if [[ -z $why ]]; then pass privileges; else fail privileges "$why"; fi
}
want privileges && privileges

# --- esptun status: each gateway lists the SA pair the logs name, with the other
# side's SPIs swapped, the pings' packets counted, and as text too; counters shows
# the drops; esptun down deletes the connection's SAs on both sides and keeps it down,
# esptun up brings it back; with no daemon the command says so.
# scrape: alice's metrics as JSON (tests/e2e/prom.py).
scrape() {
    ip netns exec "$NS_AG" curl -sf --max-time 5 http://127.0.0.1:9469/metrics | /usr/bin/python3 "$HERE/prom.py"
}

status_case() {
    CASE=$RUN/status; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    # Each gateway serves metrics on the loopback of its own namespace.
    SITES_DATAPLANE=$'[metrics]\nlisten = "127.0.0.1:9469"'
    log "case status: esptun status, counters, metrics and the key log against both gateways"
    # IKE from the start, which alice's key log (as inspect --keys reads it) decrypts.
    ip netns exec "$NS_AG" tcpdump -i wan -n -w "$CASE/ike.pcap" udp port 500 or udp port 4500 2>/dev/null &
    local dump=$!
    sleep 0.5
    SITES_KEYLOG=1
    if ! sites_start "$ESPTUN" "$CASE" alice; then SITES_KEYLOG=0; kill $dump; fail status "no Child SA"; sites_stop; return; fi
    SITES_KEYLOG=0
    local why="" a b spi_in spi_out
    sleep 0.5; kill $dump; wait $dump 2>/dev/null || true
    local keys=$CASE/alice.keys/keys.json inspected
    [[ $(stat -c %a "$keys") == 600 ]] || why="$keys is mode $(stat -c %a "$keys"), not 600"
    inspected=$("$ESPTUN" inspect "$CASE/ike.pcap" --keys "$keys" 2>&1) || why+="${why:+; }inspect --keys failed: $inspected"
    grep -q "IDi type=FQDN id=alice.example" <<<"$inspected" && ! grep ' SK ' <<<"$inspected" | grep -v 'integrity=ok' >/dev/null ||
        why+="${why:+; }inspect --keys $keys did not decrypt alice's IKE_AUTH: $(grep -m3 ' SK ' <<<"$inspected")"
    ip netns exec "$NS_AH" ping -c 5 -i 0.1 -W 2 -q "$HOST_B" >/dev/null || why="no ping"
    a=$(ip netns exec "$NS_AG" "$ESPTUN" status --json) || why+="${why:+; }alice's status failed"
    b=$(ip netns exec "$NS_BG" "$ESPTUN" status --json) || why+="${why:+; }bob's status failed"
    read -r spi_in spi_out < <(grep -o 'CHILD_SA site/lan UP spi_in [0-9a-f]* spi_out [0-9a-f]*' "$CASE/alice.log" | tail -1 | awk '{print $5, $7}')
    jq -e --arg i "$spi_in" --arg o "$spi_out" '.ike_sas | length == 1 and .[0].connection == "site"
        and .[0].state == "ESTABLISHED" and .[0].local_id == "alice.example" and .[0].remote_id == "bob.example"
        and (.[0].child_sas | length == 1) and .[0].child_sas[0].name == "lan"
        and .[0].child_sas[0].spi_in == $i and .[0].child_sas[0].spi_out == $o
        and .[0].child_sas[0].packets_out >= 5 and .[0].child_sas[0].packets_in >= 5
        and .[0].child_sas[0].remote_ts == ["10.2.0.0/24", "fd00:2::/64"]
        and .[0].child_sas[0].rekey_secs > 3000 and .[0].child_sas[0].rekey_secs < .[0].child_sas[0].expires_secs' <<<"$a" >/dev/null ||
        why+="${why:+; }alice's status is not the SA she logged: $a"
    jq -e --arg i "$spi_in" --arg o "$spi_out" '.ike_sas[0].child_sas[0].spi_in == $o
        and .ike_sas[0].child_sas[0].spi_out == $i and .ike_sas[0].spi_i == '"$(jq '.ike_sas[0].spi_i' <<<"$a")" <<<"$b" >/dev/null ||
        why+="${why:+; }bob's status does not mirror alice's: $b"
    local text; text=$(ip netns exec "$NS_AG" "$ESPTUN" status)
    grep -q "^site: ESTABLISHED, IKEv2, " <<<"$text" && grep -q -E "^  lan: INSTALLED, TUNNEL, ESP( in UDP)? SPIs: ${spi_in}_i ${spi_out}_o" <<<"$text" ||
        why+="${why:+; }status text: $text"
    log "  alice: $(grep -E '^ +(lan|in |out )' <<<"$text" | tr -s ' ' | paste -sd';')"
    ip netns exec "$NS_AG" "$ESPTUN" counters | grep '^drops: no_sa=' >/dev/null || why+="${why:+; }no counters"
    # Metrics: scraped over HTTP and parsed by prometheus_client's parser. The data
    # plane's counters reach the exporter once a second.
    sleep 1.2
    local m
    m=$(scrape) || why+="${why:+; }no metrics"
    jq -e '."esptun_ike_sas{state=\"established\"}" == 1 and ."esptun_child_sas_installed" == 1
        and ."esptun_children_down{child=\"lan\",connection=\"site\"}" == 0
        and ."esptun_ike_handshakes_started_total" == 1 and ."esptun_ike_handshakes_completed_total" == 1
        and ([to_entries[] | select(.key | startswith("esptun_child_sa_packets_total{") and contains("direction=\"out\"")) | .value] | add) >= 5
        and ."esptun_worker_batch_packets_count{direction=\"inbound\"}" >= 5
        and has("esptun_dropped_packets_total{reason=\"no_sa\"}")' <<<"$m" >/dev/null ||
        why+="${why:+; }alice's metrics: $m"
    log "  metrics: $(jq -c '{established: ."esptun_ike_sas{state=\"established\"}", started: .esptun_ike_handshakes_started_total, batches_in: ."esptun_worker_batch_packets_count{direction=\"inbound\"}"}' <<<"$m" 2>/dev/null)"
    # down CONN/CHILD: the Child SA goes on both sides, the IKE SA stays; up brings it back.
    local out
    out=$(ip netns exec "$NS_AG" "$ESPTUN" down site/lan 2>&1) || why+="${why:+; }down site/lan failed: $out"
    grep -q "^site/lan: down, 1 Child SA(s) deleted" <<<"$out" || why+="${why:+; }down site/lan: $out"
    # Deleted on both sides, it still takes stragglers for 3 s (as after a rekey).
    sleep 3.5
    [[ $(ip netns exec "$NS_AG" "$ESPTUN" status --json | jq '[.ike_sas | length, (.[0].child_sas | length)]' -c) == "[1,0]" ]] ||
        why+="${why:+; }after down site/lan: $(ip netns exec "$NS_AG" "$ESPTUN" status)"
    ip netns exec "$NS_AG" "$ESPTUN" conns | grep '^site: up (1 IKE SA); peer 192.0.2.2; children lan (lan down: esptun down)' >/dev/null ||
        why+="${why:+; }conns after down site/lan: $(ip netns exec "$NS_AG" "$ESPTUN" conns)"
    ip netns exec "$NS_AH" ping -c 2 -i 0.2 -W 1 -q "$HOST_B" >/dev/null 2>&1 && why+="${why:+; }a ping passed with lan down"
    ip netns exec "$NS_AG" "$ESPTUN" up site/lan >/dev/null || why+="${why:+; }up site/lan failed"
    ip netns exec "$NS_AH" ping -c 3 -i 0.2 -W 2 -q "$HOST_B" >/dev/null || why+="${why:+; }no ping after up site/lan"
    [[ $(ip netns exec "$NS_AG" "$ESPTUN" status --json | jq '[.ike_sas | length, (.[0].child_sas | length)]' -c) == "[1,1]" ]] ||
        why+="${why:+; }after up site/lan: $(ip netns exec "$NS_AG" "$ESPTUN" status)"
    # down: the IKE SA goes on both sides and stays gone (alice's start = true would
    # redial within seconds); up brings it back.
    out=$(ip netns exec "$NS_AG" "$ESPTUN" down site 2>&1) || why+="${why:+; }down failed: $out"
    sites_wait "$CASE/alice.log" "DOWN site: deleted" 5 || why+="${why:+; }no DOWN after esptun down"
    sleep 4
    [[ $(ip netns exec "$NS_AG" "$ESPTUN" status --json | jq '.ike_sas | length') == 0 &&
        $(ip netns exec "$NS_BG" "$ESPTUN" status --json | jq '.ike_sas | length') == 0 ]] ||
        why+="${why:+; }SAs 4 s after esptun down: $(ip netns exec "$NS_AG" "$ESPTUN" status)"
    ip netns exec "$NS_AG" "$ESPTUN" conns | grep '^site: down (esptun down); peer 192.0.2.2; children lan' >/dev/null ||
        why+="${why:+; }conns: $(ip netns exec "$NS_AG" "$ESPTUN" conns)"
    ip netns exec "$NS_AH" ping -c 2 -i 0.2 -W 1 -q "$HOST_B" >/dev/null 2>&1 && why+="${why:+; }a ping passed while down"
    m=$(scrape)
    jq -e '."esptun_children_down{child=\"lan\",connection=\"site\"}" == 1 and ."esptun_ike_sas{state=\"established\"}" == 0' <<<"$m" >/dev/null ||
        why+="${why:+; }metrics while down: $m"
    out=$(ip netns exec "$NS_AG" "$ESPTUN" down nosuch 2>&1) && why+="${why:+; }down nosuch succeeded"
    grep -q 'no connection named "nosuch"' <<<"$out" || why+="${why:+; }down nosuch: $out"
    ip netns exec "$NS_AG" "$ESPTUN" up site >/dev/null || why+="${why:+; }up failed"
    local i
    for i in $(seq 50); do
        ip netns exec "$NS_AG" "$ESPTUN" conns | grep '^site: up (1 IKE SA)' >/dev/null && break
        sleep 0.1
    done
    ip netns exec "$NS_AH" ping -c 3 -i 0.2 -W 2 -q "$HOST_B" >/dev/null || why+="${why:+; }no ping after esptun up"
    log "  down, then up: $(ip netns exec "$NS_AG" "$ESPTUN" conns) after $((i))00 ms"
    local none
    none=$(ip netns exec "$NS_AH" "$ESPTUN" status 2>&1) && why+="${why:+; }status without a daemon succeeded"
    grep -q "no esptun daemon is running" <<<"$none" || why+="${why:+; }without a daemon: $none"
    sites_stop
    if [[ -z $why ]]; then pass status; else fail status "$why"; fi
}
want status && status_case

# --- reload: unchanged connections keep their SAs, changed ones are replaced --------
reload_case() {
    CASE=$RUN/reload; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE=""
    log "case reload: esptun reload and SIGHUP on alice: added, unchanged, refused, changed, removed, added back"
    if ! sites_start "$ESPTUN" "$CASE" alice; then fail reload "no Child SA"; sites_stop; return; fi
    local why="" out first now i conf=$CASE/alice.toml orig=$CASE/alice.orig
    spis() { ip netns exec "$1" "$ESPTUN" status --json | jq -r '[.ike_sas[].spi_i] | join(" ")'; }
    reload() { ip netns exec "$NS_AG" "$ESPTUN" reload 2>&1; }
    pings() { ip netns exec "$NS_AH" ping -c 3 -i 0.2 -W 2 -q "$HOST_B" >/dev/null; }
    first=$(spis "$NS_AG")
    # A second connection added (to a peer that is not there): site's SAs stay.
    cat >>"$conf" <<CONF

[[connection]]
name = "spare"
remote_addrs = ["192.0.2.99"]
rekey_time = "4h"
[connection.local]
auth = "pubkey"
id = "alice.example"
certs = ["$CASE/pki/alice.example.crt"]
key = "$CASE/pki/alice.example.key"
[connection.remote]
auth = "pubkey"
id = "carol.example"
cacerts = ["$CASE/pki/ca.crt"]
[[connection.children]]
name = "lan"
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.9.0.0/24"]
CONF
    cp "$conf" "$orig"
    out=$(reload) || why="adding reload failed: $out"
    grep -q "added spare; changed none; removed none; 1 unchanged" <<<"$out" || why+="${why:+; }add: $out"
    grep -q '^10.9.0.0/24 dev esptun0' <<<"$(ip -n "$NS_AG" route show table 4500)" || why+="${why:+; }spare not routed"
    # The same connections, laid out differently: nothing happens to their SAs.
    sed -i 's/^name = "site"$/name   =   "site"   # the far site/' "$conf"
    out=$(reload) || why+="${why:+; }unchanged reload failed: $out"
    grep -q "added none; changed none; removed none; 2 unchanged" <<<"$out" || why+="${why:+; }unchanged: $out"
    # Another connection changed: site's SAs stay.
    sed 's/^rekey_time = "4h"$/rekey_time = "5h"/' "$orig" >"$conf"
    out=$(reload) || why+="${why:+; }reload failed: $out"
    grep -q "added none; changed spare; removed none; 1 unchanged" <<<"$out" || why+="${why:+; }spare changed: $out"
    cp "$conf" "$orig"
    # A broken file and a change only a restart applies are refused whole.
    sed 's/^start = true$/start = maybe/' "$orig" >"$conf"
    out=$(reload) && why+="${why:+; }a broken file was accepted"
    grep -q "reload refused, nothing changed: $conf:[0-9]*: connection\[0\]\.start: " <<<"$out" || why+="${why:+; }broken: $out"
    sed 's/^tun = "esptun0"$/&\nworkers = 1/' "$orig" >"$conf"
    out=$(reload) && why+="${why:+; }a [dataplane] change was accepted"
    grep -q "\[dataplane\] changed: .*restart esptun" <<<"$out" || why+="${why:+; }dataplane: $out"
    [[ $(spis "$NS_AG") == "$first" ]] || why+="${why:+; }IKE SA $first replaced by $(spis "$NS_AG") before site changed"
    pings || why+="${why:+; }no ping after the refused reloads"
    # A changed connection (SIGHUP, as systemctl reload sends) gets a new IKE SA; the
    # old one goes on both sides.
    sed 's/^esp_proposals = .*/&\nrekey_time = "30m"/' "$orig" >"$conf"
    kill -HUP "$ALICE_PID"
    sites_wait "$CASE/alice.log" "reloaded .*: added none; changed site; removed none; 1 unchanged" 5 || why+="${why:+; }no reload line after SIGHUP"
    for i in $(seq 50); do
        now=$(spis "$NS_AG")
        [[ -n $now && $now != *" "* && $now != "$first" && $(spis "$NS_BG") == "$now" ]] && break
        sleep 0.1
    done
    [[ -n $now && $now != "$first" && $(spis "$NS_BG") == "$now" ]] ||
        why+="${why:+; }after the change: alice has IKE SAs '$now', bob '$(spis "$NS_BG")' (was $first)"
    pings || why+="${why:+; }no ping over the replaced connection"
    log "  changed: IKE SA $first replaced by $now in $((i))00 ms"
    # Removed: its SAs and routes go. Added again: it connects as at start.
    sed '/^\[\[connection\]\]$/,$d' "$orig" >"$conf"
    out=$(reload) && grep -q -E "removed (spare, site|site, spare); 0 unchanged" <<<"$out" || why+="${why:+; }remove: $out"
    sleep 1
    [[ -z $(spis "$NS_AG") && -z $(spis "$NS_BG") ]] || why+="${why:+; }IKE SAs left after the removal: alice '$(spis "$NS_AG")', bob '$(spis "$NS_BG")'"
    out=$(ip netns exec "$NS_AG" ip route show table all proto 50)
    [[ -z $out ]] || why+="${why:+; }routes left after the removal: $out"
    cp "$orig" "$conf"
    out=$(reload) && grep -q "added site, spare; changed none; removed none; 0 unchanged" <<<"$out" || why+="${why:+; }add back: $out"
    for i in $(seq 50); do [[ -n $(spis "$NS_BG") ]] && break; sleep 0.1; done
    pings || why+="${why:+; }no ping after adding the connection back"
    sites_stop
    if [[ -z $why ]]; then pass reload; else fail reload "$why"; fi
}
want reload && reload_case

# --- on demand: start_action = "trap" negotiates on the first packet, which is held --
trap_case() {
    CASE=$RUN/trap; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE="" SITES_CHILD='start_action = "trap"'
    log "case trap: no SA until alice's host sends; its first packets are held, not lost"
    sites_configs "$CASE" alice
    SITES_CHILD=""
    sed -i 's/^start = true$/start = false/' "$CASE/alice.toml"
    local why="" out
    sites_gateway "$ESPTUN" "$CASE" bob && sites_wait "$CASE/bob.log" "data plane:" || why="bob did not start"
    sites_gateway "$ESPTUN" "$CASE" alice && sites_wait "$CASE/alice.log" "data plane:" || why+="${why:+; }alice did not start"
    sleep 1
    grep -q ' ESTABLISHED ' "$CASE/alice.log" "$CASE/bob.log" && why+="${why:+; }an IKE SA came up before any packet"
    out=$(ip netns exec "$NS_AH" ping -c 5 -i 0.2 -W 3 -q "$HOST_B" 2>&1 || true)
    grep -q '5 packets transmitted, 5 received' <<<"$out" || why+="${why:+; }pings lost: $(grep -o '[0-9]* received' <<<"$out")"
    grep -q 'CHILD_SA site/lan UP' "$CASE/alice.log" || why+="${why:+; }no Child SA on alice"
    log "  $(grep -o '[0-9]* received' <<<"$out") of 5 pings, the first held until $(grep -m1 -o 'CHILD_SA site/lan UP spi_in [0-9a-f]*' "$CASE/alice.log")"
    # A second daemon for the same TUN in the same namespace is refused, naming the first.
    local second
    second=$(ip netns exec "$NS_AG" timeout 10 "$ESPTUN" run --config "$CASE/alice.toml" 2>&1 || true)
    grep -q "another esptun (pid $ALICE_PID) already runs TUN esptun0" <<<"$second" ||
        why+="${why:+; }a second esptun was not refused: $second"
    if [[ -z $why ]]; then pass trap; else fail trap "$why"; fi
    sites_stop
}
want trap && trap_case

# --- per-resource Child SAs (RFC 9611): one tunnel over both workers of each gateway ---
# Without them every ESP packet of the tunnel carries one SPI and lands on one of bob's
# workers; with them each of alice's workers seals with its own SA, whose SPI bob
# steers to a worker of its own. Eight TCP streams of 25 MB: the TUN's steering
# program gives alice's new flows her workers in turn, so each worker reads four and
# each of bob's opens what one of alice's sealed. Both counters must split within 25 %
# of half (the kernel's own flow hash would leave one worker idle in 1 tunnel of 128
# and split 6/2 or worse in 29 %).
per_resource() {
    CASE=$RUN/per-resource; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE="workers = 2" SITES_CHILD="per_resource_sas = true"
    log "case per-resource: workers = 2, per_resource_sas = true on both gateways, 8 TCP streams"
    sites_start "$ESPTUN" "$CASE" alice "encap = true" || { fail per-resource "no Child SA"; sites_stop; return; }
    SITES_DATAPLANE="" SITES_CHILD=""
    local why="" gw a0 b0 a b ns
    for _ in $(seq 50); do
        [[ $(ip netns exec "$NS_BG" "$ESPTUN" status --json | jq '.ike_sas[0].child_sas | length') == 2 ]] && break
        sleep 0.1
    done
    for gw in alice bob; do
        ns=$NS_AG; [[ $gw == bob ]] && ns=$NS_BG
        local status spis resources=""
        status=$(ip netns exec "$ns" "$ESPTUN" status --json)
        jq -e '.ike_sas | length == 1 and (.[0].child_sas | length == 2 and all(.per_resource))' <<<"$status" >/dev/null ||
            why+="${why:+; }$gw: not two per-resource SAs: $(jq -c '[.ike_sas[].child_sas[] | {spi_in, per_resource}]' <<<"$status")"
        spis=$(jq -r '.ike_sas[0].child_sas[].spi_in' <<<"$status")
        for spi in $spis; do resources+="$(( 16#$spi % 2 ))"; done
        [[ $resources == 01 || $resources == 10 ]] || why+="${why:+; }$gw's inbound SPIs $(echo $spis) are not one per worker"
        ip netns exec "$ns" "$ESPTUN" status | grep "^  lan: INSTALLED, TUNNEL, per-resource, " >/dev/null ||
            why+="${why:+; }$gw's status text does not say per-resource"
    done
    grep -q "TUN steering program unavailable" "$CASE/alice.log" && why+="${why:+; }alice has no TUN steering program"
    ip netns exec "$NS_AH" ping -c 3 -i 0.2 -W 2 -q "$HOST_B" >/dev/null || why+="${why:+; }no ping"
    a0=$(worker_packets "$NS_AG" packets_out); b0=$(worker_packets "$NS_BG" packets_in)
    streams || why+="${why:+; }$STREAMS_DAMAGED"
    a=$(since "$a0" "$(worker_packets "$NS_AG" packets_out)")
    b=$(since "$b0" "$(worker_packets "$NS_BG" packets_in)")
    even "$a" || why+="${why:+; }alice's workers read $a packets of the streams from the TUN: not within 25 % of half each"
    even "$b" || why+="${why:+; }bob's workers received $b packets of the streams: not within 25 % of half each"
    log "  alice's workers read $a packets from the TUN, bob's received $b from alice"
    if [[ -z $why ]]; then pass per-resource; else fail per-resource "$why"; fi
    sites_stop
}
want per-resource && per_resource

# --- one SA over two workers: its flows stay on one worker ---
# Each worker takes an SA's sequence numbers as it seals, so one SA sealed by both of
# alice's workers would reach bob out of order by more than a replay window. The TUN's
# steering program sends every flow to an SA's remote selectors that is not
# per-resource to one worker, the one of its inbound SPI: eight TCP streams must be read
# by one of alice's workers and bob must drop none as a replay.
one_sa() {
    CASE=$RUN/one-sa; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    SITES_DATAPLANE="workers = 2"
    log "case one-sa: workers = 2, one SA (no per-resource SAs), 8 TCP streams"
    sites_start "$ESPTUN" "$CASE" alice "encap = true" || { fail one-sa "no Child SA"; sites_stop; return; }
    SITES_DATAPLANE=""
    local why="" a0 a
    a0=$(worker_packets "$NS_AG" packets_out)
    streams || why+="${why:+; }$STREAMS_DAMAGED"
    a=$(since "$a0" "$(worker_packets "$NS_AG" packets_out)")
    jq -e 'length == 2 and max >= add * 0.99' <<<"$a" >/dev/null ||
        why+="${why:+; }alice's workers read $a packets of the streams from the TUN: not one worker"
    [[ $(drops replay) == 0 ]] || why+="${why:+; }bob dropped $(drops replay) packets as replays"
    grep -q "TUN steering program" "$CASE/alice.log" && why+="${why:+; }alice: $(grep -m1 "TUN steering program" "$CASE/alice.log")"
    log "  alice's workers read $a packets from the TUN"
    if [[ -z $why ]]; then pass one-sa; else fail one-sa "$why"; fi
    sites_stop
}
want one-sa && one_sa

# --- a spread SA: one Child SA of a peer without per-resource SAs over both of bob's workers ---
# Bob spreads its inbound SAs (spread_inbound = true); alice is a plain peer: one SA,
# no RFC 9611. Bob's steering programs hand alice's ESP to his workers by sequence
# number in blocks of 1024, and each worker checks its own class of numbers: one TCP
# stream's 200 MB must arrive whole, each of bob's workers must receive its share
# (within 25 % of half) and none may be dropped as a replay.
spread() {
    CASE=$RUN/spread; mkdir -p "$CASE"; ln -s "$RUN/pki" "$CASE/pki"
    log "case spread: workers = 2, bob spreads his inbound SA, alice is a plain peer; one TCP stream"
    SITES_DATAPLANE="workers = 2" sites_configs "$CASE" alice "encap = true"
    sed -i 's/^esp_proposals = .*/&\nspread_inbound = true/' "$CASE/bob.toml"
    { sites_gateway "$ESPTUN" "$CASE" bob && sites_wait "$CASE/bob.log" "data plane:" &&
        sites_gateway "$ESPTUN" "$CASE" alice && sites_wait "$CASE/alice.log" "CHILD_SA .* UP" &&
        sites_wait "$CASE/bob.log" "CHILD_SA .* UP"; } || { fail spread "no Child SA"; sites_stop; return; }
    local why="" status b0 b got
    status=$(ip netns exec "$NS_BG" "$ESPTUN" status --json)
    jq -e '.ike_sas[0].child_sas | length == 1 and (.[0] | .spread and (.per_resource | not))' <<<"$status" >/dev/null ||
        why+="${why:+; }bob's SA is not one spread SA: $(jq -c '[.ike_sas[].child_sas[] | {spi_in, spread}]' <<<"$status")"
    (( 16#$(jq -r '.ike_sas[0].child_sas[0].spi_in' <<<"$status") >= 0x80000000 )) ||
        why+="${why:+; }bob's inbound SPI has no spread bit"
    ip netns exec "$NS_BG" "$ESPTUN" status | grep -q "^  lan: INSTALLED, TUNNEL, spread, " ||
        why+="${why:+; }bob's status text does not say spread"
    ip netns exec "$NS_AG" "$ESPTUN" status --json | jq -e '[.ike_sas[].child_sas[] | .spread] == [false]' >/dev/null ||
        why+="${why:+; }alice's SA is spread"
    b0=$(worker_packets "$NS_BG" packets_in)
    got=$(transfer)
    [[ $got == "$SUM" ]] || why+="${why:+; }transfer SHA-256 $got, want $SUM"
    b=$(since "$b0" "$(worker_packets "$NS_BG" packets_in)")
    even "$b" ||
        why+="${why:+; }bob's workers received $b packets of the transfer: not within 25 % of half each"
    [[ $(drops replay) == 0 ]] || why+="${why:+; }bob dropped $(drops replay) packets as replays"
    log "  bob's workers received $b packets of the transfer"
    if [[ -z $why ]]; then pass spread; else fail spread "$why"; fi
    sites_stop
}
want spread && spread

log "$PASSED passed, ${#FAILED[@]} failed${FAILED[*]:+: ${FAILED[*]}}"
(( ${#FAILED[@]} == 0 ))
