"""The qbox package against the stand-in Amazon Q service: streamed
answers event by event, conversations the stand-in checks, every kind of
failure as its qbox.Error subclass, cancellation, and bad input refused
before anything is sent or written."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import json
from pathlib import Path

import pytest

import qbox
from conftest import TOKEN, digest, login_store, make_store


def run(coroutine):
    return asyncio.run(coroutine)


async def collect(stream):
    return [event async for event in stream]


def client_for(standin, **options) -> qbox.Client:
    return qbox.Client(endpoint=standin.q, **options)


def test_a_streamed_answer_arrives_event_by_event_as_typed_events(home, standin):
    login_store(home)
    standin.push_answer(
        ["Hel", "lo, ", "world"],
        split_every=3,
        extra_events=[
            ["toolUseEvent", {"toolUseId": "t1", "name": "read", "input": "{\"pa", "stop": False}],
            ["toolUseEvent", {"toolUseId": "t1", "name": "read", "input": "th\":1}", "stop": True}],
            ["codeEvent", {"content": "let x = 1;"}],
            ["codeReferenceEvent", {"references": [{"licenseName": "MIT", "repository": "r", "url": "https://example.com/r"}]}],
            ["citationEvent", {"citationText": "a source", "citationLink": "https://example.com/c", "target": {"location": 3}}],
            ["followupPromptEvent", {"followupPrompt": {"content": "And then?", "userIntent": "EXPLAIN_CODE_SELECTION"}}],
            ["invalidStateEvent", {"reason": "INVALID_TASK_ASSIST_PLAN", "message": "bad state"}],
            ["brandNewEvent", {"x": 1}],
        ],
    )
    client = client_for(standin)

    async def go():
        stream = client.generate_assistant_response("Say hello")
        assert stream.conversation_id is None
        events = await collect(stream)
        return stream, events

    stream, events = run(go())
    kinds = [type(event).__name__ for event in events]
    assert kinds == [
        "MessageMetadataEvent",
        "AssistantResponseEvent",
        "AssistantResponseEvent",
        "AssistantResponseEvent",
        "ToolUseEvent",
        "ToolUseEvent",
        "CodeEvent",
        "CodeReferenceEvent",
        "CitationEvent",
        "FollowupPromptEvent",
        "InvalidStateEvent",
        "OtherEvent",
    ]
    metadata = events[0]
    assert metadata.conversation_id == stream.conversation_id
    assert [e.content for e in events if isinstance(e, qbox.AssistantResponseEvent)] == ["Hel", "lo, ", "world"]
    tool = events[4]
    assert (tool.tool_use_id, tool.name, tool.input, tool.stop) == ("t1", "read", "{\"pa", False)
    assert events[5].stop is True
    assert events[6].content == "let x = 1;"
    assert events[7].references[0]["licenseName"] == "MIT"
    assert (events[8].citation_text, events[8].citation_link, events[8].target) == ("a source", "https://example.com/c", {"location": 3})
    assert (events[9].content, events[9].user_intent) == ("And then?", "EXPLAIN_CODE_SELECTION")
    assert (events[10].reason, events[10].message) == ("INVALID_TASK_ASSIST_PLAN", "bad state")
    assert (events[11].event_type, events[11].payload) == ("brandNewEvent", {"x": 1})
    assert qbox.AssistantResponseEvent.event_type == "assistantResponseEvent"
    assert "Hel" in repr(events[1])
    [request] = standin.requests()
    assert request["authorization"] == f"Bearer {TOKEN}"
    assert request["user_agent"].startswith("qbox/")
    message = request["body"]["conversationState"]["currentMessage"]["userInputMessage"]
    assert message["content"] == "Say hello"


def test_chat_returns_the_whole_answer_with_tool_uses_and_code_references(home, standin):
    login_store(home)
    standin.push_answer(
        ["The ", "answer"],
        extra_events=[
            ["toolUseEvent", {"toolUseId": "t1", "name": "read", "input": "{\"path\":", "stop": False}],
            ["toolUseEvent", {"toolUseId": "t1", "name": "read", "input": "\"a\"}", "stop": True}],
            ["codeReferenceEvent", {"references": [{"licenseName": "MIT"}, {"licenseName": "Apache-2.0"}]}],
        ],
    )
    response = run(client_for(standin).chat("Answer me", model="claude-x"))
    assert isinstance(response, qbox.ChatResponse)
    assert response.text == "The answer"
    assert len(response.conversation_id) == 36
    [tool] = response.tool_uses
    assert (tool.tool_use_id, tool.name, tool.input) == ("t1", "read", "{\"path\":\"a\"}")
    assert [r["licenseName"] for r in response.code_references] == ["MIT", "Apache-2.0"]
    [request] = standin.requests()
    assert request["body"]["conversationState"]["currentMessage"]["userInputMessage"]["modelId"] == "claude-x"


def test_a_continued_conversation_sends_the_history_the_stand_in_checks(home, standin):
    login_store(home)
    standin.push_answer(["first answer"])
    standin.push_answer(["second answer"])
    standin.push_answer(["third answer"])

    async def go():
        first = await client_for(standin).chat("first question")
        # A new client (another program, or `qbox chat`) continues it.
        second = await client_for(standin).chat("second question", conversation_id=first.conversation_id)
        stream = client_for(standin).generate_assistant_response("third question", conversation_id=second.conversation_id)
        third = await collect(stream)
        return first, second, third, stream.conversation_id

    first, second, third, third_id = run(go())
    assert first.conversation_id == second.conversation_id == third_id
    assert third[0].conversation_id == third_id
    assert standin.conversation(first.conversation_id) == [
        ["first question", "first answer"],
        ["second question", "second answer"],
        ["third question", "third answer"],
    ]
    history = standin.requests()[2]["body"]["conversationState"]["history"]
    assert [list(message)[0] for message in history] == ["userInputMessage", "assistantResponseMessage"] * 2
    assert history[3]["assistantResponseMessage"]["content"] == "second answer"
    # Kept where `qbox chat` keeps conversations.
    assert (home / ".local" / "share" / "qbox" / "conversations" / f"{first.conversation_id}.json").is_file()


def test_no_login_is_a_no_login_error_with_the_hint(home, standin):
    client = client_for(standin)
    with pytest.raises(qbox.NoLoginError) as caught:
        run(client.chat("hello"))
    assert "log in with" in str(caught.value)
    assert caught.value.hint and "log in" in caught.value.hint
    assert standin.requests() == []


def test_a_kiro_api_key_serves_when_no_store_login_does(home, standin, monkeypatch):
    # As the Kiro CLI: a stored login wins; without one, KIRO_API_KEY is
    # sent as the bearer token with `TokenType: API_KEY`.
    key = "ksk_pythonpackagetestkey0123456789"
    standin.command(cmd="set_token", token=key, token_type="API_KEY")
    monkeypatch.setenv("KIRO_API_KEY", key)
    response = run(client_for(standin).chat("hi"))
    assert response.text == "You said: hi"
    sent = standin.requests()[0]
    assert sent["authorization"] == f"Bearer {key}"
    assert sent["token_type"] == "API_KEY"
    # A key that is not one is refused before anything is sent.
    monkeypatch.setenv("KIRO_API_KEY", "not-a-key")
    with pytest.raises(qbox.Error):
        run(client_for(standin).chat("again"))
    assert len(standin.requests()) == 1


def test_a_403_is_a_service_error_with_code_and_status(home, standin):
    login_store(home)
    standin.push_http_error(403, "AccessDeniedException", "not subscribed to Amazon Q")
    with pytest.raises(qbox.ServiceError) as caught:
        run(client_for(standin).chat("hello"))
    error = caught.value
    assert (error.status, error.code, error.retryable) == (403, "AccessDeniedException", False)
    assert "not subscribed" in str(error)
    assert len(standin.requests()) == 1, "a 403 is not retried"


def test_an_exception_frame_in_the_stream_is_a_service_error_without_status(home, standin):
    login_store(home)
    standin.push_answer(["partial"], exception=["ThrottlingException", "slow down"])

    async def go():
        events = []
        with pytest.raises(qbox.ServiceError) as caught:
            async for event in client_for(standin).generate_assistant_response("hello"):
                events.append(event)
        return events, caught.value

    events, error = run(go())
    assert [type(e).__name__ for e in events] == ["MessageMetadataEvent", "AssistantResponseEvent"]
    assert (error.code, error.status, error.retryable) == ("ThrottlingException", None, True)


def test_a_stream_cut_in_the_middle_is_a_protocol_error_after_the_events_before_it(home, standin):
    login_store(home)
    standin.push_answer(["before ", "the cut"], cut_mid_frame=True, split_every=5)

    async def go():
        stream = client_for(standin).generate_assistant_response("hello")
        events = []
        with pytest.raises(qbox.ProtocolError) as caught:
            async for event in stream:
                events.append(event)
        # The stream stays ended.
        assert await collect(stream) == []
        return stream.conversation_id, events, caught.value

    conversation_id, events, error = run(go())
    assert [e.content for e in events if isinstance(e, qbox.AssistantResponseEvent)] == ["before ", "the cut"]
    assert "broken event stream" in str(error)
    # A failed turn is not kept: continuing it names no stored conversation.
    with pytest.raises(qbox.InvalidInputError):
        run(client_for(standin).chat("and then?", conversation_id=conversation_id))


async def wait_for(condition, what: str):
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def test_cancelling_the_task_cancels_the_request(home, standin):
    login_store(home)
    standin.push_answer(["first piece", "never sent"], stall_after_first=True)
    standin.push_answer(["also ", "never sent"], stall_after_first=True)
    client = client_for(standin)

    async def go():
        received = []

        async def read():
            async for event in client.generate_assistant_response("stall please"):
                received.append(event)

        task = asyncio.ensure_future(read())
        await wait_for(lambda: any(isinstance(e, qbox.AssistantResponseEvent) for e in received), "the first piece")
        assert standin.hangups() == 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: standin.hangups() == 1, "the stand-in to see the connection closed")

        chat = asyncio.ensure_future(client.chat("stall again"))
        await wait_for(lambda: len(standin.requests()) == 2, "the second request")
        # The loop is free while the answer stalls: another request is served.
        other = await client.chat("not stalled")
        assert other.text == "You said: not stalled"
        chat.cancel()
        with pytest.raises(asyncio.CancelledError):
            await chat
        await wait_for(lambda: standin.hangups() == 2, "the second connection closed")
        return received

    received = run(go())
    assert [e.content for e in received if isinstance(e, qbox.AssistantResponseEvent)] == ["first piece"]


def test_leaving_the_loop_early_closes_the_connection(home, standin):
    login_store(home)
    standin.push_answer(["one", "two"], stall_after_first=True)

    async def go():
        stream = client_for(standin).generate_assistant_response("hello")
        async for event in stream:
            if isinstance(event, qbox.AssistantResponseEvent):
                break
        await stream.aclose()
        await wait_for(lambda: standin.hangups() == 1, "the connection closed")

    run(go())


def test_a_stream_dropped_unfinished_closes_the_connection(home, standin):
    login_store(home)
    standin.push_answer(["one", "two"], stall_after_first=True)

    async def go():
        async for event in client_for(standin).generate_assistant_response("hello"):
            if isinstance(event, qbox.AssistantResponseEvent):
                break
        await wait_for(lambda: standin.hangups() == 1, "the connection closed")

    run(go())


def test_an_expired_token_is_refreshed_as_qbox_refreshes_it(home, standin, monkeypatch):
    store = login_store(home, access_token="expired-token", expired=True)
    monkeypatch.setenv("QBOX_OIDC_ENDPOINT", standin.oidc)
    # The stand-in OIDC service issues standin-access-1 for the fixture's refresh token.
    standin.command(cmd="set_token", token="standin-access-1")
    response = run(client_for(standin).chat("hello"))
    assert response.text == "You said: hello"
    assert standin.oidc_requests() == 1
    assert standin.requests()[0]["authorization"] == "Bearer standin-access-1"
    with sqlite3.connect(store) as conn:
        (raw,) = conn.execute("SELECT value FROM auth_kv WHERE key = 'kirocli:odic:token'").fetchone()
    assert json.loads(raw)["access_token"] == "standin-access-1"
    # The next request uses the written-back token: no second refresh.
    run(client_for(standin).chat("again"))
    assert standin.oidc_requests() == 1


def test_a_bare_token_with_its_profile(home, standin):
    arn = "arn:aws:codewhisperer:us-east-1:123456789012:profile/ABC"
    response = run(qbox.Client(endpoint=standin.q, access_token=TOKEN, profile_arn=arn).chat("hi"))
    assert response.text == "You said: hi"
    assert standin.requests()[0]["body"]["profileArn"] == arn
    with pytest.raises(qbox.InvalidInputError, match="profile_arn"):
        qbox.Client(access_token=TOKEN, profile_arn="not-an-arn")


def test_an_answer_over_the_cap_is_an_error_and_is_not_kept(home, standin, monkeypatch):
    login_store(home)
    monkeypatch.setenv("QBOX_Q_MAX_ANSWER_BYTES", "100")
    standin.push_answer(["x" * 60, "y" * 60, "z"])

    async def go():
        stream = client_for(standin).generate_assistant_response("a long one please")
        with pytest.raises(qbox.AnswerTooLargeError) as caught:
            await collect(stream)
        return stream.conversation_id, caught.value

    conversation_id, error = run(go())
    assert error.limit == 100
    assert "larger than 100 bytes" in str(error)
    assert not (home / ".local" / "share" / "qbox" / "conversations" / f"{conversation_id}.json").exists()
