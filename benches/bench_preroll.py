"""What the STT pre-roll buys (``SessionConfig.stt_preroll_ms``), on real speech.

The engine hands the STT the audio from ``stt_preroll_ms`` before the VAD's reported speech
start, because a VAD reports the start late and an STT that starts there loses the first
word. Two measurements, on the four recordings of ``../shared/data/speech``:

**Onset lateness** (``test_vad_onset_lateness``). Each recording is put in a stream built
around it, so that where its speech begins is known by construction: ``PAD_S`` of noise
floor, the recording, ``TAIL_S`` of noise floor. The true onset inside the recording is
defined offline on the clean file, independently of any VAD: the first 10 ms window whose
energy exceeds the recording's leading-silence floor (the median energy of its first
100 ms) by 15 dB; it is carried over unchanged to every variant of the stream (the noise is
ours, added after). 15 dB is conservative: a soft first consonant below it (``h`` of "he")
makes the true onset earlier still, so the lateness measured is, if anything, too small.
The column ``onset10_ms`` gives the 10 dB onset for comparison. The configured VAD
(``build_pipeline()``'s: Silero behind the Rust energy gate, or the energy VAD when the
model is missing, which the figures say) runs over the 16 kHz stream in 20 ms frames, as the
session feeds it. Lateness = the first ``SpeechStarted.sample`` minus the true onset (the
sample the pre-roll counts back from); ``detected_ms`` = when that event came out (end of
the frame whose ``process``/``flush`` returned it) minus the true onset, with the model run
inline (``vad.background = false``; the same samples, checked: in the session's background
thread the event comes about one frame later in real time, and arbitrarily later when the
audio is fed faster than real time, as here). The session confirms the turn later still
(``min_speech_ms``); the pre-roll counts back from the reported sample, not from then. Per
stream, p50 / p95 / max, and the fraction of streams whose onset a pre-roll of
0/100/200/300/500 ms covers (``lateness <= pre-roll``).

Variants of each recording (all real speech, nothing synthetic but the noise of the first,
second and fourth):

* ``recorded``: the recording as is, over a -64 dBFS white floor (as tests/test_offline_turn).
* ``quiet_floor50`` (held out): the voice 12 dB quieter, over a -50 dBFS white floor.
* ``room_tone`` (held out, synthetic-free): no generated noise at all: the floor is real
  room tone (the leading silences of the four recordings, looped) raised 12 dB.
* ``tight_crop`` (held out): the recording cut 50 ms before its onset, so the speech comes
  straight after the -64 dBFS floor, with none of the recording's own lead-in.

The VAD's parameters were not tuned on any of these.

**Words lost** (``test_preroll_words_lost``). The real engine: a ``Session`` per stream over
``memory_transport`` (16 kHz mic, no resampling), the offline pipeline's VAD and PocketSphinx
STT (``build_pipeline()`` / ``Pipeline.providers()``, fresh decoder per session), a scripted
LLM and TTS (``ScriptedLLM``/``ScriptedTTS``: only the hearing is measured), the session's
own real-clock pacer, real time (PocketSphinx decodes in worker threads; a mock clock would
run the mic ahead of it). The mic streams in real time. ``stt_preroll_ms`` = 0 and = 300
(the default) are two pipelines whose sessions hear the same stream at the same time. The
transcript of a stream is its turns' finals in order (a pause of more than the end-of-turn
silence splits a reading into turns; each turn's start gets the pre-roll). WER = word-level
Levenshtein distance / reference words, lower-cased, punctuation dropped, "mr"/"mrs"/"dr"
spelled out; summed over streams. First-word recall = share of streams whose reference's
first word is matched (aligned, not substituted) in the transcript. Ratio 0 ms / 300 ms.
The ceiling: the same decoder (a fresh ``SphinxSTT``) on the whole clean file, streamed in
20 ms frames as fast as it takes them (as tests/test_sphinx.py); also on the whole stream
(pads and noise included: it inserts words in them, so it is no ceiling, only a reference).
Four to eight streams: a word or two moves these figures; they are indicative.
``--quick``: goforward.wav (and librivox-0880.wav for the onsets), ``recorded`` only in the
engine.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trio

from harness.speech import Utterance, normalize
from voicecore.config import load_config
from voicecore.engine.stages import AudioFrame, SpeechStarted, TurnContext
from voicecore.engine.transport import memory_transport
from voicecore.pipeline import Pipeline, Providers, build_pipeline
from voicecore.protocol import Error
from voicecore.providers import SphinxSTT
from voicecore.providers.scripted import ScriptedLLM, ScriptedTTS

RATE = 16000
FRAME = 320  # 20 ms, as the session feeds the VAD
WIN = 160  # 10 ms energy windows for the true onset
PAD_S = 1.0
TAIL_S = 1.5
ONSET_DB = 15.0
PREROLLS_MS = (0, 100, 200, 300, 500)
ENGINE_PREROLLS_MS = (0, 300)
SEED = 20_250_301
QUICK_FILES = ("goforward.wav", "librivox-0880.wav")
# PocketSphinx must keep up with real time on a shared machine: more time for the final.
SETTINGS = {"session.stt_final_timeout_s": "10"}

Pcm = npt.NDArray[np.int16]


# --- the true onset and the streams ----------------------------------------------------------


def energy_onset(samples: Pcm, db: float = ONSET_DB) -> int:
    """First sample of the first 10 ms window whose energy exceeds the leading-silence floor
    (median energy of the first 100 ms) by ``db``."""
    x = samples.astype(np.float64)
    n = len(x) // WIN
    energy = 10 * np.log10(np.mean(x[: n * WIN].reshape(n, WIN) ** 2, axis=1) + 1e-9)
    floor = float(np.median(energy[:10]))
    above = np.flatnonzero(energy > floor + db)
    assert above.size, "no window above the floor: not speech"
    return int(above[0]) * WIN


def _pcm16(x: npt.NDArray[np.float64]) -> Pcm:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def room_tone(speech: list[Utterance]) -> npt.NDArray[np.float64]:
    """Real room tone: each recording's lead-in up to 100 ms before its onset, joined."""
    leads = [u.samples[: max(0, energy_onset(u.samples) - RATE // 10)] for u in speech]
    return np.concatenate(leads).astype(np.float64)


Variant = Callable[[Utterance, int, np.random.Generator], tuple[Pcm, int]]


def _padded(
    clip: npt.NDArray[np.float64], floor: Callable[[int], npt.NDArray[np.float64]]
) -> tuple[Pcm, int]:
    lead, tail = int(PAD_S * RATE), int(TAIL_S * RATE)
    x = np.concatenate([np.zeros(lead), clip, np.zeros(tail)])
    return _pcm16(x + floor(x.size)), lead


def variants(speech: list[Utterance]) -> dict[str, Variant]:
    tone = room_tone(speech)

    def white(sigma: float, rng: np.random.Generator) -> Callable[[int], Any]:
        return lambda n: rng.normal(0, sigma, n)

    def looped(n: int) -> npt.NDArray[np.float64]:
        return 4.0 * np.resize(tone, n)  # +12 dB

    def recorded(u: Utterance, onset: int, rng: np.random.Generator) -> tuple[Pcm, int]:
        pcm, lead = _padded(u.samples.astype(np.float64), white(20, rng))
        return pcm, lead + onset

    def quiet_floor50(u: Utterance, onset: int, rng: np.random.Generator) -> tuple[Pcm, int]:
        pcm, lead = _padded(u.samples.astype(np.float64) * 10 ** (-12 / 20), white(104, rng))
        return pcm, lead + onset

    def room(u: Utterance, onset: int, rng: np.random.Generator) -> tuple[Pcm, int]:
        pcm, lead = _padded(u.samples.astype(np.float64), looped)
        return pcm, lead + onset

    def tight_crop(u: Utterance, onset: int, rng: np.random.Generator) -> tuple[Pcm, int]:
        cut = max(0, onset - RATE // 20)
        pcm, lead = _padded(u.samples[cut:].astype(np.float64), white(20, rng))
        return pcm, lead + onset - cut

    return {
        "recorded": recorded,
        "quiet_floor50": quiet_floor50,
        "room_tone": room,
        "tight_crop": tight_crop,
    }


def streams(speech: list[Utterance], names: list[str]) -> list[dict[str, Any]]:
    """Every (recording, variant) stream with its true onset (a sample of the stream)."""
    rng = np.random.default_rng(SEED)
    out = []
    for name, make in variants(speech).items():
        if name not in names:
            continue
        for u in speech:
            onset = energy_onset(u.samples)
            pcm, true_onset = make(u, onset, rng)
            out.append(
                {
                    "file": u.name,
                    "variant": name,
                    "pcm": pcm,
                    "onset": true_onset,
                    "onset_in_file_ms": 1000 * onset / RATE,
                    "onset10_in_file_ms": 1000 * energy_onset(u.samples, 10.0) / RATE,
                    "utterance": u,
                }
            )
    return out


def default_pipeline(extra: dict[str, str] | None = None) -> Pipeline:
    """The offline pipeline of the default configuration (Silero, or the energy VAD with a
    fallback warning when the model is missing: ``vad_kind`` says which)."""
    config = load_config(env={}, flags={**SETTINGS, **(extra or {})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning; vad_kind is reported
        return build_pipeline(config)


def first_start(pipeline: Pipeline, pcm: Pcm) -> tuple[int | None, int | None]:
    """(first ``SpeechStarted.sample``, end sample of the frame that reported it) from a
    fresh VAD of ``pipeline`` fed ``pcm`` in 20 ms frames."""
    vad: Any = pipeline.providers().vad
    try:
        for offset in range(0, len(pcm), FRAME):
            frame = AudioFrame(pcm[offset : offset + FRAME].tobytes(), RATE, offset)
            for event in vad.process(frame):
                if isinstance(event, SpeechStarted):
                    return event.sample, frame.end_sample
        for event in vad.flush():
            if isinstance(event, SpeechStarted):
                return event.sample, len(pcm)
        return None, None
    finally:
        close = getattr(vad, "close", None)
        if close is not None:
            close()


def ms(samples: float) -> float:
    return round(1000 * samples / RATE, 1)


def test_vad_onset_lateness(
    speech: list[Utterance], quick: bool, benchmark: Any, report: Any
) -> None:
    corpus = [u for u in speech if u.name in QUICK_FILES] if quick else speech
    names = list(variants(speech))
    cases = streams(corpus, names)
    pipeline = default_pipeline()  # as configured: Silero in its background thread
    inline = default_pipeline({"vad.background": "false"})
    report.figure("vad_kind", pipeline.vad_kind)

    def measure() -> list[tuple[int | None, int | None]]:
        return [first_start(inline, case["pcm"]) for case in cases]

    found = benchmark.pedantic(measure, rounds=1, iterations=1)
    # What must hold: the reported start does not depend on where the model ran (only when
    # the event came out does: fed faster than real time, the background thread lags).
    configured = [first_start(pipeline, case["pcm"])[0] for case in cases]
    assert configured == [start for start, _ in found]
    lateness: dict[str, list[float]] = {"all": [], "held_out": []}
    for case, (start, reported_at) in zip(cases, found, strict=True):
        late = ms(start - case["onset"]) if start is not None else None
        report.row(
            file=case["file"],
            variant=case["variant"],
            onset_ms=round(case["onset_in_file_ms"], 1),
            onset10_ms=round(case["onset10_in_file_ms"], 1),
            lateness_ms=late if late is not None else "missed",
            detected_ms=ms(reported_at - case["onset"]) if reported_at is not None else "-",
        )
        # A missed start counts as never covered.
        value = late if late is not None else float("inf")
        lateness["all"].append(value)
        if case["variant"] != "recorded":
            lateness["held_out"].append(value)
    for group, values in lateness.items():
        if not values:
            continue
        arr = np.asarray(values)
        finite = arr[np.isfinite(arr)]
        summary: dict[str, Any] = {"file": f"ALL ({group})", "variant": f"n={arr.size}"}
        if finite.size:
            summary.update(
                p50_ms=round(float(np.percentile(finite, 50)), 1),
                p95_ms=round(float(np.percentile(finite, 95)), 1),
                max_ms=round(float(finite.max()), 1),
            )
        summary["missed"] = int(arr.size - finite.size)
        for preroll in PREROLLS_MS:
            covered = round(float(np.mean(arr <= preroll)), 3)
            summary[f"covered_{preroll}ms"] = covered
            report.figure(f"covered_{preroll}ms_{group}", covered)
        for key in ("p50_ms", "p95_ms", "max_ms"):
            if key in summary:
                report.figure(f"lateness_{key}_{group}", summary[key])
        report.figure(f"missed_{group}", summary["missed"])
        report.row(**summary)
    # What must hold: the true onsets lie inside the recordings, after their own lead-in.
    assert all(0 < c["onset_in_file_ms"] < 1000 * len(c["utterance"].samples) / RATE for c in cases)


# --- words lost: the real engine -------------------------------------------------------------


def align(reference: list[str], hypothesis: list[str]) -> tuple[int, list[bool]]:
    """(word errors, per reference word: matched by an identical hypothesis word)."""
    rows, cols = len(reference) + 1, len(hypothesis) + 1
    d = np.zeros((rows, cols), dtype=np.int64)
    d[:, 0] = np.arange(rows)
    d[0, :] = np.arange(cols)
    for i in range(1, rows):
        for j in range(1, cols):
            sub = d[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1])
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, sub)
    matched = [False] * len(reference)
    i, j = rows - 1, cols - 1
    while i > 0 and j > 0:
        same = reference[i - 1] == hypothesis[j - 1]
        if d[i, j] == d[i - 1, j - 1] + (not same):
            matched[i - 1] = same
            i, j = i - 1, j - 1
        elif d[i, j] == d[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return int(d[-1, -1]), matched


async def converse(pipeline: Pipeline, pcm: Pcm) -> dict[str, Any]:
    """Says ``pcm`` to a new session of ``pipeline`` (scripted LLM and TTS) in real time;
    returns once the session has been quiet for a second after the mic ended."""
    base = pipeline.providers()
    providers = Providers(
        vad=base.vad,
        stt=base.stt,
        llm=ScriptedLLM(["Okay."]),
        tts=ScriptedTTS(sample_rate=RATE, ms_per_char=30.0),
    )
    await pipeline.load(providers)
    transport, client = memory_transport(RATE)
    session = pipeline.session(transport, providers=providers)
    last_message = trio.current_time()

    async def listen() -> None:
        nonlocal last_message
        async for _ in client:
            last_message = trio.current_time()

    with trio.fail_after(len(pcm) / RATE + 30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            nursery.start_soon(listen)
            await client.stream_audio(pcm.tobytes())
            while (
                session.agent_active
                or session.turns.user_turn is not None
                or trio.current_time() - last_message < 1.0
            ):
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    finals = [t["text"] for t in client.events("transcript") if t["final"]]
    starts = [e["time_s"] for e in client.events("speech_start")]
    errors = [e for _, e in client.received if isinstance(e, Error)]
    return {"finals": finals, "speech_starts_s": starts, "errors": errors}


def engine_run(pipelines: dict[int, Pipeline], cases: list[dict[str, Any]]) -> list[Any]:
    """Each stream heard at once by one session per pre-roll; results per stream."""
    results: list[dict[int, dict[str, Any]]] = []

    async def main() -> None:
        for case in cases:
            heard: dict[int, dict[str, Any]] = {}

            async def one(preroll: int, case: dict[str, Any] = case, heard: Any = heard) -> None:
                heard[preroll] = await converse(pipelines[preroll], case["pcm"])

            async with trio.open_nursery() as nursery:
                for preroll in pipelines:
                    nursery.start_soon(one, preroll)
            results.append(heard)

    trio.run(main)
    return results


def whole_stream(pcms: list[Pcm]) -> list[str]:
    """A fresh SphinxSTT per recording, fed all of it in 20 ms frames: final texts."""
    texts: list[str] = []

    class Feed:
        def __init__(self, pcm: Pcm) -> None:
            self.frames = [
                AudioFrame(pcm[i : i + FRAME].tobytes(), RATE, i) for i in range(0, len(pcm), FRAME)
            ]

        def __aiter__(self) -> Any:
            return self

        async def __anext__(self) -> AudioFrame:
            await trio.lowlevel.checkpoint()
            if not self.frames:
                raise StopAsyncIteration
            return self.frames.pop(0)

    async def main() -> None:
        for pcm in pcms:
            stt = SphinxSTT()
            final = ""
            async for hyp in stt.transcribe(Feed(pcm), TurnContext.standalone("bench")):
                if hyp.is_final:
                    final = hyp.text
            texts.append(final)

    trio.run(main)
    return texts


@pytest.mark.timeout(600)
def test_preroll_words_lost(
    speech: list[Utterance], quick: bool, benchmark: Any, report: Any
) -> None:
    assert align(["a", "b", "c"], ["x", "b", "c", "d"]) == (2, [False, True, True])
    assert normalize("Mr. Ten, of clubs") == ["mister", "ten", "of", "clubs"]
    corpus = [u for u in speech if u.name == QUICK_FILES[0]] if quick else speech
    engine_variants = ["recorded"] if quick else ["recorded", "room_tone"]
    cases = streams(corpus, engine_variants)
    pipelines = {
        p: default_pipeline({"session.stt_preroll_ms": str(p)}) for p in ENGINE_PREROLLS_MS
    }
    for preroll, pipeline in pipelines.items():
        assert pipeline.config.session.stt_preroll_ms == preroll
    report.figure("vad_kind", pipelines[0].vad_kind)

    heard = benchmark.pedantic(lambda: engine_run(pipelines, cases), rounds=1, iterations=1)
    by_stream = whole_stream([c["pcm"] for c in cases])
    ceiling_file = whole_stream([u.samples for u in corpus])
    by_file = dict(zip([u.name for u in corpus], ceiling_file, strict=True))

    totals: dict[str, list[int]] = {}  # config -> [errors, words, first words recalled, n]

    def score(config: str, case: dict[str, Any], text: str, **extra: Any) -> None:
        reference = normalize(case["utterance"].transcript)
        errors, matched = align(reference, normalize(text))
        t = totals.setdefault(config, [0, 0, 0, 0])
        t[0], t[1], t[2], t[3] = t[0] + errors, t[1] + len(reference), t[2] + matched[0], t[3] + 1
        report.row(
            config=config,
            file=case["file"],
            variant=case["variant"],
            wer=round(errors / len(reference), 3),
            first_word=matched[0],
            **extra,
            transcript=text,
        )

    for case, runs, whole in zip(cases, heard, by_stream, strict=True):
        for preroll in ENGINE_PREROLLS_MS:
            run = runs[preroll]
            # What must hold: the session heard the speech and answered without errors.
            assert run["errors"] == [], run["errors"]
            assert run["finals"], (case["file"], case["variant"], preroll)
            start_ms = round(1000 * run["speech_starts_s"][0] - 1000 * case["onset"] / RATE, 1)
            score(
                f"engine {preroll} ms",
                case,
                " ".join(run["finals"]),
                turns=len(run["finals"]),
                start_lateness_ms=start_ms,
            )
        score("whole stream", case, whole)
        if case["variant"] == engine_variants[0]:
            score("whole clean file (ceiling)", case, by_file[case["file"]])

    wer: dict[str, float] = {}
    for config, (errors, words, first, n) in totals.items():
        key = re.sub(r"\W+", "_", config.split(" (")[0]).strip("_")
        wer[config] = errors / words
        recall = first / n
        report.row(
            config=config,
            file="ALL",
            variant=f"n={n}",
            wer=round(wer[config], 3),
            first_word=recall,
        )
        report.figure(f"wer_{key}", round(wer[config], 3))
        report.figure(f"first_word_recall_{key}", round(recall, 3))
    wer_0, wer_300 = wer["engine 0 ms"], wer["engine 300 ms"]
    report.figure("wer_0ms_over_300ms", round(wer_0 / wer_300, 3) if wer_300 else None)
    recall_of = {k: totals[f"engine {k} ms"][2] / totals[f"engine {k} ms"][3] for k in (0, 300)}
    report.figure(
        "first_word_recall_0ms_over_300ms",
        round(recall_of[0] / recall_of[300], 3) if recall_of[300] else None,
    )
