//! Differential: arbitrary bytes go to the decoder twice, each time cut
//! into owned chunks at sizes taken from the input, and to a plain
//! reference written here that reads the whole buffer at once (its own
//! bit-by-bit CRC, its own length checks, the public headers parser). None
//! may panic, and all must agree: the same messages (headers and payload
//! bytes) in the same order, and an error from one exactly when the others
//! fail.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use qbox::eventstream::{
    ChunkDecoder, FrameError, Headers, MAX_HEADERS_LEN, MAX_MESSAGE_LEN, MAX_PAYLOAD_LEN,
};

/// What a run saw: each message's headers section and payload, and
/// whether it ended in an error.
type Seen = (Vec<(Vec<u8>, Vec<u8>)>, bool);

/// Cuts `body` into chunks whose sizes cycle through `sizes` (0 counts as 1).
fn cut<'a>(body: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = body;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(usize::from(size).max(1).min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

fn run_decoder(chunks: &[&[u8]]) -> Seen {
    let mut decoder = ChunkDecoder::new();
    let mut seen = Vec::new();
    for chunk in chunks {
        let fed = decoder.feed(&Bytes::copy_from_slice(chunk), |message| {
            let payload = message.payload.contiguous().into_owned();
            assert_eq!(payload.len(), message.payload.len());
            seen.push((message.headers.as_bytes().to_vec(), payload));
            Ok::<_, FrameError>(())
        });
        if fed.is_err() {
            return (seen, true);
        }
    }
    let failed = decoder.finish().is_err();
    (seen, failed)
}

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

fn be_u32(bytes: &[u8]) -> usize {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
}

/// The reference: frame after frame from the whole buffer, every check in
/// the order the format states it.
fn run_reference(body: &[u8]) -> Seen {
    let mut seen = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() < 12 || crc32(&rest[..8]) as usize != be_u32(&rest[8..]) {
            return (seen, true);
        }
        let total = be_u32(rest);
        let headers_len = be_u32(&rest[4..]);
        let fits = total >= 16
            && total <= MAX_MESSAGE_LEN
            && headers_len <= MAX_HEADERS_LEN
            && headers_len <= total - 16
            && total - 16 - headers_len <= MAX_PAYLOAD_LEN;
        if !fits || rest.len() < total {
            return (seen, true);
        }
        let (frame, tail) = rest.split_at(total);
        if crc32(&frame[..total - 4]) as usize != be_u32(&frame[total - 4..]) {
            return (seen, true);
        }
        let headers = &frame[12..12 + headers_len];
        if Headers::parse(headers).is_err() {
            return (seen, true);
        }
        seen.push((headers.to_vec(), frame[12 + headers_len..total - 4].to_vec()));
        rest = tail;
    }
    (seen, false)
}

fuzz_target!(|data: &[u8]| {
    // Two bytes of chunk sizes for each run of the decoder, then the stream.
    if data.len() < 4 {
        return;
    }
    let (sizes, body) = data.split_at(4);
    let reference = run_reference(body);
    let first = run_decoder(&cut(body, &sizes[..2]));
    let second = run_decoder(&cut(body, &sizes[2..]));
    assert_eq!(first, reference, "the decoder agrees with the reference");
    assert_eq!(second, reference, "whatever the chunking");
});
