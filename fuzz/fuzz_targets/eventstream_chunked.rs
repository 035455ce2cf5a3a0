//! Feeds arbitrary bytes to both decoders, each cut into its own chunks at
//! sizes taken from the input: `Decoder` with borrowed chunks and
//! `ChunkDecoder` with owned ones. Neither may panic, and they must agree:
//! the same messages (headers and payload bytes) in the same order, and an
//! error from one exactly when the other fails.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use qbox::eventstream::{ChunkDecoder, Decoder, FrameError};

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

fn run_borrowed(chunks: &[&[u8]]) -> Seen {
    let mut decoder = Decoder::new();
    let mut seen = Vec::new();
    for chunk in chunks {
        let fed = decoder.feed(chunk, |message| {
            seen.push((message.headers.as_bytes().to_vec(), message.payload.to_vec()));
            Ok::<_, FrameError>(())
        });
        if fed.is_err() {
            return (seen, true);
        }
    }
    let failed = decoder.finish().is_err();
    (seen, failed)
}

fn run_owned(chunks: &[&[u8]]) -> Seen {
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

fuzz_target!(|data: &[u8]| {
    // Two bytes of chunk sizes for each decoder, then the stream.
    if data.len() < 4 {
        return;
    }
    let (sizes, body) = data.split_at(4);
    let borrowed = run_borrowed(&cut(body, &sizes[..2]));
    let owned = run_owned(&cut(body, &sizes[2..]));
    assert_eq!(borrowed.0, owned.0, "same messages from both decoders");
    assert_eq!(borrowed.1, owned.1, "same verdict from both decoders");
});
