//! Wraps arbitrary bytes as the headers section of frames with correct
//! CRCs, so the fuzzer spends its time in header parsing instead of on
//! checksums. The frame is decoded whole and cut in the middle of its
//! headers section (a large frame's cut section is gathered from its
//! chunks). The decoder must never panic, must give the same verdict both
//! ways, and a section it accepts must re-encode to the same bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use qbox::eventstream::{ChunkDecoder, FrameError, Header, encode_to_vec};

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

/// Decodes `frame` in the given chunks; whether it was accepted.
fn accepted(frame: &[u8], chunks: &[&[u8]]) -> bool {
    let mut decoder = ChunkDecoder::new();
    let mut messages = 0;
    for chunk in chunks {
        let fed = decoder.feed(&Bytes::copy_from_slice(chunk), |message| {
            let parsed: Vec<Header<'_>> = message.headers.iter().collect();
            assert_eq!(parsed.len(), message.headers.len());
            let payload = message.payload.contiguous();
            assert_eq!(encode_to_vec(&parsed, &payload).expect("re-encodes"), frame);
            messages += 1;
            Ok::<_, FrameError>(())
        });
        if fed.is_err() {
            assert_eq!(messages, 0, "a refused frame hands out nothing");
            return false;
        }
    }
    decoder.finish().expect("the frame is complete");
    assert_eq!(messages, 1, "one frame, one message");
    true
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

    let whole = accepted(&frame, &[&frame]);
    let (first, second) = frame.split_at(12 + headers.len() / 2);
    let cut = accepted(&frame, &[first, second]);
    assert_eq!(whole, cut, "same verdict whether or not the section is cut");
});
