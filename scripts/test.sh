#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, golden, in-memory IKE and
# command-line tests, a build of the benchmarks, cargo deny against deny.toml, 10 s of
# every fuzz target, then in network namespaces (root) the esptun<->esptun tunnel tests,
# the strongSwan interop tests, road warriors (virtual IPs, many clients, MOBIKE) with
# strongSwan and esptun clients, a 40-second rekey soak with the fault cases, against
# esptun and strongSwan, and a short IKE_SA_INIT flood while esptun and strongSwan
# connect, the tunnel benchmark for a second per run and the handshake benchmark for
# 40 SAs (function, not figures), and kernel ESP (dataplane.mode = "xfrm") in a VM
# whose kernel has it (ESPTUN_SKIP_NETNS=1 leaves those eight out, and says so). Root, but for
# ESPTUN_SKIP_NETNS=1; installs what it uses first (scripts/deps.sh).
# Run from anywhere; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${ESPTUN_SKIP_NETNS:-0} == 1 ]]; then
    scripts/deps.sh unit
else
    [[ $(id -u) == 0 ]] || { echo "run as root: sudo scripts/test.sh, or as root scripts/test.sh (ESPTUN_SKIP_NETNS=1: without the namespace tests)" >&2; exit 1; }
    scripts/deps.sh test
fi

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
step "cargo test"
cargo test --locked
step "cargo bench --no-run"
cargo bench --locked --no-run
step "cargo deny: advisories, licences, duplicate versions, sources (scripts/deny.sh)"
scripts/deny.sh
step "fuzz targets, 10 s each (scripts/fuzz.sh --seconds 10)"
scripts/fuzz.sh --seconds 10
if [[ ${ESPTUN_SKIP_NETNS:-0} == 1 ]]; then
    step "SKIPPED by ESPTUN_SKIP_NETNS=1: the tunnel, interop, road-warrior, lifecycle, flood, benchmark and xfrm tests did not run"
else
    cargo build --locked --release --bins --example flood --example xfer --example loadgen --example udpflood
    # Where cargo put them (the test scripts look there too).
    release=${CARGO_TARGET_DIR:-target}/release
    step "esptun <-> esptun tunnels (tests/e2e/run.sh)"
    tests/e2e/run.sh
    step "interop with strongSwan (tests/interop/run.sh)"
    tests/interop/run.sh
    step "road warriors: pools, many clients, esptun as a client, MOBIKE (tests/roadwarrior/run.sh)"
    tests/roadwarrior/run.sh
    step "the SA lifecycle: rekey soak and faults (tests/lifecycle/run.sh --seconds 40)"
    tests/lifecycle/run.sh --seconds 40
    step "an IKE_SA_INIT flood while peers connect (tests/flood/run.sh --short)"
    tests/flood/run.sh --short
    step "the tunnel benchmark, 1 s per run, for function only (scripts/bench-tunnel.sh --quick)"
    scripts/bench-tunnel.sh --quick --esptun "$release/esptun" --udpflood "$release/examples/udpflood" \
        --out target/bench-quick
    # Every setup carried TCP and 64-byte UDP: raw veth, esptun in UDP and raw, strongSwan, boringtun.
    jq -e '[.results[] | select(.test == "tcp" and .gbit_s > 0) | .setup] | unique | length >= 5' \
        target/bench-quick/bench.json >/dev/null ||
        { echo "bench-tunnel.sh: a setup carried nothing (target/bench-quick/bench.json)" >&2; exit 1; }
    jq -e '[.results[] | select(.test == "udp64" and .packets_per_s > 0) | .setup] | unique | length >= 5' \
        target/bench-quick/bench.json >/dev/null ||
        { echo "bench-tunnel.sh: a setup carried no 64-byte UDP (target/bench-quick/bench.json)" >&2; exit 1; }
    step "the handshake benchmark, 40 SAs, for function only (scripts/bench-ike.sh --quick)"
    # Fails unless each responder reports every IKE and Child SA the generator made.
    scripts/bench-ike.sh --quick --esptun "$release/esptun" --loadgen "$release/examples/loadgen" \
        --out target/bench-ike-quick
    step "kernel ESP: esptun in xfrm mode against esptun in both modes, in a VM (tests/xfrm/run.sh)"
    tests/xfrm/run.sh --xfer "$release/examples/xfer"
fi
echo "all tests passed"
