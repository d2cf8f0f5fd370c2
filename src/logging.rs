//! The daemon's log: one line per event, each with its time (UTC, to the
//! millisecond) and its level. Lines below the level set with `esptun run
//! --log-level` are not even formatted. Errors and warnings go to standard error,
//! the rest to standard output; key material never goes to either (`--keylog` only).

use std::sync::atomic::{AtomicU8, Ordering};

/// How much the daemon logs, the most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    /// What stops the daemon or a part of it.
    Error,
    /// What an operator should look at: failed negotiations, refused reloads, lost sends.
    Warn,
    /// Every IKE message and SA event, one line each (the default).
    Info,
    /// Also every IKE message as JSON, decrypted.
    Debug,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Warn => "WARN",
            Self::Info => "INFO",
            Self::Debug => "DEBUG",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Logs lines of `level` and the more severe ones from now on.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether lines of `level` are logged.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line; the macros call it once [`enabled`] said yes.
pub fn write(level: Level, text: std::fmt::Arguments<'_>) {
    let t = time::OffsetDateTime::now_utc();
    let line = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {:<5} {text}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond(),
        level.name()
    );
    if level <= Level::Warn {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Logs a line at `level` (a [`Level`] variant), formatted as `format!` would.
#[macro_export]
macro_rules! log_at {
    ($level:ident, $($arg:tt)+) => {
        if $crate::logging::enabled($crate::logging::Level::$level) {
            $crate::logging::write($crate::logging::Level::$level, format_args!($($arg)+));
        }
    };
}

/// Logs an error line (see [`log_at`]).
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log_at!(Error, $($arg)+) };
}

/// Logs a warning line.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log_at!(Warn, $($arg)+) };
}

/// Logs an informational line.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log_at!(Info, $($arg)+) };
}

/// Logs a debugging line.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log_at!(Debug, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_from_the_most_severe() {
        assert!(
            Level::Error < Level::Warn && Level::Warn < Level::Info && Level::Info < Level::Debug
        );
        set_level(Level::Warn);
        assert!(enabled(Level::Error) && enabled(Level::Warn));
        assert!(!enabled(Level::Info) && !enabled(Level::Debug));
        set_level(Level::Info);
    }
}
