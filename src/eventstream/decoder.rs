//! The incremental decoder.
//!
//! Feed it byte chunks of any size; it hands out complete, fully validated
//! messages. A frame that lies wholly inside the current chunk is decoded in
//! place (zero-copy); only a frame split across chunks is assembled in an
//! internal buffer, which never holds more than that one frame.

use super::crc::crc32;
use super::{
    FrameError, Headers, MAX_HEADERS_LEN, MAX_MESSAGE_LEN, MAX_PAYLOAD_LEN, OVERHEAD, PRELUDE_LEN,
};

/// A decoded message, borrowing from the input chunk or the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub headers: Headers<'a>,
    pub payload: &'a [u8],
    /// The whole frame as it was on the wire.
    pub frame: &'a [u8],
}

impl Message<'_> {
    /// Length of the frame on the wire.
    pub fn wire_len(&self) -> usize {
        self.frame.len()
    }
}

/// What the 12-byte prelude says.
#[derive(Debug, Clone, Copy)]
struct Prelude {
    total: usize,
    headers: usize,
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the prelude CRC and the length fields against the limits.
#[inline]
fn check_prelude(prelude: &[u8], max_message_len: usize) -> Result<Prelude, FrameError> {
    let total = be_u32(prelude, 0);
    let headers = be_u32(prelude, 4);
    let expected = be_u32(prelude, 8);
    let computed = crc32(&prelude[..8]);
    if expected != computed {
        return Err(FrameError::PreludeChecksum { expected, computed });
    }
    let total_len = total as usize;
    let headers_len = headers as usize;
    if total_len < OVERHEAD {
        return Err(FrameError::FrameTooShort { total });
    }
    if headers_len > MAX_HEADERS_LEN {
        return Err(FrameError::HeadersTooLong {
            headers,
            max: MAX_HEADERS_LEN,
        });
    }
    if headers_len > total_len - OVERHEAD {
        return Err(FrameError::HeadersExceedFrame { headers, total });
    }
    let payload_len = total_len - OVERHEAD - headers_len;
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(FrameError::PayloadTooLong {
            payload: payload_len,
            max: MAX_PAYLOAD_LEN,
        });
    }
    if total_len > max_message_len {
        return Err(FrameError::FrameTooLong {
            total,
            max: max_message_len,
        });
    }
    Ok(Prelude {
        total: total_len,
        headers: headers_len,
    })
}

/// Checks the message CRC of a complete frame.
#[inline]
fn check_message_crc(frame: &[u8], prelude: Prelude) -> Result<(), FrameError> {
    let crc_at = prelude.total - 4;
    let expected = be_u32(frame, crc_at);
    let computed = crc32(&frame[..crc_at]);
    if expected != computed {
        return Err(FrameError::MessageChecksum { expected, computed });
    }
    Ok(())
}

/// Validates the headers of a frame whose CRC is right and views it as a
/// message.
#[inline]
fn message(frame: &[u8], prelude: Prelude) -> Result<Message<'_>, FrameError> {
    let headers_end = PRELUDE_LEN + prelude.headers;
    Ok(Message {
        headers: Headers::parse(&frame[PRELUDE_LEN..headers_end])?,
        payload: &frame[headers_end..prelude.total - 4],
        frame,
    })
}

/// Where the next complete frame is.
enum Next {
    /// At the start of the input, CRC checked.
    InPlace(Prelude),
    /// Assembled in the decoder's buffer and fully validated: (prelude,
    /// header count).
    Buffered(Prelude, usize),
    /// Not complete yet.
    NeedMore,
}

/// An incremental event-stream decoder.
#[derive(Debug)]
pub struct Decoder {
    /// The start of a frame that did not fit in earlier chunks.
    partial: Vec<u8>,
    /// The prelude of the frame in `partial`, once 12 bytes are there.
    prelude: Option<Prelude>,
    /// `partial` holds a frame already handed out; clear it on the next call.
    handed_out: bool,
    /// An error was returned: the stream position is lost for good.
    poisoned: bool,
    max_message_len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the specification's size limits.
    pub fn new() -> Self {
        Self::with_max_message_len(MAX_MESSAGE_LEN)
    }

    /// A decoder that also refuses frames longer than `max` bytes.
    pub fn with_max_message_len(max: usize) -> Self {
        Self {
            partial: Vec::new(),
            prelude: None,
            handed_out: false,
            poisoned: false,
            max_message_len: max.min(MAX_MESSAGE_LEN),
        }
    }

    /// Bytes of an unfinished frame held from earlier chunks.
    pub fn buffered(&self) -> usize {
        if self.handed_out {
            0
        } else {
            self.partial.len()
        }
    }

    /// Decodes the next message from earlier leftovers and the start of
    /// `input`. Returns the message, if one is complete, and how many bytes
    /// of `input` were used; `(None, n)` means all `n` remaining bytes were
    /// kept and the frame needs more. After an error, every call fails with
    /// [`FrameError::Poisoned`].
    ///
    /// ```
    /// use qbox::eventstream::{Decoder, Header, HeaderValue, encode_to_vec};
    /// let event = [Header { name: ":event-type", value: HeaderValue::String("x") }];
    /// let frame = encode_to_vec(&event, b"{}").unwrap();
    /// let (first, second) = frame.split_at(5);
    /// let mut decoder = Decoder::new();
    /// assert_eq!(decoder.decode(first).unwrap(), (None, 5));
    /// let (message, used) = decoder.decode(second).unwrap();
    /// let message = message.unwrap();
    /// assert_eq!(used, second.len());
    /// assert_eq!(message.headers.get_str(":event-type"), Some("x"));
    /// assert_eq!(message.payload, b"{}");
    /// ```
    pub fn decode<'m>(
        &'m mut self,
        input: &'m [u8],
    ) -> Result<(Option<Message<'m>>, usize), FrameError> {
        if self.poisoned {
            return Err(FrameError::Poisoned);
        }
        if self.handed_out {
            self.partial.clear();
            self.prelude = None;
            self.handed_out = false;
        }
        let mut rest = input;
        let next = if self.partial.is_empty() {
            self.locate_in_place(&mut rest)
        } else {
            self.locate_buffered(&mut rest)
        };
        let used = input.len() - rest.len();
        match next {
            // The message borrows `input`, not the decoder, so a header
            // error can still poison the decoder.
            Ok(Next::InPlace(prelude)) => match message(&input[..prelude.total], prelude) {
                Ok(message) => Ok((Some(message), prelude.total)),
                Err(err) => {
                    self.poisoned = true;
                    Err(err)
                }
            },
            Ok(Next::Buffered(prelude, count)) => {
                self.handed_out = true;
                let headers_end = PRELUDE_LEN + prelude.headers;
                let frame = &self.partial;
                Ok((
                    Some(Message {
                        headers: Headers::validated(&frame[PRELUDE_LEN..headers_end], count),
                        payload: &frame[headers_end..prelude.total - 4],
                        frame,
                    }),
                    used,
                ))
            }
            Ok(Next::NeedMore) => Ok((None, used)),
            Err(err) => {
                self.poisoned = true;
                self.partial = Vec::new();
                Err(err)
            }
        }
    }

    /// Decodes every complete message in `chunk`, calling `on_message` for
    /// each, and keeps the start of an unfinished frame for the next chunk.
    pub fn feed<E: From<FrameError>>(
        &mut self,
        chunk: &[u8],
        mut on_message: impl FnMut(Message<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut input = chunk;
        loop {
            let (message, used) = self.decode(input)?;
            input = &input[used..];
            match message {
                Some(message) => on_message(message)?,
                None => return Ok(()),
            }
        }
    }

    /// Fast path: the next frame starts at the beginning of `input`.
    fn locate_in_place(&mut self, input: &mut &[u8]) -> Result<Next, FrameError> {
        let available = *input;
        if available.len() >= PRELUDE_LEN {
            let prelude = check_prelude(&available[..PRELUDE_LEN], self.max_message_len)?;
            if available.len() >= prelude.total {
                check_message_crc(&available[..prelude.total], prelude)?;
                *input = &available[prelude.total..];
                return Ok(Next::InPlace(prelude));
            }
            self.prelude = Some(prelude);
            self.partial.reserve_exact(prelude.total);
        }
        // Keep the start of the frame; the rest arrives with later chunks.
        self.partial.extend_from_slice(available);
        *input = &available[available.len()..];
        Ok(Next::NeedMore)
    }

    /// Slow path: a frame started in an earlier chunk.
    fn locate_buffered(&mut self, input: &mut &[u8]) -> Result<Next, FrameError> {
        let prelude = match self.prelude {
            Some(prelude) => prelude,
            None => {
                let wanted = PRELUDE_LEN - self.partial.len();
                let used = wanted.min(input.len());
                self.partial.extend_from_slice(&input[..used]);
                *input = &input[used..];
                if self.partial.len() < PRELUDE_LEN {
                    return Ok(Next::NeedMore);
                }
                let prelude = check_prelude(&self.partial[..PRELUDE_LEN], self.max_message_len)?;
                self.partial
                    .reserve_exact(prelude.total - self.partial.len());
                *self.prelude.insert(prelude)
            }
        };
        let wanted = prelude.total - self.partial.len();
        let used = wanted.min(input.len());
        self.partial.extend_from_slice(&input[..used]);
        *input = &input[used..];
        if self.partial.len() < prelude.total {
            return Ok(Next::NeedMore);
        }
        check_message_crc(&self.partial, prelude)?;
        let count =
            Headers::parse(&self.partial[PRELUDE_LEN..PRELUDE_LEN + prelude.headers])?.len();
        Ok(Next::Buffered(prelude, count))
    }

    /// Call at the end of the stream: fails if a frame was left unfinished.
    pub fn finish(&self) -> Result<(), FrameError> {
        let have = self.buffered();
        if have == 0 {
            return Ok(());
        }
        Err(FrameError::TruncatedFrame {
            have,
            needed: self.prelude.map_or(PRELUDE_LEN, |p| p.total),
        })
    }
}
