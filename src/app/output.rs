//! The one writer for data on stdout. Rust ignores SIGPIPE, so a write to
//! a pipe whose reader left (`qbox doctor --json | head -1`) fails with
//! `EPIPE`; `println!` turns that into a panic (exit 134 under `panic =
//! "abort"`). Every command prints through [`print`] / [`println`]
//! instead, which return the error, and [`super::report::report`] turns a
//! broken pipe anywhere in a command's error chain into a quiet exit 0:
//! what the reader wanted, it has. `tests/integration/invariants.rs` keeps
//! `print!`/`println!` out of `src/`.

use std::fmt::Arguments;
use std::io::Write;

/// Writes `text` to stdout and flushes it.
pub fn print(text: impl AsRef<[u8]>) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_ref())?;
    stdout.flush()
}

/// Writes the formatted line and a newline to stdout, and flushes it:
/// `println(format_args!("{x}"))?`.
pub fn println(args: Arguments<'_>) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(args)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}
