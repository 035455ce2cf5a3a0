//! `qbox debug decode`: prints each message of a captured event stream as
//! one JSON object, for debugging traffic.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::eventstream::{ChunkDecoder, ChunkMessage, FrameError, HeaderValue};
use crate::exit::{self, CommandError};

#[derive(Debug, clap::Subcommand)]
pub enum DebugCommand {
    /// Decode an event-stream capture: one JSON object per message, in wire order.
    #[command(after_help = "\
Examples:
  qbox debug decode capture.bin
  curl -s ... | qbox debug decode -

Each line: {\"headers\":[{\"name\":..,\"type\":..,\"value\":..}],\"payload\":\"<base64>\"}.
Types: bool, byte, short, int, long, bytes (base64), string, timestamp (ms), uuid.
Exit codes: 0 the whole capture decoded, 1 a frame failed a check (messages before it are printed).")]
    Decode {
        /// The capture file, or `-` (or nothing) for stdin.
        input: Option<PathBuf>,
    },
}

/// One header value as JSON.
fn value_json(value: &HeaderValue<'_>) -> Value {
    match *value {
        HeaderValue::Bool(b) => json!(b),
        HeaderValue::Byte(v) => json!(v),
        HeaderValue::Short(v) => json!(v),
        HeaderValue::Int(v) => json!(v),
        HeaderValue::Long(v) | HeaderValue::Timestamp(v) => json!(v),
        HeaderValue::Bytes(b) => json!(BASE64.encode(b)),
        HeaderValue::String(s) => json!(s),
        HeaderValue::Uuid(u) => json!(crate::random::format_uuid(&u)),
    }
}

/// A message as the JSON line `debug decode` prints.
pub fn message_json(message: &ChunkMessage<'_>) -> Value {
    let headers: Vec<Value> = message
        .headers
        .iter()
        .map(|h| json!({"name": h.name, "type": h.value.header_type().name(), "value": value_json(&h.value)}))
        .collect();
    // A payload cut by a read boundary comes in pieces; base64 needs it whole.
    json!({"headers": headers, "payload": BASE64.encode(message.payload.contiguous())})
}

pub fn run(command: DebugCommand) -> anyhow::Result<u8> {
    let DebugCommand::Decode { input } = command;
    let (mut reader, name): (Box<dyn Read>, String) = match &input {
        Some(path) if path.as_os_str() != "-" => (
            Box::new(
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            ),
            path.display().to_string(),
        ),
        _ => (Box::new(std::io::stdin().lock()), "stdin".to_owned()),
    };
    let mut stdout = std::io::stdout().lock();
    let mut decoder = ChunkDecoder::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut decoded_bytes = 0usize;
    let mut count = 0usize;
    let fail = |err: FrameError, offset: usize, count: usize| {
        CommandError::new(
            exit::ERROR,
            format!("{name}: message {} at byte {offset}: {err}", count + 1),
        )
        .hint(if err.is_checksum() {
            "the capture is corrupted or is not an event stream"
        } else {
            "the capture is not a valid event stream from this point on"
        })
    };
    loop {
        let read = reader
            .read(&mut buffer)
            .with_context(|| format!("reading {name}"))?;
        if read == 0 {
            break;
        }
        // The decoder keeps the chunks of a frame that spans reads, so each
        // read is copied into a chunk of its own size: a pipe that hands
        // out a few bytes at a time holds on to those bytes, not to a whole
        // read buffer per piece.
        let chunk = Bytes::copy_from_slice(&buffer[..read]);
        let mut write_error = None;
        let fed = decoder.feed(&chunk, |message| {
            if let Err(err) = writeln!(stdout, "{}", message_json(&message)) {
                // Stops the decoder; the write error, not the decoder's
                // "poisoned", is what is reported (a closed pipe exits 0).
                write_error = Some(err);
                return Err(FrameError::Poisoned);
            }
            decoded_bytes += message.wire_len();
            count += 1;
            Ok::<_, FrameError>(())
        });
        if let Some(err) = write_error {
            return Err(anyhow::Error::new(err).context("writing to stdout"));
        }
        if let Err(err) = fed {
            stdout.flush().context("writing to stdout")?;
            return Err(fail(err, decoded_bytes, count).into());
        }
    }
    stdout.flush().context("writing to stdout")?;
    decoder
        .finish()
        .map_err(|err| fail(err, decoded_bytes, count))?;
    Ok(exit::OK)
}
