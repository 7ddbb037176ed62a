"""voicecore's configuration: one object, from a TOML file, the environment and CLI flags.

:class:`VoicecoreConfig` is voicecore's one configuration: the server, the providers and
their settings. It has seven sections, each a frozen dataclass: ``server``
(:class:`ServerConfig`: how ``voicecore serve`` listens and what it allows), ``vad``
(:class:`VadConfig`), ``turn`` (:class:`TurnConfig`: the end of the user's turn), ``stt``
(:class:`SttConfig`), ``llm`` (:class:`LlmConfig`), ``tts`` (:class:`TtsConfig`) and
``session`` (the engine's own ``voicecore.SessionConfig``, whose fields it takes as they
are). It is the one place that reads voicecore's environment variables: the providers take
their settings as arguments. The defaults are the offline pipeline: Silero VAD behind the
energy gate (the energy VAD alone, with a warning, when the model has not been fetched),
Smart Turn for the end of turn, Moonshine, the rule-based responder and Piper (each with its
fallback, with a warning, when its model has not been fetched: PocketSphinx, a fixed
silence, espeak-ng). It runs
with no network and no API key.

Where settings come from, later ones winning (:func:`load_config`)::

    defaults  <  TOML file  <  environment variables  <  command-line flags

* **TOML file**: ``--config FILE``, or the file named by ``$VOICECORE_CONFIG``. One table per
  section; a key or a section voicecore does not know is an error (a typo must not be
  ignored silently).
* **Environment**: ``VOICECORE_<SECTION>_<SETTING>`` in upper case, e.g.
  ``VOICECORE_LLM_MODEL=llama3.2`` or ``VOICECORE_SESSION_END_OF_TURN_SILENCE_MS=600``
  (section names have no underscore, so the first one after the section ends it). A
  variable that starts with a section (``VOICECORE_LLM_``...) but names no setting of it
  is an error; other ``VOICECORE_`` variables (``VOICECORE_CACHE_DIR``,
  ``VOICECORE_CONFIG``) are not settings. The OpenAI SDK's conventional ``OPENAI_API_KEY``
  and ``OPENAI_BASE_URL`` are honoured too, as the fallbacks of the ``api_key`` and
  ``base_url`` of ``stt``, ``llm`` and ``tts``: below every other source.
* **Flags**: ``--<section>-<setting>`` with dashes, e.g. ``--llm-model llama3.2``,
  ``--vad-gate`` / ``--no-vad-gate`` (:func:`add_config_arguments`,
  :func:`config_from_args`). The server's everyday settings also have the short flags
  users know (``--host``, ``--port``, ``--token``, ``--allowed-origin``...): the same
  settings under a second name.

Values written as text (environment, flags) are parsed by the setting's type: integers,
numbers (``0.5``, ``1e3``), booleans (``true``/``false``, ``1``/``0``, ``yes``/``no``,
``on``/``off``), strings, paths, lists (comma-separated; a list's flag may also be
repeated, its items adding up); an empty value unsets an optional setting (``None``).

Everything is validated when it is loaded, and every message names the bad setting and
where its value came from, e.g.
``llm.connect_timeout_s (from VOICECORE_LLM_CONNECT_TIMEOUT_S): must be > 0, got -1``;
all the problems are reported at once in one :class:`voicecore.ConfigError`.

API keys and the server's token are secrets: they never appear in a ``repr`` and
:func:`format_config` masks them (``voicecore config show`` prints the effective
configuration that way).

``voicecore.pipeline.build_pipeline`` turns a configuration into providers, importing each
provider module only when it is chosen, so a missing optional package or model gives a clear
message.

Example ``voicecore.toml`` (every setting is optional)::

    [server]
    host = "0.0.0.0"
    port = 8000
    allowed_origins = ["https://voice.example.com"]
    # token: better from the environment: VOICECORE_SERVER_TOKEN=...

    [vad]
    kind = "silero"             # or "energy"
    threshold = 0.5

    [stt]
    kind = "sphinx"             # or "openai" (/v1/audio/transcriptions)

    [llm]
    kind = "openai"             # or "responder" (offline, rule-based)
    base_url = "http://localhost:11434/v1"   # Ollama; also vLLM, llama.cpp, LM Studio
    model = "llama3.2"
    system_prompt = "You are a helpful voice agent. Answer in one or two sentences."
    # api_key: better from the environment: VOICECORE_LLM_API_KEY=...

    [tts]
    kind = "espeak"             # or "openai" (/v1/audio/speech)
    voice = "en-us"
    rate_wpm = 175

    [session]
    end_of_turn_silence_ms = 600
    llm_first_token_timeout_s = 10.0

Then ``voicecore config show --config voicecore.toml --llm-model qwen2.5`` prints what is
in effect and where each value came from.
"""

from __future__ import annotations

from voicecore.config.flags import add_config_arguments, config_from_args
from voicecore.config.loading import CONFIG_ENV, load_config
from voicecore.config.sections import (
    SETTINGS,
    WEB_ROOT,
    LlmConfig,
    ServerConfig,
    SttConfig,
    TtsConfig,
    TurnConfig,
    VadConfig,
    VoicecoreConfig,
)
from voicecore.config.settings import ENV_PREFIX, Setting
from voicecore.config.show import format_config

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SETTINGS",
    "WEB_ROOT",
    "LlmConfig",
    "ServerConfig",
    "Setting",
    "SttConfig",
    "TtsConfig",
    "TurnConfig",
    "VadConfig",
    "VoicecoreConfig",
    "add_config_arguments",
    "config_from_args",
    "format_config",
    "load_config",
]
