import { test } from "node:test";
import assert from "node:assert/strict";
import { Conversation } from "../lib/conversation.mjs";
import { PlayoutCounter } from "../lib/playout-stats.mjs";

test("a turn: partials then final, agent chunks, done, metrics", () => {
  const c = new Conversation();
  c.apply({ type: "speech_start", time_s: 1 });
  assert.equal(c.userSpeaking, true);
  c.apply({ type: "transcript", turn_id: 1, text: "what", final: false });
  c.apply({ type: "transcript", turn_id: 1, text: "what time is it", final: true });
  // A partial that arrives late does not overwrite the final.
  c.apply({ type: "transcript", turn_id: 1, text: "what tim", final: false });
  c.apply({ type: "speech_end", time_s: 2 });
  c.apply({ type: "agent_text", turn_id: 1, text: "It is noon." });
  c.apply({ type: "agent_text", turn_id: 1, text: "Anything else?" });
  c.apply({ type: "agent_done", turn_id: 1 });
  c.apply({ type: "metrics", turn_id: 1, voice_to_voice_ms: 640, stt_final_ms: 120, barge_in_ms: null });
  const [turn] = c.turns;
  assert.equal(c.userSpeaking, false);
  assert.equal(turn.userText, "what time is it");
  assert.equal(turn.userFinal, true);
  assert.equal(turn.agentText, "It is noon. Anything else?");
  assert.equal(turn.agentDone, true);
  assert.equal(turn.interrupted, false);
  assert.deepEqual(Conversation.splitHeard(turn), { heard: "It is noon. Anything else?", unheard: "" });
  assert.deepEqual(turn.latency, {
    voiceToVoiceMs: 640,
    sttFinalMs: 120,
    llmFirstTokenMs: null,
    ttsFirstAudioMs: null,
    bargeInMs: null,
    bargeInHeardMs: null,
  });
  assert.equal(c.lastMeasured, turn);
});

test("barge-in marks the turn interrupted; turns stay ordered and bounded", () => {
  const c = new Conversation({ maxTurns: 3 });
  c.apply({ type: "agent_text", turn_id: 2, text: "Let me" });
  c.apply({ type: "clear", turn_id: 2 });
  c.apply({ type: "transcript", turn_id: 1, text: "first", final: true });
  assert.deepEqual(c.turns.map((t) => t.id), [1, 2]);
  assert.equal(c.turn(2).interrupted, true);
  c.apply({ type: "agent_text", turn_id: 2, text: "think about it." });
  c.apply({ type: "agent_done", turn_id: 2, interrupted: true, heard: "Let me" });
  assert.deepEqual(Conversation.splitHeard(c.turn(2)), { heard: "Let me", unheard: " think about it." });
  assert.deepEqual(Conversation.splitHeard(c.turn(1)), { heard: "", unheard: "" });
  for (const id of [3, 4, 5]) c.apply({ type: "transcript", turn_id: id, text: "x", final: true });
  assert.deepEqual(c.turns.map((t) => t.id), [3, 4, 5]);
  assert.equal(c.apply({ type: "error", code: "busy", message: "" }), null);
});

test("the client's barge-in figure survives the turn's metrics, whichever comes first", () => {
  const c = new Conversation();
  c.setBargeInHeard(1, 140);
  assert.equal(c.turn(1).latency?.bargeInHeardMs, 140);
  assert.equal(c.turn(1).latency?.voiceToVoiceMs, null);
  c.apply({ type: "metrics", turn_id: 1, voice_to_voice_ms: 700, barge_in_ms: 0.5 });
  assert.equal(c.turn(1).latency?.bargeInHeardMs, 140);
  assert.equal(c.turn(1).latency?.bargeInMs, 0.5);
  c.apply({ type: "metrics", turn_id: 2, voice_to_voice_ms: 650 });
  c.setBargeInHeard(2, 160);
  assert.equal(c.turn(2).latency?.voiceToVoiceMs, 650);
  assert.equal(c.median("bargeInHeardMs"), 150);
});

test("median latency over the turns that have it", () => {
  const c = new Conversation();
  assert.equal(c.median("voiceToVoiceMs"), null);
  [500, 700, 600, 900].forEach((v, i) => c.apply({ type: "metrics", turn_id: i, voice_to_voice_ms: v }));
  c.apply({ type: "metrics", turn_id: 9, voice_to_voice_ms: null, barge_in_ms: 80 });
  assert.equal(c.median("voiceToVoiceMs"), 650);
  assert.equal(c.median("bargeInMs"), 80);
});

test("PlayoutCounter converts to ms and unwraps the played counter", () => {
  const counter = new PlayoutCounter(48000);
  const raw = {
    buffered: 5760,
    played: 2 ** 32 - 480,
    underruns: 1,
    underrunSamples: 960,
    overflow: 0,
    state: 1,
    sampleRate: 48000,
    capacity: 262144,
  };
  let s = counter.update(raw);
  assert.equal(s.bufferedMs, 120);
  assert.equal(s.underrunMs, 20);
  assert.equal(s.state, "playing");
  assert.ok(Math.abs(s.playedMs - ((2 ** 32 - 480) / 48)) < 1e-6);
  // The uint32 counter wraps: played keeps growing by the 960 samples (20 ms) played since.
  s = counter.update({ ...raw, played: 480 });
  assert.ok(Math.abs(s.playedMs - ((2 ** 32 + 480) / 48)) < 1e-6);
  assert.throws(() => new PlayoutCounter(0), RangeError);
});

test("TimeSeries keeps the newest points and the marks still in range", async () => {
  const { TimeSeries } = await import("../lib/history.mjs");
  const s = new TimeSeries(3);
  s.mark(0.5);
  for (const [t, v] of [[1, 10], [2, 30], [3, 20]]) s.push(t, v);
  s.mark(2.5);
  assert.deepEqual([s.at(0), s.at(2)], [[1, 10], [3, 20]]);
  s.push(4, 5);
  assert.equal(s.length, 3);
  assert.deepEqual(s.at(0), [2, 30]);
  assert.equal(s.max(), 30);
  assert.deepEqual(s.marks, [2.5], "the mark before the oldest point is gone");
  s.clear();
  assert.equal(s.length, 0);
  assert.equal(s.max(), 0);
  assert.throws(() => new TimeSeries(1), RangeError);
});
