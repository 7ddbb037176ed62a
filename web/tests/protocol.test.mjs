import { test } from "node:test";
import assert from "node:assert/strict";
import {
  BYE,
  ClientProtocol,
  MAX_CONVERSATION_CHARS,
  ProtocolError,
  describeClose,
  helloMessage,
  parseServerMessage,
  playoutMessage,
} from "../lib/protocol.mjs";

const READY = {
  type: "ready",
  protocol: 1,
  session_id: "s1",
  input_rate: 48000,
  output_rate: 48000,
  frame_ms: 20,
  cushion_ms: 120,
};

test("hello carries the v1 fields and validates rates", () => {
  assert.deepEqual(helloMessage({ inputRate: 48000, outputRate: 44100 }), {
    type: "hello",
    protocol: 1,
    input_rate: 48000,
    output_rate: 44100,
    frame_ms: 20,
    client: "voicecore-web/1",
    capabilities: ["pause"],
  });
  for (const bad of [7999, 48001, 44100.5, NaN]) {
    assert.throws(() => helloMessage({ inputRate: bad, outputRate: 48000 }), RangeError);
    assert.throws(() => helloMessage({ inputRate: 48000, outputRate: bad }), RangeError);
  }
});

test("playout report rounds to 0.1 ms and rejects nonsense", () => {
  assert.deepEqual(playoutMessage({ bufferedMs: 123.456, playedMs: 4567.04, underruns: 2 }), {
    type: "playout",
    buffered_ms: 123.5,
    played_ms: 4567,
    underruns: 2,
  });
  assert.throws(() => playoutMessage({ bufferedMs: -1, playedMs: 0, underruns: 0 }), RangeError);
  assert.throws(() => playoutMessage({ bufferedMs: 0, playedMs: Infinity, underruns: 0 }), RangeError);
});

test("parser accepts every v1 server message, keeping extra fields", () => {
  const messages = [
    READY,
    { type: "speech_start", time_s: 1.5 },
    { type: "speech_end", time_s: 2.5 },
    { type: "transcript", turn_id: 1, text: "hi", final: false },
    { type: "agent_text", turn_id: 1, text: "Hello." },
    { type: "agent_done", turn_id: 1 },
    { type: "clear", turn_id: 1 },
    { type: "metrics", turn_id: 1, voice_to_voice_ms: 512.5, barge_in_ms: null, interrupted: false },
    { type: "error", code: "busy", message: "session limit reached" },
  ];
  for (const m of messages) assert.deepEqual(parseServerMessage(JSON.stringify(m)), m);
});

test("unknown message types are ignored, as v1 allows the server to add them", () => {
  assert.equal(parseServerMessage('{"type":"turn_summary","turn_id":1}'), null);
  const p = new ClientProtocol({ inputRate: 48000, outputRate: 48000 });
  p.connect();
  p.opened();
  p.receiveText(JSON.stringify(READY));
  assert.equal(p.receiveText('{"type":"something_new"}'), null);
  assert.equal(p.state, "ready");
});

test("parser rejects malformed messages with a reason", () => {
  const cases = [
    ["not json", /invalid JSON/],
    ["[1]", /not a JSON object/],
    ["null", /not a JSON object/],
    ['{"text":"x"}', /no string type/],
    ['{"type":7}', /no string type/],
    ['{"type":"transcript","turn_id":1,"text":"x"}', /transcript.final should be boolean/],
    ['{"type":"clear","turn_id":"1"}', /clear.turn_id should be number/],
    ['{"type":"metrics","turn_id":1,"voice_to_voice_ms":"fast"}', /voice_to_voice_ms should be number\?/],
  ];
  for (const [text, pattern] of cases) {
    assert.throws(() => parseServerMessage(text), (e) => e instanceof ProtocolError && pattern.test(e.message));
  }
});

test("state machine: hello on open, ready, then events and audio", () => {
  const p = new ClientProtocol({ inputRate: 48000, outputRate: 48000 });
  assert.equal(p.state, "idle");
  p.connect();
  assert.equal(p.state, "connecting");
  assert.equal(p.canSendAudio, false);
  assert.equal(p.opened().type, "hello");
  assert.equal(p.state, "handshaking");
  assert.throws(() => p.receiveBinary(new ArrayBuffer(4)), ProtocolError, "audio before ready");
  assert.equal(p.receiveText(JSON.stringify(READY)).type, "ready");
  assert.equal(p.state, "ready");
  assert.equal(p.ready?.session_id, "s1");
  assert.equal(p.canSendAudio, true);
  assert.equal(p.receiveBinary(new ArrayBuffer(1920)), true);
  assert.throws(() => p.receiveBinary(new ArrayBuffer(3)), /odd-length/);
  assert.throws(() => p.receiveText(JSON.stringify(READY)), /unexpected ready/);
  assert.equal(p.receiveText('{"type":"clear","turn_id":3}').type, "clear");
  // Disconnect: bye, then audio still in flight is dropped, not an error.
  assert.deepEqual(p.disconnect(), BYE);
  assert.equal(p.state, "closing");
  assert.equal(p.canSendAudio, false);
  assert.equal(p.receiveBinary(new ArrayBuffer(2)), false);
  assert.equal(p.disconnect(), null, "a second disconnect sends nothing");
  const info = p.closed(1005);
  assert.equal(p.state, "closed");
  assert.equal(info.clean, true, "a close we asked for is clean whatever the code");
  assert.throws(() => p.connect(), /cannot connect while closed/);
});

test("state machine: the handshake must be a matching ready", () => {
  const start = () => {
    const p = new ClientProtocol({ inputRate: 48000, outputRate: 48000 });
    p.connect();
    p.opened();
    return p;
  };
  assert.throws(() => start().receiveText('{"type":"agent_done","turn_id":1}'), /expected ready/);
  assert.throws(() => start().receiveText(JSON.stringify({ ...READY, protocol: 2 })), /protocol 2/);
  assert.throws(() => start().receiveText(JSON.stringify({ ...READY, output_rate: 16000 })), /48000\/16000 Hz/);
  // An error during the handshake (e.g. a refusal) is passed on, and remembered.
  const p = start();
  const err = p.receiveText('{"type":"error","code":"busy","message":"too many sessions"}');
  assert.equal(err.type, "error");
  assert.equal(p.lastError?.code, "busy");
  assert.equal(p.state, "handshaking");
  const info = p.closed(1013, "busy");
  assert.equal(info.retryable, true);
  assert.equal(info.clean, false);
  assert.match(info.message, /session limit/);
});

test("state machine: disconnect before the socket opened sends nothing", () => {
  const p = new ClientProtocol({ inputRate: 16000, outputRate: 16000 });
  assert.equal(p.disconnect(), null, "idle");
  p.connect();
  assert.equal(p.disconnect(), null);
  assert.equal(p.state, "closing");
  assert.equal(p.opened().type, "hello", "an open racing the disconnect still greets");
  assert.equal(p.state, "closing");
});

test("state machine: a socket that never opened says the server was not reached", () => {
  const p = new ClientProtocol({ inputRate: 16000, outputRate: 16000 });
  p.connect();
  const info = p.closed(1006);
  assert.match(info.message, /Could not reach/);
  assert.equal(info.clean, false);
  assert.equal(info.retryable, true);
});

test("describeClose explains each protocol close code", () => {
  assert.equal(describeClose(1000).clean, true);
  assert.match(describeClose(1001).message, /shutting down/);
  assert.match(describeClose(1008).message, /refused/);
  assert.match(describeClose(1009).message, /too large/);
  assert.match(describeClose(4000).message, /too slow/);
  assert.equal(describeClose(1013).retryable, true);
  assert.equal(describeClose(1008).retryable, false);
  assert.match(describeClose(4999, "x").message, /code 4999/);
  assert.equal(describeClose(4999, "x").reason, "x");
});

/** A protocol in state ready, after a `ready` with these fields on top of READY. */
const readyProtocol = (ready = {}, options = {}) => {
  const p = new ClientProtocol({ inputRate: 48000, outputRate: 48000, ...options });
  p.connect();
  p.opened();
  p.receiveText(JSON.stringify({ ...READY, ...ready }));
  return p;
};

test("hello announces capabilities: pause by default, none when asked, checked", () => {
  assert.deepEqual(helloMessage({ inputRate: 16000, outputRate: 16000 }).capabilities, ["pause"]);
  assert.deepEqual(helloMessage({ inputRate: 16000, outputRate: 16000, capabilities: [] }).capabilities, []);
  assert.deepEqual(
    helloMessage({ inputRate: 16000, outputRate: 16000, capabilities: ["pause", "pause", "x"] }).capabilities,
    ["pause", "x"],
  );
  for (const bad of [["pause", 3], [""], "pause"]) {
    assert.throws(() => helloMessage({ inputRate: 16000, outputRate: 16000, capabilities: /** @type {any} */ (bad) }), TypeError);
  }
});

test("pause, resume and ready.capabilities parse like the other messages", () => {
  for (const m of [
    { type: "pause", turn_id: 3 },
    { type: "resume", turn_id: 3 },
    { ...READY, capabilities: ["pause"] },
    { ...READY, capabilities: [] },
    { ...READY, capabilities: null },
  ]) {
    assert.deepEqual(parseServerMessage(JSON.stringify(m)), m);
  }
  const cases = [
    ['{"type":"pause"}', /pause.turn_id should be number/],
    ['{"type":"resume","turn_id":"3"}', /resume.turn_id should be number/],
    [JSON.stringify({ ...READY, capabilities: "pause" }), /ready.capabilities should be strings\?/],
    [JSON.stringify({ ...READY, capabilities: ["pause", 1] }), /ready.capabilities/],
  ];
  for (const [text, pattern] of cases) {
    assert.throws(() => parseServerMessage(text), (e) => e instanceof ProtocolError && pattern.test(e.message));
  }
});

test("the capabilities in use are those announced and confirmed by ready", () => {
  assert.deepEqual([...readyProtocol({ capabilities: ["pause"] }).capabilities], ["pause"]);
  assert.deepEqual([...readyProtocol().capabilities], [], "a server that predates capabilities");
  assert.deepEqual([...readyProtocol({ capabilities: ["pause", "other"] }).capabilities], ["pause"]);
  assert.deepEqual([...readyProtocol({ capabilities: ["pause"] }, { capabilities: [] }).capabilities], []);
});

test("pause then resume of the same turn; a stray or stale resume is ignored", () => {
  const p = readyProtocol({ capabilities: ["pause"] });
  assert.equal(p.receiveText('{"type":"resume","turn_id":1}'), null, "no pause in effect");
  assert.equal(p.receiveText('{"type":"pause","turn_id":2}')?.type, "pause");
  assert.equal(p.pausedTurn, 2);
  assert.equal(p.receiveText('{"type":"resume","turn_id":1}'), null, "another turn's resume");
  assert.equal(p.pausedTurn, 2);
  assert.equal(p.receiveText('{"type":"resume","turn_id":2}')?.type, "resume");
  assert.equal(p.pausedTurn, null);
  assert.equal(p.receiveText('{"type":"resume","turn_id":2}'), null, "a second resume");
});

test("a clear ends a pause: a resume after it is ignored", () => {
  const p = readyProtocol({ capabilities: ["pause"] });
  p.receiveText('{"type":"pause","turn_id":4}');
  assert.equal(p.receiveText('{"type":"clear","turn_id":4}')?.type, "clear");
  assert.equal(p.pausedTurn, null);
  assert.equal(p.receiveText('{"type":"resume","turn_id":4}'), null);
});

test("a client that did not announce pause ignores pause and resume", () => {
  const p = readyProtocol({ capabilities: ["pause"] }, { capabilities: [] });
  assert.equal(p.receiveText('{"type":"pause","turn_id":1}'), null);
  assert.equal(p.pausedTurn, null);
  assert.equal(p.receiveText('{"type":"resume","turn_id":1}'), null);
  // One that announced it honours a pause even when ready did not list the capability.
  const q = readyProtocol();
  assert.equal(q.receiveText('{"type":"pause","turn_id":1}')?.type, "pause");
});

test("pause before ready is out of order", () => {
  const p = new ClientProtocol({ inputRate: 48000, outputRate: 48000 });
  p.connect();
  p.opened();
  assert.throws(() => p.receiveText('{"type":"pause","turn_id":1}'), /expected ready, got pause/);
});

test("hello carries resume only when there is a conversation to continue, checked", () => {
  const base = { inputRate: 48000, outputRate: 48000 };
  assert.equal("resume" in helloMessage(base), false);
  assert.equal("resume" in helloMessage({ ...base, resume: null }), false);
  assert.equal(helloMessage({ ...base, resume: "c-123" }).resume, "c-123");
  for (const bad of ["", "x".repeat(MAX_CONVERSATION_CHARS + 1), 7]) {
    assert.throws(() => helloMessage({ ...base, resume: /** @type {any} */ (bad) }), TypeError);
  }
  assert.equal(helloMessage({ ...base, resume: "x".repeat(MAX_CONVERSATION_CHARS) }).resume.length, 128);
  // The protocol sends it in the hello it greets the server with.
  const p = new ClientProtocol({ ...base, resume: "c-123" });
  p.connect();
  assert.equal(p.opened().resume, "c-123");
});

test("ready's conversation, resumed and history parse and are checked", () => {
  const history = [
    { role: "user", text: "what time is it" },
    { role: "assistant", text: "It is noon." },
    { role: "user", text: "tell me a story" },
    { role: "assistant", text: "Once upon a…" },
  ];
  for (const m of [
    { ...READY, conversation: "c-1", resumed: false },
    { ...READY, conversation: "c-1", resumed: true, history },
    { ...READY, conversation: "c-1", resumed: true, history: [] },
    { ...READY, conversation: null, resumed: null, history: null },
  ]) {
    assert.deepEqual(parseServerMessage(JSON.stringify(m)), m);
  }
  // A server that predates them: no resume support, not an error.
  const older = parseServerMessage(JSON.stringify(READY));
  assert.equal(older?.type === "ready" && older.conversation, undefined);
  const cases = [
    [{ conversation: 5 }, /ready.conversation should be token\?/],
    [{ conversation: "" }, /ready.conversation/],
    [{ conversation: "x".repeat(MAX_CONVERSATION_CHARS + 1) }, /ready.conversation/],
    [{ resumed: "yes" }, /ready.resumed should be boolean\?/],
    [{ history: "hi" }, /ready.history should be history\?/],
    [{ history: [{ role: "system", text: "x" }] }, /ready.history/],
    [{ history: [{ role: "user" }] }, /ready.history/],
    [{ history: [null] }, /ready.history/],
  ];
  for (const [fields, pattern] of cases) {
    const text = JSON.stringify({ ...READY, ...fields });
    assert.throws(() => parseServerMessage(text), (e) => e instanceof ProtocolError && pattern.test(e.message), text);
  }
});

test("a restarting server's close is explained", () => {
  assert.match(describeClose(1012).message, /restarting/);
  assert.equal(describeClose(1012).retryable, true);
});
