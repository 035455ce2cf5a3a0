//! CRC-32 (IEEE 802.3 / zlib) for the two checksums of a frame.
//!
//! The message CRC touches every byte, so its speed bounds the decoder on
//! large frames: there `crc-fast` folds 64 bytes per step with VPCLMULQDQ
//! (AVX-512) or PMULL. Its set-up costs more than the whole job on small
//! frames, where `crc32fast`'s PCLMULQDQ loop is about twice as fast; the
//! crossover measured on x86_64 is near 1 KiB.

/// Inputs at least this long go to the wide SIMD implementation.
const WIDE_FROM: usize = 1024;

/// CRC-32 of `data`.
#[inline]
pub fn crc32(data: &[u8]) -> u32 {
    if data.len() < WIDE_FROM {
        crc32fast::hash(data)
    } else {
        // Truncation is exact: a CRC-32 result always fits in 32 bits.
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, data) as u32
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
    fn check_value_and_both_paths_agree_with_the_reference() {
        // The CRC-32/ISO-HDLC check value.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let long: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for len in [0, 1, 7, 8, 63, 64, 1023, 1024, 1025, 4096, 100_000] {
            assert_eq!(crc32(&long[..len]), reference(&long[..len]), "length {len}");
        }
    }
}
