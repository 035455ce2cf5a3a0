//! The event-stream codec against the public AWS test vectors: every
//! positive vector decodes to its expected message whatever the chunking,
//! every negative one fails with the expected kind of error.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use qbox::eventstream::{
    ChunkDecoder, ChunkMessage, FrameError, Header, HeaderValue, encode_to_vec,
};
use serde_json::Value;

fn vectors(kind: &str, sign: &str) -> Vec<(String, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/eventstream/aws-sdk-go")
        .join(kind)
        .join(sign);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                path,
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "vectors present in {}", dir.display());
    files
}

/// A message in the vectors' JSON shape, made from a decoded message. The
/// length fields and both CRCs are computed here from what was decoded, so
/// they match the vector only if the headers section and the payload are
/// exactly the bytes that were sent.
fn as_vector_json(message: &ChunkMessage<'_>) -> Value {
    let headers: Vec<Value> = message
        .headers
        .iter()
        .map(|h| {
            let (value_type, value) = match h.value {
                HeaderValue::Bool(true) => (0, Value::Bool(true)),
                HeaderValue::Bool(false) => (1, Value::Bool(false)),
                HeaderValue::Byte(v) => (2, v.into()),
                HeaderValue::Short(v) => (3, v.into()),
                HeaderValue::Int(v) => (4, v.into()),
                HeaderValue::Long(v) => (5, v.into()),
                HeaderValue::Bytes(b) => (6, BASE64.encode(b).into()),
                HeaderValue::String(s) => (7, BASE64.encode(s).into()),
                HeaderValue::Timestamp(v) => (8, v.into()),
                HeaderValue::Uuid(u) => (9, BASE64.encode(u).into()),
            };
            serde_json::json!({"name": h.name, "type": value_type, "value": value})
        })
        .collect();
    let raw_headers = message.headers.as_bytes();
    let payload = message.payload.contiguous();
    let total_length = message.wire_len() as u32;
    let headers_length = raw_headers.len() as u32;
    let mut frame = Vec::new();
    frame.extend_from_slice(&total_length.to_be_bytes());
    frame.extend_from_slice(&headers_length.to_be_bytes());
    let prelude_crc = crc32_of(&frame);
    frame.extend_from_slice(&prelude_crc.to_be_bytes());
    frame.extend_from_slice(raw_headers);
    frame.extend_from_slice(&payload);
    serde_json::json!({
        "total_length": total_length,
        "headers_length": headers_length,
        "prelude_crc": prelude_crc,
        "headers": headers,
        "payload": BASE64.encode(&payload),
        "message_crc": crc32_of(&frame),
    })
}

/// The vectors print some CRCs as signed int32: compare as u32.
fn normalize(mut expected: Value) -> Value {
    for key in ["prelude_crc", "message_crc"] {
        if let Some(n) = expected[key].as_i64() {
            expected[key] = Value::from(n as i32 as u32);
        }
    }
    expected
}

/// Feeds `chunk` as the owned chunk an HTTP body hands out.
fn feed(decoder: &mut ChunkDecoder, chunk: &[u8]) -> Result<usize, FrameError> {
    let mut messages = 0;
    decoder.feed(&Bytes::copy_from_slice(chunk), |_| {
        messages += 1;
        Ok::<_, FrameError>(())
    })?;
    Ok(messages)
}

/// Decodes `chunks` in order; returns the messages as vector JSON.
fn decode_chunks(chunks: &[&[u8]]) -> Result<Vec<Value>, FrameError> {
    let mut decoder = ChunkDecoder::new();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.feed(&Bytes::copy_from_slice(chunk), |message| {
            out.push(as_vector_json(&message));
            Ok::<_, FrameError>(())
        })?;
    }
    decoder.finish()?;
    Ok(out)
}

#[test]
fn positive_vectors_decode_at_every_split_point() {
    for (name, path) in vectors("encoded", "positive") {
        let bytes = std::fs::read(&path).unwrap();
        let expected_path = path.to_string_lossy().replace("/encoded/", "/decoded/");
        let expected =
            normalize(serde_json::from_slice(&std::fs::read(expected_path).unwrap()).unwrap());

        let whole = decode_chunks(&[&bytes]).unwrap();
        assert_eq!(whole, vec![expected.clone()], "{name}");

        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            let got =
                decode_chunks(&[a, b]).unwrap_or_else(|e| panic!("{name} split at {split}: {e}"));
            assert_eq!(got, vec![expected.clone()], "{name} split at {split}");
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            decode_chunks(&bytewise).unwrap(),
            vec![expected.clone()],
            "{name} byte by byte"
        );

        // Three messages back to back, split at every point of the stream.
        let stream = [bytes.as_slice(), &bytes, &bytes].concat();
        for split in 0..=stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(
                decode_chunks(&[a, b]).unwrap().len(),
                3,
                "{name} x3 split at {split}"
            );
        }
    }
}

#[test]
fn negative_vectors_fail_with_the_expected_error() {
    for (name, path) in vectors("encoded", "negative") {
        let bytes = std::fs::read(&path).unwrap();
        let expected_path = path.to_string_lossy().replace("/encoded/", "/decoded/");
        let expected_text = std::fs::read_to_string(expected_path).unwrap();
        let err = decode_chunks(&[&bytes]).expect_err(&name);
        match expected_text.trim() {
            "Prelude checksum mismatch" => {
                assert!(
                    matches!(err, FrameError::PreludeChecksum { .. }),
                    "{name}: {err}"
                );
            }
            "Message checksum mismatch" => {
                assert!(
                    matches!(err, FrameError::MessageChecksum { .. }),
                    "{name}: {err}"
                );
            }
            other => panic!("unknown expectation {other:?}"),
        }
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}

#[test]
fn corrupted_length_fails_without_waiting_for_more_input() {
    let path = vectors("encoded", "negative")
        .into_iter()
        .find(|(n, _)| n == "corrupted_length")
        .unwrap()
        .1;
    let bytes = std::fs::read(path).unwrap();
    // Exactly the prelude: the error must come now, not after more bytes.
    let mut decoder = ChunkDecoder::new();
    let err = feed(&mut decoder, &bytes[..12]).unwrap_err();
    assert!(matches!(err, FrameError::PreludeChecksum { .. }), "{err}");
    // And when the prelude arrives in pieces.
    let mut decoder = ChunkDecoder::new();
    assert_eq!(feed(&mut decoder, &bytes[..7]), Ok(0));
    assert_eq!(decoder.buffered(), 7);
    assert!(matches!(
        feed(&mut decoder, &bytes[7..12]),
        Err(FrameError::PreludeChecksum { .. })
    ));
    // A poisoned decoder stays poisoned.
    assert_eq!(feed(&mut decoder, &bytes[12..]), Err(FrameError::Poisoned));
}

#[test]
fn encoder_round_trips_every_vector_bit_for_bit() {
    for (name, path) in vectors("encoded", "positive") {
        let bytes = std::fs::read(&path).unwrap();
        let mut decoder = ChunkDecoder::new();
        let mut encoded = Vec::new();
        decoder
            .feed(&Bytes::copy_from_slice(&bytes), |message| {
                let headers: Vec<Header<'_>> = message.headers.iter().collect();
                let payload = message.payload.contiguous();
                encoded.push(encode_to_vec(&headers, &payload).unwrap());
                Ok::<_, FrameError>(())
            })
            .unwrap();
        assert_eq!(encoded, [bytes], "{name}");
    }
}

#[test]
fn limits_and_malformed_frames() {
    // Duplicate header names are refused by both sides.
    let dup = [
        Header {
            name: "a",
            value: HeaderValue::Int(1),
        },
        Header {
            name: "a",
            value: HeaderValue::Int(2),
        },
    ];
    assert!(matches!(
        encode_to_vec(&dup, b""),
        Err(FrameError::DuplicateHeader { .. })
    ));

    // A frame claiming 4 GiB is refused as soon as the prelude is there.
    let mut huge = Vec::new();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    huge.extend_from_slice(&0u32.to_be_bytes());
    let prelude_crc = crc32_of(&huge);
    huge.extend_from_slice(&prelude_crc.to_be_bytes());
    assert!(matches!(
        feed(&mut ChunkDecoder::new(), &huge),
        Err(FrameError::FrameTooLong { .. } | FrameError::PayloadTooLong { .. })
    ));

    // A trailing partial frame is an error at the end of the stream.
    let frame = encode_to_vec(&[], b"hello").unwrap();
    let mut decoder = ChunkDecoder::new();
    assert_eq!(feed(&mut decoder, &frame[..frame.len() - 1]), Ok(0));
    assert!(matches!(
        decoder.finish(),
        Err(FrameError::TruncatedFrame { .. })
    ));

    // Unknown header type and invalid UTF-8 names, with valid CRCs.
    for (headers, check) in [
        (b"\x01a\x0a".to_vec(), "unknown type"),
        (b"\x01\xff\x00".to_vec(), "not utf-8"),
        (b"\x00".to_vec(), "empty name"),
        (b"\x01a\x07\x00\x05ab".to_vec(), "cut off"),
    ] {
        let frame = raw_frame(&headers, b"");
        let err = feed(&mut ChunkDecoder::new(), &frame).unwrap_err();
        assert!(err.to_string().contains(check), "{check}: {err}");
    }
}

/// CRC-32 (IEEE) computed bit by bit, independent of the codec's.
fn crc32_of(data: &[u8]) -> u32 {
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

/// A frame with arbitrary header bytes and correct CRCs.
fn raw_frame(headers: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = (16 + headers.len() + payload.len()) as u32;
    let mut frame = Vec::new();
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    let prelude_crc = crc32_of(&frame);
    frame.extend_from_slice(&prelude_crc.to_be_bytes());
    frame.extend_from_slice(headers);
    frame.extend_from_slice(payload);
    let crc = crc32_of(&frame);
    frame.extend_from_slice(&crc.to_be_bytes());
    frame
}
