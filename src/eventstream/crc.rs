//! CRC-32 (IEEE 802.3 / zlib) for the two checksums of a frame.
//!
//! The message CRC touches every byte, so its speed bounds the decoder on
//! large frames: `crc32fast` folds with PCLMULQDQ, and from 2 KiB with
//! VPCLMULQDQ over 512-bit registers where the CPU has them (measured on
//! this project's machine as fast as `crc-fast`, which it replaced). The
//! prelude CRC covers 8 bytes, where a call into the SIMD code costs more
//! than the work: it has its own table lookup.

/// CRC-32 of `data`.
#[inline]
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(data);
    crc.value()
}

/// Slice-by-8 tables: `TABLES[k][b]` is the CRC register after byte `b`
/// followed by `k` zero bytes.
static TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut byte = 0;
    while byte < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = tables[k - 1][byte];
            tables[k][byte] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            k += 1;
        }
        byte += 1;
    }
    tables
};

/// CRC-32 of exactly 8 bytes (the prelude's length fields): eight
/// independent table lookups, no call and no CPU feature check.
#[inline]
pub fn crc32_of_8(bytes: &[u8; 8]) -> u32 {
    let x = u64::from_le_bytes(*bytes) ^ 0xFFFF_FFFF;
    let at = |shift: u32| usize::from((x >> shift) as u8);
    !(TABLES[7][at(0)]
        ^ TABLES[6][at(8)]
        ^ TABLES[5][at(16)]
        ^ TABLES[4][at(24)]
        ^ TABLES[3][at(32)]
        ^ TABLES[2][at(40)]
        ^ TABLES[1][at(48)]
        ^ TABLES[0][at(56)])
}

/// A CRC-32 computed piece by piece, so that a frame arriving in chunks is
/// hashed as each chunk is copied, while its bytes are still in cache.
/// Cloning a fresh one skips the CPU feature detection of `new`.
#[derive(Debug, Clone)]
pub struct Crc32(crc32fast::Hasher);

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// The CRC of nothing yet.
    #[inline]
    pub fn new() -> Self {
        Self(crc32fast::Hasher::new())
    }

    /// Adds `data`.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The CRC-32 of everything added.
    #[inline]
    pub fn value(&self) -> u32 {
        self.0.clone().finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-by-bit reference implementation.
    fn reference(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn check_value_and_every_path_agrees_with_the_reference() {
        // The CRC-32/ISO-HDLC check value.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let long: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in [
            0, 1, 7, 8, 63, 64, 127, 128, 1023, 1024, 2047, 2048, 4096, 100_000,
        ] {
            assert_eq!(crc32(&long[..len]), reference(&long[..len]), "length {len}");
        }
    }

    #[test]
    fn pieces_give_the_crc_of_the_whole() {
        let long: Vec<u8> = (0..5000u32).map(|i| (i * 17 % 253) as u8).collect();
        for len in [0, 9, 150, 1500, 5000] {
            let data = &long[..len];
            let whole = reference(data);
            for split in (0..=len).step_by(7).chain([len]) {
                let (a, b) = data.split_at(split);
                let mut crc = Crc32::new();
                crc.update(a);
                crc.update(&b[..b.len() / 2]);
                crc.update(&b[b.len() / 2..]);
                assert_eq!(crc.value(), whole, "length {len} split at {split}");
            }
        }
    }

    #[test]
    fn eight_byte_tables_agree_with_the_reference() {
        for seed in 0..2000u64 {
            let bytes = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
            assert_eq!(crc32_of_8(&bytes), reference(&bytes), "{bytes:?}");
        }
    }
}
