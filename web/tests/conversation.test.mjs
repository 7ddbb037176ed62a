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

const READY = { type: "ready", protocol: 1, session_id: "s", input_rate: 48000, output_rate: 48000, frame_ms: 20, cushion_ms: 120 };

/** A conversation whose second turn's reply was streaming when the connection dropped. */
const midReply = () => {
  const c = new Conversation();
  assert.equal(c.start({ ...READY, conversation: "c-1", resumed: false }), "new");
  c.apply({ type: "transcript", turn_id: 1, text: "what time is it", final: true });
  c.apply({ type: "agent_text", turn_id: 1, text: "It is noon." });
  c.apply({ type: "agent_done", turn_id: 1 });
  c.apply({ type: "metrics", turn_id: 1, voice_to_voice_ms: 640 });
  c.apply({ type: "transcript", turn_id: 2, text: "tell me a story", final: true });
  c.apply({ type: "agent_text", turn_id: 2, text: "Once upon a time" });
  c.apply({ type: "speech_start", time_s: 9 });
  return c;
};

test("a resumed conversation keeps its turns; the turn in flight is marked dropped", () => {
  const c = midReply();
  assert.equal(c.start({ ...READY, conversation: "c-1", resumed: true, history: [] }), "resumed");
  assert.deepEqual(c.turns.map((t) => [t.id, t.dropped]), [[1, false], [2, true]]);
  assert.equal(c.turn(2).agentText, "Once upon a time", "what was said stays");
  assert.equal(c.userSpeaking, false, "the new session has heard nothing yet");
  assert.equal(c.turn(1).latency?.voiceToVoiceMs, 640);
  // The server's turn ids continue: the next turn is a new one, after the others.
  c.apply({ type: "transcript", turn_id: 3, text: "go on", final: true });
  c.apply({ type: "agent_text", turn_id: 3, text: "Where was I?" });
  assert.deepEqual(c.turns.map((t) => t.id), [1, 2, 3]);
  assert.equal(c.turn(3).dropped, false);
  assert.equal(c.restarts, 0);
});

test("a reconnection that did not resume restarts the view: the server's turn ids start over", () => {
  const c = midReply();
  assert.equal(c.start({ ...READY, conversation: "c-2", resumed: false }), "restarted");
  assert.equal(c.restarts, 1);
  assert.deepEqual(c.turns, []);
  c.apply({ type: "transcript", turn_id: 1, text: "hello again", final: true });
  assert.equal(c.turn(1).agentText, "", "turn 1 of the new conversation, not the old one");
  // A server that cannot resume (no conversation, no resumed) restarts too.
  const older = midReply();
  assert.equal(older.start(READY), "restarted");
});

test("a reloaded page's view is rebuilt from the resumed conversation's history", () => {
  const c = new Conversation();
  const history = [
    { role: "user", text: "what time is it" },
    { role: "assistant", text: "It is noon." },
    { role: "assistant", text: "Anything else?" },
    { role: "user", text: "tell me a story" },
    { role: "assistant", text: "Once upon a…" },
    { role: "user", text: "stop" },
  ];
  assert.equal(c.start({ ...READY, conversation: "c-1", resumed: true, history }), "resumed");
  const view = c.turns.map((t) => [t.id, t.userText, t.agentText, t.interrupted]);
  assert.deepEqual(view, [
    [-4, "what time is it", "It is noon.", false],
    [-3, "", "Anything else?", false],
    [-2, "tell me a story", "Once upon a…", true],
    [-1, "stop", "", false],
  ]);
  assert.ok(c.turns.every((t) => t.userFinal && t.agentDone && !t.dropped));
  assert.deepEqual(Conversation.splitHeard(c.turns[2]), { heard: "Once upon a…", unheard: "" });
  // The session's own turns come after the history, whatever their ids.
  c.apply({ type: "transcript", turn_id: 7, text: "hi", final: true });
  assert.deepEqual(c.turns.map((t) => t.id), [-4, -3, -2, -1, 7]);
  // A view that already shows turns is not rebuilt (it knows more: latency, what was heard).
  const shown = midReply();
  shown.start({ ...READY, conversation: "c-1", resumed: true, history });
  assert.deepEqual(shown.turns.map((t) => t.id), [1, 2]);
});

test("a history longer than the view keeps its newest turns", () => {
  const c = new Conversation({ maxTurns: 2 });
  const history = ["a", "b", "c"].flatMap((x) => [
    { role: /** @type {const} */ ("user"), text: x },
    { role: /** @type {const} */ ("assistant"), text: x.toUpperCase() },
  ]);
  c.start({ ...READY, conversation: "c-1", resumed: true, history });
  assert.deepEqual(c.turns.map((t) => [t.id, t.userText]), [[-2, "b"], [-1, "c"]]);
});
