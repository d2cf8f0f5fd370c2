//! The control socket: `esptun status` and `esptun counters` ask the running daemon
//! over a unix stream socket beside its instance lock (one per network namespace and
//! TUN device, so `ip netns exec NS esptun status` finds the daemon of that
//! namespace). A client writes one command line (a word, for some a connection's
//! name after it); the daemon answers with one JSON document and closes. Only root
//! and the daemon's own user may ask.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Where each daemon records itself, one file per network namespace and TUN device.
pub const RUN_DIR: &str = "/run/esptun";

/// The commands the daemon answers; `up` and `down` take a connection's name.
pub const COMMANDS: [&str; 6] = ["status", "counters", "conns", "up", "down", "reload"];

/// The longest command line read; anything longer is refused.
const MAX_REQUEST: u64 = 64;
/// How long a client may take to send its command.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `RUN_DIR/NETNS-TUN.EXT`: the daemon's file of kind `ext` for `tun` in this network
/// namespace.
pub fn instance_path(tun: &str, ext: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let netns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
    Path::new(RUN_DIR).join(format!("{netns}-{tun}.{ext}"))
}

/// A command from a client and where its answer goes.
pub type Request = (String, oneshot::Sender<Value>);

/// The listening socket; dropping it removes the file.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Listens on `path`, replacing a socket a dead daemon left (the caller holds the
    /// instance lock, so no live one owns it), readable by its owner only.
    pub fn bind(path: &Path) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        let failed = |e: std::io::Error| format!("control socket {}: {e}", path.display());
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() || m.is_file() || m.is_dir() => {
                return Err(failed(std::io::Error::other("exists and is not a socket")));
            }
            Ok(_) => std::fs::remove_file(path).map_err(failed)?,
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).map_err(failed)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Waits for the next client and serves it on its own task: its command goes to
    /// `requests`, the answer back to it. Clients of other users are turned away.
    pub async fn serve_next(&self, requests: &mpsc::Sender<Request>) {
        let Ok((stream, _)) = self.listener.accept().await else {
            return;
        };
        let allowed = stream
            .peer_cred()
            .is_ok_and(|c| c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw());
        if !allowed {
            return;
        }
        let requests = requests.clone();
        tokio::spawn(async move {
            let _ = serve(stream, requests).await;
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(stream: UnixStream, requests: mpsc::Sender<Request>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let command = line.trim().to_string();
    let word = command.split_whitespace().next().unwrap_or_default();
    let answer = if COMMANDS.contains(&word) {
        let (reply, answer) = oneshot::channel();
        if requests.send((command, reply)).await.is_err() {
            return Ok(());
        }
        answer.await.unwrap_or(Value::Null)
    } else {
        serde_json::json!({ "error": format!("unknown command {command:?}: {}", COMMANDS.join(", ")) })
    };
    write.write_all(format!("{answer}\n").as_bytes()).await?;
    write.shutdown().await
}

/// Asks the daemon listening on `path` and returns its answer.
pub fn call(path: &Path, command: &str) -> Result<Value, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
            "no esptun daemon is running for this TUN in this network namespace ({} {})",
            path.display(),
            if e.kind() == std::io::ErrorKind::NotFound {
                "is missing"
            } else {
                "refuses"
            }
        ),
        _ => format!("{}: {e}", path.display()),
    })?;
    let failed = |e: std::io::Error| format!("{}: {e}", path.display());
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT * 2))
        .map_err(failed)?;
    writeln!(stream, "{command}").map_err(failed)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(failed)?;
    let value: Value = serde_json::from_str(&answer)
        .map_err(|e| format!("{}: bad answer: {e}", path.display()))?;
    match value.get("error").and_then(Value::as_str) {
        Some(error) => Err(error.to_string()),
        None => Ok(value),
    }
}
