"""A session's settings: ``SessionConfig`` (the configuration's ``[session]`` section)."""

from __future__ import annotations

from dataclasses import dataclass

from voicecore.engine.contracts import (
    PLAYOUT_TO_CLIENT,
    TTS_TO_PLAYOUT,
    LatencyBudget,
    latency_budget,
)
from voicecore.engine.stages import MAX_TURN_AUDIO_S

__all__ = ["MAX_PREROLL_MS", "RING_MS", "SessionConfig"]

MAX_PREROLL_MS = 1000
"""The longest ``SessionConfig.stt_preroll_ms`` accepted."""

RING_MS = max(MAX_PREROLL_MS + 2000, MAX_TURN_AUDIO_S * 1000 + 1000)
"""Recent 16 kHz audio kept (a ring): to hand an utterance to the STT from before its first
speech sample (the pre-roll, plus what lies between the VAD's start sample and the frame that
confirms the utterance: the minimum speech, up to the barge-in minimum, and the VAD's own
decision delay, 70-290 ms measured on real speech), and the newest ``MAX_TURN_AUDIO_S`` of a
turn to the end-of-turn model, with room to spare."""


@dataclass(frozen=True)
class SessionConfig:
    """A session's settings (durations in ms unless the name says ``_s``: seconds).

    Attributes:
        end_of_turn_silence_ms: silence after the user's speech that ends their turn, without
            an end-of-turn model (an STT final during it ends the turn at once).
        turn_complete_silence_ms: with an end-of-turn model (``TurnEndModel``), the silence
            that ends a turn it finds complete. Shorter answers sooner; the model's verdict
            must come within it (Smart Turn: ~45 ms after the VAD reports the pause, itself
            ~100 ms after the speech), or the pause waits for it.
        turn_incomplete_silence_ms: with an end-of-turn model, the silence that ends a turn
            it finds incomplete ("I'd like a... "), or before its verdict: the longest the
            agent waits for a user who is thinking. Longer lets people think; shorter
            recovers sooner from a wrong "incomplete".
        min_speech_ms: shorter speech starts nothing (a cough, a click).
        barge_in_min_speech_ms: speech over the agent shorter than this is not transcribed:
            a cough, a click, a short "mm" (the agent resumes at once if it was ducked).
        duck: with a client that can pause (the ``"pause"`` capability), pause the agent the
            moment the user's voice appears (echo-gated mic level or VAD), before knowing
            whether it is an interruption; the reply then resumes from the exact sample or is
            cut. Off: the agent talks on until the speech proves an interruption.
        echo_gate: keep the agent's own voice, leaking from the user's loudspeaker into
            their mic, from reading as the user (``voicecore.EchoGate`` between the
            resampler and the VAD, fed with the agent's audio as it plays): echo never ducks
            or interrupts the agent; a user much quieter than the echo may not either.
        duck_onset_ms: near-end activity (the echo-gated mic above its noise floor) lasting
            this long ducks the agent, before the VAD has decided (it needs ~30-100 ms more).
            Shorter ducks sooner, and on more clicks (each resumed after
            ``duck_timeout_ms``).
        duck_timeout_ms: a duck the VAD confirms no speech for within this resumes (a
            door, a breath). Shorter resumes sooner after a noise; too short resumes under a
            user whose first syllable the VAD is still weighing (~30-100 ms).
        backchannel_max_ms: speech over the agent lasting this long interrupts it even before
            its words are recognized; shorter speech interrupts only once its words are not
            listener feedback ("mm-hm", "yeah", "okay": ``engine.backchannel``). Backchannels
            last 0.3-0.6 s; longer waits longer for the words of a real interruption when
            the STT is slow, shorter cuts the agent on long feedback ("yeah yeah I see").
        continuation_ms: speech that starts within this of the end of the user's previous
            turn continues it ("what is twenty ... plus thirty-one"): if it interrupts the
            reply, the two are answered as one. Longer catches slower continuations, and
            also merges a quick new question into the previous one.
        preemptive_replies: start the reply (LLM and TTS into a held stream) on the STT's
            speculative transcript at a pause, before the turn has ended; it is released the
            moment the turn ends with the same words, and cut unheard (counted) if the user
            speaks on. Costs the wasted work of those cuts; buys the LLM and TTS latency.
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
    turn_complete_silence_ms: float = 200.0
    turn_incomplete_silence_ms: float = 1500.0
    min_speech_ms: float = 200.0
    barge_in_min_speech_ms: float = 300.0
    duck: bool = True
    echo_gate: bool = True
    duck_onset_ms: float = 20.0
    duck_timeout_ms: float = 300.0
    backchannel_max_ms: float = 1000.0
    continuation_ms: float = 1000.0
    preemptive_replies: bool = True
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
        for name in (
            "end_of_turn_silence_ms",
            "turn_complete_silence_ms",
            "turn_incomplete_silence_ms",
            "min_speech_ms",
            "barge_in_min_speech_ms",
            "duck_onset_ms",
            "duck_timeout_ms",
            "backchannel_max_ms",
            "continuation_ms",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 ms, got {getattr(self, name)}")
        if self.turn_complete_silence_ms > self.turn_incomplete_silence_ms:
            raise ValueError(
                f"turn_complete_silence_ms ({self.turn_complete_silence_ms}) must be <= "
                f"turn_incomplete_silence_ms ({self.turn_incomplete_silence_ms})"
            )
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
