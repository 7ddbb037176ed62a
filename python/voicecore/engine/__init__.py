"""The conversation engine: one voice conversation from the user's speech to the agent's
heard reply.

* ``turns``: ``TurnMachine``, the turn lifecycle as a pure state machine (no Trio, no clock);
  its actions are ``turn_actions``, its records ``turn_state``;
* ``contest``: ``Contest``, the machine's part that decides what the user talking over the
  agent does to the audible reply (duck, then resume or cut); ``backchannel`` tells listener
  feedback from an interruption by its words;
* ``floor``: ``TurnTaker``, who holds the floor, decided on the 16 kHz audio clock;
* ``session``: ``Session``, the Trio adapter that carries out the machine's actions and runs
  the conversation's tasks in one nursery; its two halves are ``hearing`` (mic audio, VAD,
  one STT call per user turn) and ``speaking`` (one reply at a time to the pacer);
* ``settings``: ``SessionConfig``;
* ``stages``: the VAD/STT/LLM/TTS protocols the providers implement, and ``TurnContext``;
* ``contracts``: every pipeline edge's unit, bound and overflow policy, as data;
* ``chunker``, ``history``: LLM text into speakable clauses; what was said and heard;
* ``playout``, ``pacing``: the Rust pacer as the engine uses it (one router for many
  sessions, awaiting its file descriptors);
* ``transport``: the ``Transport`` protocol and the in-memory transport.

``docs/architecture.md`` draws how they fit together.
"""

from voicecore.engine.session import Session as Session
from voicecore.engine.session import SessionConfig as SessionConfig
from voicecore.engine.turns import TurnMachine as TurnMachine

__all__ = ["Session", "SessionConfig", "TurnMachine"]
