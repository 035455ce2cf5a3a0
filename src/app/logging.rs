//! Tracing setup shared by both binaries: logs go to stderr only (stdout is
//! for data, and on the MCP stdio transport it is the protocol itself).
//!
//! `RUST_LOG` wins when set; otherwise `-v` raises qbox's own level
//! (info, debug, trace) and `-q` lowers it to errors only. `RUST_LOG` takes
//! `level` and `target=level` directives, comma-separated: target filters
//! without the regular-expression engine keep the static sidecar small.
//!
//! Every log line passes through [`Redacting`], which removes each known
//! secret ([`crate::secret::redact`]) before the line is written, whatever
//! field or message carried it.

use std::io::Write;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::app::term::Palette;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(verbose: u8, quiet: bool, palette: Palette) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|spec| !spec.trim().is_empty())
        .map(|spec| {
            spec.parse::<Targets>().unwrap_or_else(|err| {
                super::report::warn(palette, &format!("ignoring RUST_LOG={spec:?}: {err}"), None);
                default_filter("warn")
            })
        });
    let filter = match from_env {
        Some(filter) => filter,
        None => {
            let level = match (quiet, verbose) {
                (true, _) => "error",
                (false, 0) => "warn",
                (false, 1) => "info",
                (false, 2) => "debug",
                (false, _) => "trace",
            };
            default_filter(level)
        }
    };
    let output = tracing_subscriber::fmt::layer()
        .with_writer(Redacting(std::io::stderr))
        .with_ansi(palette.enabled())
        .with_target(verbose >= 2);
    let _ = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .try_init();
}

/// Everything at `warn`, qbox's own targets at `level`.
fn default_filter(level: &str) -> Targets {
    let level = level
        .parse()
        .unwrap_or(tracing::level_filters::LevelFilter::WARN);
    Targets::new()
        .with_default(tracing::level_filters::LevelFilter::WARN)
        .with_target("qbox", level)
        .with_target("qbox_sidecar", level)
}

/// A writer factory for the fmt layer: each event is collected whole, then
/// written to the inner writer with every known secret redacted. Collecting
/// first matters: a secret split across two `write` calls would otherwise
/// escape a per-call replacement.
#[derive(Debug, Clone, Copy)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactedEvent<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedEvent {
            text: Vec::new(),
            inner: self.0.make_writer(),
        }
    }
}

/// One event's text on its way to the inner writer (see [`Redacting`]).
#[derive(Debug)]
pub struct RedactedEvent<W: Write> {
    text: Vec<u8>,
    inner: W,
}

impl<W: Write> RedactedEvent<W> {
    fn write_out(&mut self) -> std::io::Result<()> {
        if self.text.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.text);
        let redacted = crate::secret::redact(&text);
        self.text.clear();
        self.inner.write_all(redacted.as_bytes())?;
        self.inner.flush()
    }
}

impl<W: Write> Write for RedactedEvent<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The fmt layer writes an event and drops the writer: the event is
        // written out on drop, whole.
        Ok(())
    }
}

impl<W: Write> Drop for RedactedEvent<W> {
    fn drop(&mut self) {
        // Nowhere to report a failed log write; stderr is the report.
        let _ = self.write_out();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_never_carry_a_known_secret() {
        let secret = crate::secret::Secret::new("logging-unit-secret-value");
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Redacting(move || sink.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(detail = secret.expose(), "server said {}", secret.expose());
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("server said [redacted]"), "{text}");
        assert!(!text.contains("logging-unit-secret-value"), "{text}");
    }
}
