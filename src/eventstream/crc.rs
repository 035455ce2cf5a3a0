//! CRC-32 (IEEE 802.3 / zlib) for the two checksums of a frame.
//!
//! The message CRC touches every byte, so its speed bounds the decoder on
//! large frames: `crc-fast` folds with carry-less multiplication (PCLMULQDQ,
//! VPCLMULQDQ with AVX-512, PMULL on ARM). The prelude CRC covers 8 bytes,
//! where a table lookup per byte beats any SIMD set-up.

/// CRC-32 of `data` with SIMD folding.
#[inline]
pub fn crc32(data: &[u8]) -> u32 {
    // Truncation is exact: a CRC-32 result always fits in 32 bits.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, data) as u32
}

/// Byte-wise table for short inputs (reflected polynomial 0xEDB88320).
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32 of a short input (the 8-byte prelude) by table lookup.
#[inline]
pub fn crc32_short(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        // The CRC-32/ISO-HDLC check value.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_short(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let long: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        assert_eq!(crc32(&long), crc32_short(&long));
    }
}
