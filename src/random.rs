//! Unpredictable bytes from the operating system's secure generator, and
//! the few shapes qbox gives them (hex, version-4 UUIDs).
//!
//! One source for every value another party must not guess: generated
//! bearer tokens, `$GITHUB_ENV` delimiters, conversation ids. The bytes come
//! through the TLS provider qbox already links (ring), which asks the
//! kernel directly on every platform qbox supports.

use std::fmt::Write as _;

/// The secure generator failed (practically never: the kernel refused).
#[derive(Debug)]
pub struct RandomError;

impl std::fmt::Display for RandomError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the operating system's random number generator failed")
    }
}

impl std::error::Error for RandomError {}

/// Fills `bytes` from the operating system's secure generator.
pub fn fill(bytes: &mut [u8]) -> Result<(), RandomError> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(bytes)
        .map_err(|_| RandomError)
}

/// `count` random bytes as lowercase hex (`2 * count` characters).
pub fn hex(count: usize) -> Result<String, RandomError> {
    let mut bytes = vec![0u8; count];
    fill(&mut bytes)?;
    Ok(to_hex(&bytes))
}

/// A random (version 4) UUID, lowercase and hyphenated.
pub fn uuid_v4() -> Result<String, RandomError> {
    let mut bytes = [0u8; 16];
    fill(&mut bytes)?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Ok(format_uuid(&bytes))
}

/// The canonical lowercase hyphenated form of 16 bytes.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex = to_hex(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_differ() {
        let id = uuid_v4().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, uuid_v4().unwrap());
    }

    #[test]
    fn formats_and_hex() {
        let bytes: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
        assert_eq!(format_uuid(&bytes), "01020304-0506-0708-090a-0b0c0d0e0f10");
        let h = hex(16).unwrap();
        assert_eq!(h.len(), 32);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(h, hex(16).unwrap());
    }
}
