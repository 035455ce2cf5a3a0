//! Shaping the CLI's output for a tool result: ANSI styling removed (the
//! CLI styles even when piped), invalid UTF-8 repaired, and long output cut
//! at a line boundary with a notice giving both sizes.

/// What the call keeps of the CLI's stdout in the end (collected by
/// `capture`, shaped here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes, up to the response limit plus
    /// [`STYLING_ROOM`](super::capture::STYLING_ROOM).
    pub kept: Vec<u8>,
    /// Every byte the CLI printed, kept or not.
    pub total: u64,
}

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

/// Where and how much output was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Bytes there were: the CLI's whole output when it was cut while
    /// reading, else the text's length.
    pub original: u64,
    /// Bytes of text kept.
    pub kept: usize,
    /// Whether the text ends at a line break (else inside one long line).
    pub at_line: bool,
}

/// A text after `cut_at_line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    pub text: String,
    /// `Some` when the text was cut.
    pub cut: Option<Cut>,
}

/// Keeps at most `max` bytes of `text`, ending at the last line break that
/// fits (or, for one huge line, at the last character boundary that fits).
/// Never splits a UTF-8 character.
#[cfg(test)]
fn truncate_at_line(text: String, max: usize) -> Truncated {
    let original = text.len() as u64;
    cut_at_line(text, max, original, false)
}

/// Keeps at most `max` bytes of `text`, ending at the last line break that
/// fits (or, for one huge line, at the last character boundary that fits),
/// never splitting a UTF-8 character; also cutting (back to the last line break) when
/// `already_cut` says the text is the start of something longer, of
/// `original` bytes.
fn cut_at_line(text: String, max: usize, original: u64, already_cut: bool) -> Truncated {
    if text.len() <= max && !already_cut {
        return Truncated { text, cut: None };
    }
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let newline = text[..end].rfind('\n');
    if let Some(newline) = newline {
        end = newline + 1;
    }
    let mut text = text;
    text.truncate(end);
    Truncated {
        cut: Some(Cut {
            original: original.max(text.len() as u64),
            kept: text.len(),
            at_line: newline.is_some(),
        }),
        text,
    }
}

/// The notice appended to cut output.
pub fn truncation_notice(cut: Cut, limit_env: &str) -> String {
    let place = if cut.at_line {
        "at a line boundary"
    } else {
        "inside a line that had no line break within the limit"
    };
    let dropped = cut.original.saturating_sub(cut.kept as u64);
    format!(
        "[qbox: output truncated from {} bytes to {} bytes {place}; {dropped} bytes dropped; raise {limit_env} to get more]",
        cut.original, cut.kept
    )
}

/// A call's output as the tool result shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaped {
    pub text: String,
    /// Bytes that are not UTF-8 were replaced with U+FFFD.
    pub invalid_utf8: bool,
    pub cut: Option<Cut>,
}

/// Turns what was captured of stdout into the result's text: UTF-8
/// repaired, styling removed, cut to `max` bytes at a line boundary.
pub fn shape_output(captured: Captured, max: usize) -> Shaped {
    let mut kept = captured.kept;
    let cut_while_reading = captured.total > kept.len() as u64;
    if cut_while_reading {
        // Reading stopped at a byte count, maybe inside a character: that
        // is not the CLI printing invalid UTF-8.
        if let Err(err) = std::str::from_utf8(&kept)
            && err.error_len().is_none()
        {
            kept.truncate(err.valid_up_to());
        }
    }
    let (text, invalid_utf8) = match String::from_utf8(kept) {
        Ok(text) => (text, false),
        Err(err) => (String::from_utf8_lossy(err.as_bytes()).into_owned(), true),
    };
    let text = strip_ansi(&text);
    let original = if cut_while_reading {
        captured.total
    } else {
        text.len() as u64
    };
    let truncated = cut_at_line(text, max, original, cut_while_reading);
    Shaped {
        text: truncated.text,
        invalid_utf8,
        cut: truncated.cut,
    }
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
        assert_eq!(
            cut.cut,
            Some(Cut {
                original: text.len() as u64,
                kept: 18,
                at_line: true
            })
        );
        assert_eq!(truncate_at_line(text, 1000).cut, None);

        // One long line of 3-byte characters: cut on a character boundary.
        let wide = "✓".repeat(10);
        let cut = truncate_at_line(wide, 8);
        assert_eq!(cut.text, "✓✓");
        assert_eq!(
            cut.cut,
            Some(Cut {
                original: 30,
                kept: 6,
                at_line: false
            })
        );
    }

    #[test]
    fn issue_13_output_cut_while_reading_says_how_much_was_dropped() {
        // Kept bytes end inside a character and inside a line.
        let mut kept = b"first line\nsecond \xe2\x9c".to_vec();
        let shaped = shape_output(
            Captured {
                kept: kept.clone(),
                total: 1_000_000,
            },
            1000,
        );
        assert!(
            !shaped.invalid_utf8,
            "a cut character is not invalid output"
        );
        assert_eq!(shaped.text, "first line\n");
        let cut = shaped.cut.unwrap();
        assert_eq!(cut.original, 1_000_000);
        let notice = truncation_notice(cut, "LIMIT");
        assert!(
            notice.contains(
                "from 1000000 bytes to 11 bytes at a line boundary; 999989 bytes dropped"
            ),
            "{notice}"
        );

        // Nothing dropped: nothing cut.
        kept.truncate(11);
        let whole = shape_output(Captured { kept, total: 11 }, 1000);
        assert_eq!((whole.text.as_str(), whole.cut), ("first line\n", None));
    }
}
