//! Decoding throughput of qbox's event-stream decoder next to the
//! incumbent `aws-smithy-eventstream`, on the same bytes: ~150-byte frames
//! shaped like Amazon Q's (three string headers, a small JSON payload) and
//! 64 KiB frames, either as one buffer or cut into the chunks an HTTP/2 body
//! arrives in.
//!
//! Both sides get the same `Bytes` chunks and do the same consumer work:
//! read the `:event-type` header and touch the payload. qbox runs
//! `ChunkDecoder::feed` with the owned chunks, as its Amazon Q response
//! reader drives it (the benchmark is named `qbox-chunked`, as in the
//! figures recorded since it first ran); the peer as the AWS SDK's
//! event-stream receiver drives it: every chunk is pushed onto a
//! `SegmentedBuf<Bytes>` that keeps what is not consumed yet, and
//! `MessageFrameDecoder::decode_frame` is called on that buffer until it
//! reports an incomplete frame.
//!
//! Run: `cargo bench --bench eventstream` (a group: `-- q_frames_150b/chunks_1k`).

use std::hint::black_box;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use bytes::Bytes;
use bytes_utils::SegmentedBuf;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qbox::eventstream::{ChunkDecoder, ChunkMessage, FrameError, Header, HeaderValue, encode};

fn q_frame(out: &mut Vec<u8>, i: usize) {
    let payload = format!(r#"{{"content":"Here is part {i:05} of the answer."}}"#);
    let headers = [
        Header {
            name: ":event-type",
            value: HeaderValue::String("assistantResponseEvent"),
        },
        Header {
            name: ":content-type",
            value: HeaderValue::String("application/json"),
        },
        Header {
            name: ":message-type",
            value: HeaderValue::String("event"),
        },
    ];
    encode(&headers, payload.as_bytes(), out).expect("valid frame");
}

fn large_frame(out: &mut Vec<u8>, i: usize) {
    let payload: Vec<u8> = (0..64 * 1024).map(|b| ((b + i) % 251) as u8).collect();
    let headers = [
        Header {
            name: ":event-type",
            value: HeaderValue::String("chunk"),
        },
        Header {
            name: ":message-type",
            value: HeaderValue::String("event"),
        },
    ];
    encode(&headers, &payload, out).expect("valid frame");
}

fn stream(frames: usize, make: fn(&mut Vec<u8>, usize)) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..frames {
        make(&mut out, i);
    }
    out
}

/// The stream as an HTTP body delivers it: `Bytes` chunks of `size` bytes
/// (the last one shorter), or one chunk for `None`.
fn chunks(stream: &[u8], size: Option<usize>) -> Vec<Bytes> {
    let size = size.unwrap_or(stream.len());
    stream.chunks(size).map(Bytes::copy_from_slice).collect()
}

/// The consumer's work on one qbox message, whose payload may be the
/// pieces of several chunks; returns the payload length so that nothing is
/// optimised away.
#[inline]
fn consume_chunked(message: &ChunkMessage<'_>) -> usize {
    black_box(message.headers.get_str(":event-type"));
    black_box(message.payload).len()
}

fn decode_qbox_chunked(chunks: &[Bytes]) -> (usize, usize) {
    let mut decoder = ChunkDecoder::new();
    let mut seen = 0;
    let mut payload = 0;
    for chunk in chunks {
        // The body's own chunk: a spanning frame keeps a reference to it.
        decoder
            .feed(chunk, |message| {
                payload += consume_chunked(&message);
                seen += 1;
                Ok::<_, FrameError>(())
            })
            .expect("valid stream");
    }
    decoder.finish().expect("no trailing bytes");
    (seen, payload)
}

fn decode_smithy(chunks: &[Bytes]) -> (usize, usize) {
    let mut decoder = MessageFrameDecoder::new();
    let mut buffer = SegmentedBuf::new();
    let mut seen = 0;
    let mut payload = 0;
    for chunk in chunks {
        buffer.push(chunk.clone());
        while let DecodedFrame::Complete(message) =
            decoder.decode_frame(&mut buffer).expect("valid stream")
        {
            // The same work on the peer's message.
            let event_type = message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == ":event-type")
                .and_then(|h| h.value().as_string().ok());
            black_box(event_type);
            payload += black_box(message.payload()).len();
            seen += 1;
        }
    }
    assert_eq!(bytes::Buf::remaining(&buffer), 0, "no trailing bytes");
    (seen, payload)
}

/// A stream to decode: group name, bytes, frame count, and the chunk sizes
/// to cut it into (`None`: one buffer).
type Case<'a> = (&'a str, &'a [u8], usize, &'a [(&'a str, Option<usize>)]);

fn bench(c: &mut Criterion) {
    const KIB: usize = 1024;
    let q_frames = stream(2000, q_frame);
    let large_frames = stream(64, large_frame);
    let cases: [Case<'_>; 2] = [
        (
            "q_frames_150b",
            &q_frames,
            2000,
            &[
                ("whole", None),
                ("chunks_1k", Some(KIB)),
                ("chunks_16k", Some(16 * KIB)),
                ("chunks_64k", Some(64 * KIB)),
            ],
        ),
        (
            "frames_64kib",
            &large_frames,
            64,
            &[("whole", None), ("chunks_16k", Some(16 * KIB))],
        ),
    ];
    for (name, data, frames, splits) in cases {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(data.len() as u64));
        for &(split, size) in splits {
            let chunks = chunks(data, size);
            let expected = decode_smithy(&chunks);
            assert_eq!(expected.0, frames);
            assert_eq!(decode_qbox_chunked(&chunks), expected, "same messages");
            group.bench_function(format!("{split}/qbox-chunked"), |b| {
                b.iter(|| decode_qbox_chunked(black_box(&chunks)));
            });
            group.bench_function(format!("{split}/aws-smithy-eventstream"), |b| {
                b.iter(|| decode_smithy(black_box(&chunks)));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
