//! The checks every frame goes through, wherever its bytes lie: the
//! prelude (its CRC and the length fields against the limits), the message
//! CRC, and the fast path that finds a whole frame at the start of a chunk
//! so that it is decoded in place.

use super::crc::{Crc32, crc32_of_8};
use super::{FrameError, MAX_HEADERS_LEN, MAX_PAYLOAD_LEN, OVERHEAD, PRELUDE_LEN};

/// What the 12-byte prelude says.
#[derive(Debug, Clone, Copy)]
pub(super) struct Prelude {
    pub(super) total: usize,
    pub(super) headers: usize,
}

impl Prelude {
    /// The headers section and the payload of `frame`, the whole frame this
    /// prelude describes.
    #[inline]
    pub(super) fn sections(self, frame: &[u8]) -> (&[u8], &[u8]) {
        let headers_end = PRELUDE_LEN + self.headers;
        (
            &frame[PRELUDE_LEN..headers_end],
            &frame[headers_end..self.total - 4],
        )
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the prelude CRC and the length fields against the limits.
#[inline]
pub(super) fn check_prelude(
    prelude: &[u8; PRELUDE_LEN],
    max_message_len: usize,
) -> Result<Prelude, FrameError> {
    let total = be_u32(prelude, 0);
    let headers = be_u32(prelude, 4);
    let expected = be_u32(prelude, 8);
    let [head @ .., _, _, _, _] = prelude;
    let computed = crc32_of_8(head);
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

/// Compares the message CRC of a complete frame with `computed`.
#[inline]
pub(super) fn check_message_crc(frame: &[u8], computed: u32) -> Result<(), FrameError> {
    check_message_crc_value(be_u32(frame, frame.len() - 4), computed)
}

/// Compares a frame's message CRC, `expected`, with `computed`.
#[inline]
pub(super) fn check_message_crc_value(expected: u32, computed: u32) -> Result<(), FrameError> {
    if expected != computed {
        return Err(FrameError::MessageChecksum { expected, computed });
    }
    Ok(())
}

/// What the start of a chunk holds when nothing is buffered.
pub(super) enum Start<'a> {
    /// A whole frame, both CRCs checked.
    Whole(&'a [u8], Prelude),
    /// The start of a frame (its prelude checked, if all 12 bytes are
    /// there).
    Partial,
}

/// Fast path: looks for a whole frame at the start of `input`, to decode it
/// in place.
#[inline]
pub(super) fn start<'a>(
    input: &'a [u8],
    max_message_len: usize,
    fresh: &Crc32,
) -> Result<Start<'a>, FrameError> {
    let Some(head) = input.first_chunk::<PRELUDE_LEN>() else {
        return Ok(Start::Partial);
    };
    let prelude = check_prelude(head, max_message_len)?;
    let Some(frame) = input.get(..prelude.total) else {
        return Ok(Start::Partial);
    };
    let mut crc = fresh.clone();
    crc.update(&frame[..prelude.total - 4]);
    check_message_crc(frame, crc.value())?;
    Ok(Start::Whole(frame, prelude))
}
