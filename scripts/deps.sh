#!/usr/bin/env bash
# Installs what the demo and the tests use, where it is missing: Debian packages with
# apt-get (whose package lists are updated only then), rustfmt and clippy with rustup.
# Prints nothing when everything is there, and otherwise what it installs. Installing
# needs root (no sudo is used). scripts/demo.sh and scripts/test.sh run it first.
#
# usage: scripts/deps.sh demo|test|bench|bench-ike|unit|fuzz
#   demo  scripts/demo.sh: the build, the namespaces, iperf3
#   bench scripts/bench-tunnel.sh: demo's, strongSwan, jq, wg for boringtun, gnuplot
#   bench-ike scripts/bench-ike.sh: the build, the namespaces, strongSwan, jq, taskset
#   test  scripts/test.sh: demo's, rustfmt and clippy, and the tunnel and interop tests' tools
#   unit  scripts/test.sh with ESPTUN_SKIP_NETNS=1: the build, rustfmt and clippy
#   fuzz  scripts/fuzz.sh: the build (g++ also compiles libFuzzer)
set -euo pipefail

# gcc, make and pkg-config build aws-lc-sys; cargo fetches crates over HTTPS;
# tests/systemd.rs checks deploy/systemd with systemd-analyze; tests/pki_cli.rs reads
# `esptun pki` certificates and PKCS#12 bundles back with openssl.
BUILD="build-essential pkg-config ca-certificates systemd openssl"
# scripts/lib/sites.sh and its callers: ip and ss, ping, sysctl, iperf3, and timeout,
# sha256sum, nproc (bash, grep, sed, awk and getconf come with every Debian).
DEMO="iproute2 iputils-ping procps iperf3 coreutils"
# tests/e2e: nc -N (OpenBSD's nc), tcpdump, nft. tests/interop: charon with the
# kernel-libipsec plugin (libcharon-extra-plugins) and the openssl plugin for GCM,
# ECDSA, ECP and ChaCha20 (libstrongswan-standard-plugins), and swanctl.
# tests/lifecycle: jq (iperf3's JSON), perl (Time::HiRes: log time stamps).
# tests/flood: nft and jq (answer counters), nstat (iproute2), charon as above.
# tests/e2e's metrics: curl scrapes, Debian's python3 parses with prometheus_client.
# tests/roadwarrior: charon-cmd as a client, openssl for its PKCS#12 credentials,
# conntrack to make its NAT forget a mapping.
# tests/xfrm: ../shared/xfrm-vm/boot.sh needs kmod (depmod, modprobe) and cpio on the
# host; it fetches QEMU and the guest kernel itself with apt-get download.
TUNNELS="netcat-openbsd tcpdump nftables charon-systemd charon-cmd strongswan-swanctl openssl conntrack
    libcharon-extra-plugins libstrongswan-standard-plugins jq perl curl
    python3-prometheus-client kmod cpio"

# scripts/bench-tunnel.sh: jq reads iperf3's JSON and writes the results, wg configures
# boringtun (userspace WireGuard), gnuplot draws the chart, ethtool turns on GRO on the
# gateways' LAN links; strongSwan as in TUNNELS.
BENCH="jq wireguard-tools gnuplot-nox ethtool charon-systemd strongswan-swanctl libcharon-extra-plugins
    libstrongswan-standard-plugins"

# scripts/bench-ike.sh: taskset (util-linux) pins the responder and the generator, jq
# reads the generator's summary; strongSwan as in TUNNELS.
BENCH_IKE="jq util-linux charon-systemd strongswan-swanctl libcharon-extra-plugins
    libstrongswan-standard-plugins"

case ${1:-} in
    demo) packages="$BUILD $DEMO" components="" ;;
    bench) packages="$BUILD $DEMO $BENCH" components="" ;;
    bench-ike) packages="$BUILD $DEMO $BENCH_IKE" components="" ;;
    test) packages="$BUILD $DEMO $TUNNELS $BENCH $BENCH_IKE" components="rustfmt clippy" ;;
    unit) packages="$BUILD" components="rustfmt clippy" ;;
    fuzz) packages="$BUILD" components="" ;;
    *) echo "usage: $0 demo|test|bench|bench-ike|unit|fuzz" >&2; exit 2 ;;
esac

missing=()
for p in $packages; do
    [[ $(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
done
if (( ${#missing[@]} )); then
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
        echo "deps: missing Debian packages: ${missing[*]} (as root, this script installs them with apt-get)" >&2
        exit 1
    fi
    echo "deps: installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "deps: cargo is not on PATH: install Rust with rustup for this user (sudo resets PATH; a root shell with Rust works)" >&2
    exit 1
fi
for c in $components; do
    cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 && continue
    echo "deps: installing the Rust component $c (rustup)"
    rustup component add "$c" >/dev/null || { echo "deps: rustup could not add $c" >&2; exit 1; }
done
