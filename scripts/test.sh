#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, golden, in-memory IKE and
# command-line tests, a build of the benchmarks, and the strongSwan interop tests in
# network namespaces (root; ESPTUN_SKIP_INTEROP=1 leaves them out, and says so).
# Run from anywhere; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
step "cargo test"
cargo test --locked
step "cargo bench --no-run"
cargo bench --locked --no-run
step "interop with strongSwan (tests/interop/run.sh)"
if [[ ${ESPTUN_SKIP_INTEROP:-0} == 1 ]]; then
    echo "SKIPPED by ESPTUN_SKIP_INTEROP=1: the interop tests did not run"
elif [[ $(id -u) != 0 ]]; then
    echo "the interop tests need root (network namespaces): run with sudo, or set ESPTUN_SKIP_INTEROP=1" >&2
    exit 1
else
    cargo build --locked --release
    tests/interop/run.sh
fi
echo "all tests passed"
