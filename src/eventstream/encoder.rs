//! The encoder: the inverse of the decoder, with the same limits.

use super::crc::crc32;
use super::{
    FrameError, Header, HeaderValue, MAX_HEADER_VALUE_LEN, MAX_HEADERS_LEN, MAX_PAYLOAD_LEN,
    OVERHEAD,
};

fn header_len(header: &Header<'_>) -> usize {
    1 + header.name.len()
        + 1
        + match header.value {
            HeaderValue::Bool(_) => 0,
            HeaderValue::Byte(_) => 1,
            HeaderValue::Short(_) => 2,
            HeaderValue::Int(_) => 4,
            HeaderValue::Long(_) | HeaderValue::Timestamp(_) => 8,
            HeaderValue::Uuid(_) => 16,
            HeaderValue::Bytes(b) => 2 + b.len(),
            HeaderValue::String(s) => 2 + s.len(),
        }
}

fn check_header(header: &Header<'_>, seen: &[Header<'_>]) -> Result<(), FrameError> {
    if header.name.is_empty() {
        return Err(FrameError::EmptyHeaderName { offset: 0 });
    }
    if header.name.len() > 255 {
        return Err(FrameError::HeaderNameTooLong {
            name: header.name.to_owned(),
        });
    }
    let value_len = match header.value {
        HeaderValue::Bytes(b) => b.len(),
        HeaderValue::String(s) => s.len(),
        _ => 0,
    };
    if value_len > MAX_HEADER_VALUE_LEN {
        return Err(FrameError::HeaderValueTooLong {
            name: header.name.to_owned(),
            len: value_len,
            max: MAX_HEADER_VALUE_LEN,
        });
    }
    if seen.iter().any(|h| h.name == header.name) {
        return Err(FrameError::DuplicateHeader {
            name: header.name.to_owned(),
        });
    }
    Ok(())
}

/// Appends one encoded message to `out`.
pub fn encode(headers: &[Header<'_>], payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    for (i, header) in headers.iter().enumerate() {
        check_header(header, &headers[..i])?;
    }
    let headers_len: usize = headers.iter().map(header_len).sum();
    if headers_len > MAX_HEADERS_LEN {
        return Err(FrameError::HeadersTooLong {
            headers: u32::try_from(headers_len).unwrap_or(u32::MAX),
            max: MAX_HEADERS_LEN,
        });
    }
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(FrameError::PayloadTooLong {
            payload: payload.len(),
            max: MAX_PAYLOAD_LEN,
        });
    }
    let total = OVERHEAD + headers_len + payload.len();
    let start = out.len();
    out.reserve(total);
    // Both lengths fit in u32: they are bounded by the limits checked above.
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(headers_len as u32).to_be_bytes());
    let prelude_crc = crc32(&out[start..start + 8]);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    for header in headers {
        out.push(header.name.len() as u8);
        out.extend_from_slice(header.name.as_bytes());
        out.push(header.value.header_type() as u8);
        match header.value {
            HeaderValue::Bool(_) => {}
            HeaderValue::Byte(v) => out.extend_from_slice(&v.to_be_bytes()),
            HeaderValue::Short(v) => out.extend_from_slice(&v.to_be_bytes()),
            HeaderValue::Int(v) => out.extend_from_slice(&v.to_be_bytes()),
            HeaderValue::Long(v) | HeaderValue::Timestamp(v) => {
                out.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(v) => out.extend_from_slice(&v),
            HeaderValue::Bytes(b) => {
                out.extend_from_slice(&(b.len() as u16).to_be_bytes());
                out.extend_from_slice(b);
            }
            HeaderValue::String(s) => {
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out.extend_from_slice(payload);
    let message_crc = crc32(&out[start..]);
    out.extend_from_slice(&message_crc.to_be_bytes());
    Ok(())
}

/// Encodes one message into a new vector.
pub fn encode_to_vec(headers: &[Header<'_>], payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode(headers, payload, &mut out)?;
    Ok(out)
}
