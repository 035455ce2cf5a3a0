//! Exit codes and the one place errors are printed for people.
//!
//! Every failure prints `error: <what, with the path or value>` and, where a
//! next step exists, `hint: <what to do>` on the following line.

use crate::container::run::RunError;
use crate::qapi::ApiError;
use crate::static_binary::StaticBinaryError;
use crate::store::{AuthError, RefreshError, StoreError};
use crate::term::Palette;

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
    eprintln!("{} {err:#}", palette.error("error:"));
    if let Some(hint) = hint {
        eprintln!("{} {hint}", palette.bold("hint:"));
    }
    code
}
