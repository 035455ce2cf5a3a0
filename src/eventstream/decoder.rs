//! The incremental decoder.
//!
//! Feed it byte chunks of any size; it hands out complete, fully validated
//! messages. A frame that lies wholly inside the current chunk is decoded in
//! place (zero-copy); only a frame split across chunks is assembled in an
//! internal buffer, which never holds more than that one frame.
//!
//! The prelude's CRC is checked as soon as its 12 bytes are there. A frame
//! split across chunks goes into a buffer sized once from its prelude and is
//! hashed block by block as it arrives, so it is never read twice. After an
//! error the decoder is poisoned and decodes nothing more. `ChunkDecoder`
//! (`chunked`) makes the same checks on owned `Bytes` chunks.

use super::crc::Crc32;
use super::frame::{Prelude, Start, check_message_crc, check_prelude, start};
use super::{FrameError, Headers, LastSection, MAX_MESSAGE_LEN, PRELUDE_LEN};

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

/// Validates the headers of a complete frame whose CRCs are right (or
/// recognises them as the last section validated) and views it as a
/// message.
#[inline]
fn message<'m>(
    frame: &'m [u8],
    prelude: Prelude,
    last: &'m mut LastSection,
) -> Result<Message<'m>, FrameError> {
    let (headers, payload) = prelude.sections(frame);
    Ok(Message {
        headers: last.parse(headers)?,
        payload,
        frame,
    })
}

/// Bytes copied into the frame buffer between two CRC updates: small enough
/// that a block is still in the L1 cache when it is hashed, large enough for
/// the wide CRC.
const BLOCK: usize = 16 * 1024;

/// An incremental event-stream decoder.
#[derive(Debug)]
pub struct Decoder {
    /// The start of a frame that did not fit in earlier chunks. Its capacity
    /// is kept for the next frame that needs it.
    partial: Vec<u8>,
    /// The prelude of the frame in `partial`, once 12 bytes are there.
    prelude: Option<Prelude>,
    /// CRC-32 of `partial[..hashed]`, kept up to date as bytes arrive so
    /// that a finished frame is not read a second time.
    crc: Crc32,
    /// The CRC of nothing, cloned for each frame.
    fresh: Crc32,
    hashed: usize,
    /// `partial` holds a frame already handed out; clear it on the next call.
    handed_out: bool,
    /// An error was returned: the stream position is lost for good.
    poisoned: bool,
    max_message_len: usize,
    /// The last headers section validated.
    last: LastSection,
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
            crc: Crc32::new(),
            fresh: Crc32::new(),
            hashed: 0,
            handed_out: false,
            poisoned: false,
            max_message_len: max.min(MAX_MESSAGE_LEN),
            last: LastSection::default(),
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
        let filled = if self.partial.is_empty() {
            match start(input, self.max_message_len, &self.fresh) {
                // Split borrows: the message borrows `input` and the last
                // section, so a header error can still poison the decoder.
                Ok(Start::Whole(frame, prelude)) => {
                    let Self { last, poisoned, .. } = self;
                    return match message(frame, prelude, last) {
                        Ok(message) => Ok((Some(message), frame.len())),
                        Err(err) => {
                            *poisoned = true;
                            Err(err)
                        }
                    };
                }
                Ok(Start::Partial(prelude)) => {
                    self.begin(input, prelude);
                    Ok(None)
                }
                Err(err) => Err(err),
            }
        } else {
            self.fill(input)
        };
        let (used, prelude) = match filled {
            Ok(Some(done)) => done,
            Ok(None) => return Ok((None, input.len())),
            Err(err) => {
                self.poisoned = true;
                self.partial = Vec::new();
                return Err(err);
            }
        };
        // Split borrows: the message borrows the buffer while a header
        // error still poisons the decoder.
        let Self {
            partial,
            handed_out,
            poisoned,
            last,
            ..
        } = self;
        let frame: &'m [u8] = partial;
        match message(frame, prelude, last) {
            Ok(message) => {
                *handed_out = true;
                Ok((Some(message), used))
            }
            Err(err) => {
                *poisoned = true;
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
            if self.partial.is_empty() && !self.poisoned {
                // Nothing buffered: whole frames are decoded in place, one
                // after the other, until one is cut off by the chunk's end.
                loop {
                    match start(input, self.max_message_len, &self.fresh) {
                        Ok(Start::Whole(frame, prelude)) => {
                            match message(frame, prelude, &mut self.last) {
                                Ok(message) => {
                                    input = &input[frame.len()..];
                                    on_message(message)?;
                                }
                                Err(err) => {
                                    self.poisoned = true;
                                    return Err(err.into());
                                }
                            }
                        }
                        Ok(Start::Partial(prelude)) => {
                            self.begin(input, prelude);
                            return Ok(());
                        }
                        Err(err) => {
                            self.poisoned = true;
                            return Err(err.into());
                        }
                    }
                }
            }
            let (message, used) = self.decode(input)?;
            input = &input[used..];
            match message {
                Some(message) => on_message(message)?,
                None => return Ok(()),
            }
        }
    }

    /// Keeps the start of a frame that `input` holds only part of.
    fn begin(&mut self, input: &[u8], prelude: Option<Prelude>) {
        match prelude {
            Some(prelude) => {
                self.expect(prelude);
                self.absorb(input, prelude);
            }
            // Fewer than 12 bytes: the prelude is checked once they are there.
            None => self.partial.extend_from_slice(input),
        }
    }

    /// Sizes the buffer for the whole frame at once and starts its message
    /// CRC.
    fn expect(&mut self, prelude: Prelude) {
        self.partial
            .reserve_exact(prelude.total - self.partial.len());
        self.prelude = Some(prelude);
        self.crc = self.fresh.clone();
        self.hashed = 0;
    }

    /// Appends `piece`, which does not go past the end of the frame, and
    /// hashes what the message CRC covers block by block, while each block
    /// is still in cache.
    fn absorb(&mut self, piece: &[u8], prelude: Prelude) {
        let crc_at = prelude.total - 4;
        for block in piece.chunks(BLOCK) {
            self.partial.extend_from_slice(block);
            let end = self.partial.len().min(crc_at);
            if end > self.hashed {
                self.crc.update(&self.partial[self.hashed..end]);
                self.hashed = end;
            }
        }
    }

    /// Slow path: continues a frame started in an earlier chunk. Returns how
    /// many bytes of `input` completed it, or `None` if all of them were
    /// kept and it needs more.
    fn fill(&mut self, input: &[u8]) -> Result<Option<(usize, Prelude)>, FrameError> {
        let mut used = 0;
        let prelude = match self.prelude {
            Some(prelude) => prelude,
            None => {
                used = (PRELUDE_LEN - self.partial.len()).min(input.len());
                self.partial.extend_from_slice(&input[..used]);
                let Some(head) = self.partial.first_chunk::<PRELUDE_LEN>() else {
                    return Ok(None);
                };
                let prelude = check_prelude(head, self.max_message_len)?;
                self.expect(prelude);
                prelude
            }
        };
        let rest = &input[used..];
        let wanted = prelude.total - self.partial.len();
        if rest.len() < wanted {
            self.absorb(rest, prelude);
            return Ok(None);
        }
        self.absorb(&rest[..wanted], prelude);
        check_message_crc(&self.partial, self.crc.value())?;
        Ok(Some((used + wanted, prelude)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::{Header, HeaderValue, encode};

    /// Frames small and large (past the copy block), back to back.
    fn stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut out = Vec::new();
        let mut payloads = Vec::new();
        for (i, len) in [0usize, 150, 20_000, 3, 70_000, 40].into_iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|b| ((b * 7 + i) % 251) as u8).collect();
            let headers = [Header {
                name: ":event-type",
                value: HeaderValue::String("chunk"),
            }];
            encode(&headers, &payload, &mut out).expect("valid frame");
            payloads.push(payload);
        }
        (out, payloads)
    }

    /// Where the 70,000-byte frame starts: four frames of 36 bytes of
    /// framing and headers each, and their payloads.
    const LARGE_START: usize = 4 * 36 + 150 + 20_000 + 3;

    fn decode_in_chunks(bytes: &[u8], size: usize) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut decoder = Decoder::new();
        let mut payloads = Vec::new();
        for chunk in bytes.chunks(size) {
            decoder.feed(chunk, |message| {
                assert_eq!(message.headers.get_str(":event-type"), Some("chunk"));
                payloads.push(message.payload.to_vec());
                Ok::<_, FrameError>(())
            })?;
        }
        decoder.finish()?;
        Ok(payloads)
    }

    #[test]
    fn large_and_small_frames_decode_whatever_the_chunking() {
        let (bytes, expected) = stream();
        for size in [
            1,
            5,
            12,
            13,
            1000,
            4096,
            16 * 1024,
            16 * 1024 + 1,
            65_536,
            bytes.len(),
        ] {
            assert_eq!(
                decode_in_chunks(&bytes, size).unwrap(),
                expected,
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_corrupted_byte_anywhere_in_a_large_frame_fails_its_checksum() {
        let (bytes, _) = stream();
        // Inside the 70,000-byte payload, and its last byte before the CRC.
        for at in [
            LARGE_START + 40,
            LARGE_START + 17_000,
            LARGE_START + 36 + 70_000 - 5,
        ] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            for size in [7, 16 * 1024, bad.len()] {
                let err = decode_in_chunks(&bad, size).unwrap_err();
                assert!(
                    matches!(err, FrameError::MessageChecksum { .. }),
                    "{at}/{size}: {err}"
                );
            }
        }
    }

    #[test]
    fn the_buffer_is_sized_once_per_frame() {
        let (bytes, _) = stream();
        let mut decoder = Decoder::new();
        // The large frame's prelude and a little more: room for all of it.
        let mut input = &bytes[..LARGE_START + 100];
        while !input.is_empty() {
            let (_, used) = decoder.decode(input).unwrap();
            input = &input[used..];
        }
        assert_eq!(decoder.buffered(), 100);
        assert!(decoder.partial.capacity() >= 70_000 + 36);
    }
}
