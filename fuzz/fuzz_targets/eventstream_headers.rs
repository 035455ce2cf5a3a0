//! Wraps arbitrary bytes as the headers section of frames with correct
//! CRCs, so the fuzzer spends its time in header parsing instead of on
//! checksums. The decoder must never panic, and a section it accepts must
//! re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qbox::eventstream::{Decoder, FrameError, Header, encode_to_vec};

/// CRC-32 (IEEE), bit by bit: independent of the codec under test.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The first byte says how much of the rest is payload.
    let payload_len = usize::from(data[0]).min(data.len() - 1);
    let (payload, headers) = data[1..].split_at(payload_len);
    let total = (16 + headers.len() + payload.len()) as u32;
    let mut frame = Vec::with_capacity(total as usize);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&frame);
    frame.extend_from_slice(&prelude_crc.to_be_bytes());
    frame.extend_from_slice(headers);
    frame.extend_from_slice(payload);
    let crc = crc32(&frame);
    frame.extend_from_slice(&crc.to_be_bytes());

    let mut decoder = Decoder::new();
    let _ = decoder.feed(&frame, |message| {
        let parsed: Vec<Header<'_>> = message.headers.iter().collect();
        assert_eq!(parsed.len(), message.headers.len());
        assert_eq!(encode_to_vec(&parsed, message.payload).expect("re-encodes"), frame);
        Ok::<_, FrameError>(())
    });
});
