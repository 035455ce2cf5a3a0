//! The host terminal under `qbox run -t`: raw mode while the container owns
//! the terminal (its own line discipline does the echoing and turns Ctrl-C
//! into SIGINT, as with `docker run -it`), and the window size to pass on.

use std::io::IsTerminal;

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};

/// Raw mode on stdin until dropped, when the saved settings come back (on
/// every way out of `qbox run` but SIGKILL).
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin in raw mode; `None` when stdin is not a terminal.
    pub fn enable() -> std::io::Result<Option<Self>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Drain: output still queued for the terminal is written first.
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Drain, &self.saved);
    }
}

/// The terminal's size as (rows, columns), from stdout, else stdin; `None`
/// when neither is a terminal or the size is unknown (0×0).
pub fn window_size() -> Option<(u16, u16)> {
    let from_stdout = tcgetwinsize(std::io::stdout());
    let size = from_stdout
        .or_else(|_| tcgetwinsize(std::io::stdin()))
        .ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}
