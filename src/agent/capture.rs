//! Collecting the CLI's output under a fixed memory bound.
//!
//! The CLI's stdout is read in chunks, never by line: one line without a
//! newline can be hundreds of megabytes, and reading "up to the next
//! newline" would hold all of it. The first bytes up to the response limit
//! (plus room for the styling that is removed later) are kept, the rest is
//! only counted, and the result says how much was dropped. Between the
//! reading task and the call a bounded queue of chunks applies
//! back-pressure, and progress notifications carry at most
//! [`PROGRESS_LINE_LIMIT`] bytes of a line and, in all, about as much as the
//! response limit.
//!
//! **Invariant:** a call holds at most the response limit plus
//! [`STYLING_ROOM`], [`QUEUED_CHUNKS`] chunks of [`READ_CHUNK`] bytes and
//! one progress line of stdout, whatever the CLI prints.

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::output::{Captured, strip_ansi};

/// Bytes read from the CLI at a time.
pub const READ_CHUNK: usize = 64 * 1024;
/// Chunks that may wait between the reading task and the call.
pub const QUEUED_CHUNKS: usize = 4;
/// Raw bytes kept beyond the response limit: the limit applies to the text
/// after ANSI styling is removed, so a styled answer needs some room.
pub const STYLING_ROOM: usize = 64 * 1024;
/// Bytes of one line that a progress notification carries.
pub const PROGRESS_LINE_LIMIT: usize = 4096;
/// What each progress notification is counted as beyond its text, so that
/// many short lines use up the progress budget too.
const PROGRESS_LINE_COST: usize = 64;

/// Reads `stdout` in chunks into a bounded queue until end of file. The
/// queue closes when the pipe does; the task ends early when the receiver
/// is dropped, and can be aborted (a grandchild may hold the pipe open).
pub fn spawn_reader(
    mut stdout: impl AsyncRead + Unpin + Send + 'static,
) -> (mpsc::Receiver<Vec<u8>>, JoinHandle<()>) {
    let (chunks, receiver) = mpsc::channel(QUEUED_CHUNKS);
    let task = tokio::spawn(async move {
        loop {
            let mut chunk = vec![0; READ_CHUNK];
            match stdout.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    if chunks.send(chunk).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    (receiver, task)
}

/// Reads `stream` to its end, keeping the first `limit` bytes (stderr only
/// feeds error messages).
pub fn spawn_limited_reader(
    mut stream: impl AsyncRead + Unpin + Send + 'static,
    limit: usize,
) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut chunk = vec![0; 8192];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let room = limit.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
        kept
    })
}

/// The CLI's stdout as far as a call keeps it.
#[derive(Debug)]
pub struct Capture {
    kept: Vec<u8>,
    keep_limit: usize,
    total: u64,
    /// The first [`PROGRESS_LINE_LIMIT`] bytes of the line being read.
    line: Vec<u8>,
    /// The whole length of the line being read.
    line_len: u64,
    /// Bytes progress notifications may still carry.
    progress_budget: usize,
    progress_exhausted: bool,
}

impl Capture {
    /// A capture for a call that returns at most `max_response` bytes.
    pub fn new(max_response: usize) -> Self {
        Self {
            kept: Vec::new(),
            keep_limit: max_response.saturating_add(STYLING_ROOM),
            total: 0,
            line: Vec::new(),
            line_len: 0,
            progress_budget: max_response,
            progress_exhausted: false,
        }
    }

    /// Takes one chunk of output; returns the progress messages of the
    /// lines it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.total += chunk.len() as u64;
        let room = self.keep_limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let mut messages = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let (part, line_ended) = match rest.iter().position(|b| *b == b'\n') {
                Some(newline) => (&rest[..=newline], true),
                None => (rest, false),
            };
            rest = &rest[part.len()..];
            let room = PROGRESS_LINE_LIMIT.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            self.line_len += part.len() as u64;
            if line_ended {
                messages.extend(self.end_line());
            }
        }
        messages
    }

    /// The progress message of a last line without a newline, if any.
    pub fn finish(&mut self) -> Option<String> {
        if self.line_len == 0 {
            return None;
        }
        self.end_line()
    }

    /// What was kept and how much there was.
    pub fn into_captured(self) -> Captured {
        Captured {
            kept: self.kept,
            total: self.total,
        }
    }

    fn end_line(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.line);
        let line_len = std::mem::take(&mut self.line_len);
        if self.progress_exhausted {
            return None;
        }
        let mut text = strip_ansi(&String::from_utf8_lossy(&line))
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        if line_len > line.len() as u64 {
            text.push_str(&format!(" [… {} bytes more]", line_len - line.len() as u64));
        }
        let cost = text.len() + PROGRESS_LINE_COST;
        if cost > self.progress_budget {
            self.progress_exhausted = true;
            return Some(
                "[qbox: further output is not sent as progress; the result carries it]".into(),
            );
        }
        self.progress_budget -= cost;
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_13_a_huge_line_is_counted_not_kept() {
        let mut capture = Capture::new(10_000);
        let chunk = vec![b'x'; READ_CHUNK];
        for _ in 0..100 {
            assert!(capture.push(&chunk).is_empty(), "no newline, no progress");
        }
        let last = capture.finish().unwrap();
        assert!(last.starts_with(&"x".repeat(PROGRESS_LINE_LIMIT)), "{last}");
        assert!(
            last.ends_with(&format!(
                " [… {} bytes more]",
                100 * READ_CHUNK - PROGRESS_LINE_LIMIT
            )),
            "{last}"
        );
        let captured = capture.into_captured();
        assert_eq!(captured.total, 100 * READ_CHUNK as u64);
        assert_eq!(captured.kept.len(), 10_000 + STYLING_ROOM);
    }

    #[test]
    fn lines_split_across_chunks_become_one_progress_message() {
        let mut capture = Capture::new(1000);
        assert!(capture.push(b"\x1b[1mhel").is_empty());
        assert_eq!(capture.push(b"lo\x1b[0m\r\nwor"), ["hello"]);
        assert_eq!(capture.push(b"ld\n\n"), ["world", ""]);
        assert_eq!(capture.finish(), None);
        assert_eq!(
            capture.into_captured().kept,
            b"\x1b[1mhello\x1b[0m\r\nworld\n\n"
        );
    }

    #[test]
    fn issue_13_progress_stops_at_its_budget() {
        let mut capture = Capture::new(1000);
        let many = "short\n".repeat(1000);
        let messages = capture.push(many.as_bytes());
        // Each message costs its text plus 64 bytes: 14 fit into 1000.
        assert_eq!(messages.len(), 15);
        assert!(messages[..14].iter().all(|m| m == "short"));
        assert!(
            messages[14].contains("not sent as progress"),
            "{messages:?}"
        );
        assert!(capture.push(b"more\n").is_empty());
    }
}
