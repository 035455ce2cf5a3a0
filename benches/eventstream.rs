//! Decoding throughput of qbox's event-stream decoder next to the
//! incumbent `aws-smithy-eventstream`, on the same in-memory streams:
//! ~150-byte frames shaped like Amazon Q's (three string headers, a small
//! JSON payload) and 64 KiB frames. Run: `cargo bench --bench eventstream`.

use std::hint::black_box;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qbox::eventstream::{Decoder, FrameError, Header, HeaderValue, encode};

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

fn decode_qbox(stream: &[u8]) -> usize {
    let mut decoder = Decoder::new();
    let mut seen = 0;
    decoder
        .feed(stream, |message| {
            for header in &message.headers {
                black_box(header);
            }
            black_box(message.payload);
            seen += 1;
            Ok::<_, FrameError>(())
        })
        .expect("valid stream");
    seen
}

fn decode_smithy(stream: &[u8]) -> usize {
    let mut decoder = MessageFrameDecoder::new();
    let mut input = stream;
    let mut seen = 0;
    while let DecodedFrame::Complete(message) =
        decoder.decode_frame(&mut input).expect("valid stream")
    {
        black_box(message);
        seen += 1;
    }
    seen
}

fn bench(c: &mut Criterion) {
    for (name, frames, make) in [
        ("q_frames_150b", 2000, q_frame as fn(&mut Vec<u8>, usize)),
        ("frames_64kib", 64, large_frame),
    ] {
        let data = stream(frames, make);
        assert_eq!(decode_qbox(&data), frames);
        assert_eq!(decode_smithy(&data), frames);
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function("qbox", |b| b.iter(|| decode_qbox(black_box(&data))));
        group.bench_function("aws-smithy-eventstream", |b| {
            b.iter(|| decode_smithy(black_box(&data)));
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
