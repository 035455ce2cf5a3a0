//! AWS event-stream framing (`application/vnd.amazon.eventstream`): one
//! incremental decoder over owned chunks that never copies a large payload
//! (`ChunkDecoder`), and an encoder.
//!
//! Wire format (big-endian): a 12-byte prelude (`total_len` u32, `headers_len`
//! u32, CRC-32 of those 8 bytes), the headers, the payload, and a CRC-32 of
//! everything before it. Both CRCs are checked; the prelude's as soon as its
//! 12 bytes are present, so a corrupted length is reported at once instead of
//! waiting for bytes that will never come.

mod crc;
mod decoder;
mod encoder;
mod error;
mod frame;
mod header;

pub use decoder::{ChunkDecoder, ChunkMessage, Payload};
pub use encoder::{encode, encode_to_vec};
pub use error::FrameError;
use header::LastSection;
pub use header::{Header, HeaderType, HeaderValue, Headers};

/// Bytes of the prelude: total length, headers length, prelude CRC.
pub const PRELUDE_LEN: usize = 12;
/// Bytes of framing around headers and payload (prelude + message CRC).
pub const OVERHEAD: usize = PRELUDE_LEN + 4;
/// Largest payload the specification allows (24 MiB).
pub const MAX_PAYLOAD_LEN: usize = 24 * 1024 * 1024;
/// Largest headers section the specification allows (128 KiB).
pub const MAX_HEADERS_LEN: usize = 128 * 1024;
/// Largest whole message: both maxima plus the framing.
pub const MAX_MESSAGE_LEN: usize = MAX_PAYLOAD_LEN + MAX_HEADERS_LEN + OVERHEAD;
/// Largest string or byte-array header value.
pub const MAX_HEADER_VALUE_LEN: usize = i16::MAX as usize;
