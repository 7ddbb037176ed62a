import { test } from "node:test";
import assert from "node:assert/strict";
import { ECHO_LOOP_DEFAULTS, OutputTap, VoicecoreClient, echoLoopSettings, micConstraints } from "../voicecore-client.mjs";

test("the client module imports without a DOM and starts idle", () => {
  const client = new VoicecoreClient({ url: "ws://example.invalid/ws" });
  assert.equal(client.state, "idle");
  assert.equal(client.mode, null);
  assert.deepEqual(client.micFrames, { sent: 0, dropped: 0 });
});

test("connect() refuses while a session is under way", async () => {
  const client = new VoicecoreClient();
  client.state = "ready";
  await assert.rejects(client.connect(), /connect\(\) while ready/);
});

test("mic constraints keep the echo canceller on and pick a device exactly", () => {
  const audio = /** @type {MediaTrackConstraints} */ (micConstraints("abc").audio);
  assert.deepEqual(audio.deviceId, { exact: "abc" });
  assert.equal(audio.echoCancellation, true);
  assert.equal(audio.channelCount, 1);
  assert.equal(/** @type {MediaTrackConstraints} */ (micConstraints().audio).deviceId, undefined);
});

test("worker messages update state, session, stats and the underrun log", () => {
  const client = new VoicecoreClient();
  /** @type {string[]} */
  const seen = [];
  for (const type of ["state", "ready", "transcript", "server_error", "playout", "error"]) {
    client.addEventListener(type, () => seen.push(type));
  }
  client.onWorkerMessage({ type: "state", state: "handshaking" });
  const ready = { type: "ready", protocol: 1, session_id: "s", input_rate: 48000, output_rate: 48000, frame_ms: 20, cushion_ms: 120 };
  client.onWorkerMessage({ type: "message", msg: ready, receivedAt: 1 });
  client.onWorkerMessage({ type: "message", msg: { type: "transcript", turn_id: 1, text: "hi", final: true } });
  client.onWorkerMessage({ type: "message", msg: { type: "error", code: "busy", message: "full" } });
  const stats = { bufferedMs: 100, playedMs: 500, underruns: 0, underrunMs: 0, overflowMs: 0, state: "playing", capacityMs: 5000 };
  client.onWorkerMessage({ type: "stats", stats, sent: 10, dropped: 1 });
  client.onWorkerMessage({ type: "stats", stats: { ...stats, underruns: 1, underrunMs: 20 }, sent: 11, dropped: 1, arrivalGapMs: 180 });
  client.onWorkerMessage({ type: "protocol_error", message: "bad" });
  assert.equal(client.state, "handshaking");
  assert.deepEqual(client.session, ready);
  assert.deepEqual(client.micFrames, { sent: 11, dropped: 1 });
  assert.equal(client.playout?.underruns, 1);
  assert.equal(client.underrunLog.length, 1);
  assert.equal(client.underrunLog[0].playedMs, 500);
  assert.equal(client.underrunLog[0].arrivalGapMs, 180, "the late frame that explains it");
  assert.equal(client.maxArrivalGapMs, 180);
  assert.deepEqual(seen, ["state", "ready", "transcript", "server_error", "playout", "playout", "error"]);
});

test("OutputTap.stop resolves with the recording and an output-clock anchor", async () => {
  /** @type {any[]} */
  const posted = [];
  const port = { onmessage: /** @type {any} */ (null), postMessage: (/** @type {any} */ m) => posted.push(m) };
  const context = { state: "running", getOutputTimestamp: () => ({ contextTime: 2, performanceTime: 1000 }) };
  const tap = new OutputTap(/** @type {any} */ ({ port }), /** @type {any} */ (context));
  tap.start(5);
  assert.deepEqual(posted[0], { type: "start", maxSeconds: 5 });
  const recording = tap.stop();
  assert.deepEqual(posted[1], { type: "stop" });
  port.onmessage({
    data: { type: "recording", sampleRate: 48000, startFrame: 96000, frames: 0, output: new Float32Array(0), input: new Float32Array(0), truncated: false },
  });
  const r = await recording;
  assert.equal(r.startTime, 2);
  assert.equal(r.clock.contextTime, 2);
  assert.equal(r.clock.epochMs, performance.timeOrigin + 1000);
});

test("the session ends once, after its teardown, even when a worker error precedes the close", async () => {
  const client = new VoicecoreClient();
  /** @type {any[]} */
  const closed = [];
  client.addEventListener("closed", (e) => closed.push(/** @type {CustomEvent} */ (e).detail));
  assert.equal(client.onWorkerMessage({ type: "closed", info: { code: 1006 } }), true);
  assert.equal(client.onWorkerMessage({ type: "closed", info: { code: 1000 } }), true);
  await client.finished;
  assert.equal(client.state, "closed");
  assert.deepEqual(closed, [{ code: 1006 }]);
});

test("OutputTap.stop rejects once the session's AudioContext is closed", async () => {
  const port = { onmessage: null, postMessage: () => {} };
  const tap = new OutputTap(/** @type {any} */ ({ port }), /** @type {any} */ ({ state: "closed" }));
  await assert.rejects(tap.stop(), /stop the tap before disconnecting/);
});

/** Stats as the socket worker posts them, with the player's frame clocks. */
const playout = (frames = {}) => ({
  bufferedMs: 100, playedMs: 500, underruns: 0, underrunMs: 0, overflowMs: 0, state: "playing", capacityMs: 4000,
  clearFrame: 0, paused: false, pauseFrame: 0, resumeFrame: 0, pauses: 0, resumes: 0, ...frames,
});

/** A client whose audio clock runs at 48 kHz with 20 ms output latency, and one speech onset. */
const measuringClient = () => {
  const client = new VoicecoreClient();
  client.context = /** @type {any} */ ({ sampleRate: 48000, outputLatency: 0.02, close: async () => {} });
  client.onsetFrames = [480000];
  /** @type {[string, any][]} */
  const seen = [];
  for (const type of ["pause", "resume", "clear", "barge_in", "duck"]) {
    client.addEventListener(type, (e) => seen.push([type, /** @type {CustomEvent} */ (e).detail]));
  }
  return { client, seen };
};

test("a pause the clear confirms is a barge-in timed to the pause's silence", () => {
  const { client, seen } = measuringClient();
  client.onWorkerMessage({ type: "message", msg: { type: "pause", turn_id: 3 } });
  client.onWorkerMessage({ type: "stats", stats: playout({ paused: true, pauseFrame: 480000 + 2400, pauses: 1 }) });
  client.onWorkerMessage({ type: "message", msg: { type: "clear", turn_id: 3 } });
  client.onWorkerMessage({ type: "stats", stats: playout({ pauseFrame: 480000 + 2400, clearFrame: 480000 + 24000, pauses: 1 }) });
  assert.deepEqual(seen.map(([type]) => type), ["pause", "clear", "barge_in"]);
  const bargeIn = seen[2][1];
  assert.equal(bargeIn.via, "pause");
  assert.equal(bargeIn.silentFrame, 482400);
  assert.equal(bargeIn.clearFrame, 504000);
  assert.equal(bargeIn.turnId, 3);
  assert.ok(Math.abs(bargeIn.ms - 70) < 1e-9, `${bargeIn.ms}: 50 ms to the pause + 20 ms output latency`);
  assert.deepEqual(client.bargeIns, [bargeIn]);
  assert.deepEqual(client.ducks, []);
});

test("a resumed pause is a duck; a later clear with no pause is a barge-in via the clear", () => {
  const { client, seen } = measuringClient();
  client.onWorkerMessage({ type: "message", msg: { type: "pause", turn_id: 5 } });
  client.onWorkerMessage({ type: "message", msg: { type: "resume", turn_id: 5 } });
  // Paused and resumed within one stats interval: both frames show up together.
  client.onWorkerMessage({ type: "stats", stats: playout({ pauseFrame: 481200, resumeFrame: 481200 + 19200, pauses: 1, resumes: 1 }) });
  assert.equal(client.ducks.length, 1);
  assert.equal(client.ducks[0].turnId, 5);
  assert.equal(client.ducks[0].silentFrame, 481200);
  assert.ok(Math.abs(client.ducks[0].pausedMs - 400) < 1e-9);
  assert.ok(Math.abs(/** @type {number} */ (client.ducks[0].ms) - 45) < 1e-9);
  // The same stats again: nothing new.
  client.onWorkerMessage({ type: "stats", stats: playout({ pauseFrame: 481200, resumeFrame: 500400, pauses: 1, resumes: 1 }) });
  assert.equal(client.ducks.length, 1);
  client.onWorkerMessage({ type: "message", msg: { type: "clear", turn_id: 5 } });
  client.onWorkerMessage({ type: "stats", stats: playout({ pauseFrame: 481200, resumeFrame: 500400, clearFrame: 528000, pauses: 1, resumes: 1 }) });
  assert.equal(client.bargeIns.length, 1);
  assert.equal(client.bargeIns[0].via, "clear");
  assert.equal(client.bargeIns[0].silentFrame, 528000);
  assert.deepEqual(seen.map(([type]) => type), ["pause", "resume", "duck", "clear", "barge_in"]);
});

test("a duck no speech onset explains is still recorded, with no latency", () => {
  const { client } = measuringClient();
  client.onsetFrames = [];
  client.onWorkerMessage({ type: "stats", stats: playout({ pauseFrame: 1000, resumeFrame: 9000, pauses: 1, resumes: 1 }) });
  assert.equal(client.ducks.length, 1);
  assert.equal(client.ducks[0].ms, null);
});

test("the capabilities in use are the announced ones the server confirmed", () => {
  const ready = { type: "ready", protocol: 1, session_id: "s", input_rate: 48000, output_rate: 48000, frame_ms: 20, cushion_ms: 120 };
  const client = new VoicecoreClient();
  assert.deepEqual(client.capabilities, []);
  client.onWorkerMessage({ type: "message", msg: { ...ready, capabilities: ["pause", "other"] } });
  assert.deepEqual(client.capabilities, ["pause"]);
  const older = new VoicecoreClient({ capabilities: [] });
  older.onWorkerMessage({ type: "message", msg: { ...ready, capabilities: ["pause"] } });
  assert.deepEqual(older.capabilities, []);
});

test("the echo loop turns the echo canceller off and checks its settings", () => {
  const audio = /** @type {MediaTrackConstraints} */ (micConstraints(undefined, { echoCancellation: false }).audio);
  assert.equal(audio.echoCancellation, false);
  assert.deepEqual(echoLoopSettings({}), ECHO_LOOP_DEFAULTS);
  assert.deepEqual(echoLoopSettings({ gainDb: -20 }), { gainDb: -20, delayMs: 80 });
  for (const bad of [{ gainDb: NaN }, { delayMs: -1 }, { delayMs: 5000 }]) {
    assert.throws(() => echoLoopSettings(bad), RangeError);
  }
});

/** A Storage of the Web Storage API (node has none), kept in a Map. */
class MapStorage {
  constructor() {
    /** @type {Map<string, string>} */
    this.items = new Map();
  }
  /** @param {string} key */
  getItem(key) {
    return this.items.get(key) ?? null;
  }
  /** @param {string} key @param {string} value */
  setItem(key, value) {
    this.items.set(key, String(value));
  }
  /** @param {string} key */
  removeItem(key) {
    this.items.delete(key);
  }
}

const READY = { type: "ready", protocol: 1, session_id: "s", input_rate: 48000, output_rate: 48000, frame_ms: 20, cushion_ms: 120 };

test("a reconnection: the state, its events, and the conversation token kept across it", () => {
  const storage = new MapStorage();
  const client = new VoicecoreClient({ url: "ws://voice.example/ws", conversationStorage: /** @type {any} */ (storage) });
  /** @type {[string, any][]} */
  const seen = [];
  for (const type of ["state", "ready", "reconnecting", "reconnected", "closed"]) {
    client.addEventListener(type, (e) => seen.push([type, /** @type {CustomEvent} */ (e).detail]));
  }
  client.onWorkerMessage({ type: "message", msg: { ...READY, conversation: "c-1", resumed: false } });
  client.onWorkerMessage({ type: "state", state: "ready" });
  assert.equal(client.conversationToken, "c-1");
  assert.equal(storage.getItem(client.storageKey), "c-1");
  assert.equal(client.storageKey, "voicecore.conversation ws://voice.example/ws");

  client.lastPauseTurn = 4;
  const lost = { type: "reconnecting", attempt: 1, delayMs: 120, code: 1001, reason: "server draining: reconnect", clearedTurn: 4 };
  assert.equal(client.onWorkerMessage(lost), false, "the session goes on");
  client.onWorkerMessage({ type: "state", state: "reconnecting" });
  assert.equal(client.lastClearTurn, 4, "the paused reply the worker dropped");
  client.onWorkerMessage({ type: "message", msg: { ...READY, session_id: "s2", conversation: "c-1", resumed: true, history: [] } });
  client.onWorkerMessage({ type: "state", state: "ready" });
  client.onWorkerMessage({ type: "reconnected", resumed: true, downtimeMs: 380, attempts: 1 });
  assert.equal(client.session?.session_id, "s2");
  assert.deepEqual(
    seen.map(([type, detail]) => (type === "state" ? `state:${detail.state}` : type)),
    ["ready", "state:ready", "reconnecting", "state:reconnecting", "ready", "state:ready", "reconnected"],
  );
  assert.deepEqual(seen[2][1], { attempt: 1, delayMs: 120, code: 1001, reason: "server draining: reconnect" });
  assert.deepEqual(seen[6][1], { resumed: true, downtimeMs: 380, attempts: 1 });
  // A server that cannot resume sends no token: the client forgets the one it had.
  client.onWorkerMessage({ type: "message", msg: READY });
  assert.equal(client.conversationToken, null);
  assert.equal(storage.getItem(client.storageKey), null);
});

test("disconnect forgets the conversation: the next connect starts a new one", async () => {
  const storage = new MapStorage();
  const client = new VoicecoreClient({ url: "ws://voice.example/ws", conversationStorage: /** @type {any} */ (storage) });
  client.onWorkerMessage({ type: "message", msg: { ...READY, conversation: "c-1" } });
  assert.equal(storage.items.size, 1);
  await client.disconnect();
  assert.equal(client.conversationToken, null);
  assert.equal(storage.items.size, 0);
});

test("connect() rejects bad reconnect settings before touching the mic", async () => {
  const client = new VoicecoreClient({ reconnect: { jitter: 2 } });
  await assert.rejects(client.connect(), /reconnect.jitter/);
  assert.equal(client.state, "idle");
});
