"""Bad input is a qbox.Error subclass with a clear message, raised before
anything is sent, and nothing is written to the user's store."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import qbox
from conftest import digest, login_store


def test_a_store_path_that_is_a_directory_fifo_or_symlink_is_refused(home, tmp_path, standin):
    store = login_store(home)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.sqlite3"
    link.symlink_to(store)
    for path, words in [(tmp_path, "is a directory"), (fifo, "is a FIFO"), (link, "is a symbolic link")]:
        with pytest.raises(qbox.StoreError, match=words) as caught:
            qbox.Client(db=path, endpoint=standin.q)
        assert str(path) in str(caught.value)
        with pytest.raises(qbox.StoreError, match=words):
            qbox.export_token(db=path)
    assert standin.requests() == []


def test_a_prompt_that_is_not_a_string_is_refused(home, standin):
    login_store(home)
    client = qbox.Client(endpoint=standin.q)
    for prompt in (42, b"bytes", None, ["a"]):
        with pytest.raises(qbox.InvalidInputError, match="the prompt must be a str") as caught:
            client.generate_assistant_response(prompt)  # type: ignore[arg-type]
        assert isinstance(caught.value, ValueError)
        with pytest.raises(qbox.InvalidInputError):
            asyncio.run(client.chat(prompt))  # type: ignore[arg-type]
    with pytest.raises(qbox.InvalidInputError, match="empty"):
        client.generate_assistant_response("   ")
    assert standin.requests() == []


def test_a_conversation_id_that_is_not_a_uuid_is_refused(home, standin):
    login_store(home)
    client = qbox.Client(endpoint=standin.q)
    for bad in ("not-a-uuid", "../../etc/passwd", 7):
        with pytest.raises(qbox.InvalidInputError, match="conversation"):
            client.generate_assistant_response("hi", conversation_id=bad)  # type: ignore[arg-type]
    with pytest.raises(qbox.InvalidInputError, match="no conversation"):
        asyncio.run(client.chat("hi", conversation_id="0f8fad5b-d9cb-469f-a165-70867728950e"))
    assert standin.requests() == []


def test_nothing_is_written_to_the_store_by_any_of_it(home, tmp_path, standin, monkeypatch):
    store = login_store(home)
    before = digest(store)
    listing = sorted(p.name for p in store.parent.iterdir())
    monkeypatch.setenv("QBOX_Q_MAX_ANSWER_BYTES", "10")
    standin.push_answer(["more than ten bytes"])
    client = qbox.Client(db=store, endpoint=standin.q)
    with pytest.raises(qbox.AnswerTooLargeError):
        asyncio.run(client.chat("hi"))
    for call in (
        lambda: client.generate_assistant_response(1),  # type: ignore[arg-type]
        lambda: client.generate_assistant_response("hi", conversation_id="nope"),
        lambda: qbox.Client(db=store, profile_arn="arn"),
        lambda: qbox.Client(endpoint="ftp://x"),
        lambda: qbox.export_token(db=store, field="password"),
    ):
        with pytest.raises(qbox.InvalidInputError):
            call()
    assert qbox.export_token(db=store) == "standin-access-0"
    assert digest(store) == before
    assert sorted(p.name for p in store.parent.iterdir()) == listing


def test_a_missing_store_is_no_login(home, tmp_path):
    with pytest.raises(qbox.NoLoginError, match="no auth store"):
        qbox.export_token(db=tmp_path / "missing.sqlite3")
    assert not (tmp_path / "missing.sqlite3").exists()
