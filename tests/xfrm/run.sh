#!/usr/bin/env bash
# Kernel ESP (dataplane.mode = "xfrm") end to end, in a VM whose kernel has ESP
# (../shared/xfrm-vm: Debian's 6.1 kernel under QEMU; this machine's kernel has XFRM
# netlink but no ESP). tests/xfrm/guest.sh runs inside it, against esptun in
# userspace mode and in xfrm mode; this script boots the VM and reports.
#
#   tests/xfrm/run.sh [--esptun PATH] [--xfer PATH]   (root; ONLY=substring picks cases)
#
# xfer (tests/xfrm/xfer.rs, the TCP transfer the guest checks) is built when not given.
#
# XFRM_VM_DIR (default /tmp/esptun-xfrmvm) keeps the VM's packages between runs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ESPTUN=${CARGO_TARGET_DIR:-$ROOT/target}/release/esptun
XFER=
while [[ $# -gt 0 ]]; do
    case $1 in
    --esptun) ESPTUN=$(readlink -f "$2"); shift 2 ;;
    --xfer) XFER=$(readlink -f "$2"); shift 2 ;;
    *) echo "usage: $0 [--esptun PATH] [--xfer PATH]" >&2; exit 2 ;;
    esac
done
BOOT=$(cd "$ROOT/../shared/xfrm-vm" 2>/dev/null && pwd)/boot.sh
[[ -x $BOOT || -f $BOOT ]] || { echo "xfrm: no ../shared/xfrm-vm/boot.sh beside the project" >&2; exit 1; }
[[ -x $ESPTUN ]] || { echo "xfrm: no esptun at $ESPTUN (cargo build --release)" >&2; exit 1; }
W=${XFRM_VM_DIR:-/tmp/esptun-xfrmvm}
mkdir -p "$W"
if [[ -z $XFER ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example xfer)
    XFER=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/xfer
fi
# The guest runs what GUEST_BINS names under its own name: esptun.
mkdir -p "$W/bin"
cp "$ESPTUN" "$W/bin/esptun"
cp "$XFER" "$W/bin/xfer"
# strongSwan (charon with kernel-netlink) as a third peer, where the host has it:
# charon-systemd and swanctl with their libraries, and the plugins it loads with
# theirs, in a tarball the guest unpacks (GUEST_BINS copies executables only).
bins="$W/bin/esptun $W/bin/xfer"
if command -v charon-systemd >/dev/null && command -v swanctl >/dev/null; then
    files=$(mktemp)
    plugins="random nonce openssl aes gcm sha1 sha2 hmac kdf pubkey pem kernel-netlink socket-default vici"
    for p in $plugins; do echo "/usr/lib/ipsec/plugins/libstrongswan-$p.so"; done >"$files"
    for f in $(cat "$files") $(command -v charon-systemd) $(command -v swanctl); do
        ldd "$f" 2>/dev/null | grep -o '/[^ )]*' || true
    done | sort -u >>"$files"
    { command -v charon-systemd; command -v swanctl; } >>"$files"
    # The libraries as files at their own paths, whatever links lead there.
    if tar -chf "$W/bin/strongswan.tar" -T "$files" 2>"$W/strongswan-tar.err"; then
        bins="$bins $W/bin/strongswan.tar"
    else
        echo "xfrm: strongSwan left out of the VM: $(head -1 "$W/strongswan-tar.err")"
    fi
    rm -f "$files"
fi
# The guest sees no host environment: ONLY travels in the script itself.
test_script=$W/guest-test.sh
{ echo '#!/bin/sh'; echo "ONLY='${ONLY:-}'"; tail -n +2 "$HERE/guest.sh"; } >"$test_script"
start=$(date +%s)
rc=0
W=$W SKIP_BUILTIN=1 GUEST_BINS="$bins" GUEST_TEST=$test_script BOOT_TIMEOUT=${BOOT_TIMEOUT:-1200} \
    bash "$BOOT" >"$W/boot.log" 2>&1 || rc=$?
sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' "$W/serial.log" 2>/dev/null | grep "ESPTUN-XFRM" | sed 's/^ESPTUN-XFRM /xfrm: /' || true
echo "xfrm: VM run took $(($(date +%s) - start)) s (log: $W/serial.log, $W/boot.log)"
if [[ $rc -ne 0 ]]; then
    grep -q "ESPTUN-XFRM done" "$W/serial.log" 2>/dev/null || tail -n 30 "$W/boot.log" >&2
    echo "xfrm: FAILED" >&2
    exit 1
fi
echo "xfrm: all cases passed"
