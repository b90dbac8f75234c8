//! The kinds of error that decide `esmm`'s exit status, wherever the error is found.
//!
//! Stages return `anyhow::Result` and add context as the error travels up; what kind of error it
//! is travels with it as a marker type in the chain, so the front end needs no knowledge of where
//! it came from:
//!
//! | found in the chain | [`Kind`] | exit status |
//! |---|---|---|
//! | [`UsageError`] (a bad flag, a missing required flag, a bad or unknown config key or value) | `Usage` | 2 |
//! | [`StdoutClosed`] (the reader of standard output went away: `esmm sql … \| head`) | `StdoutClosed` | 0, nothing printed |
//! | anything else (I/O, bad input under `--strict`, a locked output, …) | `Failure` | 1 |
//!
//! Mark a usage or configuration error with [`usage`] (or [`UsageResult::usage`]) where it is
//! detected; its message and context chain stay as they were.

use std::io::{ErrorKind, Write};

use thiserror::Error;

/// A usage or configuration error (exit status 2). Transparent: it prints as the error it wraps.
#[derive(Debug, Error)]
#[error(transparent)]
pub struct UsageError(anyhow::Error);

/// Standard output was closed by its reader (EPIPE): the output is no longer wanted (exit 0).
#[derive(Debug, Error)]
#[error("standard output closed")]
pub struct StdoutClosed;

/// What an error means for the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A usage or configuration error: exit 2.
    Usage,
    /// A runtime failure: exit 1.
    Failure,
    /// Standard output was closed: exit 0, silently.
    StdoutClosed,
}

impl Kind {
    /// The kind of `e`: the first marker anywhere in its chain decides; none is a failure.
    pub fn of(e: &anyhow::Error) -> Kind {
        for cause in e.chain() {
            if cause.is::<StdoutClosed>() {
                return Kind::StdoutClosed;
            }
            if cause.is::<UsageError>() {
                return Kind::Usage;
            }
        }
        Kind::Failure
    }

    /// The process exit status of this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Usage => 2,
            Kind::Failure => 1,
            Kind::StdoutClosed => 0,
        }
    }

    /// The word the log puts before the message (`esmm: usage: …`, `{"event": "error", …}`).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Usage => "usage",
            Kind::Failure | Kind::StdoutClosed => "error",
        }
    }
}

/// Marks `e` as a usage or configuration error (exit 2), keeping its message and chain.
pub fn usage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e = e.into();
    if Kind::of(&e) == Kind::Usage {
        return e;
    }
    anyhow::Error::new(UsageError(e))
}

/// [`usage`] on the error of a `Result`.
pub trait UsageResult<T> {
    fn usage(self) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> UsageResult<T> for Result<T, E> {
    fn usage(self) -> anyhow::Result<T> {
        self.map_err(usage)
    }
}

/// Writes `text` to standard output and flushes it; a closed pipe is a [`StdoutClosed`] error.
pub fn print(text: &str) -> anyhow::Result<()> {
    write_all(&mut std::io::stdout().lock(), text)
}

fn write_all(w: &mut impl Write, text: &str) -> anyhow::Result<()> {
    match w.write_all(text.as_bytes()).and_then(|_| w.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{anyhow, Context};

    #[test]
    fn the_marker_survives_context_and_keeps_the_message() {
        let e = usage(anyhow!("train.epochs must be >= 1")).context("config p.yaml");
        assert_eq!(Kind::of(&e), Kind::Usage);
        assert_eq!(format!("{e:#}"), "config p.yaml: train.epochs must be >= 1");
        // A chain below the marker prints once, in order.
        let inner = Err::<(), _>(anyhow!("root")).context("middle").usage().context("top").unwrap_err();
        assert_eq!(format!("{inner:#}"), "top: middle: root");
        assert_eq!(Kind::of(&inner), Kind::Usage);
        // Marking twice adds nothing.
        assert_eq!(format!("{:#}", usage(usage(anyhow!("x")))), "x");
        assert_eq!(usage(usage(anyhow!("x"))).chain().count(), 1);
    }

    #[test]
    fn unmarked_errors_are_failures_and_kinds_map_to_exit_codes() {
        let io = std::io::Error::new(ErrorKind::PermissionDenied, "denied");
        assert_eq!(Kind::of(&anyhow::Error::new(io).context("writing x")), Kind::Failure);
        assert_eq!([Kind::Usage, Kind::Failure, Kind::StdoutClosed].map(Kind::exit_code), [2, 1, 0]);
        assert_eq!([Kind::Usage, Kind::Failure].map(Kind::label), ["usage", "error"]);
    }

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_its_own_kind() {
        let e = write_all(&mut Closed, "rows\n").unwrap_err();
        assert_eq!(Kind::of(&e), Kind::StdoutClosed);
        assert_eq!(Kind::of(&e.context("printing the table")), Kind::StdoutClosed);
        let mut buf = Vec::new();
        write_all(&mut buf, "rows\n").unwrap();
        assert_eq!(buf, b"rows\n");
    }
}
