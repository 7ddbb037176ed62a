"""A session's settings: ``SessionConfig`` (the configuration's ``[session]`` section)."""

from __future__ import annotations

from dataclasses import dataclass

from voicecore.engine.contracts import (
    PLAYOUT_TO_CLIENT,
    TTS_TO_PLAYOUT,
    LatencyBudget,
    latency_budget,
)

__all__ = ["MAX_PREROLL_MS", "RING_MS", "SessionConfig"]

MAX_PREROLL_MS = 1000
"""The longest ``SessionConfig.stt_preroll_ms`` accepted."""

RING_MS = MAX_PREROLL_MS + 2000
"""Recent 16 kHz audio kept (a ring) to hand an utterance to the STT from before its first
speech sample: the pre-roll, plus what lies between the VAD's start sample and the frame that
confirms the utterance (the minimum speech, up to the barge-in minimum, and the VAD's own
decision delay, 70-290 ms measured on real speech), with room to spare."""


@dataclass(frozen=True)
class SessionConfig:
    """A session's settings (durations in ms unless the name says ``_s``: seconds).

    Attributes:
        end_of_turn_silence_ms: silence after the user's speech that ends their turn (an STT
            final during it ends the turn at once).
        min_speech_ms: shorter speech starts nothing (a cough, a click).
        barge_in_min_speech_ms: speech must last this long to interrupt the agent; shorter
            speech during agent audio is a false interruption.
        stt_preroll_ms: audio from before the VAD's speech start that the STT also gets.
            A VAD reports the start late (its onset criteria, a neural gate's pad: 170-370
            ms after the first word began, measured on real speech), and an STT that
            starts there loses the first word. Longer costs a little more decoding and
            may hand the STT a breath or a click (at most ``MAX_PREROLL_MS``).
        stt_final_timeout_s: after the end of turn, the STT's final must come within this.
        llm_first_token_timeout_s: time allowed to the LLM's first delta.
        llm_token_timeout_s: time allowed between LLM deltas.
        tts_first_audio_timeout_s: time allowed to a TTS call's first chunk.
        tts_chunk_timeout_s: time allowed between a TTS call's chunks.
        frame_ms: frame duration of the session's own pacer (10, 20 or 40).
        cushion_ms: target client cushion (``PLAYOUT_TO_CLIENT``'s bound by default).
        queue_ms: playout queue capacity (``TTS_TO_PLAYOUT``'s bound by default).
        first_chunk_min_words: the chunker's first clause needs this many words.
        virtual_tick_ms: step of a virtual pacer clock driven from Trio time.
    """

    end_of_turn_silence_ms: float = 500.0
    min_speech_ms: float = 200.0
    barge_in_min_speech_ms: float = 300.0
    stt_preroll_ms: float = 300.0
    stt_final_timeout_s: float = 3.0
    llm_first_token_timeout_s: float = 10.0
    llm_token_timeout_s: float = 5.0
    tts_first_audio_timeout_s: float = 5.0
    tts_chunk_timeout_s: float = 5.0
    frame_ms: int = 20
    cushion_ms: int = PLAYOUT_TO_CLIENT.bound
    queue_ms: int = TTS_TO_PLAYOUT.bound
    first_chunk_min_words: int = 4
    virtual_tick_ms: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.stt_preroll_ms <= MAX_PREROLL_MS:
            raise ValueError(
                f"stt_preroll_ms must be 0-{MAX_PREROLL_MS} ms, got {self.stt_preroll_ms}"
            )
        if self.barge_in_min_speech_ms > RING_MS - MAX_PREROLL_MS - 500:
            raise ValueError(
                f"barge_in_min_speech_ms must be <= {RING_MS - MAX_PREROLL_MS - 500} ms (the "
                f"pre-roll ring), got {self.barge_in_min_speech_ms}"
            )
        for name in ("end_of_turn_silence_ms", "min_speech_ms", "barge_in_min_speech_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 ms, got {getattr(self, name)}")
        for name in (
            "stt_final_timeout_s",
            "llm_first_token_timeout_s",
            "llm_token_timeout_s",
            "tts_first_audio_timeout_s",
            "tts_chunk_timeout_s",
            "virtual_tick_ms",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.frame_ms not in (10, 20, 40):
            raise ValueError(f"frame_ms must be 10, 20 or 40, got {self.frame_ms}")
        for name in ("cushion_ms", "queue_ms"):
            if getattr(self, name) < self.frame_ms:
                raise ValueError(f"{name} must be >= frame_ms ({self.frame_ms} ms)")
        if self.first_chunk_min_words < 1:
            raise ValueError("first_chunk_min_words must be >= 1")

    def latency_budget(self, **provider_ms: float) -> LatencyBudget:
        """The voice-to-voice budget with this configuration (provider figures overridable,
        see ``contracts.latency_budget``)."""
        return latency_budget(
            end_of_turn_silence_ms=self.end_of_turn_silence_ms,
            frame_ms=self.frame_ms,
            **provider_ms,
        )
