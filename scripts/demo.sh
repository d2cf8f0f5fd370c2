#!/usr/bin/env bash
# The esptun demo: builds esptun, makes a CA and two gateway certificates, joins two
# sites (alice and bob, each a gateway and a protected host in network namespaces)
# with an esptun tunnel, pings across it over IPv4 and IPv6, runs a 5-second TCP
# transfer, prints the throughput and the gateways' per-SA counters, and removes
# everything again, also on Ctrl-C.
#
# usage: scripts/demo.sh as root, or sudo scripts/demo.sh (namespaces and TUN devices
# need root); it installs what it uses first (scripts/deps.sh demo).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/sites.sh
source "$ROOT/scripts/lib/sites.sh"

[[ $(id -u) == 0 ]] || { echo "run as root: sudo scripts/demo.sh, or as root scripts/demo.sh" >&2; exit 1; }
"$ROOT/scripts/deps.sh" demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

RUN=$(mktemp -d /tmp/esptun-demo.XXXXXX)
cleanup() {
    sites_down
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted, cleaning up"; exit 130' INT TERM

say "building esptun (release)"
(cd "$ROOT" && cargo build --release --quiet)
ESPTUN=${CARGO_TARGET_DIR:-$ROOT/target}/release/esptun

say "a CA and certificates for alice.example and bob.example (esptun pki)"
sites_pki "$RUN/pki" "$ESPTUN"
ls "$RUN/pki"

say "namespaces: alice host - alice gw = WAN = bob gw - bob host"
sites_up
echo "alice host $HOST_A $HOST6_A  |  alice gw $WAN_A  =  bob gw $WAN_B  |  bob host $HOST_B $HOST6_B"

say "starting the gateways (bob responds, alice initiates)"
sites_start "$ESPTUN" "$RUN"
grep -h -E 'ESTABLISHED|CHILD_SA .* UP|data plane' "$RUN/alice.log"

say "ping across the tunnel, IPv4 and IPv6"
ip netns exec "$NS_AH" ping -c 3 -i 0.2 "$HOST_B"
ip netns exec "$NS_AH" ping -6 -c 3 -i 0.2 "$HOST6_B"

say "5-second TCP transfer, alice host -> bob host (iperf3)"
ip netns exec "$NS_BH" iperf3 -s -1 -B "$HOST_B" >/dev/null 2>&1 &
SITES_PIDS+=($!)
for _ in $(seq 50); do ip netns exec "$NS_BH" ss -ltn | grep -q ":5201" && break; sleep 0.1; done
ip netns exec "$NS_AH" iperf3 -c "$HOST_B" -t 5 -f m | grep -E 'sender|receiver'

say "per-SA counters (esptun, on SIGUSR1)"
echo "alice gw:"; sites_report "$RUN/alice.log" "$ALICE_PID" | sed 's/^/  /'
echo "bob gw:";   sites_report "$RUN/bob.log" "$BOB_PID" | sed 's/^/  /'

say "done: stopping the gateways (they delete their SAs) and removing the namespaces"
