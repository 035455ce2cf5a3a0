//! The event-stream decoder, for owned, reference-counted chunks (`Bytes`,
//! as an HTTP body hands them out); it never copies a large payload.
//!
//! Feed it chunks of any size; it hands out complete, fully validated
//! messages. A frame that lies wholly inside one chunk is decoded in place.
//! A frame that spans chunks is not copied together, which would cost as
//! much as the CRC over it: the decoder keeps the chunks themselves (a
//! reference count each), hashes the frame where it lies as its pieces
//! arrive, and hands its payload out as those pieces ([`Payload::Parts`]).
//! Only a headers section or a message CRC cut by a chunk boundary is
//! copied, and those are small; so is a small frame that spans chunks, since
//! for a few hundred bytes a copy costs less than the reference counts of
//! its pieces. The prelude's CRC is checked as soon as its 12 bytes are
//! there. After an error the decoder is poisoned and decodes nothing more.
//!
//! It is the only decoder: the Amazon Q client, `qbox debug decode`, the
//! fuzz targets and the benchmarks all run it, so what is fuzzed and
//! measured is what the client runs. Borrowed bytes go in as a `Bytes` of
//! their own (`debug decode` copies each read into one).

use bytes::Bytes;

use super::crc::Crc32;
use super::frame::{Prelude, Start, check_message_crc_value, check_prelude, start};
use super::{FrameError, Headers, LastSection, MAX_MESSAGE_LEN, OVERHEAD, PRELUDE_LEN};

/// A message's payload: one slice, or the pieces of the chunks it arrived
/// in, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    One(&'a [u8]),
    Parts(&'a [Bytes]),
}

impl<'a> Payload<'a> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::One(bytes) => bytes.len(),
            Self::Parts(parts) => parts.iter().map(Bytes::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (one, parts): (Option<&'a [u8]>, &'a [Bytes]) = match *self {
            Self::One(bytes) => (Some(bytes), &[]),
            Self::Parts(parts) => (None, parts),
        };
        one.into_iter().chain(parts.iter().map(|part| &part[..]))
    }

    /// The payload as one slice: borrowed when it is one piece, copied
    /// together otherwise (for a consumer that must parse it whole).
    pub fn contiguous(&self) -> std::borrow::Cow<'a, [u8]> {
        match self {
            Self::One(bytes) => std::borrow::Cow::Borrowed(bytes),
            Self::Parts([part]) => std::borrow::Cow::Borrowed(&part[..]),
            Self::Parts(parts) => std::borrow::Cow::Owned(parts.concat()),
        }
    }
}

/// A decoded message from [`ChunkDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMessage<'a> {
    pub headers: Headers<'a>,
    pub payload: Payload<'a>,
}

impl ChunkMessage<'_> {
    /// Length of the frame on the wire: the framing around the headers
    /// section and the payload, which hold the frame's bytes exactly.
    pub fn wire_len(&self) -> usize {
        OVERHEAD + self.headers.as_bytes().len() + self.payload.len()
    }
}

/// Spanning frames up to this size are copied together; larger ones are
/// kept as the pieces of their chunks.
const COPY_LIMIT: usize = 2048;

/// A large frame keeps a chunk's bytes as a piece of their chunk only from
/// this size up; smaller pieces are copied together until they reach it.
/// A peer sending a large frame a few bytes per chunk would otherwise make
/// the decoder hold one piece (and the chunk's allocation behind it) per
/// few bytes: millions for one frame under the size limit.
const MIN_PIECE: usize = 1024;

/// An incremental decoder that keeps the chunks of a spanning frame instead
/// of copying them.
#[derive(Debug)]
pub struct ChunkDecoder {
    /// The pieces of the unfinished frame, in order (a large frame).
    parts: Vec<Bytes>,
    /// The unfinished frame, copied (a small frame).
    copy: Vec<u8>,
    /// Small pieces of a large frame, copied together until they make a
    /// piece of at least [`MIN_PIECE`] bytes (or the frame ends).
    staging: Vec<u8>,
    /// Bytes of the unfinished frame in `parts`.
    have: usize,
    /// The first 12 bytes, gathered while the prelude is not complete.
    head: [u8; PRELUDE_LEN],
    prelude: Option<Prelude>,
    /// CRC-32 of a large frame's first `min(have, total - 4)` bytes (a
    /// small one is hashed whole when complete).
    crc: Crc32,
    fresh: Crc32,
    /// A headers section cut by a chunk boundary, copied together.
    headers: Vec<u8>,
    /// The payload's pieces of the frame being handed out.
    payload: Vec<Bytes>,
    poisoned: bool,
    max_message_len: usize,
    /// The last headers section validated.
    last: LastSection,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkDecoder {
    /// A decoder with the specification's size limits.
    pub fn new() -> Self {
        Self::with_max_message_len(MAX_MESSAGE_LEN)
    }

    /// A decoder that also refuses frames longer than `max` bytes.
    pub fn with_max_message_len(max: usize) -> Self {
        Self {
            parts: Vec::new(),
            copy: Vec::new(),
            staging: Vec::new(),
            have: 0,
            head: [0; PRELUDE_LEN],
            prelude: None,
            crc: Crc32::new(),
            fresh: Crc32::new(),
            headers: Vec::new(),
            payload: Vec::new(),
            poisoned: false,
            max_message_len: max.min(MAX_MESSAGE_LEN),
            last: LastSection::default(),
        }
    }

    /// Bytes of an unfinished frame held from earlier chunks.
    pub fn buffered(&self) -> usize {
        self.have
    }

    /// Decodes every complete message in `chunk` (and the frame that earlier
    /// chunks started), calling `on_message` for each; keeps the rest.
    /// After an error, every call fails with [`FrameError::Poisoned`].
    ///
    /// ```
    /// use bytes::Bytes;
    /// use qbox::eventstream::{ChunkDecoder, FrameError, Header, HeaderValue, encode_to_vec};
    /// let event = [Header { name: ":event-type", value: HeaderValue::String("x") }];
    /// let frame = Bytes::from(encode_to_vec(&event, b"{}")?);
    /// let mut decoder = ChunkDecoder::new();
    /// let mut seen = Vec::new();
    /// // The frame arrives cut in two.
    /// for chunk in [frame.slice(..5), frame.slice(5..)] {
    ///     decoder.feed(&chunk, |message| {
    ///         let kind = message.headers.get_str(":event-type").map(str::to_owned);
    ///         seen.push((kind, message.payload.contiguous().into_owned()));
    ///         Ok::<_, FrameError>(())
    ///     })?;
    /// }
    /// decoder.finish()?;
    /// assert_eq!(seen, [(Some("x".to_owned()), b"{}".to_vec())]);
    /// # Ok::<_, FrameError>(())
    /// ```
    pub fn feed<E: From<FrameError>>(
        &mut self,
        chunk: &Bytes,
        mut on_message: impl FnMut(ChunkMessage<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.poisoned {
            return Err(FrameError::Poisoned.into());
        }
        // How much of `chunk` is used; advanced by index, so a whole frame
        // costs no reference count.
        let mut at = 0;
        loop {
            if self.have == 0 {
                // Nothing held: whole frames are decoded in place, one after
                // the other (by index: no reference count), until one is cut
                // off by the chunk's end.
                let mut input = &chunk[at..];
                loop {
                    match start(input, self.max_message_len, &self.fresh) {
                        Ok(Start::Whole(frame, prelude)) => {
                            match whole_message(frame, prelude, &mut self.last) {
                                Ok(message) => {
                                    input = &input[frame.len()..];
                                    on_message(message)?;
                                }
                                Err(err) => return Err(self.poison(err).into()),
                            }
                        }
                        // The prelude is checked again as it is hashed.
                        Ok(Start::Partial) => break,
                        Err(err) => return Err(self.poison(err).into()),
                    }
                }
                if input.is_empty() {
                    return Ok(());
                }
                at = chunk.len() - input.len();
            }
            let complete = self.take(chunk, &mut at).map_err(|e| self.poison(e))?;
            if !complete {
                return Ok(());
            }
            let message = match self.assemble() {
                Ok(message) => message,
                Err(err) => return Err(self.poison(err).into()),
            };
            on_message(message)?;
            self.reset();
        }
    }

    /// Call at the end of the stream: fails if a frame was left unfinished.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.have == 0 {
            return Ok(());
        }
        Err(FrameError::TruncatedFrame {
            have: self.have,
            needed: self.prelude.map_or(PRELUDE_LEN, |p| p.total),
        })
    }

    fn poison(&mut self, err: FrameError) -> FrameError {
        self.poisoned = true;
        self.parts = Vec::new();
        self.copy = Vec::new();
        self.staging = Vec::new();
        err
    }

    fn reset(&mut self) {
        self.parts.clear();
        self.copy.clear();
        self.staging.clear();
        self.payload.clear();
        self.have = 0;
        self.prelude = None;
    }

    /// Moves what belongs to the current frame from `chunk[*at..]` into
    /// `copy` or `parts`, hashing it, and advances `at`. Returns whether the
    /// frame is complete.
    fn take(&mut self, chunk: &Bytes, at: &mut usize) -> Result<bool, FrameError> {
        let prelude = match self.prelude {
            Some(prelude) => prelude,
            None => {
                let n = (PRELUDE_LEN - self.have).min(chunk.len() - *at);
                let piece = &chunk[*at..*at + n];
                *at += n;
                self.head[self.have..self.have + n].copy_from_slice(piece);
                self.have += n;
                if self.have < PRELUDE_LEN {
                    return Ok(false);
                }
                let prelude = check_prelude(&self.head, self.max_message_len)?;
                self.prelude = Some(prelude);
                if prelude.total <= COPY_LIMIT {
                    self.copy.extend_from_slice(&self.head);
                } else {
                    // Every frame's CRC covers its prelude.
                    self.crc = self.fresh.clone();
                    self.crc.update(&self.head);
                    self.staging.extend_from_slice(&self.head);
                }
                prelude
            }
        };
        let n = (prelude.total - self.have).min(chunk.len() - *at);
        let piece = &chunk[*at..*at + n];
        if prelude.total <= COPY_LIMIT {
            // Hashed whole once complete: one pass over a few hundred bytes
            // costs less than a pass per piece.
            self.copy.extend_from_slice(piece);
        } else {
            let crc_at = prelude.total - 4;
            let hashed = n.min(crc_at.saturating_sub(self.have));
            self.crc.update(&piece[..hashed]);
            if n >= MIN_PIECE {
                self.flush_staging();
                self.parts.push(chunk.slice(*at..*at + n));
            } else {
                self.staging.extend_from_slice(piece);
                if self.staging.len() >= MIN_PIECE {
                    self.flush_staging();
                }
            }
        }
        *at += n;
        self.have += n;
        let complete = self.have == prelude.total;
        if complete {
            self.flush_staging();
        }
        Ok(complete)
    }

    /// Moves the copied small pieces into `parts` as one piece, in order.
    fn flush_staging(&mut self) {
        if !self.staging.is_empty() {
            self.parts
                .push(Bytes::from(std::mem::take(&mut self.staging)));
        }
    }

    /// The complete frame in `copy` or `parts`, checked, as a message.
    fn assemble(&mut self) -> Result<ChunkMessage<'_>, FrameError> {
        let prelude = self.prelude.expect("a complete frame has a prelude");
        if prelude.total <= COPY_LIMIT {
            let frame = &self.copy[..];
            let (hashed, expected) = frame.split_at(prelude.total - 4);
            let mut crc = self.fresh.clone();
            crc.update(hashed);
            let expected = expected.first_chunk::<4>().copied().unwrap_or_default();
            check_message_crc_value(u32::from_be_bytes(expected), crc.value())?;
            return whole_message(frame, prelude, &mut self.last);
        }
        let mut expected = [0u8; 4];
        gather(&self.parts, prelude.total - 4, &mut expected);
        check_message_crc_value(u32::from_be_bytes(expected), self.crc.value())?;
        let headers_end = PRELUDE_LEN + prelude.headers;
        slices(
            &self.parts,
            headers_end,
            prelude.total - 4,
            &mut self.payload,
        );
        let Self {
            parts,
            headers,
            payload,
            last,
            ..
        } = self;
        let raw: &[u8] = match one_piece(parts, PRELUDE_LEN, headers_end) {
            Some(raw) => raw,
            None => {
                headers.clear();
                headers.resize(prelude.headers, 0);
                gather(parts, PRELUDE_LEN, headers);
                headers
            }
        };
        Ok(ChunkMessage {
            headers: last.parse(raw)?,
            payload: Payload::Parts(payload),
        })
    }
}

/// A whole frame inside one chunk, viewed in place (its headers may be the
/// remembered copy of the same bytes).
#[inline]
fn whole_message<'m>(
    frame: &'m [u8],
    prelude: Prelude,
    last: &'m mut LastSection,
) -> Result<ChunkMessage<'m>, FrameError> {
    let (headers, payload) = prelude.sections(frame);
    Ok(ChunkMessage {
        headers: last.parse(headers)?,
        payload: Payload::One(payload),
    })
}

/// Copies `out.len()` bytes of the frame in `parts`, from offset `at`.
fn gather(parts: &[Bytes], mut at: usize, out: &mut [u8]) {
    let mut filled = 0;
    for part in parts {
        if filled == out.len() {
            break;
        }
        if at >= part.len() {
            at -= part.len();
            continue;
        }
        let n = (part.len() - at).min(out.len() - filled);
        out[filled..filled + n].copy_from_slice(&part[at..at + n]);
        filled += n;
        at = 0;
    }
}

/// Bytes `start..end` of the frame, if they lie in one piece.
fn one_piece(parts: &[Bytes], start: usize, end: usize) -> Option<&[u8]> {
    let mut offset = 0;
    for part in parts {
        let next = offset + part.len();
        if start >= offset && end <= next {
            return Some(&part[start - offset..end - offset]);
        }
        if next > start {
            return None;
        }
        offset = next;
    }
    // An empty range past the last piece (no headers, no payload).
    (start == end).then_some(&[][..])
}

/// The pieces of bytes `start..end` of the frame, as slices of `parts`
/// (reference counts, no copy).
fn slices(parts: &[Bytes], start: usize, end: usize, out: &mut Vec<Bytes>) {
    out.clear();
    let mut offset = 0;
    for part in parts {
        let next = offset + part.len();
        let from = start.max(offset);
        let to = end.min(next);
        if from < to {
            out.push(part.slice(from - offset..to - offset));
        }
        offset = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::{Header, HeaderValue, encode, encode_to_vec};

    /// What a test compares: (event type, payload) of every message.
    type Seen = Vec<(Option<String>, Vec<u8>)>;

    /// Frames small and large (past the copy limit and past 16 KiB chunks),
    /// some without headers or payload, back to back; and what each one
    /// holds.
    fn stream() -> (Vec<u8>, Seen) {
        let mut out = Vec::new();
        let mut sent = Vec::new();
        for (i, len) in [0usize, 150, 20_000, 3, 70_000, 40].into_iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|b| ((b * 7 + i) % 251) as u8).collect();
            let headers = [Header {
                name: ":event-type",
                value: HeaderValue::String("chunk"),
            }];
            let (headers, kind): (&[Header<'_>], _) = if i == 3 {
                (&[], None)
            } else {
                (&headers, Some("chunk".to_owned()))
            };
            encode(headers, &payload, &mut out).unwrap();
            sent.push((kind, payload));
        }
        (out, sent)
    }

    /// Where the 70,000-byte frame starts: four frames of 36 bytes of
    /// framing and headers (the fourth has 16, no headers) and their
    /// payloads.
    const LARGE_START: usize = 3 * 36 + 16 + 150 + 20_000 + 3;

    fn decode_in(stream: &[u8], size: usize) -> Result<Seen, FrameError> {
        let mut decoder = ChunkDecoder::new();
        let mut seen = Vec::new();
        let mut wire = 0;
        for chunk in stream.chunks(size) {
            decoder.feed(&Bytes::copy_from_slice(chunk), |m| {
                let kind = m.headers.get_str(":event-type").map(str::to_owned);
                let mut payload = Vec::new();
                for piece in m.payload.pieces() {
                    payload.extend_from_slice(piece);
                }
                assert_eq!(payload.len(), m.payload.len());
                assert_eq!(payload, m.payload.contiguous().as_ref());
                wire += m.wire_len();
                seen.push((kind, payload));
                Ok::<_, FrameError>(())
            })?;
        }
        decoder.finish()?;
        assert_eq!(wire, stream.len(), "the frames' wire lengths add up");
        Ok(seen)
    }

    #[test]
    fn every_chunking_gives_the_messages_that_were_sent() {
        let (stream, sent) = stream();
        for size in [
            1,
            2,
            5,
            11,
            12,
            13,
            100,
            1000,
            4096,
            16 * 1024,
            16 * 1024 + 1,
            65_536,
            stream.len(),
        ] {
            assert_eq!(decode_in(&stream, size).unwrap(), sent, "chunks of {size}");
        }
    }

    #[test]
    fn a_corrupted_byte_anywhere_in_a_large_frame_fails_its_checksum() {
        let (stream, _) = stream();
        // Bytes only the message CRC covers: in the headers section, in
        // the payload, and the payload's last byte.
        for at in [
            LARGE_START + 20,
            LARGE_START + 40,
            LARGE_START + 17_000,
            LARGE_START + 36 + 70_000 - 1,
        ] {
            let mut bad = stream.clone();
            bad[at] ^= 0x20;
            for size in [7, 4096, 16 * 1024, bad.len()] {
                let err = decode_in(&bad, size).unwrap_err();
                assert!(
                    matches!(err, FrameError::MessageChecksum { .. }),
                    "{at}/{size}: {err}"
                );
            }
        }
    }

    #[test]
    fn a_spanning_payload_is_handed_out_without_a_copy() {
        let (stream, _) = stream();
        let source = Bytes::from(stream);
        let mut decoder = ChunkDecoder::new();
        let mut spanning = 0;
        let mut at = 0;
        while at < source.len() {
            let chunk = source.slice(at..(at + 16 * 1024).min(source.len()));
            at += chunk.len();
            decoder
                .feed(&chunk, |m| {
                    if let Payload::Parts(parts) = m.payload {
                        if parts.len() > 1 {
                            spanning += 1;
                        }
                        // Each piece but a small one (copied together,
                        // see MIN_PIECE) points into the source buffer.
                        for part in parts.iter().filter(|p| p.len() >= MIN_PIECE) {
                            let base = source.as_ptr() as usize;
                            let ptr = part.as_ptr() as usize;
                            assert!(ptr >= base && ptr + part.len() <= base + source.len());
                        }
                    }
                    Ok::<_, FrameError>(())
                })
                .unwrap();
        }
        decoder.finish().unwrap();
        assert!(spanning >= 2, "the 20 kB and 70 kB frames span chunks");
    }

    #[test]
    fn a_large_frame_sent_a_byte_at_a_time_is_held_in_few_pieces() {
        let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let event = [Header {
            name: ":event-type",
            value: HeaderValue::String("big"),
        }];
        let frame = Bytes::from(encode_to_vec(&event, &payload).unwrap());
        let mut decoder = ChunkDecoder::new();
        let mut most_pieces = 0;
        let mut seen = Vec::new();
        for at in 0..frame.len() {
            decoder
                .feed(&frame.slice(at..at + 1), |m| {
                    seen.push(m.payload.contiguous().into_owned());
                    Ok::<_, FrameError>(())
                })
                .unwrap();
            most_pieces = most_pieces.max(decoder.parts.len());
        }
        decoder.finish().unwrap();
        assert_eq!(seen, [payload]);
        // About one piece per KiB, not one per byte.
        assert!(
            most_pieces <= frame.len() / 1024 + 1,
            "{most_pieces} pieces held for a {} byte frame",
            frame.len()
        );
    }

    #[test]
    fn a_corrupted_spanning_frame_is_refused_and_poisons() {
        let (mut stream, _) = stream();
        // A byte inside the 70 kB frame's payload.
        let at = LARGE_START + 40_000;
        stream[at] ^= 1;
        let err = decode_in(&stream, 4096).unwrap_err();
        assert!(matches!(err, FrameError::MessageChecksum { .. }), "{err}");

        let mut decoder = ChunkDecoder::new();
        let fed = decoder.feed(
            &Bytes::copy_from_slice(&stream),
            |_| Ok::<_, FrameError>(()),
        );
        assert!(fed.is_err());
        let again = decoder.feed(&Bytes::from_static(b"x"), |_| Ok::<_, FrameError>(()));
        assert_eq!(again, Err(FrameError::Poisoned));
    }

    #[test]
    fn a_small_spanning_frame_with_any_byte_flipped_is_refused() {
        // Small frames are copied together when cut; a flip anywhere must
        // fail a CRC or a check, whatever the chunking.
        let headers = [Header {
            name: ":event-type",
            value: HeaderValue::String("chunk"),
        }];
        let mut small = Vec::new();
        encode(&headers, b"", &mut small).unwrap();
        encode(&headers, &[7u8; 150], &mut small).unwrap();
        assert_eq!(decode_in(&small, 1).unwrap().len(), 2);
        for at in 0..small.len() {
            let mut bad = small.clone();
            bad[at] ^= 0x20;
            for size in [1, 7, 100] {
                let result = decode_in(&bad, size);
                assert!(
                    result.is_err(),
                    "byte {at} flipped, chunks of {size}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn a_bad_prelude_split_across_chunks_is_refused_at_once() {
        let (mut stream, _) = stream();
        stream[9] ^= 0xff; // the first prelude's CRC
        let mut decoder = ChunkDecoder::new();
        let first = decoder.feed(&Bytes::copy_from_slice(&stream[..7]), |_| {
            Ok::<_, FrameError>(())
        });
        assert_eq!(first, Ok(()));
        let second = decoder.feed(&Bytes::copy_from_slice(&stream[7..12]), |_| {
            Ok::<_, FrameError>(())
        });
        assert!(
            matches!(second, Err(FrameError::PreludeChecksum { .. })),
            "{second:?}"
        );
    }

    #[test]
    fn a_cut_stream_is_truncated() {
        let (stream, _) = stream();
        let mut decoder = ChunkDecoder::new();
        decoder
            .feed(&Bytes::copy_from_slice(&stream[..stream.len() - 5]), |_| {
                Ok::<_, FrameError>(())
            })
            .unwrap();
        assert!(decoder.buffered() > 0);
        assert!(matches!(
            decoder.finish(),
            Err(FrameError::TruncatedFrame { .. })
        ));
    }
}
