import { test } from "node:test";
import assert from "node:assert/strict";
import { OutputTap, VoicecoreClient, micConstraints } from "../voicecore-client.mjs";

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
