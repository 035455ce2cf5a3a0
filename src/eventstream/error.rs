//! Why a frame was rejected. Every variant names the check that failed; the
//! two CRC failures say "checksum".

/// A decoding or encoding failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("prelude checksum mismatch: frame says {expected:#010x}, computed {computed:#010x}")]
    PreludeChecksum { expected: u32, computed: u32 },
    #[error("message checksum mismatch: frame says {expected:#010x}, computed {computed:#010x}")]
    MessageChecksum { expected: u32, computed: u32 },
    #[error("invalid frame length {total}: a frame has at least 16 bytes")]
    FrameTooShort { total: u32 },
    #[error("frame length {total} exceeds the limit of {max} bytes")]
    FrameTooLong { total: u32, max: usize },
    #[error("headers length {headers} exceeds the limit of {max} bytes")]
    HeadersTooLong { headers: u32, max: usize },
    #[error("headers length {headers} does not fit in a frame of {total} bytes")]
    HeadersExceedFrame { headers: u32, total: u32 },
    #[error("payload length {payload} exceeds the limit of {max} bytes")]
    PayloadTooLong { payload: usize, max: usize },
    #[error("header at offset {offset} has an empty name")]
    EmptyHeaderName { offset: usize },
    #[error("header name at offset {offset} is not utf-8")]
    HeaderNameNotUtf8 { offset: usize },
    #[error("header `{name}` is cut off by the end of the headers section")]
    HeaderTruncated { name: String },
    #[error("header `{name}` has unknown type {value_type}")]
    UnknownHeaderType { name: String, value_type: u8 },
    #[error("header `{name}` has a string value that is not utf-8")]
    HeaderStringNotUtf8 { name: String },
    #[error("header `{name}` value of {len} bytes exceeds the limit of {max}")]
    HeaderValueTooLong {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("header name `{name}` is longer than 255 bytes")]
    HeaderNameTooLong { name: String },
    #[error("header `{name}` appears more than once")]
    DuplicateHeader { name: String },
    #[error("stream ended inside a frame: {have} of {needed} bytes received")]
    TruncatedFrame { have: usize, needed: usize },
    #[error("the decoder stopped after an earlier error")]
    Poisoned,
}

impl FrameError {
    /// True for the two CRC failures.
    pub fn is_checksum(&self) -> bool {
        matches!(
            self,
            Self::PreludeChecksum { .. } | Self::MessageChecksum { .. }
        )
    }
}
