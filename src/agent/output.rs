//! Shaping the CLI's output for a tool result: ANSI styling removed (the
//! CLI styles even when piped), invalid UTF-8 repaired, and long output cut
//! at a line boundary with a notice giving both sizes.

/// Removes ANSI escape sequences: CSI (`ESC [ ... final`), OSC
/// (`ESC ] ... BEL` or `ESC \`), and two-byte escapes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            // A two-byte escape such as `ESC 7` or `ESC (B` (one more byte).
            Some('(') | Some(')') => {
                chars.next();
            }
            Some(_) | None => {}
        }
    }
    out
}

/// The result of [`truncate_at_line`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    pub text: String,
    /// `Some((original, kept))` sizes in bytes when the text was cut.
    pub cut: Option<(usize, usize)>,
}

/// Keeps at most `max` bytes of `text`, ending at the last line break that
/// fits (or, for one huge line, at the last character boundary that fits).
/// Never splits a UTF-8 character.
pub fn truncate_at_line(text: String, max: usize) -> Truncated {
    if text.len() <= max {
        return Truncated { text, cut: None };
    }
    let original = text.len();
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if let Some(newline) = text[..end].rfind('\n') {
        end = newline + 1;
    }
    let mut text = text;
    text.truncate(end);
    Truncated {
        cut: Some((original, text.len())),
        text,
    }
}

/// The notice appended to cut output.
pub fn truncation_notice(original: usize, kept: usize, limit_env: &str) -> String {
    format!(
        "[qbox: output truncated from {original} bytes to {kept} bytes at a line boundary; raise {limit_env} to get more]"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_styling_the_cli_uses() {
        assert_eq!(strip_ansi("\x1b[1;32mHello\x1b[0m world"), "Hello world");
        assert_eq!(strip_ansi("\x1b]8;;http://x\x07link\x1b]8;;\x07"), "link");
        assert_eq!(strip_ansi("\x1b]0;title\x1b\\text"), "text");
        assert_eq!(strip_ansi("\x1b[38;5;12m> \x1b[0mq"), "> q");
        assert_eq!(strip_ansi("plain ünïcode ✓"), "plain ünïcode ✓");
        assert_eq!(strip_ansi("dangling \x1b"), "dangling ");
    }

    #[test]
    fn truncates_at_lines_and_never_inside_a_character() {
        let text = "line one\nline two\nline three\n".to_owned();
        let cut = truncate_at_line(text.clone(), 20);
        assert_eq!(cut.text, "line one\nline two\n");
        assert_eq!(cut.cut, Some((text.len(), 18)));
        assert_eq!(truncate_at_line(text, 1000).cut, None);

        // One long line of 3-byte characters: cut on a character boundary.
        let wide = "✓".repeat(10);
        let cut = truncate_at_line(wide, 8);
        assert_eq!(cut.text, "✓✓");
        assert_eq!(cut.cut, Some((30, 6)));
    }
}
