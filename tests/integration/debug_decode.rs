//! `qbox debug decode` on captures: the public vectors, concatenated
//! streams, and broken input.

use std::path::PathBuf;

use crate::util::TestHome;

fn vector(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/eventstream/aws-sdk-go/encoded")
        .join(path)
}

#[test]
fn decodes_every_header_type() {
    let home = TestHome::new();
    let run = home
        .qbox()
        .args([
            "debug",
            "decode",
            vector("positive/all_headers").to_str().unwrap(),
        ])
        .run();
    run.assert_code(0);
    let line: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let expected = serde_json::json!({
        "headers": [
            {"name": "event-type", "type": "int", "value": 40972},
            {"name": "content-type", "type": "string", "value": "application/json"},
            {"name": "bool false", "type": "bool", "value": false},
            {"name": "bool true", "type": "bool", "value": true},
            {"name": "byte", "type": "byte", "value": -49},
            {"name": "byte buf", "type": "bytes", "value": "SSdtIGEgbGl0dGxlIHRlYXBvdCE="},
            {"name": "timestamp", "type": "timestamp", "value": 8675309},
            {"name": "int16", "type": "short", "value": 42},
            {"name": "int64", "type": "long", "value": 42424242},
            {"name": "uuid", "type": "uuid", "value": "01020304-0506-0708-090a-0b0c0d0e0f10"}
        ],
        "payload": "eydmb28nOidiYXInfQ=="
    });
    assert_eq!(line, expected);
}

#[test]
fn prints_messages_before_an_error_then_fails() {
    let home = TestHome::new();
    let mut capture = std::fs::read(vector("positive/payload_one_str_header")).unwrap();
    capture.extend(std::fs::read(vector("positive/empty_message")).unwrap());
    // The broken frame starts where the two good ones end.
    let broken_at = capture.len();
    capture.extend(std::fs::read(vector("negative/corrupted_payload")).unwrap());
    let path = home.path().join("capture.bin");
    std::fs::write(&path, &capture).unwrap();
    let run = home
        .qbox()
        .args(["debug", "decode", path.to_str().unwrap()])
        .run();
    run.assert_code(1)
        .assert_one_line_error()
        .assert_stderr_contains("checksum")
        .assert_stderr_contains(&format!("message 3 at byte {broken_at}:"));
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);

    // From stdin, with a trailing partial frame.
    let good = std::fs::read(vector("positive/int32_header")).unwrap();
    let mut child = home
        .qbox()
        .args(["debug", "decode", "-"])
        .command()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&good).unwrap();
        stdin.write_all(&good[..20]).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().count(), 1);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("stream ended inside a frame"), "{stderr}");
    assert!(
        stderr.contains(&format!("stdin: message 2 at byte {}:", good.len())),
        "{stderr}"
    );
}

#[test]
fn prelude_corruption_is_a_checksum_error() {
    let home = TestHome::new();
    let run = home
        .qbox()
        .args([
            "debug",
            "decode",
            vector("negative/corrupted_length").to_str().unwrap(),
        ])
        .run();
    run.assert_code(1)
        .assert_stderr_contains("prelude checksum mismatch");
    assert_eq!(run.stdout, "");
}

/// `qbox debug decode FILE | head -1`: the reader leaves after one line.
/// A closed pipe is not an error: no message, exit 0.
#[test]
fn a_reader_that_leaves_early_is_not_an_error() {
    use std::io::BufRead;
    let home = TestHome::new();
    let frame = std::fs::read(vector("positive/payload_one_str_header")).unwrap();
    // Far more output than a pipe buffers, so qbox is still writing when
    // the reader goes.
    let capture = frame.repeat(20_000);
    let path = home.path().join("long.bin");
    std::fs::write(&path, &capture).unwrap();
    let mut child = home
        .qbox()
        .args(["debug", "decode", path.to_str().unwrap()])
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("{\"headers\""), "{first}");
    // The read end closes here, as `head -1` exits.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.trim().is_empty(), "stderr: {stderr}");
}
