# shellcheck shell=bash
# strongSwan's charon with the kernel-libipsec plugin (its userspace ESP: a TUN device
# and routes in table 220), run in a network namespace from a directory of its own
# (sourced by tests/interop/run.sh, tests/lifecycle/run.sh and scripts/bench-tunnel.sh):
#
#   DIR/strongswan.conf         charon_strongswan_conf writes it
#   DIR/swanctl/swanctl.conf    the caller writes it (or charon_site_conf does)
#   DIR/swanctl/{x509,x509ca,private}/   certificates and keys it loads
#   DIR/charon.log              charon's log (filelog, time of day to the millisecond)
#   DIR/charon.vici             the control socket swanctl talks to (charon_sw)

# charon_strongswan_conf dir [lines] [daemon]: strongswan.conf for a charon-systemd (or
# `daemon`, e.g. charon-cmd) whose log is dir/charon.log and control socket
# dir/charon.vici; `lines` go into the daemon's section (e.g. "retransmit_tries = 2").
# CHARON_LOG_LEVEL, when set, is every subsystem's log level (-1: nothing).
charon_strongswan_conf() {
    local d=$1 sub
    for sub in x509 x509ca private; do mkdir -p "$d/swanctl/$sub"; done
    cat >"$d/strongswan.conf" <<CONF
${3:-charon-systemd} {
    load = random nonce openssl aesni aes gcm sha1 sha2 hmac kdf gmp curve25519 x509 pubkey pkcs1 pkcs8 pkcs12 pem constraints kernel-libipsec kernel-netlink socket-default vici
    load_modular = no
    install_routes = yes
    ${2:-}
    journal {
        default = -1
    }
    filelog {
        charon {
            path = $d/charon.log
            time_format = %H:%M:%S
            time_add_ms = yes
            ike_name = yes
            flush_line = yes
            default = ${CHARON_LOG_LEVEL:-1}
            ike = ${CHARON_LOG_LEVEL:-2}
            enc = ${CHARON_LOG_LEVEL:-1}
        }
    }
    plugins {
        vici {
            socket = unix://$d/charon.vici
        }
        kernel-libipsec {
            allow_peer_ts = no
        }
        openssl {
            fips_mode = 0
        }
    }
}
CONF
}

# charon_sw dir command [args]: swanctl against the charon of dir.
charon_sw() {
    local d=$1 cmd=$2
    shift 2
    STRONGSWAN_CONF=$d/strongswan.conf swanctl "$cmd" --uri "unix://$d/charon.vici" "$@"
}

# charon_start dir ns: starts charon-systemd in ns on dir's configuration (its stdout
# in dir/charon.stdout, appended), waits for its control socket and loads
# dir/swanctl (output in dir/load.log). Sets CHARON_PID; fails, showing why, if the
# configuration does not load.
charon_start() {
    local d=$1 ns=$2
    rm -f "$d/charon.vici"
    ip netns exec "$ns" env STRONGSWAN_CONF="$d/strongswan.conf" charon-systemd >>"$d/charon.stdout" 2>&1 &
    # shellcheck disable=SC2034 # for the caller
    CHARON_PID=$!
    for _ in $(seq 100); do charon_sw "$d" --stats >/dev/null 2>&1 && break; sleep 0.05; done
    SWANCTL_DIR=$d/swanctl charon_sw "$d" --load-all --noprompt >"$d/load.log" 2>&1 || { cat "$d/load.log" >&2; return 1; }
}

# charon_site_conf dir pki me peer my-wan peer-wan "my nets" "peer nets" [connection lines] [child lines]:
# for scripts/lib/sites.sh's gateways, the swanctl.conf (and certificates from pki,
# made by sites_pki) equivalent to sites_config's esptun configuration: connection
# "site", child "lan", certificates for me.example, the peer must be peer.example.
# The extra lines replace "rekey_time = 0" (no rekeys) in the connection and in the
# child; CHARON_PROPOSALS and CHARON_ESP pick other proposals.
charon_site_conf() {
    local d=$1 pki=$2 me=$3 peer=$4
    cp "$pki/ca.crt" "$d/swanctl/x509ca/"
    cp "$pki/$me.example.crt" "$d/swanctl/x509/"
    cp "$pki/$me.example.key" "$d/swanctl/private/"
    cat >"$d/swanctl/swanctl.conf" <<CONF
connections {
    site {
        version = 2
        local_addrs = $5
        remote_addrs = $6
        proposals = ${CHARON_PROPOSALS:-aes128gcm16-prfsha256-x25519}
        fragmentation = yes
        reauth_time = 0
        ${9:-rekey_time = 0}
        local {
            auth = pubkey
            certs = $me.example.crt
            id = $me.example
        }
        remote {
            auth = pubkey
            id = $peer.example
        }
        children {
            lan {
                mode = tunnel
                local_ts = ${7// /,}
                remote_ts = ${8// /,}
                esp_proposals = ${CHARON_ESP:-aes128gcm16}
                ${10:-rekey_time = 0}
            }
        }
    }
}
secrets {
    private-$me {
        file = $me.example.key
    }
}
CONF
}
