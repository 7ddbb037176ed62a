"""The configuration: sources and their precedence, validation messages, flags, secrets, and
the providers it builds (real ones: no mocks)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import voicecore.config
from harness.openai_server import OpenAIServer, chat_reply
from voicecore import ConfigError, SessionConfig, models
from voicecore.config import (
    CONFIG_ENV,
    SETTINGS,
    LlmConfig,
    ServerConfig,
    SttConfig,
    TtsConfig,
    TurnConfig,
    VadConfig,
    VoicecoreConfig,
    add_config_arguments,
    config_from_args,
    format_config,
    load_config,
)
from voicecore.engine.history import Message
from voicecore.engine.stages import EnergyVadStage, TurnContext
from voicecore.engine.transport import memory_transport
from voicecore.exceptions import ModelFallbackWarning, VadFallbackWarning
from voicecore.pipeline import build_pipeline
from voicecore.providers.espeak import EspeakTTS
from voicecore.providers.moonshine import MoonshineSTT
from voicecore.providers.openai import OpenAILLM, OpenAISTT, OpenAITTS
from voicecore.providers.piper import PiperTTS
from voicecore.providers.responder import RuleBasedResponder
from voicecore.providers.silero import SileroVad
from voicecore.providers.sphinx import SphinxSTT
from voicecore.server.cli import main as cli_main


def write(tmp_path: Path, text: str, name: str = "voicecore.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    """The problem lines of a ConfigError (without the "N configuration problems" head)."""
    lines = str(exc.value).splitlines()
    return lines[1:] if lines[0].endswith("configuration problems") else lines


# --- defaults and sources ------------------------------------------------------------------


def test_the_defaults_are_the_offline_pipeline() -> None:
    config = load_config(env={})
    assert config == VoicecoreConfig()
    assert (config.vad.kind, config.stt.kind, config.llm.kind, config.tts.kind) == (
        "silero",
        "moonshine",
        "responder",
        "piper",
    )
    assert config.session == SessionConfig()
    assert config.sources == {}


def test_file_then_environment_then_flags_each_win_over_the_previous(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [llm]
        model = "from-file"
        max_retries = 5
        [tts]
        rate_wpm = 200
        voice = "en-gb"
        [session]
        frame_ms = 40
        """,
    )
    env = {
        "VOICECORE_LLM_MODEL": "from-env",
        "VOICECORE_TTS_RATE_WPM": "250",
        "VOICECORE_SESSION_CUSHION_MS": "160",
    }
    flags = {"llm.model": "from-flag", "session.cushion_ms": "200"}
    config = load_config(path, env=env, flags=flags)
    assert config.llm.model == "from-flag"  # flag > env > file
    assert config.llm.max_retries == 5  # file only
    assert config.tts.rate_wpm == 250  # env > file
    assert config.tts.voice == "en-gb"
    assert config.session.frame_ms == 40
    assert config.session.cushion_ms == 200
    assert config.vad == VadConfig()  # untouched: defaults
    assert config.sources == {
        "llm.model": "flag --llm-model",
        "llm.max_retries": f"file {path}",
        "tts.rate_wpm": "env VOICECORE_TTS_RATE_WPM",
        "tts.voice": f"file {path}",
        "session.frame_ms": f"file {path}",
        "session.cushion_ms": "flag --session-cushion-ms",
    }


def test_the_file_named_by_voicecore_config_is_read_unless_one_is_given(tmp_path: Path) -> None:
    named = write(tmp_path, '[llm]\nmodel = "named"\n', "named.toml")
    given = write(tmp_path, '[llm]\nmodel = "given"\n', "given.toml")
    assert load_config(env={CONFIG_ENV: str(named)}).llm.model == "named"
    assert load_config(given, env={CONFIG_ENV: str(named)}).llm.model == "given"


def test_environment_names_are_voicecore_section_setting() -> None:
    names = {s.path: s.env_name for s in SETTINGS}
    assert names["llm.model"] == "VOICECORE_LLM_MODEL"
    assert names["session.end_of_turn_silence_ms"] == "VOICECORE_SESSION_END_OF_TURN_SILENCE_MS"
    for stage in ("llm", "tts", "stt"):
        for name in ("base_url", "api_key", "model"):
            assert names[f"{stage}.{name}"] == f"VOICECORE_{stage.upper()}_{name.upper()}"
    assert names["tts.voice"] == "VOICECORE_TTS_VOICE"


def test_every_setting_is_documented_and_every_session_field_is_a_setting() -> None:
    for setting in SETTINGS:
        assert setting.doc, f"{setting.path} has no description"
    session_fields = {f.name for f in dataclasses.fields(SessionConfig)}
    assert {s.name for s in SETTINGS if s.section == "session"} == session_fields


def test_get_reads_a_setting_by_path() -> None:
    config = VoicecoreConfig(llm=LlmConfig(model="m"))
    assert config.get("llm.model") == "m"
    assert config.get("session.frame_ms") == 20
    with pytest.raises(KeyError, match=r"did you mean 'llm\.model'"):
        config.get("llm.modle")


# --- parsing text (environment, flags) ---------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text", "path", "value"),
    [
        ("VOICECORE_VAD_GATE", "false", "vad.gate", False),
        ("VOICECORE_VAD_GATE", "OFF", "vad.gate", False),
        ("VOICECORE_VAD_GATE", "0", "vad.gate", False),
        ("VOICECORE_VAD_FALLBACK", "Yes", "vad.fallback", True),
        ("VOICECORE_VAD_FALLBACK", "1", "vad.fallback", True),
        ("VOICECORE_TTS_RATE_WPM", " 300 ", "tts.rate_wpm", 300),
        ("VOICECORE_VAD_THRESHOLD", "0.6", "vad.threshold", 0.6),
        ("VOICECORE_SESSION_END_OF_TURN_SILENCE_MS", "1e3", "session.end_of_turn_silence_ms", 1e3),
        (
            "VOICECORE_SESSION_END_OF_TURN_SILENCE_MS",
            "700",
            "session.end_of_turn_silence_ms",
            700.0,
        ),
        ("VOICECORE_LLM_MAX_TOKENS", "128", "llm.max_tokens", 128),
        ("VOICECORE_LLM_MAX_TOKENS", "", "llm.max_tokens", None),  # empty: unset
        ("VOICECORE_LLM_MODEL", "", "llm.model", None),
        ("VOICECORE_LLM_SYSTEM_PROMPT", " Be brief. ", "llm.system_prompt", " Be brief. "),
        ("VOICECORE_LLM_KIND", "openai", "llm.kind", "openai"),
    ],
)
def test_environment_values_are_parsed_by_the_settings_type(
    variable: str, text: str, path: str, value: Any
) -> None:
    config = load_config(env={variable: text})
    assert config.get(path) == value
    assert type(config.get(path)) is type(value)


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        ("VOICECORE_VAD_GATE", "maybe", "expected true or false, got 'maybe'"),
        ("VOICECORE_TTS_RATE_WPM", "1.5", "expected an integer, got '1.5'"),
        ("VOICECORE_TTS_RATE_WPM", "", "expected an integer, got ''"),
        ("VOICECORE_VAD_THRESHOLD", "high", "expected a number, got 'high'"),
        ("VOICECORE_LLM_KIND", "gpt", "expected one of 'responder', 'openai', got 'gpt'"),
    ],
)
def test_unparsable_environment_values_name_setting_and_variable(
    variable: str, text: str, expected: str
) -> None:
    setting = next(s for s in SETTINGS if s.env_name == variable)
    with pytest.raises(ConfigError) as exc:
        load_config(env={variable: text})
    assert str(exc.value) == f"{setting.path} (from env {variable}): {expected}"


def test_unknown_environment_settings_are_rejected_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"^VOICECORE_LLM_MODLE: names no setting") as exc:
        load_config(env={"VOICECORE_LLM_MODLE": "x"})
    assert "did you mean 'VOICECORE_LLM_MODEL'?" in str(exc.value)


def test_other_voicecore_variables_are_not_settings() -> None:
    env = {"VOICECORE_CACHE_DIR": "/tmp/x", "VOICECORE_SOMETHING": "y", "OPENAI_ORG_ID": "z"}
    assert load_config(env=env) == VoicecoreConfig()


def test_openai_variables_are_the_fallbacks_of_every_api_key_and_base_url(
    tmp_path: Path,
) -> None:
    env = {"OPENAI_API_KEY": "sk-shared", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    config = load_config(env=env)
    for section in ("stt", "llm", "tts"):
        assert config.get(f"{section}.api_key") == "sk-shared"
        assert config.get(f"{section}.base_url") == "http://127.0.0.1:9/v1"
        assert config.sources[f"{section}.api_key"] == "env OPENAI_API_KEY"
    # Below every other source: the file, the VOICECORE_ variables, the flags.
    path = write(tmp_path, '[llm]\nbase_url = "http://file/v1"\n')
    env |= {"VOICECORE_TTS_API_KEY": "sk-tts", "OPENAI_BASE_URL": " "}
    config = load_config(path, env=env, flags={"stt.api_key": "sk-stt"})
    assert (config.stt.api_key, config.llm.api_key, config.tts.api_key) == (
        "sk-stt",
        "sk-shared",
        "sk-tts",
    )
    assert config.llm.base_url == "http://file/v1"
    assert config.tts.base_url is None  # a blank OPENAI_BASE_URL is no value
    with pytest.raises(ConfigError) as exc:
        load_config(env={"OPENAI_BASE_URL": "localhost:11434"})
    assert problems_of(exc)[0] == (
        "stt.base_url (from env OPENAI_BASE_URL): must be an http:// or https:// URL, "
        "got 'localhost:11434'"
    )


def test_every_non_text_setting_names_itself_when_its_text_does_not_parse() -> None:
    for setting in SETTINGS:
        if setting.base in (str, Path) and setting.choices is None:
            continue
        with pytest.raises(ConfigError) as exc:
            load_config(env={setting.env_name: "not-a-value"})
        assert str(exc.value).startswith(f"{setting.path} (from env {setting.env_name}): "), (
            exc.value
        )


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[llm]\nconnect_timeout_s = -1", "llm.connect_timeout_s ({src}): must be > 0, got -1.0"),
        ("[llm]\nconnect_timeout_s = 0", "llm.connect_timeout_s ({src}): must be > 0, got 0.0"),
        (
            "[llm]\nconnect_timeout_s = inf",
            "llm.connect_timeout_s ({src}): must be a finite number, got inf",
        ),
        ("[llm]\ntemperature = nan", "llm.temperature ({src}): must be a finite number, got nan"),
        ("[llm]\nmax_tokens = 0", "llm.max_tokens ({src}): must be > 0, got 0"),
        ("[llm]\nmax_retries = -1", "llm.max_retries ({src}): must be in [0, 10], got -1"),
        (
            '[llm]\nbase_url = "localhost:11434/v1"',
            "llm.base_url ({src}): must be an http:// or https:// URL, got 'localhost:11434/v1'",
        ),
        ('[llm]\nmodel = "  "', "llm.model ({src}): must not be empty"),
        (
            '[llm]\nkind = "gpt"',
            "llm.kind ({src}): expected one of 'responder', 'openai', got 'gpt'",
        ),
        ("[vad]\nthreshold = 1.0", "vad.threshold ({src}): must be in (0, 1), got 1.0"),
        (
            "[vad]\nspeech_pad_ms = 2000",
            "vad.speech_pad_ms ({src}): must be in [0, 1000], got 2000.0",
        ),
        ("[tts]\nrate_wpm = 500", "tts.rate_wpm ({src}): must be in [80, 450], got 500"),
        (
            "[tts]\nsample_rate = 4000",
            "tts.sample_rate ({src}): must be in [8000, 48000], got 4000",
        ),
        ("[tts]\nspeed = 5.0", "tts.speed ({src}): must be in [0.25, 4], got 5.0"),
        ("[stt]\nconnect_timeout_s = -2", "stt.connect_timeout_s ({src}): must be > 0, got -2.0"),
        # SessionConfig's own checks, named the same way:
        ("[session]\nframe_ms = 30", "session.frame_ms ({src}): must be 10, 20 or 40, got 30"),
        (
            "[session]\nend_of_turn_silence_ms = -1",
            "session.end_of_turn_silence_ms ({src}): must be >= 0 ms, got -1.0",
        ),
        (
            "[session]\nllm_first_token_timeout_s = 0",
            "session.llm_first_token_timeout_s ({src}): must be > 0, got 0.0",
        ),
        ("[session]\ncushion_ms = 10", "session.cushion_ms ({src}): must be >= frame_ms (20 ms)"),
        (
            "[session]\nfirst_chunk_min_words = 0",
            "session.first_chunk_min_words ({src}): must be >= 1",
        ),
        # Types:
        ('[tts]\nrate_wpm = "fast"', "tts.rate_wpm ({src}): expected an integer, got 'fast' (str)"),
        ("[tts]\nrate_wpm = 175.0", "tts.rate_wpm ({src}): expected an integer, got 175.0 (float)"),
        ("[vad]\ngate = 1", "vad.gate ({src}): expected true or false, got 1 (int)"),
        (
            "[session]\nframe_ms = true",
            "session.frame_ms ({src}): expected an integer, got True (bool)",
        ),
        ("[llm]\nmodel = 3", "llm.model ({src}): expected a string (or unset), got 3 (int)"),
        ("[server]\nport = 70000", "server.port ({src}): must be in [0, 65535], got 70000"),
        ("[server]\nmax_sessions = 0", "server.max_sessions ({src}): must be >= 1, got 0"),
        ('[server]\ntoken = ""', "server.token ({src}): must not be empty"),
        ("[server]\nweb_root = 3", "server.web_root ({src}): expected a path, got 3 (int)"),
        (
            '[server]\nallowed_origins = "https://a.example"',
            "server.allowed_origins ({src}): expected a list of strings (comma-separated in "
            "text) (or unset), got 'https://a.example' (str)",
        ),
        (
            '[server]\nallowed_origins = ["https://a.example", " "]',
            "server.allowed_origins ({src}): item 2: must not be empty",
        ),
    ],
)
def test_each_invalid_value_is_reported_naming_its_setting_and_file(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert str(exc.value) == message.format(src=f"from file {path}")


def test_no_number_setting_takes_infinity_or_nan() -> None:
    for setting in SETTINGS:
        if setting.base is not float:
            continue
        for text in ("inf", "-inf", "nan"):
            with pytest.raises(ConfigError) as exc:
                load_config(env={setting.env_name: text})
            assert str(exc.value) == (
                f"{setting.path} (from env {setting.env_name}): must be a finite number, "
                f"got {float(text)}"
            )


def test_a_cross_field_problem_names_the_field_to_fix() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={"VOICECORE_VAD_NEG_THRESHOLD": "0.8", "VOICECORE_VAD_THRESHOLD": "0.6"})
    assert str(exc.value) == (
        "vad.neg_threshold (from env VOICECORE_VAD_NEG_THRESHOLD): "
        "must be <= vad.threshold (0.6), got 0.8"
    )


def test_every_setting_names_itself_when_its_toml_value_has_the_wrong_type(
    tmp_path: Path,
) -> None:
    for setting in SETTINGS:
        path = write(tmp_path, f"[{setting.section}]\n{setting.name} = [1]\n")
        with pytest.raises(ConfigError) as exc:
            load_config(path, env={})
        wrong = (
            "item 1: expected a string, got 1 (int)"
            if setting.sequence
            else (f"expected {setting.describe_type()}, got [1] (list)")
        )
        assert str(exc.value) == f"{setting.path} (from file {path}): {wrong}"


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "[tts]\nrate_wpm = 10\n[vda]\nkind = 'energy'\n")
    env = {"VOICECORE_LLM_CONNECT_TIMEOUT_S": "-1", "VOICECORE_SESSION_FRAME_MS": "abc"}
    with pytest.raises(ConfigError) as exc:
        load_config(path, env=env, flags={"stt.max_retries": "99"})
    assert str(exc.value).startswith("5 configuration problems\n")
    named = [line.split(" ", 1)[0] for line in problems_of(exc)]
    assert sorted(named) == sorted(
        ["vda", "session.frame_ms", "llm.connect_timeout_s", "stt.max_retries", "tts.rate_wpm"]
    )


def test_sections_validate_themselves_when_built_directly() -> None:
    with pytest.raises(ConfigError, match=r"^llm\.connect_timeout_s: must be > 0, got 0\.0$"):
        LlmConfig(connect_timeout_s=0)
    with pytest.raises(ConfigError, match=r"^tts\.rate_wpm: expected an integer, got 'fast'"):
        TtsConfig(rate_wpm="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^vad\.kind: expected one of 'silero', 'energy'"):
        VadConfig(kind="webrtc")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^vad\.neg_threshold: must be <= vad\.threshold"):
        VadConfig(threshold=0.3, neg_threshold=0.4)
    timeout = SttConfig(connect_timeout_s=2).connect_timeout_s  # an int is a number
    assert timeout == 2.0
    assert isinstance(timeout, float)


# --- the TOML file itself --------------------------------------------------------------------


def test_an_unknown_setting_in_the_file_is_rejected_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "[session]\nend_of_turn_silence = 600\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert str(exc.value) == (
        f"session.end_of_turn_silence (in {path}): unknown setting "
        "(did you mean 'end_of_turn_silence_ms'?)"
    )


def test_an_unknown_section_is_rejected_listing_the_sections(tmp_path: Path) -> None:
    path = write(tmp_path, "[vda]\nkind = 'energy'\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert str(exc.value) == (
        f"vda (in {path}): unknown section (did you mean 'vad'?); "
        "the sections are server, vad, turn, stt, llm, tts, session"
    )


def test_a_nested_table_or_a_section_that_is_not_a_table_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "llm = 'openai'\n[tts.openai]\nmodel = 'x'\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert problems_of(exc) == [
        f"llm (in {path}): expected a table, got 'openai' (str)",
        f"tts.openai (in {path}): unknown setting",
    ]


def test_a_missing_or_malformed_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nowhere\.toml not found"):
        load_config(tmp_path / "nowhere.toml", env={})
    broken = write(tmp_path, "[llm\nmodel = 1\n")
    with pytest.raises(ConfigError, match=r"config file .* is not valid TOML: "):
        load_config(broken, env={})


def test_the_example_file_of_the_module_documentation_is_valid(tmp_path: Path) -> None:
    doc = voicecore.config.__doc__
    assert doc is not None
    example = doc.split("Example ``voicecore.toml`` (every setting is optional)::\n", 1)[1]
    example = textwrap.dedent(example.split("\n\nThen ", 1)[0])
    config = load_config(write(tmp_path, example), env={})
    assert config.llm.kind == "openai"
    assert config.llm.model == "llama3.2"
    assert config.session.end_of_turn_silence_ms == 600


def test_format_config_reads_back_to_the_same_configuration(tmp_path: Path) -> None:
    config = VoicecoreConfig(
        vad=VadConfig(kind="energy", neg_threshold=0.3, gate=False),
        llm=LlmConfig(
            kind="openai",
            model="llama3.2",
            api_key="sk-secret",
            system_prompt='Say "hi" — briefly.\nThen stop.',
            temperature=0.7,
        ),
        tts=TtsConfig(voice="en-gb+f3", rate_wpm=210),
        session=SessionConfig(end_of_turn_silence_ms=650.5, frame_ms=40, cushion_ms=160),
        server=ServerConfig(
            port=0,
            allowed_origins=("https://a.example", "http://b.example:8080"),
            token="t0k3n",
            web_root=tmp_path / "web",
            timeline=tmp_path / "timeline.json",
            send_buffer_bytes=0,
        ),
    )
    path = write(tmp_path, format_config(config, reveal_secrets=True))
    assert load_config(path, env={}) == config


# --- flags -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="test")
    add_config_arguments(result)
    return result


def test_flags_set_every_kind_of_setting_and_win_over_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[llm]\nmax_retries = 4\n")
    args = parser().parse_args(
        [
            "--config",
            str(path),
            "--llm-model",
            "qwen2.5",
            "--no-vad-gate",
            "--vad-kind",
            "energy",
            "--session-end-of-turn-silence-ms",
            "650",
            "--tts-rate-wpm",
            "220",
            "--llm-max-tokens",
            "",
        ]
    )
    config = config_from_args(
        args, env={"VOICECORE_LLM_MODEL": "llama3", "VOICECORE_VAD_GATE": "1"}
    )
    assert config.llm.model == "qwen2.5"
    assert config.vad.gate is False
    assert config.vad.kind == "energy"
    assert config.session.end_of_turn_silence_ms == 650.0
    assert config.tts.rate_wpm == 220
    assert config.llm.max_tokens is None
    assert config.llm.max_retries == 4
    assert config.sources["vad.gate"] == "flag --no-vad-gate"
    assert config.sources["vad.kind"] == "flag --vad-kind"


def test_flags_left_out_leave_the_settings_alone() -> None:
    config = config_from_args(parser().parse_args([]), env={"VOICECORE_VAD_GATE": "false"})
    assert config == VoicecoreConfig(vad=VadConfig(gate=False))


def test_a_bad_flag_value_names_the_setting_and_the_flag() -> None:
    args = parser().parse_args(["--session-frame-ms", "25"])
    with pytest.raises(ConfigError) as exc:
        config_from_args(args, env={})
    assert str(exc.value) == (
        "session.frame_ms (from flag --session-frame-ms): must be 10, 20 or 40, got 25"
    )


def test_every_setting_has_a_flag() -> None:
    flags = {a.dest for a in parser()._actions}
    assert {s.dest for s in SETTINGS} <= flags
    assert "--llm-api-key" in {opt for a in parser()._actions for opt in a.option_strings}


def test_config_show_help_lists_every_flag_with_its_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["config", "show", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # unwrapped
    for setting in SETTINGS:
        assert setting.flag in help_text
        assert f"env {setting.env_name}" in help_text
    assert "--no-vad-gate" in help_text


def test_server_settings_come_through_every_layer_and_short_flags_are_aliases(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[server]\nhost = "0.0.0.0"\nallowed_origins = ["https://file"]\n')
    env = {
        "VOICECORE_SERVER_PORT": "9000",
        "VOICECORE_SERVER_MAX_SESSIONS": "50",
        "VOICECORE_SERVER_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "VOICECORE_SERVER_TIMELINE": "run.json",
    }
    config = config_from_args(parser().parse_args(["--config", str(path)]), env=env)
    assert config.server == ServerConfig(
        host="0.0.0.0",
        port=9000,
        max_sessions=50,
        allowed_origins=("https://a.example", "https://b.example"),
        timeline=Path("run.json"),
    )
    assert config.sources["server.host"] == f"file {path}"
    assert config.sources["server.allowed_origins"] == "env VOICECORE_SERVER_ALLOWED_ORIGINS"
    args = parser().parse_args(
        [
            "--config",
            str(path),
            "--port",
            "8100",
            "--server-max-sessions",
            "3",
            "--allowed-origin",
            "https://c.example",
            "--server-allowed-origins",
            "https://d.example,https://e.example",
            "--web-root",
            str(tmp_path),
            "--token",
            "s3cret",
            "--providers",
            "scripted",
        ]
    )
    config = config_from_args(args, env=env)
    server = config.server
    assert (server.port, server.max_sessions, server.providers) == (8100, 3, "scripted")
    assert server.allowed_origins == ("https://c.example", "https://d.example", "https://e.example")
    assert (server.web_root, server.token) == (tmp_path, "s3cret")
    # A value is reported under the flag the user typed.
    assert config.sources["server.port"] == "flag --port"
    assert config.sources["server.max_sessions"] == "flag --server-max-sessions"
    assert config.sources["server.allowed_origins"] == "flag --server-allowed-origins"
    with pytest.raises(ConfigError) as exc:
        config_from_args(parser().parse_args(["--port", "http", "--max-sessions", "0"]), env={})
    assert problems_of(exc) == [
        "server.port (from flag --port): expected an integer, got 'http'",
        "server.max_sessions (from flag --max-sessions): must be >= 1, got 0",
    ]


def test_serve_help_reads_short_flags_first_with_their_long_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli_main(["serve", "--help"])
    help_text = capsys.readouterr().out
    server_part = help_text[help_text.index("server settings:") : help_text.index("vad settings:")]
    for short, long in [
        ("--host HOST", "--server-host HOST"),
        ("--port PORT", "--server-port PORT"),
        ("--token TOKEN", "--server-token TOKEN"),
        ("--allowed-origin ALLOWED_ORIGINS", "--server-allowed-origins ALLOWED_ORIGINS"),
        ("--timeline TIMELINE", "--server-timeline TIMELINE"),
    ]:
        assert f"{short}, {long}" in server_part
    unwrapped = " ".join(server_part.split())
    assert "env VOICECORE_SERVER_ALLOWED_ORIGINS, comma-separated; repeatable flag" in unwrapped


def test_an_unknown_flag_setting_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^llm\.modle: no such setting \(did you mean"):
        load_config(env={}, flags={"llm.modle": "x"})


# --- secrets -----------------------------------------------------------------------------


def test_api_keys_never_appear_in_repr_or_in_the_shown_configuration() -> None:
    config = load_config(
        env={"VOICECORE_LLM_API_KEY": "sk-llm-123", "VOICECORE_TTS_API_KEY": "sk-tts-456"}
    )
    assert config.llm.api_key == "sk-llm-123"
    shown = format_config(config)
    for text in (repr(config), repr(config.llm), repr(config.tts), shown):
        assert "sk-llm-123" not in text
        assert "sk-tts-456" not in text
    assert 'api_key = "********"  # masked; env VOICECORE_LLM_API_KEY' in shown
    assert "# api_key = (unset)" in shown  # stt's
    assert "sk-llm-123" in format_config(config, reveal_secrets=True)


def test_the_server_token_is_a_secret_too() -> None:
    config = load_config(env={"VOICECORE_SERVER_TOKEN": "tok-789"})
    assert config.server.token == "tok-789"
    for text in (repr(config), repr(config.server), format_config(config)):
        assert "tok-789" not in text
    assert 'token = "********"  # masked; env VOICECORE_SERVER_TOKEN' in format_config(config)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VOICECORE_")}
    return subprocess.run(
        [sys.executable, "-m", "voicecore", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, **env},
    )


def test_config_show_prints_the_effective_configuration_with_secrets_masked(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[llm]\nkind = "openai"\nmodel = "from-file"\n')
    result = run_cli(
        "config",
        "show",
        "--config",
        str(path),
        "--llm-model",
        "from-flag",
        env={"VOICECORE_LLM_API_KEY": "sk-very-secret", "VOICECORE_TTS_RATE_WPM": "190"},
    )
    assert result.returncode == 0, result.stderr
    assert "sk-very-secret" not in result.stdout + result.stderr
    assert 'model = "from-flag"  # flag --llm-model' in result.stdout
    assert f'kind = "openai"  # file {path}' in result.stdout
    assert "rate_wpm = 190  # env VOICECORE_TTS_RATE_WPM" in result.stdout
    assert 'api_key = "********"' in result.stdout
    assert result.stdout.startswith("[server]\n")
    assert "port = 8000\n" in result.stdout
    # What it prints is a configuration file (secrets aside).
    shown = write(tmp_path, result.stdout, "shown.toml")
    reloaded = load_config(shown, env={})
    assert reloaded.llm.model == "from-flag"
    assert reloaded.tts.rate_wpm == 190


def test_config_show_exits_2_naming_every_bad_setting() -> None:
    result = run_cli(
        "config", "show", "--session-frame-ms", "7", env={"VOICECORE_LLM_TEMPERATURE": "3"}
    )
    assert result.returncode == 2
    assert "session.frame_ms (from flag --session-frame-ms): must be 10, 20 or 40" in result.stderr
    assert "llm.temperature (from env VOICECORE_LLM_TEMPERATURE): must be in [0, 2]" in (
        result.stderr
    )
    assert result.stdout == ""


def test_config_show_check_builds_the_providers() -> None:
    result = run_cli("config", "show", "--check", "--vad-kind", "energy", env={})
    assert result.returncode == 0, result.stderr
    assert "# built: Pipeline(vad='energy', turn=SmartTurnEnd(" in (result.stdout)
    result = run_cli(
        "config", "show", "--check", "--tts-kind", "espeak", "--tts-voice", "xx-zz", env={}
    )
    assert result.returncode == 2
    assert "tts.voice: " in result.stderr


# --- building the providers ----------------------------------------------------------------


def test_the_default_pipeline_is_silero_moonshine_responder_piper() -> None:
    for name in ("silero-vad", "moonshine-base-en", "piper-joe-medium"):
        if models.verify(name):
            pytest.skip(f"the model {name} is not fetched here (voicecore models fetch)")
    pipeline = build_pipeline()
    assert pipeline.vad_kind == "silero"
    first, second = pipeline.providers(), pipeline.providers()
    assert isinstance(first.vad, SileroVad)
    assert isinstance(first.stt, MoonshineSTT)
    assert isinstance(first.llm, RuleBasedResponder)
    assert isinstance(first.tts, PiperTTS)
    # One model for every session: a conversation costs its state, not a model.
    assert first.stt.model is second.stt.model
    # Per-session state is per session; the LLM and TTS are shared.
    assert first.vad is not second.vad
    assert first.stt is not second.stt
    assert first.llm is second.llm
    assert first.tts is second.tts


def test_settings_reach_the_providers() -> None:
    config = load_config(
        env={
            "VOICECORE_VAD_THRESHOLD": "0.7",
            "VOICECORE_VAD_NEG_THRESHOLD": "0.4",
            "VOICECORE_VAD_GATE": "off",
            "VOICECORE_VAD_BACKGROUND": "false",
            "VOICECORE_TTS_KIND": "espeak",
            "VOICECORE_TTS_VOICE": "en-us+f3",
            "VOICECORE_TTS_RATE_WPM": "230",
            "VOICECORE_LLM_TOKEN_DELAY_S": "0",
        }
    )
    if models.verify("silero-vad"):
        pytest.skip("the Silero VAD model is not fetched here (voicecore models fetch)")
    providers = build_pipeline(config).providers()
    assert isinstance(providers.vad, SileroVad)
    assert (providers.vad.threshold, providers.vad.neg_threshold) == (0.7, 0.4)
    assert not providers.vad.gated
    assert providers.vad.background is False
    assert isinstance(providers.tts, EspeakTTS)
    assert (providers.tts.voice, providers.tts.rate_wpm) == ("en-us+f3", 230)
    assert isinstance(providers.llm, RuleBasedResponder)
    assert providers.llm.token_delay_s == 0.0


def test_the_energy_vad_is_chosen_or_falls_back_with_a_warning(tmp_path: Path) -> None:
    assert build_pipeline(VoicecoreConfig(vad=VadConfig(kind="energy"))).vad_kind == "energy"
    missing = str(tmp_path / "absent.onnx")
    with pytest.warns(VadFallbackWarning, match="voicecore models fetch"):
        pipeline = build_pipeline(VoicecoreConfig(vad=VadConfig(model_path=missing)))
    assert pipeline.vad_kind == "energy"
    assert isinstance(pipeline.providers().vad, EnergyVadStage)


def test_without_fallback_a_missing_or_broken_model_is_a_config_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.onnx")
    with pytest.raises(ConfigError, match=r"^vad\.model_path: .*voicecore models fetch"):
        build_pipeline(VoicecoreConfig(vad=VadConfig(model_path=missing, fallback=False)))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    # A file that is there but is no model is a mistake, never papered over by the fallback.
    with pytest.raises(ConfigError, match=r"^vad\.model_path: .*not a loadable ONNX model"):
        build_pipeline(VoicecoreConfig(vad=VadConfig(model_path=str(broken))))


def test_a_missing_voice_is_an_error_naming_the_fix_unless_the_fallback_is_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICECORE_CACHE_DIR", str(tmp_path))  # an empty model cache
    energy, sphinx = VadConfig(kind="energy"), SttConfig(kind="sphinx")
    with pytest.raises(ConfigError, match=r"^turn\.kind: .*voicecore models fetch") as exc:
        build_pipeline(VoicecoreConfig(vad=energy, stt=sphinx, tts=TtsConfig(kind="espeak")))
    assert "--turn-kind silence" in str(exc.value)
    with pytest.warns(ModelFallbackWarning, match="fixed silence"):
        pipeline = build_pipeline(
            VoicecoreConfig(
                vad=energy,
                turn=TurnConfig(fallback=True),
                stt=sphinx,
                tts=TtsConfig(kind="espeak"),
            )
        )
    assert pipeline.turn_model is None
    silence = TurnConfig(kind="silence")
    with pytest.raises(ConfigError, match=r"^tts\.piper_voice: .*voicecore models fetch") as exc:
        build_pipeline(VoicecoreConfig(vad=energy, turn=silence, stt=sphinx))
    assert "--tts-kind espeak" in str(exc.value)
    with pytest.warns(ModelFallbackWarning, match="espeak-ng"):
        pipeline = build_pipeline(
            VoicecoreConfig(vad=energy, turn=silence, stt=sphinx, tts=TtsConfig(fallback=True))
        )
    assert isinstance(pipeline.tts, EspeakTTS)
    espeak = TtsConfig(kind="espeak")
    with pytest.raises(ConfigError, match=r"^stt\.moonshine_model: .*voicecore models fetch") as e:
        build_pipeline(VoicecoreConfig(vad=energy, turn=silence, tts=espeak))
    assert "--stt-kind sphinx" in str(e.value)
    with pytest.warns(ModelFallbackWarning, match="PocketSphinx"):
        pipeline = build_pipeline(
            VoicecoreConfig(vad=energy, turn=silence, stt=SttConfig(fallback=True), tts=espeak)
        )
    assert isinstance(pipeline.providers().stt, SphinxSTT)


def test_a_bad_provider_setting_fails_at_start_up_naming_it(tmp_path: Path) -> None:
    energy = VadConfig(kind="energy")
    with pytest.raises(ConfigError, match=r"^tts\.voice: espeak-ng has no voice 'xx-zz'"):
        build_pipeline(VoicecoreConfig(vad=energy, tts=TtsConfig(kind="espeak", voice="xx-zz")))
    absent = str(tmp_path / "absent.lm")
    with pytest.raises(ConfigError, match=r"^stt\.sphinx_lm: .*absent\.lm does not exist"):
        build_pipeline(VoicecoreConfig(vad=energy, stt=SttConfig(kind="sphinx", sphinx_lm=absent)))


async def test_openai_kinds_build_the_network_providers_with_their_settings() -> None:
    config = load_config(
        env={
            "VOICECORE_VAD_KIND": "energy",
            "VOICECORE_STT_KIND": "openai",
            "VOICECORE_STT_BASE_URL": "http://127.0.0.1:9/v1",
            "VOICECORE_STT_LANGUAGE": "en",
            "VOICECORE_LLM_KIND": "openai",
            "VOICECORE_LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "VOICECORE_LLM_MODEL": "llama3.2",
            "VOICECORE_LLM_API_KEY": "sk-local",
            "VOICECORE_LLM_TEMPERATURE": "0.2",
            "VOICECORE_TTS_KIND": "openai",
            "VOICECORE_TTS_BASE_URL": "http://127.0.0.1:9/v1",
            "VOICECORE_TTS_VOICE": "nova",
            "VOICECORE_TTS_SAMPLE_RATE": "22050",
            "VOICECORE_SESSION_LLM_FIRST_TOKEN_TIMEOUT_S": "4",
            "VOICECORE_SESSION_TTS_CHUNK_TIMEOUT_S": "2.5",
            "VOICECORE_SESSION_STT_FINAL_TIMEOUT_S": "6",
        }
    )
    pipeline = build_pipeline(config)
    try:
        providers = pipeline.providers()
        assert isinstance(providers.stt, OpenAISTT)
        assert providers.stt is pipeline.providers().stt  # no per-session state
        assert (providers.stt.base_url, providers.stt.language) == ("http://127.0.0.1:9/v1", "en")
        assert providers.stt.timeout_s == 6.0
        assert isinstance(providers.llm, OpenAILLM)
        assert providers.llm.model == "llama3.2"
        assert providers.llm.first_token_timeout_s == 4.0  # the engine's deadline
        assert providers.llm.extra_body == {"temperature": 0.2}
        assert "api_key=set" in repr(providers.llm)
        assert isinstance(providers.tts, OpenAITTS)
        assert (providers.tts.voice, providers.tts.sample_rate) == ("nova", 22050)
        assert providers.tts.chunk_timeout_s == 2.5
    finally:
        await pipeline.aclose()


async def test_the_openai_key_and_url_of_the_environment_reach_the_server_via_the_config() -> None:
    """``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` are read by the configuration (the
    providers read no environment) and sent to a real loopback server."""
    server = OpenAIServer()
    try:
        server.script("/v1/chat/completions", chat_reply(["Hi", " there."]))
        config = load_config(
            env={
                "OPENAI_API_KEY": "sk-from-openai-env",
                "OPENAI_BASE_URL": server.base_url,
                "VOICECORE_VAD_KIND": "energy",
                "VOICECORE_LLM_KIND": "openai",
            }
        )
        pipeline = build_pipeline(config)
        try:
            deltas = pipeline.llm.generate(
                [Message("user", "Hello?")], TurnContext.standalone("test")
            )
            assert [delta async for delta in deltas] == ["Hi", " there."]
        finally:
            await pipeline.aclose()
        (request,) = server.requests
        assert request.headers["authorization"] == "Bearer sk-from-openai-env"
    finally:
        server.close()
    assert not server.errors, server.errors


async def test_a_pipeline_session_uses_the_configured_stages_and_settings() -> None:
    config = VoicecoreConfig(
        vad=VadConfig(kind="energy"),
        llm=LlmConfig(system_prompt="You are terse."),
        session=SessionConfig(end_of_turn_silence_ms=640),
    )
    pipeline = build_pipeline(config)
    transport, _client = memory_transport(16000)
    session = pipeline.session(transport)
    assert session.config is config.session
    assert session.history.messages()[0].content == "You are terse."
