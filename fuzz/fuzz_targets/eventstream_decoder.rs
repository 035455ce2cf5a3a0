//! Feeds arbitrary bytes to the event-stream decoder, whole and cut into
//! owned chunks (as an HTTP body hands them out) of a size taken from the
//! input. The decoder must never panic, must agree with itself whatever the
//! chunking, and every message it accepts must re-encode to exactly the
//! bytes it was decoded from.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use qbox::eventstream::{ChunkDecoder, FrameError, Header, encode_to_vec};

/// Decodes `body` in chunks of `step` bytes; returns the frames accepted
/// and the error, if any.
fn run(body: &[u8], step: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut decoder = ChunkDecoder::new();
    let mut frames = Vec::new();
    // Where the next message's frame starts in `body`.
    let mut at = 0;
    for chunk in body.chunks(step) {
        let result = decoder.feed(&Bytes::copy_from_slice(chunk), |message| {
            let headers: Vec<Header<'_>> = message.headers.iter().collect();
            assert_eq!(headers.len(), message.headers.len());
            let payload = message.payload.contiguous();
            assert_eq!(payload.len(), message.payload.len());
            let again = encode_to_vec(&headers, &payload).expect("accepted frames re-encode");
            let frame = &body[at..at + message.wire_len()];
            assert_eq!(again, frame, "re-encoding is exact");
            frames.push(frame.to_vec());
            at += frame.len();
            Ok::<_, FrameError>(())
        });
        if let Err(err) = result {
            return (frames, Some(err));
        }
    }
    let end = decoder.finish().err();
    (frames, end)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // The first byte chooses a chunk size for the second run.
    let step = usize::from(data[0]).max(1);
    let body = &data[1..];
    let whole = run(body, body.len().max(1));
    let split = run(body, step);
    assert_eq!(whole.0, split.0, "same frames whatever the chunking");
    assert_eq!(whole.1.is_some(), split.1.is_some(), "same verdict whatever the chunking");
});
