//! Exit codes, and what an error tells its reader beyond its message.
//!
//! Every error type the crate returns implements [`Diagnose`]: the exit
//! code it means and, where a next step exists, a hint. `app::report`
//! finds the first cause in an error chain that implements it and prints
//! `error:` / `hint:` from that; the invariants test
//! (`tests/integration/invariants.rs`) fails when a type implements
//! `Diagnose` but `app::report` does not know it.
//!
//! This module is a leaf: every other module may use it, it uses none.

/// Success.
pub const OK: u8 = 0;
/// Something failed (I/O, network, service, corrupt store).
pub const ERROR: u8 = 1;
/// The command line was wrong.
pub const USAGE: u8 = 2;
/// There is no usable login (no store, no token, expired and unrefreshable).
pub const NO_LOGIN: u8 = 4;
/// `qbox run`: qbox or the docker engine failed (as `docker run`).
pub const ENGINE: u8 = 125;
/// `qbox run`: the container's command cannot be invoked.
pub const CANNOT_INVOKE: u8 = 126;
/// `qbox run`: the container's command was not found.
pub const COMMAND_NOT_FOUND: u8 = 127;

/// The exit code of a process ended by `signal` (128 + its number), as
/// shells and `docker stop` report it.
pub fn signalled(signal: i32) -> u8 {
    u8::try_from(128 + signal.clamp(0, 127)).unwrap_or(u8::MAX)
}

/// What an error means for the process: its exit code and a next step.
///
/// An error's `Display` says what went wrong, with the path or value
/// involved; it never repeats the text of its `source()` (the chain is
/// printed whole, so a repeated cause would read twice).
pub trait Diagnose: std::error::Error + Send + Sync + 'static {
    /// The process exit code this error means.
    fn exit_code(&self) -> u8 {
        ERROR
    }

    /// A next step for the user, printed as `hint: ...`.
    fn hint(&self) -> Option<String> {
        None
    }

    /// True when the error means "there is no usable login" (exit code 4).
    fn is_no_login(&self) -> bool {
        self.exit_code() == NO_LOGIN
    }
}

/// `NO_LOGIN` when `no_login`, else `ERROR`.
pub fn no_login_or_error(no_login: bool) -> u8 {
    if no_login { NO_LOGIN } else { ERROR }
}

/// `err` and its causes on one line (`what: why: why`), each text once:
/// a cause whose text an outer error already shows is not repeated
/// (errors of other crates often quote their source).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut cause = Some(err);
    while let Some(current) = cause {
        let part = current.to_string();
        if !part.is_empty() && !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        cause = current.source();
    }
    text
}

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

impl Diagnose for CommandError {
    fn exit_code(&self) -> u8 {
        self.code
    }

    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_as_shells_report_them() {
        assert_eq!(signalled(15), 143);
        assert_eq!(signalled(9), 137);
        assert_eq!(signalled(2), 130);
    }
}
