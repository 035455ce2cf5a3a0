//! Exit codes and the one place errors are printed for people.
//!
//! Every failure prints `error: <what, with the path or value>` and, where a
//! next step exists, `hint: <what to do>` on the following line. Both lines
//! pass through [`printable_line`]: no known secret and no control character
//! reaches the terminal, whatever a server or a file put in the message.

use crate::app::term::Palette;
use crate::container::run::RunError;
use crate::container::static_binary::StaticBinaryError;
use crate::qapi::ApiError;
use crate::store::{AuthError, RefreshError, StoreError};

/// Success.
pub const OK: u8 = 0;
/// Something failed (I/O, network, service, corrupt store).
pub const ERROR: u8 = 1;
/// The command line was wrong.
pub const USAGE: u8 = 2;
/// There is no usable login (no store, no token, expired and unrefreshable).
pub const NO_LOGIN: u8 = 4;

/// An error raised by a command itself, with its hint and exit code.
#[derive(Debug)]
pub struct CommandError {
    pub message: String,
    pub hint: Option<String>,
    pub code: u8,
}

impl CommandError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            code,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandError {}

/// The hint and exit code the error chain carries.
pub fn classify(err: &anyhow::Error) -> (u8, Option<String>) {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CommandError>() {
            return (e.code, e.hint.clone());
        }
        if let Some(e) = cause.downcast_ref::<RunError>() {
            return (e.exit_code(), e.hint());
        }
        if let Some(e) = cause.downcast_ref::<ApiError>() {
            return (code(e.is_no_login()), e.hint());
        }
        if let Some(e) = cause.downcast_ref::<AuthError>() {
            return (code(e.is_no_login()), e.hint());
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return (code(e.is_no_login()), e.hint());
        }
        if let Some(e) = cause.downcast_ref::<RefreshError>() {
            return (code(e.is_no_login()), e.hint());
        }
        if let Some(e) = cause.downcast_ref::<crate::mcp::client::CallError>() {
            return (ERROR, e.hint());
        }
        if let Some(e) = cause.downcast_ref::<StaticBinaryError>() {
            return (ERROR, e.hint());
        }
    }
    (ERROR, None)
}

fn code(no_login: bool) -> u8 {
    if no_login { NO_LOGIN } else { ERROR }
}

/// Prints the error (and its hint) to stderr and returns the exit code.
pub fn report(err: &anyhow::Error, palette: Palette) -> u8 {
    let (code, hint) = classify(err);
    eprintln!(
        "{} {}",
        palette.error("error:"),
        printable_line(&format!("{err:#}"))
    );
    if let Some(hint) = hint {
        eprintln!("{} {}", palette.bold("hint:"), printable_line(&hint));
    }
    code
}

/// `text` as one line fit for a terminal: every known secret redacted and
/// every control character (escape sequences, CR, LF) made a space, so no
/// part of a message can move the cursor or start a line of its own (a
/// forged `hint:`). Messages that quote a server have already been
/// sanitised where they were built; this is the last line of defence for
/// everything else printed about an error.
pub fn printable_line(text: &str) -> String {
    crate::secret::redact(text)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_line_redacts_secrets_and_flattens_control_characters() {
        crate::secret::register("exit-unit-secret-token");
        let shown = printable_line("bad exit-unit-secret-token\x1b[31m\r\nhint: run this");
        assert_eq!(shown, "bad [redacted] [31m  hint: run this");
    }
}
