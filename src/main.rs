//! The `esptun` command line.

use clap::{Parser, Subcommand};
use esptun::control::OsRandom;
use esptun::inspect::{self, KeyLog};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// esptun: a userspace IKEv2/IPsec VPN gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: negotiate the connections of a configuration file.
    Run {
        /// The configuration file (TOML, see README).
        #[arg(long)]
        config: PathBuf,
        /// Log lines of this level and the more severe ones.
        #[arg(long, value_enum, default_value = "info")]
        log_level: esptun::logging::Level,
        /// Also log every IKE message as JSON, decrypted (--log-level debug).
        #[arg(short, long, conflicts_with = "log_level")]
        verbose: bool,
        /// Write IKE and ESP keys to this directory as a Wireshark profile.
        #[arg(long)]
        keylog: Option<PathBuf>,
    },
    /// Check a configuration file as `run` would load it, without starting anything.
    Check {
        /// The configuration file (TOML, see README).
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the running daemon's IKE SAs and Child SAs, as `swanctl --list-sas` does.
    Status {
        #[command(flatten)]
        daemon: Daemon,
        /// Print the daemon's JSON answer (its field names are stable, see README).
        #[arg(long)]
        json: bool,
    },
    /// Show the running daemon's drop counters, by reason.
    Counters {
        #[command(flatten)]
        daemon: Daemon,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// List the running daemon's connections and whether each is up.
    Conns {
        #[command(flatten)]
        daemon: Daemon,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Initiate a connection (after `down`, or one that does not start by itself), or
    /// CONN/CHILD: negotiate that child again, on the connection's IKE SA.
    Up {
        /// The connection's name, or CONN/CHILD.
        name: String,
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Delete a connection's IKE SAs and keep it down (no restart, no trap) until `up`;
    /// CONN/CHILD deletes only that child's Child SAs and keeps it down.
    Down {
        /// The connection's name, or CONN/CHILD.
        name: String,
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Read the running daemon's configuration file again: added connections start,
    /// removed ones go down, changed ones are replaced, the others keep their SAs (as
    /// SIGHUP does). A file with an error changes nothing.
    Reload {
        #[command(flatten)]
        daemon: Daemon,
    },
    /// Make a CA or a host certificate for the tunnel's gateways.
    Pki {
        #[command(subcommand)]
        what: PkiCommand,
    },
    /// Print every IKE message of a pcap/pcapng capture, decrypted when keys are given.
    Inspect {
        /// The capture (pcap or pcapng).
        capture: PathBuf,
        /// SA keys as JSON (the keys.json format of tests/vectors).
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Print one JSON record per datagram instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Which daemon a command asks.
#[derive(clap::Args)]
struct Daemon {
    /// The daemon's TUN device (each daemon in a network namespace has its own).
    #[arg(long, default_value = "esptun0")]
    tun: String,
    /// The control socket, instead of the one for --tun in this network namespace.
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl Daemon {
    /// Sends `command` to the daemon and prints its answer, as JSON or as `text` makes it.
    fn ask(
        &self,
        command: &str,
        json: bool,
        text: fn(&serde_json::Value) -> String,
    ) -> Result<(), String> {
        use esptun::control::api;
        let path = self
            .socket
            .clone()
            .unwrap_or_else(|| api::instance_path(&self.tun, "sock"));
        let answer = api::call(&path, command)?;
        if json {
            println!("{answer:#}");
        } else {
            print!("{}", text(&answer));
        }
        Ok(())
    }
}

/// `esptun counters` as text.
fn counters_text(answer: &serde_json::Value) -> String {
    let drops = answer["drops"].as_object().map_or_else(String::new, |d| {
        d.iter().map(|(why, n)| format!(" {why}={n}")).collect()
    });
    format!(
        "drops:{drops}\nmalformed IKE: {}\n",
        answer["ike_malformed"]
    )
}

/// `pki issue --profile`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ProfileArg {
    /// A gateway road-warrior clients dial.
    Gateway,
    /// A road-warrior client.
    Client,
}

#[derive(Subcommand)]
enum PkiCommand {
    /// A self-signed CA: writes DIR/ca.crt and DIR/ca.key.
    Ca {
        /// Output directory, created (mode 0700) when missing [default: certs]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Subject common name.
        #[arg(long, default_value = "esptun CA")]
        cn: String,
        /// RSA-3072 instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace an existing ca.crt and ca.key.
        #[arg(long)]
        force: bool,
    },
    /// A host certificate signed by DIR/ca.crt: writes DIR/NAME.crt and DIR/NAME.key,
    /// NAME being the first --san.
    #[command(visible_alias = "host")]
    Issue {
        /// Directory with ca.crt and ca.key; the certificate is written there too
        /// [default: certs]
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A subject alternative name: an IP address, an e-mail address (user@domain)
        /// or else a DNS name; repeat for more. The first is also the subject CN.
        #[arg(
            long = "san",
            value_name = "NAME",
            visible_alias = "id",
            required = true
        )]
        sans: Vec<String>,
        /// RSA-3072 instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Add the ipsecIKE extended key usage to serverAuth and clientAuth.
        #[arg(long)]
        ipsec_ike: bool,
        /// What the certificate is for: a gateway that Windows, macOS/iOS and Android
        /// clients dial (serverAuth, ipsecIKE; the first --san a DNS name or IP
        /// address), or such a client (clientAuth, ipsecIKE). Without it: serverAuth
        /// and clientAuth, for either end of a tunnel.
        #[arg(long, value_enum)]
        profile: Option<ProfileArg>,
        /// Replace an existing certificate and key of that name.
        #[arg(long)]
        force: bool,
    },
    /// Bundle DIR/NAME.crt, its key and DIR/ca.crt as a PKCS#12 file that Windows,
    /// macOS/iOS and Android import (PBES2 with AES-256-CBC, an HMAC-SHA-256 MAC).
    Export {
        /// Directory with NAME.crt, NAME.key and ca.crt [default: certs]
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The certificate's name: its first --san when `pki issue` made it.
        #[arg(long)]
        name: String,
        /// The PKCS#12 file to write (mode 0600).
        #[arg(long, value_name = "FILE.p12")]
        out: PathBuf,
        /// Protect it with the first line of this file; without it, a random password
        /// is made and printed once.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Replace an existing FILE.p12.
        #[arg(long)]
        force: bool,
    },
    /// Print each certificate in a PEM or DER file: subject, issuer, validity, key,
    /// alternative names, key usages, SHA-256 fingerprint.
    Show {
        /// The certificate file.
        file: PathBuf,
    },
}

/// Loads the file (reading every certificate, key and PSK it names) and summarises it.
fn run_check(path: &Path) -> Result<(), String> {
    let config = esptun::config::Config::load(path).map_err(|e| e.to_string())?;
    for c in &config.connections {
        let children: Vec<&str> = c
            .policy
            .children
            .iter()
            .map(|ch| ch.name.as_str())
            .collect();
        println!(
            "connection {}: {} as {}, children {}",
            c.policy.name,
            if c.start { "initiates" } else { "waits" },
            c.policy.local.id(),
            children.join(", ")
        );
    }
    println!("{}: OK", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run {
            config,
            log_level,
            verbose,
            keylog,
        } => {
            use esptun::logging::{Level, set_level};
            set_level(if verbose { Level::Debug } else { log_level });
            esptun::control::run(esptun::control::Options { config, keylog })
        }
        Command::Check { config } => run_check(&config),
        Command::Status { daemon, json } => {
            daemon.ask("status", json, esptun::control::status::text)
        }
        Command::Counters { daemon, json } => daemon.ask("counters", json, counters_text),
        Command::Conns { daemon, json } => {
            daemon.ask("conns", json, esptun::control::status::conns_text)
        }
        Command::Up { name, daemon } => daemon.ask(&format!("up {name}"), false, |a| {
            format!("{}: initiating\n", a["up"].as_str().unwrap_or("?"))
        }),
        Command::Down { name, daemon } => daemon.ask(&format!("down {name}"), false, |a| {
            let (n, what) = match a.get("child_sas_deleted") {
                Some(n) => (n, "Child SA"),
                None => (&a["ike_sas_deleted"], "IKE SA"),
            };
            format!(
                "{}: down, {n} {what}(s) deleted\n",
                a["down"].as_str().unwrap_or("?")
            )
        }),
        Command::Reload { daemon } => daemon.ask("reload", false, |a| {
            format!("{}\n", a["reloaded"].as_str().unwrap_or("?"))
        }),
        Command::Pki { what } => run_pki(what),
        Command::Inspect {
            capture,
            keys,
            json,
        } => run_inspect(&capture, keys.as_deref(), json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("esptun: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_inspect(capture: &Path, keys: Option<&Path>, json: bool) -> Result<(), String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let keys = match keys {
        Some(path) => {
            let text = String::from_utf8(read(path)?)
                .map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
            Some(KeyLog::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let records = inspect::inspect(&read(capture)?, keys.as_ref())
        .map_err(|e| format!("{}: {e}", capture.display()))?;
    if json {
        for record in &records {
            println!("{record}");
        }
    } else {
        print!("{}", inspect::text(&records));
    }
    Ok(())
}

#[allow(
    clippy::disallowed_methods,
    reason = "the command line is a driver: it reads the clock"
)]
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn run_pki(what: PkiCommand) -> Result<(), String> {
    use esptun::pki::{self, Host, KeyType, Profile};
    let kind = |rsa| {
        if rsa {
            KeyType::Rsa3072
        } else {
            KeyType::EcdsaP256
        }
    };
    let stored = |paths: Result<(PathBuf, PathBuf), pki::PkiError>| {
        let (cert, key) = paths.map_err(|e| e.to_string())?;
        println!("wrote {} and {}", cert.display(), key.display());
        Ok(())
    };
    match what {
        PkiCommand::Ca {
            out,
            cn,
            rsa,
            days,
            force,
        } => {
            let dir = pki_dir(out)?;
            let ca = pki::make_ca(&cn, kind(rsa), unix_now(), days).map_err(|e| e.to_string())?;
            stored(pki::store(&dir, "ca", &ca, force))
        }
        PkiCommand::Issue {
            dir,
            sans,
            rsa,
            days,
            ipsec_ike,
            profile,
            force,
        } => {
            let dir = pki_dir(dir)?;
            let ca = pki::load_ca(&dir).map_err(|e| e.to_string())?;
            let host = Host {
                sans,
                kind: kind(rsa),
                days,
                ipsec_ike,
                profile: match profile {
                    None => Profile::Host,
                    Some(ProfileArg::Gateway) => Profile::Gateway,
                    Some(ProfileArg::Client) => Profile::Client,
                },
            };
            let issued = pki::make_host(&ca, &host, unix_now()).map_err(|e| e.to_string())?;
            stored(pki::store(&dir, &host.sans[0], &issued, force))
        }
        PkiCommand::Export {
            dir,
            name,
            out,
            password_file,
            force,
        } => {
            let dir = pki_dir(dir)?;
            let (password, made) = match password_file {
                Some(file) => (pki::read_password(&file).map_err(|e| e.to_string())?, false),
                None => (pki::random_password(&mut OsRandom), true),
            };
            let certs = pki::export(&dir, &name, &out, &password, force, &mut OsRandom)
                .map_err(|e| e.to_string())?;
            println!(
                "wrote {}: {name}'s certificate, its key and {} CA certificate(s)",
                out.display(),
                certs - 1
            );
            if made {
                // Only here: nothing keeps it, and the device importing the file asks for it.
                println!("password: {password}");
            }
            Ok(())
        }
        PkiCommand::Show { file } => {
            print!("{}", pki::show(&file).map_err(|e| e.to_string())?);
            Ok(())
        }
    }
}

/// The directory given, or `certs/`, which is made (or, after a git checkout made it
/// 0755, kept) readable by its owner only, since the keys live there.
fn pki_dir(given: Option<PathBuf>) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = given {
        return Ok(dir);
    }
    let dir = PathBuf::from(esptun::pki::DEFAULT_DIR);
    esptun::pki::create_dir(&dir).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
