"""Browser end-to-end: the demo page reconnects by itself and the conversation goes on.

The page reaches the server through a TCP proxy on loopback (:class:`~proxy.LoopbackProxy`):
cutting the proxy's connections is a network failure as the browser sees it (no close frame:
1006), and pointing the proxy at another server is a server replaced behind the same
address. What is checked is what the user would notice: the page says it is reconnecting,
it comes back by itself, the player and the mic were never torn down (the page's tap
recording, started before the drop, holds the reply of after it), the next question is
answered, and the conversation view matches what the server kept of the conversation.

The resumption tests need a server that resumes conversations (``ready.conversation``,
``--server-drain-timeout-s``, ``--server-conversation-store``, ``--server-workers``); they
skip with a server that predates them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import redis_server
from harness.launcher import ServerProcess, ServerStartError

from .audio_analysis import MicScript, Spoken, align_reply
from .browser_session import DemoSession
from .figures import Results
from .proxy import LoopbackProxy, ProxiedServer
from .servers import SERVER_STOP_TIMEOUT_S, Servers

pytestmark = pytest.mark.browser

WAV_RATE = 48_000
#: The mic opens before the server is ready (see test_browser.LEAD_IN_S).
LEAD_IN_S = 3.0
TURN_TIMEOUT_S = 30.0
#: Silence between the two questions: room for the first turn's reply to play out, the drop
#: and the reconnection, before the second question starts.
BETWEEN_QUESTIONS_S = 14.0
#: How long the page may take to come back after a drop (the first backoff is 250 ms).
RECONNECT_TIMEOUT_S = 10.0
#: Attempts per outage in the drop test (the default is 10: too long to wait for).
GIVE_UP_AFTER = 3
FIRST_QUESTION = "goforward.wav"
SECOND_QUESTION = "librivox-0880.wav"

OpenDemo = Callable[..., DemoSession]

_RECONNECT_SETTINGS_JS = (
    "(maxAttempts) => { window.voicecore.client.options.reconnect = { maxAttempts }; }"
)
_EVENTS_JS = "(type) => window.voicecore.events.filter((e) => e.type === type).map((e) => e.detail)"
_TURN_CLASSES_JS = """() => [...document.querySelectorAll('#turns > li')].map((li) =>
  ({ note: li.classList.contains('turn-note'), earlier: li.classList.contains('earlier'),
     text: li.innerText }))"""


def _two_questions(utterances: dict[str, Spoken]) -> MicScript:
    return (
        MicScript(WAV_RATE)
        .silence(LEAD_IN_S)
        .speech(utterances[FIRST_QUESTION])
        .silence(BETWEEN_QUESTIONS_S)
        .speech(utterances[SECOND_QUESTION])
        .silence(3.0)
    )


def _events(demo: DemoSession, kind: str) -> list[dict[str, Any]]:
    """The page's client events of one type (``window.voicecore.events``), their details."""
    found: list[dict[str, Any]] = demo.page.evaluate(_EVENTS_JS, kind)
    return found


def _wait_for_event(demo: DemoSession, kind: str, timeout_s: float) -> dict[str, Any]:
    """Waits for the page's first client event of type ``kind``; returns its detail."""
    deadline = time.monotonic() + timeout_s
    while not (found := _events(demo, kind)):
        if time.monotonic() > deadline:
            stats = demo.page_stats()
            raise AssertionError(
                f"no {kind!r} event within {timeout_s} s; the page is {stats['state']}, "
                f"errors: {stats['errors']}"
            )
        demo.pump(0.05)
    return found[0]


def _session_messages(demo: DemoSession, session: int) -> list[dict[str, Any]]:
    """The server's messages of the page's ``session``-th socket that reached ready (0: the
    first), from its ``ready`` on (none before Playwright has reported that ``ready``)."""
    messages = demo.messages()
    starts = [i for i, m in enumerate(messages) if m["type"] == "ready"]
    if session >= len(starts):
        return []
    end = starts[session + 1] if session + 1 < len(starts) else len(messages)
    return messages[starts[session] : end]


def _wait_for_ready(demo: DemoSession, session: int) -> dict[str, Any]:
    """Waits until Playwright has reported the ``ready`` of the page's ``session``-th socket
    (the page's own events come first: Playwright reports the socket's frames on its own)."""
    deadline = time.monotonic() + RECONNECT_TIMEOUT_S
    while not (messages := _session_messages(demo, session)):
        if time.monotonic() > deadline:
            raise AssertionError(f"Playwright saw no ready of session {session}")
        demo.pump(0.02)
    return messages[0]


def _wait_for_turn(demo: DemoSession, session: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Waits for a final transcript and the ``agent_done`` of its turn in ``session``."""
    deadline = time.monotonic() + TURN_TIMEOUT_S
    while True:
        messages = _session_messages(demo, session)
        finals = [m for m in messages if m["type"] == "transcript" and m["final"]]
        for final in finals:
            done = [
                m
                for m in messages
                if m["type"] == "agent_done" and m["turn_id"] == final["turn_id"]
            ]
            if done:
                return final, done[0]
        if time.monotonic() > deadline:
            seen = [m["type"] for m in messages]
            raise AssertionError(f"no answered turn in session {session}; it sent {seen}")
        demo.pump(0.05)


def _mic_frames_after_ready(demo: DemoSession, session: int, seconds: float) -> int:
    """How many audio frames the page sent in the ``seconds`` after the ``ready`` of its
    ``session``-th socket (0: the first) reached it."""
    readies = [
        f.time for f in demo.frames if not f.sent and (f.message or {}).get("type") == "ready"
    ]
    start = readies[session]
    return sum(
        1
        for f in demo.frames
        if f.sent and isinstance(f.payload, bytes) and start <= f.time < start + seconds
    )


def _assert_reply_played(demo: DemoSession) -> None:
    """The last reply played whole in the page's tap recording, which was started before
    the connection dropped: the audio graph lived through the reconnection."""
    demo.wait_until_played()
    recording = demo.stop_recording()
    reply = demo.replies()[-1]
    assert reply.ended_by == "agent_done"
    playback = align_reply(recording.output, reply.audio, recording.rate)
    assert playback.found, "the reply after the reconnection never played"
    assert playback.complete, f"{playback.played} of {playback.received} samples played"


def test_the_page_reconnects_after_its_connection_drops_and_the_conversation_goes_on(
    open_demo: OpenDemo, servers: Servers, utterances: dict[str, Spoken], results: Results
) -> None:
    """A network drop after the first turn: the page reconnects with backoff (1006), the
    second question is answered, and the view follows what the server kept: the turns
    continue if it resumed the conversation, else they are marked as a conversation the
    agent no longer remembers. Then the server goes for good: the page gives up after its
    attempts and says so. Needs nothing of the server beyond protocol v1."""
    proxy = LoopbackProxy()
    try:
        server = servers.get(VOICECORE_SERVER_ALLOWED_ORIGINS=proxy.url)
        proxy.upstream_port = server.port
        script = _two_questions(utterances)
        demo = open_demo(script, server=ProxiedServer(proxy, server))
        demo.page.evaluate(_RECONNECT_SETTINGS_JS, GIVE_UP_AFTER)
        began = time.monotonic()  # about when the mic (and its WAV) started
        first_ready = demo.connect()
        first_final, first_done = _wait_for_turn(demo, 0)
        demo.wait_until_played()
        assert proxy.drop() >= 1, "the page's socket did not go through the proxy"
        dropped_at = time.monotonic()

        reconnecting = _wait_for_event(demo, "reconnecting", RECONNECT_TIMEOUT_S)
        assert demo.page.evaluate("() => window.voicecore.client.context?.state") == "running"
        reconnected = _wait_for_event(demo, "reconnected", RECONNECT_TIMEOUT_S)
        back_at = time.monotonic()
        second_ready = _wait_for_ready(demo, 1)
        second_question_at = began + script.segments[1].onset / WAV_RATE
        assert back_at < second_question_at - 0.5, (
            "the page came back too late to hear the second question: the first turn took "
            f"{dropped_at - began:.1f} s of the {second_question_at - began:.1f} s before it"
        )
        final, done = _wait_for_turn(demo, 1)
        stats = demo.page_stats()
        burst = _mic_frames_after_ready(demo, 1, 0.1)
        results.record(
            "reconnect_after_drop",
            reconnecting=reconnecting,
            downtime_ms=round(reconnected["downtimeMs"]),
            attempts=reconnected["attempts"],
            resumed=reconnected["resumed"],
            mic_frames_dropped=stats["micFrames"]["dropped"],
            mic_frames_in_100_ms_after_ready=burst,
        )

        assert reconnecting["code"] == 1006, reconnecting
        assert reconnecting["attempt"] == 1
        assert reconnecting["delayMs"] <= 250
        assert reconnected["attempts"] >= 1
        assert stats["state"] == "ready"
        assert _events(demo, "closed") == [], "the session never ended"
        assert final["text"].strip(), "the second question went unheard"
        # The mic's audio during the outage was dropped, not queued and sent in a burst: in
        # its first 100 ms the new session gets about 100 ms of mic audio (20 ms frames).
        assert stats["micFrames"]["dropped"] >= 1
        assert burst <= 10, f"{burst} mic frames sent in the 100 ms after the new ready"
        _assert_reply_played(demo)

        view = demo.page.evaluate(_TURN_CLASSES_JS)
        assert first_final["text"].split()[0] in view[0]["text"], view
        if reconnected["resumed"]:
            # The server kept the conversation: the turn ids go on, the view is one piece.
            assert second_ready.get("conversation") == first_ready.get("conversation")
            assert done["turn_id"] > first_done["turn_id"]
            assert not any(li["note"] or li["earlier"] for li in view), view
        else:
            # A server that lost it (or cannot resume): the first turn stays, marked as
            # one the agent forgot, under a note; the new turns follow.
            assert view[0]["earlier"], view
            assert any(li["note"] for li in view), view

        # The server is gone for good: the page tries GIVE_UP_AFTER times, then gives up.
        proxy.upstream_port = None
        proxy.drop()
        closed = _wait_for_event(demo, "closed", RECONNECT_TIMEOUT_S)
        attempts = [e["attempt"] for e in _events(demo, "reconnecting")]
        assert attempts == [1, *range(1, GIVE_UP_AFTER + 1)], attempts
        assert closed["attempts"] == GIVE_UP_AFTER, closed
        assert closed["clean"] is False
        assert "Reconnecting failed" in demo.page.inner_text("#banner")
        assert demo.page_stats()["state"] == "closed"
    finally:
        proxy.close()


# -- resumption (needs the server side of conversation resumption) ----------------------


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A throwaway ``redis-server`` on loopback, as a conversation store."""
    if not redis_server.available():
        pytest.skip("redis-server not installed (make fleet-deps)")
    with redis_server.RedisServer() as server:
        yield server.url


def _start_server(tmp_path: Path, name: str, **settings: str) -> ServerProcess:
    """``voicecore serve`` with these settings, beside the run's shared servers."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOICECORE_")}
    server = ServerProcess(cli=True, base_env=base, env=settings, log=tmp_path / f"{name}.log")
    try:
        return server.start()
    except ServerStartError as error:
        pytest.fail(str(error))


def test_the_conversation_resumes_on_the_server_that_replaces_a_draining_one(
    open_demo: OpenDemo, utterances: dict[str, Spoken], results: Results, redis_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A rolling restart: server A drains (SIGTERM, then 1001 after its drain timeout) while
    server B, sharing A's conversation store, takes over the address. The page reconnects at
    once, B resumes the conversation (its history holds the first turn), B's turn ids follow
    A's, and the page's view goes on as one conversation."""
    proxy = LoopbackProxy()
    shared = {
        "VOICECORE_SERVER_CONVERSATION_STORE": redis_url,
        "VOICECORE_SERVER_WORKERS": "1",
        "VOICECORE_SERVER_ALLOWED_ORIGINS": proxy.url,
    }
    old = _start_server(tmp_path, "old", VOICECORE_SERVER_DRAIN_TIMEOUT_S="1", **shared)
    new = _start_server(tmp_path, "new", **shared)
    proxy.upstream_port = old.port
    proxied = ProxiedServer(proxy, old)
    try:
        demo = open_demo(_two_questions(utterances), server=proxied)
        first_ready = demo.connect()
        first_final, first_done = _wait_for_turn(demo, 0)
        assert first_ready["resumed"] is False
        proxy.upstream_port, proxied.server = new.port, new
        assert old.process is not None
        os.killpg(old.process.pid, signal.SIGTERM)

        reconnecting = _wait_for_event(demo, "reconnecting", RECONNECT_TIMEOUT_S)
        reconnected = _wait_for_event(demo, "reconnected", RECONNECT_TIMEOUT_S)
        second_ready = _wait_for_ready(demo, 1)
        final, done = _wait_for_turn(demo, 1)
        results.record(
            "resume_after_drain",
            reconnecting=reconnecting,
            downtime_ms=round(reconnected["downtimeMs"]),
            attempts=reconnected["attempts"],
            resumed=reconnected["resumed"],
            history=second_ready.get("history"),
        )

        assert reconnecting["code"] == 1001, reconnecting
        assert reconnecting["delayMs"] <= 250, "a draining server is left at once"
        assert reconnected["resumed"] is True
        assert reconnected["attempts"] == 1
        assert second_ready["conversation"] == first_ready["conversation"]
        history = second_ready["history"]
        assert history[0] == {"role": "user", "text": first_final["text"]}, history
        assert history[1]["role"] == "assistant", history
        assert history[1]["text"], history
        assert done["turn_id"] > first_done["turn_id"], "turn ids go on after a resumption"
        assert final["text"].strip()
        view = demo.page.evaluate(_TURN_CLASSES_JS)
        assert not any(li["note"] or li["earlier"] for li in view), view
        assert first_final["text"].split()[0] in view[0]["text"]
        _assert_reply_played(demo)
        assert old.process.wait(SERVER_STOP_TIMEOUT_S) == 0, "the drained server exited cleanly"
    finally:
        proxy.close()
        old.stop()
        new.stop()


def test_a_reloaded_page_resumes_its_conversation_and_shows_its_history(
    open_demo: OpenDemo, servers: Servers, utterances: dict[str, Spoken]
) -> None:
    """The page keeps the conversation's token in sessionStorage: after a reload it resumes
    the conversation, and rebuilds the turns shown from ``ready.history``."""
    # One worker: the memory store is per worker.
    server = servers.get(VOICECORE_SERVER_WORKERS="1")
    script = MicScript(WAV_RATE).silence(LEAD_IN_S).speech(utterances[FIRST_QUESTION])
    demo = open_demo(script.silence(2.0), server=server)
    first_ready = demo.connect()
    final, _ = _wait_for_turn(demo, 0)
    demo.wait_until_played()
    agent_text = " ".join(
        m["text"] for m in _session_messages(demo, 0) if m["type"] == "agent_text"
    )

    demo.page.reload()
    demo.page.wait_for_function("() => window.voicecore !== undefined", timeout=10_000)
    second_ready = demo.connect()

    assert second_ready["resumed"] is True
    assert second_ready["conversation"] == first_ready["conversation"]
    turns = demo.page_stats()["turns"]
    assert [t["userText"] for t in turns] == [final["text"]], turns
    assert turns[0]["agentText"].split() == agent_text.split()
    assert final["text"].split()[0] in demo.page.inner_text("#turns")
    # A disconnect ends the conversation: the next connect starts a new one.
    demo.page.evaluate("() => window.voicecore.disconnect()")
    assert demo.page.evaluate("() => Object.keys(sessionStorage)") == []
