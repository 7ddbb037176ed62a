"""The new offline pipeline (Silero VAD + Moonshine base-en + responder + Piper joe medium,
``build_pipeline()``'s default) against the old one (Silero VAD + PocketSphinx + responder +
espeak-ng: ``VOICECORE_STT_KIND=sphinx``, ``VOICECORE_TTS_KIND=espeak``), through the real
engine (``Session`` over ``memory_transport``) with the real speech of
``../shared/data/speech``, in the same run.

* **Turns** (``test_offline_turns_new_vs_old``): each recording (``--quick``: one) is said to
  a new session of each pipeline (one ``Pipeline`` per mode for all its sessions, as the
  server runs them; clips one after another, the two modes alternating): the mic streams in
  real time (20 ms frames, 16 kHz) 500 ms of faint room noise (about -64 dBFS), the
  recording, then room noise until the agent's reply has played (``AgentDone``). Per clip
  and mode: the final's WER (``harness.speech.normalize``/``word_errors``), the engine's own
  ``TurnMetrics``: ``stt_final_ms`` (end of the user's speech -> final transcript),
  ``tts_first_audio_ms`` (the reply's first TTS call -> its first audio) and
  ``voice_to_voice_ms`` (end of speech -> first agent frame released), the final's
  *lateness* past the end of the turn (``stt_final_ms - end_of_turn_silence_ms``: negative
  when the final was ready before the 500 ms of silence had passed), and whether partials
  came before the final. Targets (the issue's): the final within 100 ms of the end of the
  turn at the p50, a clause's first audio within 150 ms.
* **Memory** (``test_offline_memory_per_session``): per mode, in a fresh interpreter (one
  mode's allocations do not pollute the other's), VmRSS after importing voicecore, after
  ``build_pipeline``, after opening N = 1, 2, 4, 8 sessions' providers (``providers()`` +
  ``load``: ``--quick``: N up to 2), and after one real inference through the first session
  (an STT decode and a TTS synthesis: onnxruntime's arenas grow on first use). Per-session
  cost = least-squares slope of RSS over N; start-up cost = built - imported.
* **Barge-in on Piper** (``test_piper_barge_in``): the new pipeline's VAD and STT, a
  ``ScriptedLLM`` saying a long paragraph (20 ms a word) and the real ``PiperTTS`` (wrapped
  only to timestamp its calls). The user asks, the agent speaks, and the user talks over it
  (another recording) 0.3, 0.45, 0.6 and 2.0 s after the reply began (``--quick``: 0.45 s):
  the engine confirms the barge-in ~0.6 s after the talking starts, so the first three cuts
  land during the reply's second Piper inference and the last one while the TTS waits on a
  full playout queue. Figures: cut (the engine's ``barge_in`` timeline event) -> the TTS
  call returned to the engine, whether an inference was in flight at the cut, Piper's
  withdrawn/dropped counts (an inference in flight finishes in its thread; its audio is
  dropped), and that the heard text in ``session.history`` is a prefix of what was said.

Only what must hold is asserted (every turn answered; the new WER below the old one's; the
heard text a prefix), never a timing: the machine is a shared 2-core VM and wall-clock
figures move with its load.

Measured (full run, 2 shared cores), with the Moonshine weights dequantized once at load and
the speculative decode at 100 ms of silence: WER 0.021 (new; "10" for "ten") vs 0.312 (old);
the final 81 ms p50 / 349 ms max past the end of the turn (target 100 ms p50: met; before
those two changes 839 / 2258 ms: the decode, ~0.35 s per second of speech, could not hide
in the pause), vs 20 / 34 ms (old); Piper's first audio p50 104 / max 126 ms (target 150 ms:
met) vs espeak-ng 1 ms; voice-to-voice p50 782 vs 596 ms; partials before every final in
both. RSS: 0 MB per session (new: models shared) vs 90 MB per PocketSphinx decoder; the new
pipeline's start-up and first inference cost ~0.9 GB once per process (onnxruntime's arenas,
the dequantized weights). Barge-in: cut -> Piper call returned 0.25-2.7 ms, 3 of 4 cuts with
an inference in flight (dropped), the heard text a prefix every time.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from harness.speech import Utterance, noise, normalize, voice, word_errors
from voicecore.config import load_config
from voicecore.engine.history import Message
from voicecore.engine.stages import AudioChunk, AudioFrame, TurnContext
from voicecore.engine.transport import MemoryClient, memory_transport
from voicecore.metrics import percentile
from voicecore.pipeline import Pipeline, build_pipeline
from voicecore.protocol import AgentAudio, AgentDone, Error
from voicecore.providers import PiperTTS, ScriptedLLM

MIC_RATE = 16_000
CLIENT_RATE = 48_000  # the agent's audio, at a browser's playback rate
FRAME = MIC_RATE // 50  # 20 ms
LEAD_S = 0.5
TURN_LIMIT_S = 40.0
FLAGS = {"session.stt_final_timeout_s": "10"}  # generous: the machine is shared
MODES: dict[str, dict[str, str]] = {
    "new": {},  # the default: Moonshine + Piper
    "old": {"VOICECORE_STT_KIND": "sphinx", "VOICECORE_TTS_KIND": "espeak"},
}
QUICK_CLIP = "librivox-0880.wav"
LATENESS_TARGET_MS = 100.0
FIRST_AUDIO_TARGET_MS = 150.0

PARAGRAPH = (
    "The old lighthouse on the northern cape was built in eighteen sixty two by a company "
    "of stonemasons who came up from the south, and it took them almost four years to "
    "finish the tower, because the winter storms kept washing away their scaffolding. The "
    "keeper and his family lived in the small cottage beside it for more than forty years, "
    "and they kept a diary of every ship that passed, every storm that struck the coast, "
    "and every visitor who climbed the hundred and twenty steps up to the lantern room. "
    "Today the lighthouse is a museum, and on a clear afternoon you can still sit by the "
    "window where the keeper wrote, and read his diary while the gulls circle the rocks "
    "below."
)


def _pipeline(mode: str) -> Pipeline:
    return build_pipeline(load_config(env=MODES[mode], flags=FLAGS))


def _p(values: list[float], q: float) -> float:
    return percentile(sorted(values), q)


# --- the mic -----------------------------------------------------------------------------------


def _noise(rng: np.random.Generator) -> bytes:
    """One 20 ms frame of faint room noise (about -64 dBFS)."""
    return rng.normal(0, 20, FRAME).astype("<i2").tobytes()


def _speech_frames(utterance: Utterance, rng: np.random.Generator) -> Iterator[bytes]:
    assert utterance.sample_rate == MIC_RATE
    samples = utterance.samples.astype(np.float64)
    samples = np.concatenate([samples, np.zeros(-len(samples) % FRAME)])
    samples += rng.normal(0, 20, samples.size)
    pcm = np.clip(samples, -32768, 32767).astype("<i2")
    for i in range(0, pcm.size, FRAME):
        yield pcm[i : i + FRAME].tobytes()


async def _mic(
    client: MemoryClient,
    first: Utterance,
    *,
    barge_in: Utterance | None = None,
    talk_over: Callable[[], bool] | None = None,
) -> None:
    """A live mic at 16 kHz: room noise, ``first``, room noise (until ``talk_over()``, then
    ``barge_in`` and room noise again) until cancelled."""
    rng = np.random.default_rng(4)

    def frames() -> Iterator[bytes]:
        for _ in range(int(LEAD_S * 50)):
            yield _noise(rng)
        yield from _speech_frames(first, rng)
        if barge_in is not None and talk_over is not None:
            while not talk_over():
                yield _noise(rng)
            yield from _speech_frames(barge_in, rng)
        while True:
            yield _noise(rng)

    start = trio.current_time()
    for index, frame in enumerate(frames()):
        await trio.sleep_until(start + (index + 1) * FRAME / MIC_RATE)
        await client.send_audio(frame)


async def _warm_up(pipeline: Pipeline) -> None:
    """One STT decode and one TTS synthesis, so that no turn pays a model's first run (the
    server's first conversation would; its later ones do not)."""
    providers = pipeline.providers()
    await pipeline.load(providers)
    ctx = TurnContext.standalone("warm-up")
    pcm = voice(1000, MIC_RATE) + noise(600, MIC_RATE)

    async def frames() -> AsyncIterator[AudioFrame]:
        for i in range(0, len(pcm), 2 * FRAME):
            yield AudioFrame(pcm[i : i + 2 * FRAME], MIC_RATE, i // 2)
            await trio.lowlevel.checkpoint()

    async for _ in providers.stt.transcribe(frames(), ctx):
        pass
    async for _ in pipeline.tts.synthesize("Hello there, how can I help you?", ctx):
        pass


# --- one turn through the real engine ----------------------------------------------------------


async def _turn(pipeline: Pipeline, utterance: Utterance) -> dict[str, Any]:
    """Says ``utterance`` to a new session of ``pipeline``: the turn's figures."""
    providers = pipeline.providers()
    await pipeline.load(providers)
    transport, client = memory_transport(CLIENT_RATE, input_rate=MIC_RATE)
    session = pipeline.session(transport, providers=providers)
    with trio.fail_after(TURN_LIMIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            nursery.start_soon(_mic, client, utterance)
            async for message in client:
                if isinstance(message, AgentDone | Error):
                    break
            nursery.cancel_scope.cancel()
    errors = client.events("error")
    done = client.events("agent_done")
    transcripts = client.events("transcript")
    finals = [i for i, t in enumerate(transcripts) if t["final"]]
    final = transcripts[finals[0]]["text"] if finals else ""
    reference = normalize(utterance.transcript)
    turn = session.metrics.turns[0] if session.metrics.turns else None
    eot_ms = session.config.end_of_turn_silence_ms
    stt_ms = turn.stt_final_ms if turn is not None else None
    return {
        "answered": bool(done) and not errors and bool(finals) and turn is not None,
        "errors": errors,
        "final": final,
        "word_errors": word_errors(reference, normalize(final)),
        "words": len(reference),
        "partials_before_final": sum(1 for t in transcripts[: finals[0]] if not t["final"])
        if finals
        else 0,
        "stt_final_ms": stt_ms,
        "lateness_ms": stt_ms - eot_ms if stt_ms is not None else None,
        "tts_first_audio_ms": turn.tts_first_audio_ms if turn is not None else None,
        "voice_to_voice_ms": turn.voice_to_voice_ms if turn is not None else None,
        "reply": " ".join(e["text"] for e in client.events("agent_text")),
        "stt_stats": providers.stt.stats() if hasattr(providers.stt, "stats") else None,
    }


def _speculative(stats: Any) -> str:
    """Moonshine's final reused its speculative decode (made in the end-of-turn pause)."""
    if stats is None or not hasattr(stats, "speculative_finals"):
        return "-"
    return f"{stats.speculative_finals}/{stats.finals}"


@pytest.mark.timeout(900)
def test_offline_turns_new_vs_old(
    speech: list[Utterance], quick: bool, benchmark: Any, report: Any
) -> None:
    clips = [u for u in speech if u.name == QUICK_CLIP] if quick else speech
    pipelines = {mode: _pipeline(mode) for mode in MODES}
    assert pipelines["new"].config.stt.kind == "moonshine"
    assert type(pipelines["new"].tts).__name__ == "PiperTTS"
    assert pipelines["old"].config.stt.kind == "sphinx"
    assert type(pipelines["old"].tts).__name__ == "EspeakTTS"
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for pipeline in pipelines.values():
        trio.run(_warm_up, pipeline)

    def run_all() -> None:
        for index, utterance in enumerate(clips):
            # The two modes alternate which goes first, so the machine's load drifts on both.
            order = list(MODES) if index % 2 == 0 else list(reversed(MODES))
            for mode in order:
                results[mode].append(trio.run(_turn, pipelines[mode], utterance))

    benchmark.pedantic(run_all, rounds=1, iterations=1)

    for mode in MODES:
        for utterance, r in zip(clips, results[mode], strict=True):
            report.row(
                mode=mode,
                clip=utterance.name,
                audio_s=round(len(utterance.samples) / MIC_RATE, 2),
                wer=round(r["word_errors"] / r["words"], 3),
                stt_final_ms=r["stt_final_ms"],
                late_ms=r["lateness_ms"],
                tts_first_ms=r["tts_first_audio_ms"],
                v2v_ms=r["voice_to_voice_ms"],
                partials=r["partials_before_final"],
                speculative_final=_speculative(r["stt_stats"]),
                final=r["final"],
            )
    summary: dict[str, dict[str, float]] = {}
    for mode in MODES:
        rs = [r for r in results[mode] if r["answered"]]
        figures: dict[str, float] = {
            "wer": sum(r["word_errors"] for r in results[mode])
            / sum(r["words"] for r in results[mode])
        }
        for key in ("stt_final_ms", "lateness_ms", "tts_first_audio_ms", "voice_to_voice_ms"):
            values = [r[key] for r in rs if r[key] is not None]
            figures[f"{key}_p50"] = _p(values, 50) if values else float("nan")
            figures[f"{key}_max"] = max(values) if values else float("nan")
        summary[mode] = figures
        with_partials = sum(r["partials_before_final"] > 0 for r in results[mode])
        report.row(
            mode=f"{mode} (p50 / max)",
            clip=f"{len(rs)}/{len(clips)} answered",
            wer=round(figures["wer"], 3),
            stt_final_ms=f"{figures['stt_final_ms_p50']:.0f} / {figures['stt_final_ms_max']:.0f}",
            late_ms=f"{figures['lateness_ms_p50']:.0f} / {figures['lateness_ms_max']:.0f}",
            tts_first_ms=(
                f"{figures['tts_first_audio_ms_p50']:.0f} / {figures['tts_first_audio_ms_max']:.0f}"
            ),
            v2v_ms=(
                f"{figures['voice_to_voice_ms_p50']:.0f} / {figures['voice_to_voice_ms_max']:.0f}"
            ),
            partials=f"{with_partials}/{len(clips)} clips",
        )
        for name, value in figures.items():
            report.figure(f"{mode}_{name}", round(value, 4 if name == "wer" else 1))
        report.figure(f"{mode}_clips_with_partials_before_final", f"{with_partials}/{len(clips)}")
    new, old = summary["new"], summary["old"]
    ratios = {
        "wer": new["wer"] / old["wer"] if old["wer"] else float("nan"),
        **{
            key: new[f"{key}_p50"] / old[f"{key}_p50"]
            for key in ("stt_final_ms", "tts_first_audio_ms", "voice_to_voice_ms")
        },
    }
    report.row(
        mode="ratio new/old (p50)",
        wer=round(ratios["wer"], 3),
        stt_final_ms=round(ratios["stt_final_ms"], 3),
        tts_first_ms=round(ratios["tts_first_audio_ms"], 3),
        v2v_ms=round(ratios["voice_to_voice_ms"], 3),
    )
    for key, value in ratios.items():
        report.figure(f"ratio_new_over_old_{key}", round(value, 3))
    report.figure(
        "target_final_within_100ms_of_end_of_turn_p50_new",
        "met" if new["lateness_ms_p50"] <= LATENESS_TARGET_MS else "missed",
    )
    report.figure(
        "target_first_audio_within_150ms_p50_new",
        "met" if new["tts_first_audio_ms_p50"] <= FIRST_AUDIO_TARGET_MS else "missed",
    )
    report.figure(
        "target_first_audio_within_150ms_max_new",
        "met" if new["tts_first_audio_ms_max"] <= FIRST_AUDIO_TARGET_MS else "missed",
    )

    for mode in MODES:
        for utterance, r in zip(clips, results[mode], strict=True):
            assert r["answered"], (mode, utterance.name, r["errors"])
            assert r["reply"], (mode, utterance.name)
    if quick:  # one clip: both may be perfect
        assert new["wer"] <= old["wer"]
    else:
        assert new["wer"] < old["wer"]


# --- memory: models shared by every session ----------------------------------------------------

_RSS_PROBE = """
import json, sys, warnings

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

import numpy as np
import trio
from harness.speech import load_corpus
from voicecore.config import load_config
from voicecore.engine.stages import AudioFrame, TurnContext
from voicecore.pipeline import build_pipeline

env, flags, counts = (json.loads(a) for a in sys.argv[1:4])
out = {"imported": rss()}
pipeline = build_pipeline(load_config(env=env, flags=flags))
out["built"] = rss()
held = []

async def frames(samples):
    for i in range(0, len(samples), 320):
        yield AudioFrame(samples[i : i + 320].tobytes(), 16000, i)
        await trio.lowlevel.checkpoint()

async def main():
    for n in counts:
        while len(held) < n:
            providers = pipeline.providers()
            await pipeline.load(providers)
            held.append(providers)
        out[str(n)] = rss()
    clip = next(u for u in load_corpus() if u.name == "goforward.wav").samples
    ctx = TurnContext.standalone("probe")
    async for _ in held[0].stt.transcribe(frames(clip), ctx):
        pass
    async for _ in held[0].tts.synthesize("Hello there, how can I help you today?", ctx):
        pass
    out["after_inference"] = rss()

trio.run(main)
print(json.dumps(out))
"""


def _rss_probe(mode: str, counts: list[int]) -> dict[str, float]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _RSS_PROBE,
            json.dumps(MODES[mode]),
            json.dumps(FLAGS),
            json.dumps(counts),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.timeout(900)
def test_offline_memory_per_session(
    speech: list[Utterance], quick: bool, benchmark: Any, report: Any
) -> None:
    counts = [1, 2] if quick else [1, 2, 4, 8]
    probes: dict[str, dict[str, float]] = {}

    def run_all() -> None:
        for mode in MODES:
            probes[mode] = _rss_probe(mode, counts)

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    slopes: dict[str, float] = {}
    for mode, mb in probes.items():
        rss = [mb[str(n)] for n in counts]
        slope = float(np.polyfit(counts, rss, 1)[0])
        startup = mb["built"] - mb["imported"]
        slopes[mode] = slope
        report.row(
            mode=mode,
            imported_mb=round(mb["imported"], 1),
            built_mb=round(mb["built"], 1),
            **{f"n{n}_mb": round(mb[str(n)], 1) for n in counts},
            after_inference_mb=round(mb["after_inference"], 1),
            startup_mb=round(startup, 1),
            per_session_mb=round(slope, 2),
        )
        report.figure(f"{mode}_startup_mb", round(startup, 1))
        report.figure(f"{mode}_per_session_mb", round(slope, 2))
        report.figure(
            f"{mode}_first_inference_mb", round(mb["after_inference"] - mb[str(counts[-1])], 1)
        )
        report.figure(f"{mode}_rss_mb", {k: round(v, 1) for k, v in mb.items()})
    report.figure(
        "ratio_new_over_old_per_session",
        round(slopes["new"] / slopes["old"], 3) if slopes["old"] else None,
    )


# --- barge-in on Piper -------------------------------------------------------------------------


class WatchedTTS:
    """A TTS that passes every call to ``inner`` and timestamps (Trio clock) when it waited
    for a chunk (an inference in flight) and when the call returned to the engine."""

    def __init__(self, inner: PiperTTS) -> None:
        self.inner = inner
        self.waits: list[tuple[float, float]] = []
        self.returned: list[float] = []

    @property
    def sample_rate(self) -> int:
        return self.inner.sample_rate

    async def synthesize(self, text: str, ctx: TurnContext) -> AsyncIterator[AudioChunk]:
        chunks = self.inner.synthesize(text, ctx)
        try:
            while True:
                asked = trio.current_time()
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    self.waits.append((asked, trio.current_time()))
                yield chunk
        finally:
            with trio.CancelScope(shield=True):
                await chunks.aclose()
            self.returned.append(trio.current_time())


class TimedLLM(ScriptedLLM):
    """A ``ScriptedLLM`` that calls ``on_start`` when a reply begins."""

    def __init__(self, replies: list[str], *, on_start: Callable[[], None], **delays: float):
        super().__init__(replies, **delays)
        self.on_start = on_start

    async def generate(self, messages: Sequence[Message], ctx: TurnContext) -> AsyncIterator[str]:
        self.on_start()
        async for delta in super().generate(messages, ctx):
            yield delta


async def _barge_in(
    pipeline: Pipeline, question: Utterance, interruption: Utterance, delay_s: float
) -> dict[str, Any]:
    tts = pipeline.tts
    assert isinstance(tts, PiperTTS)
    watched = WatchedTTS(tts)
    talk_at: list[float] = []
    llm = TimedLLM(
        [PARAGRAPH],
        on_start=lambda: talk_at.append(trio.current_time() + delay_s),
        token_delay_s=0.02,
    )
    providers = dataclasses.replace(pipeline.providers(), llm=llm, tts=watched)  # type: ignore[arg-type]
    await pipeline.load(providers)
    transport, client = memory_transport(CLIENT_RATE, input_rate=MIC_RATE)
    session = pipeline.session(transport, providers=providers)
    before = tts.voice.stats()
    with trio.fail_after(TURN_LIMIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            nursery.start_soon(
                lambda: _mic(
                    client,
                    question,
                    barge_in=interruption,
                    talk_over=lambda: bool(talk_at) and trio.current_time() >= talk_at[0],
                )
            )
            async for message in client:
                if isinstance(message, Error):
                    break
                if isinstance(message, AgentDone) and message.turn_id == 1:
                    break
            nursery.cancel_scope.cancel()
    # The in-flight inference finishes in its thread: wait for it before reading the counts.
    for _ in range(100):
        if tts.voice.stats().running == 0:
            break
        time.sleep(0.02)
    after = tts.voice.stats()
    cuts = session.timeline.events("barge_in")
    cut_t = cuts[0]["t"] if cuts else None
    returned = [t for t in watched.returned if cut_t is not None and t >= cut_t]
    in_flight = cut_t is not None and any(a <= cut_t < b for a, b in watched.waits)
    agent = [m for m in session.history.messages() if m.role == "assistant"]
    heard = agent[0].content if agent else ""
    said = " ".join(e["text"] for e in client.events("agent_text") if e["turn_id"] == 1)
    done = next(e for e in client.events("agent_done") if e["turn_id"] == 1)
    first_audio = next(
        (t for t, m in client.received if isinstance(m, AgentAudio)), None
    )  # the client's first agent frame
    return {
        "interrupted": done["interrupted"],
        "errors": client.events("error"),
        "cut_to_tts_return_ms": 1000 * (returned[0] - cut_t) if returned and cut_t else None,
        "inference_in_flight_at_cut": in_flight,
        "cut_after_first_audio_s": (cut_t - first_audio) if cut_t and first_audio else None,
        "barge_in_ms": session.metrics.turns[0].barge_in_ms if session.metrics.turns else None,
        "withdrawn": after.withdrawn - before.withdrawn,
        "dropped": after.dropped - before.dropped,
        "heard": heard,
        "said": said,
        "waits": [(a - cut_t, b - a) for a, b in watched.waits] if cut_t else [],
    }


@pytest.mark.timeout(900)
def test_piper_barge_in(speech: list[Utterance], quick: bool, benchmark: Any, report: Any) -> None:
    pipeline = _pipeline("new")
    trio.run(_warm_up, pipeline)
    question = next(u for u in speech if u.name == "goforward.wav")
    interruption = next(u for u in speech if u.name == "librivox-0880.wav")
    delays = [0.45] if quick else [0.3, 0.45, 0.6, 2.0]
    results: list[dict[str, Any]] = []

    def run_all() -> None:
        for delay_s in delays:
            results.append(trio.run(_barge_in, pipeline, question, interruption, delay_s))

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    said_words = normalize(PARAGRAPH)
    for delay_s, r in zip(delays, results, strict=True):
        heard_words = normalize(r["heard"])
        report.row(
            talk_over_after_reply_start_s=delay_s,
            cut_after_first_audio_s=round(r["cut_after_first_audio_s"] or float("nan"), 2),
            inference_in_flight=r["inference_in_flight_at_cut"],
            cut_to_tts_return_ms=round(r["cut_to_tts_return_ms"] or float("nan"), 2),
            engine_barge_in_ms=round(r["barge_in_ms"] or float("nan"), 1),
            withdrawn=r["withdrawn"],
            dropped=r["dropped"],
            heard_words=f"{len(heard_words)}/{len(said_words)}",
            heard_is_prefix=heard_words == said_words[: len(heard_words)],
        )
    returns = [r["cut_to_tts_return_ms"] for r in results if r["cut_to_tts_return_ms"] is not None]
    if returns:
        report.figure("cut_to_tts_return_ms_max", round(max(returns), 2))
    report.figure(
        "cuts_with_inference_in_flight",
        f"{sum(r['inference_in_flight_at_cut'] for r in results)}/{len(results)}",
    )
    for r in results:
        assert not r["errors"], r["errors"]
        assert r["interrupted"], r
        heard_words = normalize(r["heard"])
        assert heard_words == said_words[: len(heard_words)], (r["heard"], PARAGRAPH)
        assert normalize(r["said"]) == said_words[: len(normalize(r["said"]))]


@pytest.fixture(autouse=True)
def _piper_voice(piper_voice_dir: Path, moonshine_model_dir: Path) -> None:
    """Skips (with the fetch command) when the new pipeline's models are missing."""
    del piper_voice_dir, moonshine_model_dir
