#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, golden and command-line
# tests, and a build of the benchmarks. Run from anywhere; exits non-zero on the first failure.
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
echo "all tests passed"
