"""The qbox Python package against the same client done in pure Python
(httpx for HTTP, botocore's event-stream parser for the frames), in one
run, against the stand-in Amazon Q service on 127.0.0.1.

Two figures per client, the median of ROUNDS runs each, the two clients
taking turns:

- time to the first event: from the request to the first text event, on a
  short answer (the stand-in sends its metadata and first text event at
  once), and the CPU time this process spent on it in all its threads
  (the stand-in is another process), which a busy machine moves less than
  the wall time;
- throughput: text events per second on a long answer of EVENTS small
  events, from the first text event to the last (the stand-in's own time
  to encode the answer, before it starts sending, is left out for both,
  and so is qbox's saving of the finished turn to its conversation file).

Needs a release build of the package in the Python that runs this, httpx
and botocore (benches/python-requirements.txt) and the stand-in:

    cargo build --release --example standin
    python -m venv /tmp/bench && /tmp/bench/bin/pip install ./python -r benches/python-requirements.txt
    /tmp/bench/bin/python benches/python_client.py target/release/examples/standin

Not a test: nothing here is asserted; docs/performance.md has the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
from botocore.eventstream import EventStreamBuffer

import qbox

TOKEN = "bench-token"
TARGET = "AmazonCodeWhispererStreamingService.GenerateAssistantResponse"
ROUNDS = int(os.environ.get("ROUNDS", "15"))
EVENTS = int(os.environ.get("EVENTS", "20000"))
#: Bytes per write of the stand-in: network-sized chunks.
CHUNK = 16 * 1024


class Standin:
    def __init__(self, binary: str) -> None:
        self.process = subprocess.Popen(
            [binary, "serve", TOKEN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.q = json.loads(self.process.stdout.readline())["q"]

    def push(self, pieces: list) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        command = {"cmd": "push", "reply": {"answer": {"pieces": pieces, "split_every": CHUNK}}}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        self.process.stdout.readline()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


async def with_qbox(client: qbox.Client) -> tuple:
    """(seconds to the first text event, seconds from it to the last, text
    events, CPU seconds of this process to the first text event)."""
    cpu = time.process_time()
    start = time.perf_counter()
    first = None
    count = 0
    async for event in client.generate_assistant_response("bench"):
        if isinstance(event, qbox.AssistantResponseEvent):
            # The text, as the peer reads it from each event's JSON.
            _ = event.content
            last = time.perf_counter()
            if first is None:
                first = last
                cpu = time.process_time() - cpu
            count += 1
    end = last
    assert first is not None
    return first - start, end - first, count, cpu


async def with_httpx(http: httpx.AsyncClient, url: str) -> tuple:
    """The same with httpx and botocore's parser, done right: frames
    across chunk boundaries, both checksums (botocore checks them), events
    decoded as their frames complete."""
    body = json.dumps(
        {
            "conversationState": {
                "currentMessage": {"userInputMessage": {"content": "bench", "origin": "CLI"}},
                "chatTriggerType": "MANUAL",
                "history": [],
            }
        }
    )
    headers = {
        "content-type": "application/x-amz-json-1.0",
        "x-amz-target": TARGET,
        "authorization": f"Bearer {TOKEN}",
    }
    cpu = time.process_time()
    start = time.perf_counter()
    first = None
    count = 0
    async with http.stream("POST", url + "/", content=body, headers=headers) as response:
        response.raise_for_status()
        buffer = EventStreamBuffer()
        async for chunk in response.aiter_raw():
            buffer.add_data(chunk)
            for message in buffer:
                kind = message.headers.get(":message-type")
                if kind != "event":
                    raise RuntimeError(f"exception frame: {message.payload!r}")
                event = json.loads(message.payload)
                if message.headers.get(":event-type") == "assistantResponseEvent":
                    _ = event.get("content", "")
                    last = time.perf_counter()
                    if first is None:
                        first = last
                        cpu = time.process_time() - cpu
                    count += 1
    end = last
    assert first is not None
    return first - start, end - first, count, cpu


async def main(binary: str) -> None:
    os.environ["QBOX_STATE_DIR"] = tempfile.mkdtemp(prefix="qbox-bench-")
    os.environ["QBOX_Q_MAX_ANSWER_BYTES"] = str(64 << 20)
    standin = Standin(binary)
    client = qbox.Client(endpoint=standin.q, access_token=TOKEN)
    http = httpx.AsyncClient(timeout=60)
    short = ["Hello", ", world"]
    long = [f"w{i % 10} " for i in range(EVENTS)]
    results: dict = {"qbox": {"first": [], "cpu": [], "rate": []}, "httpx+botocore": {"first": [], "cpu": [], "rate": []}}
    try:
        # Warm-up: connections, code paths.
        for _ in range(2):
            standin.push(short)
            await with_qbox(client)
            standin.push(short)
            await with_httpx(http, standin.q)
        for _ in range(ROUNDS):
            for name in results:
                standin.push(short)
                run = with_qbox(client) if name == "qbox" else with_httpx(http, standin.q)
                first, _, _, cpu = await run
                results[name]["first"].append(first)
                results[name]["cpu"].append(cpu)
                standin.push(long)
                run = with_qbox(client) if name == "qbox" else with_httpx(http, standin.q)
                _, rest, count, _ = await run
                # Events after the first, per second of receiving them.
                results[name]["rate"].append((count - 1) / rest)
    finally:
        await http.aclose()
        standin.close()
    print(f"python {sys.version.split()[0]}, qbox {qbox.__version__}, {ROUNDS} rounds, {EVENTS} events")
    print(f"{'client':<16}{'first event (ms)':>18}{'its CPU (ms)':>14}{'events/s':>14}")
    medians = {}
    for name, figures in results.items():
        first = statistics.median(figures["first"]) * 1000
        rate = statistics.median(figures["rate"])
        cpu = statistics.median(figures["cpu"]) * 1000
        medians[name] = (first, cpu, rate)
        print(f"{name:<16}{first:>18.2f}{cpu:>14.2f}{rate:>14,.0f}")
    (q_first, q_cpu, q_rate), (h_first, h_cpu, h_rate) = medians["qbox"], medians["httpx+botocore"]
    print(
        f"qbox/httpx+botocore: first event {q_first / h_first:.2f}x the time"
        f" ({q_cpu / h_cpu:.2f}x the CPU time), throughput {q_rate / h_rate:.1f}x"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benches/python_client.py PATH/TO/standin")
    asyncio.run(main(sys.argv[1]))
