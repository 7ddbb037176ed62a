"""The configuration's sections: the value checks, one frozen dataclass per section
(:class:`ServerConfig`, :class:`VadConfig`, :class:`SttConfig`, :class:`LlmConfig`,
:class:`TtsConfig`), :class:`VoicecoreConfig` that holds them all, and the table of their
settings (:data:`SETTINGS`)."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voicecore.config.settings import Check, Setting, read_section, suggest
from voicecore.engine.session import SessionConfig
from voicecore.exceptions import ConfigError, InvalidValueError
from voicecore.protocol import DEFAULT_MAX_MESSAGE_BYTES

__all__ = [
    "SECTIONS",
    "SETTINGS",
    "SETTINGS_BY_PATH",
    "WEB_ROOT",
    "LlmConfig",
    "ServerConfig",
    "SttConfig",
    "TtsConfig",
    "VadConfig",
    "VoicecoreConfig",
    "section_settings",
]


# --- value checks ------------------------------------------------------------------------


def _greater_than(low: float) -> Check:
    def check(value: float) -> str | None:
        return None if value > low else f"must be > {low:g}, got {value}"

    return check


def _at_least(low: float) -> Check:
    def check(value: float) -> str | None:
        return None if value >= low else f"must be >= {low:g}, got {value}"

    return check


def _zero_or_at_least(low: float) -> Check:
    def check(value: float) -> str | None:
        return None if value == 0 or value >= low else f"must be 0 or >= {low:g}, got {value}"

    return check


def _between(low: float, high: float, *, open_ends: bool = False) -> Check:
    def check(value: float) -> str | None:
        inside = low < value < high if open_ends else low <= value <= high
        interval = f"({low:g}, {high:g})" if open_ends else f"[{low:g}, {high:g}]"
        return None if inside else f"must be in {interval}, got {value}"

    return check


def _http_url(value: str) -> str | None:
    if re.match(r"^https?://[^/\s]+", value):
        return None
    return f"must be an http:// or https:// URL, got {value!r}"


def _not_blank(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _ip_network(value: str) -> str | None:
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return f"must be an IP address or network (10.0.0.0/8), got {value!r}"
    return None


def _conversation_store(value: str) -> str | None:
    if value == "memory":
        return None
    url = urllib.parse.urlsplit(value)
    if url.scheme in ("redis", "rediss") and url.hostname:
        return None
    return f'must be "memory" or a Redis URL (redis://host:6379/0), got {value!r}'


def _setting(
    default: Any,
    *,
    check: Check | None = None,
    secret: bool = False,
    fallback_env: str | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A dataclass field of a configuration section: its default, check, secrecy, the
    conventional variable it falls back to, and its short flags.

    A secret is left out of the section's ``repr``. ``fallback_env`` names a variable that is
    not voicecore's (``OPENAI_API_KEY``) read when no source sets the setting. ``aliases``
    are command-line flags besides ``--<section>-<setting>`` (``--port``).
    """
    metadata = {"check": check, "secret": secret, "fallback_env": fallback_env, "aliases": aliases}
    return field(default=default, metadata=metadata, repr=not secret)


# --- the sections ------------------------------------------------------------------------


class _Section:
    """Validation shared by the sections voicecore defines (types, ranges, cross-checks)."""

    def __post_init__(self) -> None:
        problems = []
        for setting in section_settings(type(self)):
            value = getattr(self, setting.name)
            try:
                checked = setting.check_value(value)
            except InvalidValueError as exc:
                problems.append(f"{setting.path}: {exc}")
            else:
                if checked is not value:  # an int given for a float: stored as the float
                    object.__setattr__(self, setting.name, checked)
        if not problems:
            problems = list(self._cross_checks())
        if problems:
            raise ConfigError("\n".join(problems))

    def _cross_checks(self) -> Iterable[str]:
        """Problems that involve several fields (each message names the field to fix)."""
        return ()


@dataclass(frozen=True)
class VadConfig(_Section):
    """Voice activity detection: which VAD tells the engine when the user speaks.

    Attributes:
        kind: ``"silero"``: the Silero neural VAD (onnxruntime) behind the Rust energy VAD's
            gate; ``"energy"``: the Rust energy VAD alone (no model, ~1 µs per frame).
        model_path: the ``silero_vad.onnx`` file; unset: the cached one that
            ``voicecore models fetch`` downloads.
        fallback: with ``kind = "silero"``, use the energy VAD (with a warning) when the
            model or onnxruntime is missing; false: refuse to start instead.
        threshold: Silero speech probability at which speech starts, in (0, 1).
        neg_threshold: Silero probability below which a window inside speech is silence,
            in (0, threshold]; unset: ``threshold - 0.15``.
        min_speech_ms: Silero speech must last this long to be reported, in ms.
        min_silence_ms: Silero silence must last this long to end speech, in ms.
        speech_pad_ms: speech starts are moved this much earlier (Silero rises a little
            after the onset), in ms.
        gate: run Silero only on the audio the energy VAD does not call silence (saves
            most of its CPU; decisions agree with the ungated model on 99.9 % of windows).
        background: run Silero in the VAD's own thread, off the event loop (its verdicts
            come one frame later); false: inline, on the event loop (~0.2 ms per 32 ms).
    """

    kind: Literal["silero", "energy"] = _setting("silero")
    model_path: str | None = _setting(None, check=_not_blank)
    fallback: bool = _setting(True)
    threshold: float = _setting(0.5, check=_between(0.0, 1.0, open_ends=True))
    neg_threshold: float | None = _setting(None, check=_between(0.0, 1.0, open_ends=True))
    min_speech_ms: float = _setting(64.0, check=_between(0.0, 10_000.0))
    min_silence_ms: float = _setting(100.0, check=_between(0.0, 10_000.0))
    speech_pad_ms: float = _setting(32.0, check=_between(0.0, 1000.0))
    gate: bool = _setting(True)
    background: bool = _setting(True)

    def _cross_checks(self) -> Iterable[str]:
        if self.neg_threshold is not None and self.neg_threshold > self.threshold:
            yield (
                f"vad.neg_threshold: must be <= vad.threshold ({self.threshold}), "
                f"got {self.neg_threshold}"
            )


@dataclass(frozen=True)
class TurnConfig(_Section):
    """The end of the user's turn: an end-of-turn model, or a fixed silence.

    Attributes:
        kind: ``"smart-turn"``: Smart Turn v3.2 (a registry model, ``voicecore models
            fetch``; one per process, run off the event loop) judges at each pause whether
            the turn is complete, and the turn ends after ``session.turn_complete_silence_ms``
            or ``session.turn_incomplete_silence_ms``; ``"silence"``: every turn ends after
            ``session.end_of_turn_silence_ms``.
        threshold: Smart Turn's probability at or above which a turn is complete, in (0, 1).
            Higher waits the long silence more often (fewer users cut off mid-thought, more
            slow answers); lower answers sooner and cuts off more.
        fallback: with ``kind = "smart-turn"``, use the fixed silence (with a warning) when
            the model is not fetched; false (the default): refuse to start, naming the fix.
    """

    kind: Literal["smart-turn", "silence"] = _setting("smart-turn")
    threshold: float = _setting(0.5, check=_between(0.0, 1.0, open_ends=True))
    fallback: bool = _setting(False)


@dataclass(frozen=True)
class SttConfig(_Section):
    """Speech to text: who transcribes the user's speech.

    Attributes:
        kind: ``"moonshine"``: Moonshine base-en on onnxruntime in process (offline, neural:
            a word error rate of about 0.02 against PocketSphinx's 0.25 on real speech; one
            model shared by every session, a registry model: ``voicecore models fetch``;
            partials by re-decoding the growing utterance, the final decoded speculatively in
            the end-of-turn pause); ``"sphinx"``: PocketSphinx in process, streaming partials
            (offline, en-US model in the ``pocketsphinx`` wheel, one decoder per session);
            ``"openai"``: an OpenAI-compatible ``/v1/audio/transcriptions`` endpoint, once per
            utterance.
        moonshine_model: ``"moonshine"``: the model, a name of the registry.
        fallback: ``"moonshine"``: when the model is not fetched (or broken), transcribe with
            PocketSphinx and warn, instead of refusing to start. Off by default: a missing
            model is an error that says how to fetch it.
        sphinx_hmm: PocketSphinx acoustic model directory; unset: the wheel's en-US model.
        sphinx_lm: PocketSphinx language model file; unset: the wheel's.
        sphinx_dict: PocketSphinx pronunciation dictionary file; unset: the wheel's.
        base_url: ``"openai"``: the API root with its version, e.g.
            ``http://localhost:8000/v1``; unset: ``$OPENAI_BASE_URL``, else
            ``https://api.openai.com/v1``.
        model: ``"openai"``: the transcription model; unset: ``"whisper-1"``.
        api_key: ``"openai"``: the API key (a secret); unset: ``$OPENAI_API_KEY``, else
            none.
        language: ``"openai"``: the spoken language as an ISO-639-1 code (``"en"``);
            unset: the server detects it.
        prompt: ``"openai"``: text that guides the model (names, spelling); unset: none.
        connect_timeout_s: ``"openai"``: time allowed to connect, in seconds (the
            transcript's deadline is ``session.stt_final_timeout_s``).
        max_retries: ``"openai"``: further attempts after a retryable failure.
    """

    kind: Literal["moonshine", "sphinx", "openai"] = _setting("moonshine")
    moonshine_model: str = _setting("moonshine-base-en", check=_not_blank)
    fallback: bool = _setting(False)
    sphinx_hmm: str | None = _setting(None, check=_not_blank)
    sphinx_lm: str | None = _setting(None, check=_not_blank)
    sphinx_dict: str | None = _setting(None, check=_not_blank)
    base_url: str | None = _setting(None, check=_http_url, fallback_env="OPENAI_BASE_URL")
    model: str | None = _setting(None, check=_not_blank)
    api_key: str | None = _setting(None, secret=True, fallback_env="OPENAI_API_KEY")
    language: str | None = _setting(None, check=_not_blank)
    prompt: str | None = _setting(None)
    connect_timeout_s: float = _setting(5.0, check=_greater_than(0))
    max_retries: int = _setting(2, check=_between(0, 10))


@dataclass(frozen=True)
class LlmConfig(_Section):
    """The language model: who writes the agent's replies.

    Attributes:
        kind: ``"responder"``: the offline rule-based responder (no model; answers the
            time, the date, greetings, and repeats what it heard); ``"openai"``: an
            OpenAI-compatible Chat Completions server, streamed (OpenAI, Ollama, vLLM,
            llama.cpp's server, LM Studio).
        system_prompt: the agent's instructions, the first message of every request.
        base_url: ``"openai"``: the API root with its version, e.g.
            ``http://localhost:11434/v1``; unset: ``$OPENAI_BASE_URL``, else
            ``https://api.openai.com/v1``.
        model: ``"openai"``: the model name the server knows (e.g. ``llama3.2``); unset:
            ``"gpt-4o-mini"``.
        api_key: ``"openai"``: the API key (a secret); unset: ``$OPENAI_API_KEY``, else
            none (local servers need none).
        temperature: ``"openai"``: sampling temperature, in [0, 2]; unset: the server's.
        max_tokens: ``"openai"``: longest reply, in tokens; unset: the server's limit.
        connect_timeout_s: ``"openai"``: time allowed to connect, in seconds (the first
            token's deadline is ``session.llm_first_token_timeout_s``).
        max_retries: ``"openai"``: further attempts after a retryable failure, made only
            before the first token.
        token_delay_s: ``"responder"``: delay between its words, in seconds (it streams
            its reply word by word like a model).
    """

    kind: Literal["responder", "openai"] = _setting("responder")
    system_prompt: str = _setting(
        "You are a helpful voice agent. Answer briefly, in plain spoken sentences."
    )
    base_url: str | None = _setting(None, check=_http_url, fallback_env="OPENAI_BASE_URL")
    model: str | None = _setting(None, check=_not_blank)
    api_key: str | None = _setting(None, secret=True, fallback_env="OPENAI_API_KEY")
    temperature: float | None = _setting(None, check=_between(0.0, 2.0))
    max_tokens: int | None = _setting(None, check=_greater_than(0))
    connect_timeout_s: float = _setting(5.0, check=_greater_than(0))
    max_retries: int = _setting(2, check=_between(0, 10))
    token_delay_s: float = _setting(0.02, check=_between(0.0, 10.0))


@dataclass(frozen=True)
class TtsConfig(_Section):
    """Text to speech: who speaks the agent's replies.

    Attributes:
        kind: ``"piper"``: a neural Piper voice on onnxruntime in process (offline; the
            voice is a registry model, ``voicecore models fetch``); ``"espeak"``: espeak-ng
            in process (offline, robotic, no model to fetch); ``"openai"``: an
            OpenAI-compatible ``/v1/audio/speech`` endpoint, streamed PCM.
        piper_voice: ``"piper"``: the voice, a model of the registry (``voicecore models
            list``).
        fallback: ``"piper"``: when the voice is not fetched (or broken), speak with
            espeak-ng and warn, instead of refusing to start. Off by default: a missing voice
            is an error that says how to fetch it, so nobody ships the robotic voice by
            accident.
        voice: the voice: for espeak-ng a language code or voice name with an optional
            variant (``"en-us"``, ``"de"``, ``"en-us+f3"``;
            ``voicecore.providers.espeak.espeak_voices()`` lists them), for ``"openai"`` the
            server's voice name; unset: ``"en-us"`` (espeak), ``"alloy"`` (openai).
        rate_wpm: ``"espeak"``: speaking rate in words per minute, 80-450.
        base_url: ``"openai"``: the API root with its version; unset:
            ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
        model: ``"openai"``: the speech model; unset: ``"gpt-4o-mini-tts"``.
        api_key: ``"openai"``: the API key (a secret); unset: ``$OPENAI_API_KEY``, else
            none.
        sample_rate: ``"openai"``: the rate of the server's PCM, in Hz (OpenAI: 24000).
        speed: ``"openai"``: speaking speed factor, in [0.25, 4]; unset: the server's.
        instructions: ``"openai"``: the voice's style (``gpt-4o-mini-tts``); unset: none.
        connect_timeout_s: ``"openai"``: time allowed to connect, in seconds (the first
            audio's deadline is ``session.tts_first_audio_timeout_s``).
        max_retries: ``"openai"``: further attempts after a retryable failure, made only
            before the first audio.
    """

    kind: Literal["piper", "espeak", "openai"] = _setting("piper")
    piper_voice: str = _setting("piper-joe-medium", check=_not_blank)
    fallback: bool = _setting(False)
    voice: str | None = _setting(None, check=_not_blank)
    rate_wpm: int = _setting(175, check=_between(80, 450))
    base_url: str | None = _setting(None, check=_http_url, fallback_env="OPENAI_BASE_URL")
    model: str | None = _setting(None, check=_not_blank)
    api_key: str | None = _setting(None, secret=True, fallback_env="OPENAI_API_KEY")
    sample_rate: int = _setting(24000, check=_between(8000, 48000))
    speed: float | None = _setting(None, check=_between(0.25, 4.0))
    instructions: str | None = _setting(None)
    connect_timeout_s: float = _setting(5.0, check=_greater_than(0))
    max_retries: int = _setting(2, check=_between(0, 10))


WEB_ROOT = Path(__file__).resolve().parents[3] / "web"
"""The browser client's folder in a checkout: the default of ``server.web_root``."""


@dataclass(frozen=True)
class ServerConfig(_Section):
    """The voice server (``voicecore serve``, ``voicecore.server.app.VoiceServer``): how it
    listens and what it allows. Durations in seconds, sizes in bytes.

    Attributes:
        host: address to listen on (``127.0.0.1``: this machine only; ``0.0.0.0`` or
            empty: every interface).
        port: TCP port, 0-65535; 0 picks a free one (the server prints which).
        allowed_origins: the ``Origin`` values a browser page may open ``/ws`` from, e.g.
            ``https://voice.example.com`` (others get HTTP 403: no cross-site WebSocket
            hijacking); unset: the server's own origins. Requests without ``Origin`` (not
            from a browser) are allowed.
        token: a bearer token the client must present on ``/ws`` (``Authorization: Bearer``
            or ``?token=``; open the page as ``/?token=...`` and it passes it on), a secret;
            unset: none needed.
        max_sessions: concurrent conversations (connections past ``hello``); more are
            refused with a ``busy`` error and close 1013. Unset: the capacity, ``cores x
            capacity_per_core``. Set, it overrides the capacity.
        capacity_per_core: conversations one CPU core carries with the configured pipeline
            before anyone degrades. Unset: measured at start-up (one short conversation
            through the pipeline gives the CPU a conversation second costs; the capacity is
            what fits in ``cpu_budget`` of the cores). See docs/deployment.md.
        cpu_budget: the share of the process' cores (CPU affinity and cgroup quota) the
            measured capacity lets conversations use, in (0, 1]; the rest absorbs bursts of
            speech, start-ups and the collector.
        max_connections_per_address: ``/ws`` connections (in a conversation or awaiting
            ``hello``) one client address may hold; more are refused with ``busy``. 0: no
            limit. Behind a proxy, list it in ``trusted_proxies`` so the address is the
            client's, not the proxy's.
        max_pending: connections not yet in a conversation (reading the HTTP request, or
            awaiting ``hello``) held at once; a connection beyond is closed at once. They
            hold no conversation slot.
        trusted_proxies: addresses or networks (``10.0.0.0/8``) of reverse proxies whose
            ``X-Forwarded-For`` header names the client; unset: the peer's address is the
            client's.
        max_message_bytes: largest client message (close 1009 above it), at least 1024.
        providers: the pipeline ``voicecore serve`` runs: ``"config"``: the providers this
            configuration chooses; ``"scripted"``: test doubles that need no model.
        web_root: the folder of the static files served: the browser client (the
            checkout's ``web/`` by default).
        timeline: record the diagnostic timeline to this JSON file, every 10 s and at
            shutdown, for ``voicecore diagnose``; unset: not recorded.
        hello_timeout_s: time allowed from the TCP connection to the client's ``hello``
            (the HTTP request and the WebSocket handshake included): a socket that says
            nothing is closed after it.
        send_queue_ms: how far behind, in agent audio, a client may fall before it is
            disconnected with 4000 (its send queue holds ``send_queue_ms / frame_ms``
            messages at most), at least 100 ms.
        send_buffer_bytes: the kernel send buffer of each connection, at least 4096; 0: the
            OS default (often megabytes, which would hide a stalled client for a minute).
        close_timeout_s: time allowed to a client to complete the closing handshake.
        shutdown_timeout_s: time allowed for a graceful shutdown before the rest is
            cancelled.
        recent_sessions: finished sessions kept for ``/metrics``.
        diagnostics: run the process diagnostics (event-loop lag, GC pauses, CPU
            throttling) for ``/metrics`` and the timeline.
        memory_release_s: after conversations end, the server waits this long (more may
            end) and then gives the memory they used back to the system (the TTS's
            onnxruntime arena, the C heap); 0: never.
        workers: worker processes serving the one port (``SO_REUSEPORT``), each with its
            own event loop and pacer thread, supervised (one that dies is restarted) and
            admitting against the capacity of the whole machine; 0: one per usable core;
            1: a single process, no supervisor.
        drain_timeout_s: after SIGTERM the server drains: ``/healthz`` says 503 at once, no
            new conversation is admitted, and the running ones go on for this long (they
            end sooner if their callers hang up); the rest are then closed with 1001, which
            tells a client to reconnect (to another server) and resume. Shorter than an
            orchestrator's grace period minus ``shutdown_timeout_s``.
        conversation_store: where conversations (their history and token) live so that a
            client that reconnects, to any worker, continues where it was: ``"memory"``
            (this process only: a reconnect to another worker starts afresh) or a Redis URL
            (``redis://host:6379/0``, ``rediss://`` for TLS) shared by every worker.
        conversation_ttl_s: a conversation nobody has resumed for this long is forgotten.
    """

    host: str = _setting("127.0.0.1", aliases=("--host",))
    port: int = _setting(8000, check=_between(0, 65535), aliases=("--port",))
    allowed_origins: tuple[str, ...] | None = _setting(
        None, check=_not_blank, aliases=("--allowed-origin",)
    )
    token: str | None = _setting(None, check=_not_blank, secret=True, aliases=("--token",))
    max_sessions: int | None = _setting(None, check=_at_least(1), aliases=("--max-sessions",))
    capacity_per_core: float | None = _setting(None, check=_greater_than(0))
    cpu_budget: float = _setting(0.4, check=_between(0.0, 1.0, open_ends=True))
    max_connections_per_address: int = _setting(4, check=_at_least(0))
    max_pending: int = _setting(64, check=_at_least(1))
    trusted_proxies: tuple[str, ...] | None = _setting(None, check=_ip_network)
    max_message_bytes: int = _setting(
        DEFAULT_MAX_MESSAGE_BYTES, check=_at_least(1024), aliases=("--max-message-bytes",)
    )
    providers: Literal["config", "scripted"] = _setting("config", aliases=("--providers",))
    web_root: Path = _setting(WEB_ROOT, aliases=("--web-root",))
    timeline: Path | None = _setting(None, aliases=("--timeline",))
    hello_timeout_s: float = _setting(5.0, check=_greater_than(0))
    send_queue_ms: int = _setting(2000, check=_at_least(100))
    send_buffer_bytes: int = _setting(64 * 1024, check=_zero_or_at_least(4096))
    close_timeout_s: float = _setting(2.0, check=_greater_than(0))
    shutdown_timeout_s: float = _setting(5.0, check=_greater_than(0))
    recent_sessions: int = _setting(100, check=_at_least(0))
    diagnostics: bool = _setting(True)
    memory_release_s: float = _setting(10.0, check=_at_least(0))
    workers: int = _setting(0, check=_at_least(0), aliases=("--workers",))
    drain_timeout_s: float = _setting(30.0, check=_at_least(0))
    conversation_store: str = _setting("memory", check=_conversation_store)
    conversation_ttl_s: float = _setting(3600.0, check=_greater_than(0))


@dataclass(frozen=True)
class VoicecoreConfig:
    """The whole configuration: the providers, their settings and the engine's timings.

    Build it with :func:`load_config` (file, environment, flags) or directly (every
    section defaults to the offline pipeline); every section validates itself when
    constructed, raising ``voicecore.ConfigError`` with the name of the bad setting.

    Attributes:
        server: the voice server's address, limits and pipeline (``voicecore serve``).
        vad: the voice activity detector.
        turn: the end of the user's turn (an end-of-turn model or a fixed silence).
        stt: speech to text.
        llm: the language model.
        tts: text to speech.
        session: the engine's turn-taking thresholds, timeouts and playout sizes
            (``voicecore.SessionConfig``: durations in ms unless the name ends in ``_s``).
        sources: where each setting's value came from, by dotted path
            (``"llm.model" -> "env VOICECORE_LLM_MODEL"``); settings left at their
            defaults are absent. Not part of equality.
    """

    server: ServerConfig = field(default_factory=ServerConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    stt: SttConfig = field(default_factory=SttConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def get(self, path: str) -> Any:
        """The value of the setting at ``path`` (``"llm.model"``).

        Raises:
            KeyError: no such setting.
        """
        section, _, name = path.partition(".")
        if path not in SETTINGS_BY_PATH:
            raise KeyError(f"no setting {path!r}{suggest(path, SETTINGS_BY_PATH)}")
        return getattr(getattr(self, section), name)


SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "vad": VadConfig,
    "turn": TurnConfig,
    "stt": SttConfig,
    "llm": LlmConfig,
    "tts": TtsConfig,
    "session": SessionConfig,
}


# --- the settings of the sections ----------------------------------------------------------


def section_settings(cls: type[Any]) -> tuple[Setting, ...]:
    """The settings of one section class, in field order."""
    cached: tuple[Setting, ...] | None = _SETTINGS_CACHE.get(cls)
    if cached is not None:
        return cached
    section = next(name for name, c in SECTIONS.items() if c is cls)
    result = read_section(cls, section)
    _SETTINGS_CACHE[cls] = result
    return result


_SETTINGS_CACHE: dict[type[Any], tuple[Setting, ...]] = {}

SETTINGS: tuple[Setting, ...] = tuple(
    setting for cls in SECTIONS.values() for setting in section_settings(cls)
)
"""Every setting of :class:`VoicecoreConfig`, section by section, in field order."""

SETTINGS_BY_PATH: dict[str, Setting] = {s.path: s for s in SETTINGS}
