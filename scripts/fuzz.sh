#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer on stable Rust (fuzz/README.md says how and
# why): builds the targets of fuzz/ (their own cargo workspace) with plain cargo and
# the coverage flags cargo-fuzz would pass, then runs each for --seconds on its seed
# corpus (fuzz/corpus/TARGET, in git) and what earlier runs found (fuzz/found/TARGET,
# not in git). Prints runs, exec/s and coverage per target; exits non-zero when a
# target crashed, leaving the input under fuzz/artifacts/TARGET/ and naming it.
# Installs what it uses first (scripts/deps.sh fuzz).
#
# usage: scripts/fuzz.sh [--seconds N] [TARGET...]   (default: 60 s, every target)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 [--seconds N] [TARGET...]" >&2; exit 2; }
seconds=60
targets=()
while (( $# )); do
    case $1 in
        --seconds) [[ ${2:-} =~ ^[0-9]+$ ]] || usage; seconds=$2; shift 2 ;;
        -*) usage ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=($(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' fuzz/Cargo.toml | grep -vx esptun-fuzz))
(( ${#targets[@]} )) || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz: no target $t (there are: ${all[*]})" >&2; exit 2; }
done

scripts/deps.sh fuzz

# `cargo fuzz build --sanitizer none` (cargo-fuzz 0.13) passes exactly these (its
# default is debug assertions on, and with them overflow checks: an overflow that a
# release build would wrap silently is a crash here), so both share fuzz/target.
# --target keeps them off build scripts and proc macros, which cannot load
# coverage-instrumented.
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth
    -Cdebug-assertions -Ccodegen-units=1"
echo "fuzz: building ${targets[*]}"
cargo build --locked --release --config 'profile.release.debug="line-tables-only"' \
    --manifest-path fuzz/Cargo.toml --target "$triple" $(printf -- '--bin %s ' "${targets[@]}")

# The targets' scratch files go here, not into /tmp, one directory per process.
export TMPDIR=$PWD/fuzz/target/tmp
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/found/$t" "fuzz/artifacts/$t" "fuzz/corpus/$t"
    log=fuzz/artifacts/$t/last-run.log
    status=0
    "fuzz/target/$triple/release/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
        "fuzz/found/$t" "fuzz/corpus/$t" >"$log" 2>&1 || status=$?
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
    printf 'fuzz: %-14s %ss: %s runs, %s exec/s, %s, corpus %s files, peak RSS %s MB\n' "$t" \
        "$seconds" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" \
        "${cov:-cov: ? ft: ?}" "$(ls "fuzz/found/$t" | wc -l)" "$(stat peak_rss_mb)"
    if (( status )); then
        failed+=("$t")
        grep -E -A12 '^==[0-9]+== ERROR|panicked at|^thread .* panicked' "$log" | head -30 || true
        artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
        echo "fuzz: $t CRASHED (exit $status): input ${artifact:-not written}, log $log" >&2
    fi
done
rm -rf "$TMPDIR"
if (( ${#failed[@]} )); then
    echo "fuzz: crashed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no crash in ${targets[*]}"
