#!/usr/bin/env bash
# Installs what tests/interop/run.sh needs: strongSwan's charon with the kernel-libipsec
# plugin (libcharon-extra-plugins) and the openssl plugin for GCM, ECDSA, ECP and
# ChaCha20 (libstrongswan-standard-plugins), swanctl, iproute2 (esptun pki makes the test PKI).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends charon-systemd strongswan-swanctl \
    libcharon-extra-plugins libstrongswan-standard-plugins iproute2 iputils-ping \
    iperf3 netcat-openbsd tcpdump nftables >/dev/null
