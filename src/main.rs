//! The `esptun` command line.

use clap::{Parser, Subcommand};
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
        /// Also print every IKE message as JSON, decrypted.
        #[arg(short, long)]
        verbose: bool,
        /// Write IKE and ESP keys to this directory as a Wireshark profile.
        #[arg(long)]
        keylog: Option<PathBuf>,
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

#[derive(Subcommand)]
enum PkiCommand {
    /// A self-signed CA: writes DIR/ca.crt and DIR/ca.key.
    Ca {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Subject common name.
        #[arg(long, default_value = "esptun CA")]
        cn: String,
        /// RSA-3072 instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// A host certificate signed by DIR/ca.crt: writes DIR/ID.crt and DIR/ID.key.
    Host {
        /// Directory with ca.crt and ca.key; the certificate is written there too.
        #[arg(long)]
        dir: PathBuf,
        /// The identity (FQDN, e-mail or IP), used as subject CN and alternative name.
        #[arg(long)]
        id: String,
        /// RSA-3072 instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run {
            config,
            verbose,
            keylog,
        } => esptun::control::run(esptun::control::Options {
            config,
            verbose,
            keylog,
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
    use esptun::pki::{Issued, KeyType, make_ca, make_host};
    let kind = |rsa| {
        if rsa {
            KeyType::Rsa3072
        } else {
            KeyType::EcdsaP256
        }
    };
    let write = |dir: &Path, name: &str, issued: &Issued| -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &issued.cert_pem).map_err(|e| format!("{}: {e}", cert.display()))?;
        write_private(&key, &issued.key_pem)?;
        println!("wrote {} and {}", cert.display(), key.display());
        Ok(())
    };
    match what {
        PkiCommand::Ca { out, cn, rsa, days } => {
            let ca = make_ca(&cn, kind(rsa), unix_now(), days).map_err(|e| e.to_string())?;
            write(&out, "ca", &ca)
        }
        PkiCommand::Host { dir, id, rsa, days } => {
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
            };
            let ca = Issued {
                cert_pem: read("ca.crt")?,
                key_pem: read("ca.key")?,
            };
            let host = make_host(&ca, &id, kind(rsa), unix_now(), days)
                .map_err(|e| format!("{id}: {e}"))?;
            write(&dir, &id, &host)
        }
    }
}

/// Private keys are readable by their owner only.
fn write_private(path: &Path, pem: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(pem.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}
