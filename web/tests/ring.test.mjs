import { test } from "node:test";
import assert from "node:assert/strict";
import { H, PlayerState, PlayoutRing } from "../lib/ring.mjs";

/** A ramp of `n` samples starting at `from` (distinct values show order and loss). */
const ramp = (from, n) => Float32Array.from({ length: n }, (_, i) => from + i);

const ring = (capacity, shared = true) => new PlayoutRing(PlayoutRing.allocate(capacity, shared));

test("allocate: shared when asked, validates capacity, views share memory", () => {
  assert.ok(PlayoutRing.allocate(8, true) instanceof SharedArrayBuffer);
  assert.ok(!(PlayoutRing.allocate(8, false) instanceof SharedArrayBuffer));
  for (const bad of [0, -1, 1.5, 2 ** 31]) assert.throws(() => PlayoutRing.allocate(bad, true), RangeError);
  assert.throws(() => new PlayoutRing(new ArrayBuffer(16)), RangeError);
  const sab = PlayoutRing.allocate(8, true);
  const writer = new PlayoutRing(sab);
  const reader = new PlayoutRing(sab);
  writer.write(ramp(1, 3));
  assert.equal(reader.buffered, 3);
  assert.equal(reader.shared, true);
});

test("reads what was written, in order, padding with silence", () => {
  const r = ring(16);
  r.write(ramp(1, 5));
  const out = new Float32Array(8).fill(9);
  assert.equal(r.read(out), 5);
  assert.deepEqual(Array.from(out), [1, 2, 3, 4, 5, 0, 0, 0]);
  assert.equal(r.buffered, 0);
  assert.equal(r.stats().played, 5);
});

test("capacity rounds up to a power of two", () => {
  assert.equal(ring(10).capacity, 16);
  assert.equal(ring(16).capacity, 16);
  assert.equal(ring(192000).capacity, 262144);
  assert.throws(() => new PlayoutRing(new ArrayBuffer(16 * 4 + 12 * 4)), RangeError);
});

test("wraps around the end of the buffer", () => {
  const r = ring(8);
  const out = new Float32Array(4);
  let next = 0;
  let expected = 0;
  // Writes of 3 and reads of 4 walk the indices around the 8-sample buffer many times.
  for (let i = 0; i < 50; i++) {
    next += r.write(ramp(next, 3));
    while (r.buffered >= 4) {
      r.read(out);
      assert.deepEqual(Array.from(out), Array.from(ramp(expected, 4)));
      expected += 4;
    }
  }
  assert.equal(expected, 148);
  assert.equal(r.stats().overflow, 0);
});

test("overflow drops the newest samples and counts them", () => {
  const r = ring(8);
  assert.equal(r.write(ramp(0, 6)), 6);
  assert.equal(r.write(ramp(6, 6)), 2);
  assert.equal(r.stats().overflow, 4);
  const out = new Float32Array(8);
  r.read(out);
  assert.deepEqual(Array.from(out), [0, 1, 2, 3, 4, 5, 6, 7]);
  // Room again after the read.
  assert.equal(r.write(ramp(100, 8)), 8);
});

test("free-running counters survive the 32-bit wrap", () => {
  const r = ring(8);
  // Put both indices just below 2^32 (as after ~24.8 h at 48 kHz).
  const start = (2 ** 32 - 3) | 0;
  Atomics.store(r.header, H.WRITE, start);
  Atomics.store(r.header, H.READ, start);
  r.write(ramp(1, 6));
  assert.equal(r.buffered, 6);
  assert.equal(Atomics.load(r.header, H.WRITE), 3);
  const out = new Float32Array(6);
  assert.equal(r.read(out), 6);
  assert.deepEqual(Array.from(out), [1, 2, 3, 4, 5, 6]);
  assert.equal(r.buffered, 0);
});

test("clear drops everything held at once, keeps what is written after it", () => {
  const r = ring(32);
  r.write(ramp(1, 20));
  const out = new Float32Array(4);
  r.read(out);
  const gen = r.stats();
  r.clear();
  // The next reply's first samples arrive before the player's next render quantum.
  r.write(ramp(100, 3));
  assert.equal(r.read(out), 3);
  assert.deepEqual(Array.from(out), [100, 101, 102, 0]);
  assert.equal(Atomics.load(r.header, H.CLEAR_ACK), Atomics.load(r.header, H.CLEAR_GEN));
  assert.equal(r.stats().played, gen.played + 3, "skipped samples are not counted as played");
  assert.equal(r.stats().clearFrame, 0, "no clock given");
  r.clear();
  r.read(out, 123456);
  assert.equal(r.stats().clearFrame, 123456, "the player's clock when the clear took effect");
  r.read(out, 999999);
  assert.equal(r.stats().clearFrame, 123456, "only a read that applies a clear records it");
  assert.equal(r.stats().underruns, 0);
});

test("two clears before the reader looks act as the later one", () => {
  const r = ring(32);
  r.write(ramp(1, 5));
  r.clear();
  r.write(ramp(10, 5));
  r.clear();
  r.write(ramp(20, 2));
  const out = new Float32Array(4);
  r.read(out);
  assert.deepEqual(Array.from(out), [20, 21, 0, 0]);
  assert.equal(r.applyClear(), false, "nothing pending afterwards");
});

test("a clear on an empty ring, or already passed, never moves the reader backwards", () => {
  const r = ring(16);
  r.clear();
  assert.equal(r.applyClear(), true);
  assert.equal(r.buffered, 0);
  // A stale CLEAR_AT behind READ (published, then the reader moved on) is ignored.
  r.write(ramp(1, 8));
  Atomics.store(r.header, H.CLEAR_AT, 0);
  Atomics.add(r.header, H.CLEAR_GEN, 1);
  const out = new Float32Array(4);
  r.read(out);
  r.read(out);
  assert.deepEqual(Array.from(out), [5, 6, 7, 8]);
});

test("silence between replies is idle; a gap inside a reply is one underrun", () => {
  const r = ring(64);
  const out = new Float32Array(4);
  // Before any reply: empty is idle.
  r.read(out);
  r.read(out);
  assert.equal(r.stats().state, PlayerState.IDLE);
  // A reply starts, runs dry for two quanta, resumes: one underrun of 8 - 2 samples.
  r.write(ramp(1, 6));
  r.read(out);
  assert.equal(r.stats().state, PlayerState.PLAYING);
  r.read(out); // 2 samples + 2 silence
  assert.equal(r.stats().state, PlayerState.STARVED);
  r.read(out); // 4 silence
  assert.equal(r.stats().underruns, 0, "not known to be a gap until audio resumes");
  r.write(ramp(7, 4));
  r.read(out);
  assert.deepEqual(Array.from(out), [7, 8, 9, 10]);
  assert.equal(r.stats().underruns, 1);
  assert.equal(r.stats().underrunSamples, 6);
  // agent_done, then the ring drains exactly: the reply ended, no underrun.
  r.markDone();
  r.read(out);
  assert.equal(r.stats().state, PlayerState.IDLE);
  // Next reply after a pause: still no underrun.
  r.write(ramp(20, 4));
  r.read(out);
  r.markDone();
  r.read(out);
  assert.equal(r.stats().underruns, 1);
  assert.equal(r.stats().state, PlayerState.IDLE);
});

test("agent_done arriving after the ring ran dry ends the reply without an underrun", () => {
  const r = ring(64);
  const out = new Float32Array(4);
  r.write(ramp(1, 4));
  r.read(out);
  r.read(out); // dry, done not yet known
  assert.equal(r.stats().state, PlayerState.STARVED);
  r.markDone();
  r.read(out);
  assert.equal(r.stats().state, PlayerState.IDLE);
  r.write(ramp(5, 4)); // the next reply
  r.read(out);
  assert.equal(r.stats().underruns, 0);
  assert.equal(r.stats().underrunSamples, 0);
});

test("a clear while starved is a barge-in, not an underrun", () => {
  const r = ring(64);
  const out = new Float32Array(4);
  r.write(ramp(1, 2));
  r.read(out);
  assert.equal(r.stats().state, PlayerState.STARVED);
  r.clear();
  r.read(out);
  assert.equal(r.stats().state, PlayerState.IDLE);
  r.write(ramp(1, 4));
  r.read(out);
  assert.equal(r.stats().underruns, 0);
});

test("interleaved writer and reader views on one SharedArrayBuffer lose and repeat nothing", () => {
  const sab = PlayoutRing.allocate(1000, true);
  const writer = new PlayoutRing(sab);
  const reader = new PlayoutRing(sab);
  const out = new Float32Array(128);
  let written = 0;
  let expected = 0;
  let rng = 12345;
  const random = () => ((rng = (rng * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  // Random bursts of 20 ms frames (960 samples) against steady 128-sample reads, with an
  // occasional clear; every sample read must be the next one written after the last clear.
  const frame = 240;
  let lastClearAt = 0;
  for (let step = 0; step < 20000; step++) {
    if (random() < 0.3 && writer.buffered + frame <= writer.capacity) {
      written += writer.write(ramp(written, frame));
    }
    if (random() < 0.002) {
      writer.clear();
      lastClearAt = written;
    }
    const n = reader.read(out);
    if (n > 0 && expected < lastClearAt) expected = Math.max(expected, out[0]);
    for (let i = 0; i < n; i++) assert.equal(out[i], expected++, `step ${step}`);
  }
  assert.ok(expected > 100000, `exercised ${expected} samples`);
  assert.equal(writer.stats().overflow, 0);
});

test("a reply starts once its start threshold is buffered, or once it is all there", () => {
  const r = ring(64);
  r.setStartThreshold(6);
  const out = new Float32Array(4);
  r.write(ramp(1, 4));
  assert.equal(r.read(out), 0, "4 of 6: wait");
  assert.equal(r.stats().state, PlayerState.IDLE, "waiting is idle, not starved");
  r.write(ramp(5, 4));
  assert.equal(r.read(out), 4);
  assert.deepEqual(Array.from(out), [1, 2, 3, 4]);
  // Once playing, the threshold no longer applies: a short buffer plays on.
  assert.equal(r.read(out), 4);
  r.markDone();
  r.read(out);
  assert.equal(r.stats().state, PlayerState.IDLE);
  // A reply shorter than the threshold plays as soon as agent_done says it is complete.
  r.write(ramp(20, 3));
  assert.equal(r.read(out), 0);
  r.markDone();
  assert.equal(r.read(out), 3);
  assert.equal(r.stats().underruns, 0);
  // A reply that trickles in waits at most the threshold's duration (6 samples: 2 quanta).
  r.read(out); // idle
  r.write(ramp(30, 1));
  assert.equal(r.read(out), 0);
  assert.equal(r.read(out), 0);
  assert.equal(r.read(out), 1, "waited 8 >= 6 samples: starts with what it has");
  assert.equal(r.stats().underruns, 0);
  assert.throws(() => r.setStartThreshold(65), RangeError);
  assert.throws(() => r.setStartThreshold(-1), RangeError);
});
