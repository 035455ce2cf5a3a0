"""Fixtures of the qbox package's tests: the real stand-in Amazon Q and SSO
OIDC services in a process of their own on 127.0.0.1 (the `standin`
example of the qbox crate), real SQLite stores in the CLI's schema written
by the same crate, and a throwaway home that nothing of the user's
environment reaches."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The bearer token the stand-in Q service accepts.
TOKEN = "standin-access-0"


#: The stand-in binary (read before any test clears the environment).
STANDIN_BINARY = Path(os.environ.get("QBOX_STANDIN_BINARY") or REPO / "target" / "debug" / "examples" / "standin")


def standin_binary() -> Path:
    path = STANDIN_BINARY
    if not path.is_file():
        pytest.fail(f"no stand-in binary at {path}: run `cargo build --example standin` first")
    return path


class Standin:
    """The running stand-ins and their command channel."""

    def __init__(self, token: str) -> None:
        self.process = subprocess.Popen(
            [str(standin_binary()), "serve", token],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        urls = json.loads(self.process.stdout.readline())
        self.q: str = urls["q"]
        self.oidc: str = urls["oidc"]

    def command(self, **command: Any) -> Dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        assert "error" not in answer, answer
        return answer

    def push_answer(self, pieces: list, **options: Any) -> None:
        self.command(cmd="push", reply={"answer": {"pieces": pieces, **options}})

    def push_http_error(self, status: int, code: str, message: str) -> None:
        self.command(cmd="push", reply={"http_error": {"status": status, "code": code, "message": message}})

    def requests(self) -> list:
        return self.command(cmd="requests")["requests"]

    def conversation(self, conversation_id: str) -> list:
        return self.command(cmd="conversation", id=conversation_id)["pairs"]

    def hangups(self) -> int:
        return self.command(cmd="hangups")["count"]

    def oidc_requests(self) -> int:
        return self.command(cmd="oidc_requests")["count"]

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


@pytest.fixture
def standin() -> Iterator[Standin]:
    services = Standin(TOKEN)
    try:
        yield services
    finally:
        services.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway home: no qbox or AWS variable of the caller's survives,
    data and runtime directories in it, no Docker engine."""
    for name in list(os.environ):
        if name.startswith(("QBOX_", "KIRO_", "AWS_")) or name in ("XDG_DATA_HOME", "XDG_RUNTIME_DIR", "XDG_STATE_HOME"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/qbox-test.sock")
    return home


def make_store(path: Path, access_token: str = TOKEN, *, expired: bool = False, cli: str = "kiro") -> Path:
    """A store in the CLI's schema with a Builder ID login, written by the
    qbox crate's own StoreBuilder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = [str(standin_binary()), "store", str(path), access_token, "--cli", cli]
    if expired:
        args.append("--expired")
    subprocess.run(args, check=True)
    return path


def login_store(home: Path, **options: Any) -> Path:
    """The Kiro CLI's store at the place the CLI keeps it in ``home``."""
    return make_store(home / ".local" / "share" / "kiro-cli" / "data.sqlite3", **options)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
