//! Time to first token of `qbox chat`: from the moment the stand-in Q
//! service hands the first text event to the connection to the moment its
//! text can be read from qbox's stdout. The service pauses after that
//! event, so nothing but streaming can deliver it early.
//! Run: `cargo bench --bench time_to_first_token` (release build of qbox).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qbox::standin::q::{Answer, Reply, StandinQ};

const RUNS: usize = 60;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let q = runtime
        .block_on(StandinQ::start("bench-token"))
        .expect("stand-in");
    let home = tempfile::tempdir().expect("temp home");
    let mut deltas = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut answer = Answer::text(&["first", " rest"]);
        answer.split_every = 4096;
        answer.pause_after_first = Duration::from_millis(150);
        q.push(Reply::Answer(answer));
        let mut child = Command::new(env!("CARGO_BIN_EXE_qbox"))
            .args(["chat", "hi"])
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path())
            .env("QBOX_ACCESS_TOKEN", "bench-token")
            .env("QBOX_Q_ENDPOINT", q.url())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qbox runs");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut first = [0u8; 5];
        stdout.read_exact(&mut first).expect("first text");
        let read_at = Instant::now();
        assert_eq!(&first, b"first");
        let sent_at = *q.first_text_sent().last().expect("sent");
        deltas.push(read_at.saturating_duration_since(sent_at));
        child.wait().expect("qbox exits");
    }
    deltas.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "time to first token over {RUNS} runs: median {:.3} ms, p95 {:.3} ms, max {:.3} ms",
        ms(deltas[RUNS / 2]),
        ms(deltas[RUNS * 95 / 100]),
        ms(deltas[RUNS - 1])
    );
}
