#!/usr/bin/env bash
# Renders one example set: every file of SRC is written to DEST with @LEFT_ADDR@,
# @RIGHT_ADDR@ and @CERT_DIR@ replaced by the environment variables of those names
# (bash and sed, nothing else). A file that uses a placeholder whose variable is unset
# or empty, or one this script does not know, is an error and is not written.
#
# usage: LEFT_ADDR=192.0.2.1 RIGHT_ADDR=192.0.2.2 CERT_DIR=/etc/esptun \
#            deploy/examples/render.sh deploy/examples/esptun-certs DEST
set -euo pipefail

[[ $# == 2 ]] || { echo "usage: LEFT_ADDR=… RIGHT_ADDR=… [CERT_DIR=…] $0 SRC DEST" >&2; exit 2; }
src=$1 dest=$2
[[ -d $src ]] || { echo "render: $src is not a directory" >&2; exit 1; }

# The value as sed replacement text: \, & and the delimiter | escaped.
esc() { printf '%s' "$1" | sed 's/[\\&|]/\\&/g'; }

mkdir -p "$dest"
for file in "$src"/*; do
    [[ -f $file ]] || continue
    expr=(-e '')   # a file without placeholders is copied as it is
    for var in LEFT_ADDR RIGHT_ADDR CERT_DIR; do
        grep -q "@$var@" "$file" || continue
        [[ -n ${!var:-} ]] || { echo "render: $file uses @$var@ but $var is not set" >&2; exit 1; }
        expr+=(-e "s|@$var@|$(esc "${!var}")|g")
    done
    out=$dest/$(basename "$file")
    sed "${expr[@]}" "$file" >"$out.tmp"
    if unknown=$(grep -o '@[A-Z_]*@' "$out.tmp"); then
        rm -f "$out.tmp"
        echo "render: $file: unknown placeholder $(head -n1 <<<"$unknown")" >&2
        exit 1
    fi
    mv "$out.tmp" "$out"
done
