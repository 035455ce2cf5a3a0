//! Styling for messages on stderr: colour only on a terminal, and never when
//! `NO_COLOR` is set (https://no-color.org) or `TERM=dumb`.

use std::io::IsTerminal;

/// Whether stderr gets ANSI styling.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    enabled: bool,
}

impl Palette {
    /// The palette for stderr in this process.
    pub fn stderr() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|v| v == "dumb");
        Self {
            enabled: !no_color && !dumb && std::io::stderr().is_terminal(),
        }
    }

    /// A palette that never styles.
    pub fn plain() -> Self {
        Self { enabled: false }
    }

    pub fn enabled(self) -> bool {
        self.enabled
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn error(self, text: &str) -> String {
        self.paint("1;31", text)
    }

    pub fn warning(self, text: &str) -> String {
        self.paint("1;33", text)
    }

    pub fn good(self, text: &str) -> String {
        self.paint("32", text)
    }

    pub fn bad(self, text: &str) -> String {
        self.paint("31", text)
    }

    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_never_styles() {
        assert_eq!(Palette::plain().error("x"), "x");
        assert_eq!(Palette { enabled: true }.error("x"), "\x1b[1;31mx\x1b[0m");
    }
}
