//! Feeds arbitrary bytes to the event-stream decoder, split into chunks at
//! positions taken from the input itself. The decoder must never panic,
//! must agree with itself whatever the chunking, and every message it
//! accepts must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qbox::eventstream::{Decoder, FrameError, Header, encode_to_vec};

/// Decodes `chunks`; returns the frames accepted and the error, if any.
fn run(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        let result = decoder.feed(chunk, |message| {
            let headers: Vec<Header<'_>> = message.headers.iter().collect();
            assert_eq!(headers.len(), message.headers.len());
            let again = encode_to_vec(&headers, message.payload).expect("accepted frames re-encode");
            assert_eq!(again, message.frame, "re-encoding is exact");
            frames.push(message.frame.to_vec());
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
    let whole = run(&[body]);
    let chunks: Vec<&[u8]> = body.chunks(step).collect();
    let split = run(&chunks);
    assert_eq!(whole.0, split.0, "same frames whatever the chunking");
    assert_eq!(whole.1.is_some(), split.1.is_some(), "same verdict whatever the chunking");
});
