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
