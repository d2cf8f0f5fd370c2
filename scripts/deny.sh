#!/usr/bin/env bash
# cargo deny check against deny.toml: RustSec advisories, licences, duplicate versions,
# sources. Installs cargo-deny (a pinned version, with cargo install) when missing.
#
# The advisory database is fetched from RustSec. Where it cannot be (no network), the
# snapshot in scripts/deny/advisory-db is used instead: RustSec's advisories for every
# crate Cargo.lock named when the snapshot was taken (its COVERS file says which, and
# from which database commit). A crate in Cargo.lock the snapshot does not cover fails
# the check until the snapshot is refreshed from a checkout of the database:
#   scripts/deny.sh --refresh-snapshot PATH-TO-ADVISORY-DB
#
# usage: scripts/deny.sh [--refresh-snapshot PATH]      exits non-zero on any finding
set -euo pipefail
cd "$(dirname "$0")/.."
DENY_VERSION=0.20.2
SNAPSHOT=scripts/deny/advisory-db
# Where cargo-deny keeps the database of the default URL (deny.toml's db-path).
DB=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691

lock_crates() { grep '^name = ' Cargo.lock | cut -d'"' -f2 | sort -u; }

if [[ ${1:-} == --refresh-snapshot ]]; then
    from=${2:?usage: $0 --refresh-snapshot PATH-TO-ADVISORY-DB}
    rm -rf "$SNAPSHOT"; mkdir -p "$SNAPSHOT/crates"
    for crate in $(lock_crates); do
        [[ -d $from/crates/$crate ]] && cp -r "$from/crates/$crate" "$SNAPSHOT/crates/"
    done
    cp "$from/LICENSE.txt" "$SNAPSHOT/"
    {
        echo "# RustSec advisory-db $(git -C "$from" log -1 --format='%H %cI'), the crates of Cargo.lock:"
        lock_crates
    } >"$SNAPSHOT/COVERS"
    echo "snapshot: $(find "$SNAPSHOT/crates" -name '*.md' | wc -l) advisories for $(lock_crates | wc -l) crates"
    exit 0
fi

if ! cargo deny --version 2>/dev/null | grep -q " $DENY_VERSION$"; then
    echo "deny: installing cargo-deny $DENY_VERSION (cargo install, a few minutes)"
    cargo install --locked --quiet "cargo-deny@$DENY_VERSION"
fi

offline=()
if ! cargo deny fetch db >/dev/null 2>&1; then
    offline=(--offline)
    if [[ -d $DB/.git && ! -e $DB/.esptun-snapshot ]]; then
        echo "deny: no network: advisories from the database fetched $(git -C "$DB" log -1 --format=%cI)"
    else
        uncovered=$(comm -23 <(lock_crates) <(grep -v '^#' "$SNAPSHOT/COVERS" | sort -u))
        if [[ -n $uncovered ]]; then
            echo "deny: no network, and the advisory snapshot does not cover: $(paste -sd" " <<<"$uncovered")" >&2
            echo "deny: refresh it where RustSec's advisory-db can be cloned: $0 --refresh-snapshot PATH" >&2
            exit 1
        fi
        echo "deny: no network: advisories from the snapshot of $(head -1 "$SNAPSHOT/COVERS" | cut -d' ' -f5 | tr -d ,)"
        # cargo-deny reads the database from a git checkout.
        rm -rf "$DB"; mkdir -p "$DB"
        cp -r "$SNAPSHOT/." "$DB/"
        touch "$DB/.esptun-snapshot"
        git -C "$DB" init -q
        git -C "$DB" add -A
        git -C "$DB" -c user.name=esptun -c user.email=esptun@localhost commit -q -m snapshot
    fi
fi
# Offline, cargo metadata needs every crate of Cargo.lock on disk, those of other
# platforms too, which no build here downloads: the registry is reachable.
cargo fetch --locked --quiet
cargo deny --locked "${offline[@]}" check
