"""From a configuration to running sessions: the providers it chooses, built and checked at
start-up (:func:`build_pipeline`), and the :class:`Pipeline` that makes each session's stages.

Each provider module is imported only when it is chosen, so a missing optional package or model
gives a clear message naming the setting.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from voicecore.config import VadConfig, VoicecoreConfig
from voicecore.engine.stages import LLM, STT, TTS, VAD, EnergyVadStage, TurnEndModel
from voicecore.exceptions import (
    ConfigError,
    ModelFallbackWarning,
    ModelNotFoundError,
    SynthesisError,
    VadFallbackWarning,
)

if TYPE_CHECKING:
    from voicecore._core import FramePacer
    from voicecore.engine.playout import PlayoutRouter
    from voicecore.engine.session import Session
    from voicecore.engine.transport import Transport

__all__ = ["Pipeline", "Providers", "build_pipeline", "scripted_pipeline"]

_log = logging.getLogger("voicecore.pipeline")
T = TypeVar("T")


@dataclass(frozen=True)
class Providers:
    """The stages of one session.

    Attributes:
        vad: this session's VAD (it holds the session's speech state).
        stt: this session's STT (PocketSphinx holds one decoder per session).
        llm: the LLM (shared by the pipeline's sessions).
        tts: the TTS (shared by the pipeline's sessions).
    """

    vad: VAD
    stt: STT
    llm: LLM
    tts: TTS


def _import(module: str, what: str, install: str) -> Any:
    """Imports a provider module, or raises ConfigError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what} needs {install}: {exc}") from exc


def _named(path: str, build: Callable[[], T]) -> T:
    """Calls ``build``; a ConfigError it raises is re-raised naming the setting ``path``."""
    try:
        return build()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


class Pipeline:
    """The providers a configuration chooses, ready to run sessions.

    Built by :func:`build_pipeline`, which instantiates and checks every provider at
    start-up, so a bad setting fails before the first conversation. The LLM and the TTS
    are shared by all sessions; the VAD and the STT hold per-conversation state, so
    :meth:`providers` makes new ones for each session.

    Attributes:
        config: the configuration it was built from.
        vad_kind: the VAD actually used: ``"silero"``, or ``"energy"`` (chosen, or the
            fallback when the Silero model or onnxruntime is missing).
        llm: the shared LLM.
        tts: the shared TTS.
        turn_model: the shared end-of-turn model (None: a fixed silence ends turns).
    """

    def __init__(
        self,
        config: VoicecoreConfig,
        *,
        vad_kind: Literal["silero", "energy"],
        new_vad: Callable[[], VAD],
        new_stt: Callable[[], STT],
        llm: LLM,
        tts: TTS,
        turn_model: TurnEndModel | None = None,
    ) -> None:
        self.config = config
        self.vad_kind = vad_kind
        self.llm = llm
        self.tts = tts
        self.turn_model = turn_model
        self._new_vad = new_vad
        self._new_stt = new_stt

    def __repr__(self) -> str:
        return (
            f"Pipeline(vad={self.vad_kind!r}, turn={self.turn_model!r}, "
            f"stt={self.config.stt.kind!r}, llm={self.llm!r}, tts={self.tts!r})"
        )

    def providers(self) -> Providers:
        """The stages of one new session: a new VAD and STT, the shared LLM and TTS."""
        return Providers(vad=self._new_vad(), stt=self._new_stt(), llm=self.llm, tts=self.tts)

    async def load(self, providers: Providers) -> None:
        """Loads ``providers``' models now rather than on first use (the PocketSphinx
        decoder takes ~0.25 s), so the first turn is no slower than the next ones."""
        for stage in (providers.vad, providers.stt, providers.llm, providers.tts):
            load = getattr(stage, "load", None)
            if load is not None and inspect.iscoroutinefunction(load):
                await load()

    def session(
        self,
        transport: Transport,
        *,
        providers: Providers | None = None,
        pacer: FramePacer | PlayoutRouter | None = None,
        **kwargs: Any,
    ) -> Session:
        """A ``Session`` over ``transport`` with this pipeline's stages and settings
        (``config.session``, ``config.llm.system_prompt``).

        Args:
            transport: the client connection.
            providers: the session's stages; by default :meth:`providers` makes them (call
                :meth:`load` on them first to preload their models).
            pacer: a ``PlayoutRouter`` shared by sessions, a ``FramePacer``, or None (the
                session runs its own real-clock pacer); see ``voicecore.Session``.
            **kwargs: other ``Session`` arguments (``timeline``, ``canary``...).
        """
        from voicecore.engine.session import Session

        stages = providers if providers is not None else self.providers()
        return Session(
            transport,
            vad=stages.vad,
            turn_model=self.turn_model,
            stt=stages.stt,
            llm=stages.llm,
            tts=stages.tts,
            system_prompt=self.config.llm.system_prompt,
            config=self.config.session,
            pacer=pacer,
            **kwargs,
        )

    def release_memory(self) -> None:
        """Gives back the memory the shared providers hold beyond what they need at rest
        (the providers that can: a Piper voice's onnxruntime arena). Blocking, thread-safe:
        the server calls it in a worker thread once a burst of conversations is over."""
        for stage in (self.llm, self.tts):
            release = getattr(stage, "release_memory", None)
            if release is not None:
                release()

    async def aclose(self) -> None:
        """Closes the shared providers' network clients (the providers that have one)."""
        for stage in (self.llm, self.tts):
            aclose = getattr(stage, "aclose", None)
            if aclose is not None:
                await aclose()


def _vad_factory(config: VadConfig) -> tuple[Literal["silero", "energy"], Callable[[], VAD]]:
    """The VAD kind in use and a factory of per-session VADs (Silero checked once here)."""
    if config.kind == "energy":
        return "energy", EnergyVadStage
    from voicecore.providers import silero

    def new_silero() -> VAD:
        return silero.SileroVad(
            config.model_path,
            threshold=config.threshold,
            neg_threshold=config.neg_threshold,
            min_speech_ms=config.min_speech_ms,
            min_silence_ms=config.min_silence_ms,
            speech_pad_ms=config.speech_pad_ms,
            gate=config.gate,
            background=config.background,
        )

    try:
        probe = new_silero()  # at start-up: a missing or broken model fails now, not in a turn
    except (ModelNotFoundError, ImportError) as exc:
        if not config.fallback:
            raise ConfigError(f"vad.model_path: {exc} (vad.fallback is off)") from exc
        message = f"{exc} Falling back to the energy VAD (vad.kind = 'energy' chooses it)."
        _log.warning("%s", message)
        warnings.warn(message, VadFallbackWarning, stacklevel=3)
        return "energy", EnergyVadStage
    except ConfigError as exc:
        raise ConfigError(f"vad.model_path: {exc}") from exc
    close = getattr(probe, "close", None)
    if close is not None:
        close()
    return "silero", new_silero


SMART_TURN_THREADS = 1
"""onnxruntime threads per Smart Turn prediction: on a 2-core server busy with other sessions,
two threads were never faster than one (p50 ratio 1.04-1.26) and cost ~10 % more CPU."""


def _turn_model(config: VoicecoreConfig) -> TurnEndModel | None:
    """The shared end-of-turn model ``turn.kind`` asks for; None for a fixed silence (chosen,
    or when Smart Turn is not fetched and ``turn.fallback`` allows the silence instead)."""
    if config.turn.kind == "silence":
        return None
    from voicecore import models
    from voicecore.providers import smart_turn

    try:
        path = models.require("smart-turn-v3.2")
        model = smart_turn.SmartTurn.shared(path, intra_op_threads=SMART_TURN_THREADS)
    except ModelNotFoundError as exc:
        if not config.turn.fallback:
            raise ConfigError(
                f"turn.kind: {exc} Or end turns after a fixed silence (--turn-kind silence), "
                "or let it stand in when the model is missing (--turn-fallback)."
            ) from exc
        message = f"{exc} Ending turns after a fixed silence instead (turn.fallback is on)."
        _log.warning("%s", message)
        warnings.warn(message, ModelFallbackWarning, stacklevel=3)
        return None
    return smart_turn.SmartTurnEnd(model, config.turn.threshold)


def _moonshine(config: VoicecoreConfig) -> Callable[[], STT] | None:
    """Per-session Moonshine STTs over one model loaded here for every session; None when the
    model is not fetched and ``stt.fallback`` asks for PocketSphinx instead."""
    from voicecore import models
    from voicecore.providers import moonshine, moonshine_model

    name = config.stt.moonshine_model
    try:
        model = moonshine_model.MoonshineModel.shared(models.require(name))
    except ModelNotFoundError as exc:
        if not config.stt.fallback:
            raise ConfigError(
                f"{exc} Or choose PocketSphinx (--stt-kind sphinx), or let it stand in when "
                "the model is missing (--stt-fallback)."
            ) from exc
        message = f"{exc} Transcribing with PocketSphinx instead (stt.fallback is on)."
        _log.warning("%s", message)
        warnings.warn(message, ModelFallbackWarning, stacklevel=4)
        return None

    def new_moonshine() -> STT:
        return moonshine.MoonshineSTT(model)

    return new_moonshine


def _stt_factory(config: VoicecoreConfig) -> Callable[[], STT]:
    """A factory of per-session STTs (one built here to check the settings)."""
    stt = config.stt
    if stt.kind == "moonshine":
        new_moonshine = _named("stt.moonshine_model", lambda: _moonshine(config))
        if new_moonshine is not None:
            return new_moonshine
    if stt.kind in ("moonshine", "sphinx"):
        if importlib.util.find_spec("pocketsphinx") is None:
            raise ConfigError(
                "stt.kind: 'sphinx' needs the pocketsphinx package: pip install pocketsphinx"
            )
        from voicecore.providers import sphinx

        options: dict[str, str] = {}
        for key in ("hmm", "lm", "dict"):
            value = getattr(stt, f"sphinx_{key}")
            if value is not None:
                if not Path(value).exists():
                    raise ConfigError(f"stt.sphinx_{key}: {value} does not exist")
                options[key] = value

        def new_sphinx() -> STT:
            return sphinx.SphinxSTT(decoder_options=options)

        _named("stt", new_sphinx)
        return new_sphinx
    openai = _import("voicecore.providers.openai", "stt.kind: 'openai'", "httpx")
    shared: STT = _named(
        "stt",
        lambda: openai.OpenAISTT(
            stt.model,
            base_url=stt.base_url,
            api_key=stt.api_key,
            language=stt.language,
            prompt=stt.prompt,
            connect_timeout_s=stt.connect_timeout_s,
            timeout_s=config.session.stt_final_timeout_s,
            max_retries=stt.max_retries,
        ),
    )
    return lambda: shared  # per utterance, no state between calls: one for all sessions


def _llm(config: VoicecoreConfig) -> LLM:
    llm = config.llm
    if llm.kind == "responder":
        from voicecore.providers.responder import RuleBasedResponder

        return _named(
            "llm.token_delay_s", lambda: RuleBasedResponder(token_delay_s=llm.token_delay_s)
        )
    openai = _import("voicecore.providers.openai", "llm.kind: 'openai'", "httpx")
    extra: dict[str, Any] = {}
    if llm.temperature is not None:
        extra["temperature"] = llm.temperature
    if llm.max_tokens is not None:
        extra["max_tokens"] = llm.max_tokens
    built: LLM = _named(
        "llm",
        lambda: openai.OpenAILLM(
            llm.model,
            base_url=llm.base_url,
            api_key=llm.api_key,
            connect_timeout_s=llm.connect_timeout_s,
            first_token_timeout_s=config.session.llm_first_token_timeout_s,
            token_timeout_s=config.session.llm_token_timeout_s,
            max_retries=llm.max_retries,
            extra_body=extra,
        ),
    )
    return built


def _piper(config: VoicecoreConfig) -> TTS | None:
    """The Piper voice ``tts.piper_voice``, loaded once for every session; None when it is
    not fetched and ``tts.fallback`` asks for espeak-ng instead."""
    from voicecore import models
    from voicecore.providers import piper

    name = config.tts.piper_voice
    try:
        return piper.PiperTTS(piper.PiperVoice.shared(models.require(name)))
    except ModelNotFoundError as exc:
        if not config.tts.fallback:
            raise ConfigError(
                f"{exc} Or choose espeak-ng (--tts-kind espeak), or let it stand in when the "
                "voice is missing (--tts-fallback)."
            ) from exc
        message = f"{exc} Speaking with espeak-ng instead (tts.fallback is on)."
        _log.warning("%s", message)
        warnings.warn(message, ModelFallbackWarning, stacklevel=4)
        return None


def _tts(config: VoicecoreConfig) -> TTS:
    tts = config.tts
    if tts.kind == "piper":
        voice = _named("tts.piper_voice", lambda: _piper(config))
        if voice is not None:
            return voice
    if tts.kind in ("piper", "espeak"):
        espeak = _import(
            "voicecore.providers.espeak",
            "tts.kind: 'espeak'",
            "cffi and espeakng-loader (pip install cffi espeakng-loader)",
        )
        try:
            built: TTS = espeak.EspeakTTS(tts.voice or "en-us", rate_wpm=tts.rate_wpm)
        except ConfigError as exc:
            raise ConfigError(f"tts.voice: {exc}") from exc
        except SynthesisError as exc:
            raise ConfigError(f"tts.kind: espeak-ng cannot be loaded: {exc}") from exc
        return built
    openai = _import("voicecore.providers.openai", "tts.kind: 'openai'", "httpx")
    built = _named(
        "tts",
        lambda: openai.OpenAITTS(
            tts.model,
            tts.voice,
            base_url=tts.base_url,
            api_key=tts.api_key,
            sample_rate=tts.sample_rate,
            speed=tts.speed,
            instructions=tts.instructions,
            connect_timeout_s=tts.connect_timeout_s,
            first_audio_timeout_s=config.session.tts_first_audio_timeout_s,
            chunk_timeout_s=config.session.tts_chunk_timeout_s,
            max_retries=tts.max_retries,
        ),
    )
    return built


def build_pipeline(config: VoicecoreConfig | None = None) -> Pipeline:
    """Instantiates the providers ``config`` chooses (default: the offline pipeline).

    Provider modules are imported only when chosen. Every provider is built once here, so
    a missing package, model or voice fails at start-up. With ``vad.kind = "silero"`` and
    no model (or no onnxruntime), a ``VadFallbackWarning`` says how to fetch the model and
    the energy VAD is used, unless ``vad.fallback`` is off; a missing Smart Turn, Moonshine
    or Piper model gives a ``ModelFallbackWarning`` and its fallback (a fixed end-of-turn
    silence, PocketSphinx, espeak-ng) unless that section's ``fallback`` is off. The network
    providers take their first-output and gap deadlines from ``config.session``
    (``llm_first_token_timeout_s``...), the ones the engine enforces.

    Raises:
        ConfigError: a provider that cannot be built; the message names the setting and
            says what is missing.
    """
    config = config if config is not None else VoicecoreConfig()
    vad_kind, new_vad = _vad_factory(config.vad)
    return Pipeline(
        config,
        vad_kind=vad_kind,
        new_vad=new_vad,
        new_stt=_stt_factory(config),
        llm=_llm(config),
        tts=_tts(config),
        turn_model=_turn_model(config),
    )


def scripted_pipeline(settings: VoicecoreConfig | None = None) -> Pipeline:
    """A pipeline of scripted providers (``voicecore.providers.scripted``): the energy VAD,
    an STT that "hears" one fixed question, a canned reply and a tone for a voice. It needs
    no model: for trying the server and the page, and for tests.

    Args:
        settings: the configuration whose ``session`` settings the sessions use.
    """
    from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance

    return Pipeline(
        settings if settings is not None else VoicecoreConfig(),
        vad_kind="energy",
        new_vad=EnergyVadStage,
        new_stt=lambda: ScriptedSTT([Utterance(["what", "what can"], "What can you do?")]),
        llm=ScriptedLLM(
            ["This is the scripted pipeline. It plays a tone for every sentence it says."],
            first_token_delay_s=0.05,
            token_delay_s=0.01,
        ),
        tts=ScriptedTTS(sample_rate=24000, ms_per_char=40.0),
    )
