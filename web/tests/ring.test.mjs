import { test } from "node:test";
import assert from "node:assert/strict";
import { H, HEADER_WORDS, PlayerState, PlayoutRing } from "../lib/ring.mjs";

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
  assert.throws(() => new PlayoutRing(new ArrayBuffer(HEADER_WORDS * 4 + 12 * 4)), RangeError);
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

// ---- pause and resume ---------------------------------------------------------------------

/**
 * Reads quanta of `size` until `count` quanta were read; returns the output concatenated.
 * @param {PlayoutRing} r
 */
const readQuanta = (r, size, count, frame = { now: 0 }) => {
  const all = [];
  const out = new Float32Array(size);
  for (let q = 0; q < count; q++) {
    r.read(out, frame.now);
    frame.now += size;
    all.push(...out);
  }
  return all;
};

test("pause fades out, holds every sample, and resume plays on from the exact next sample", () => {
  const fade = 8;
  const r = ring(512);
  r.setFadeSamples(fade);
  r.write(ramp(1, 200));
  const out = new Float32Array(16);
  r.read(out, 1000);
  assert.deepEqual(Array.from(out), Array.from(ramp(1, 16)));

  r.pause();
  assert.equal(r.read(out, 1016), fade - 1, "the fade-out plays fade - 1 samples");
  // Samples 17..23, each one step quieter (7/8 .. 1/8), then silence.
  const expectedFade = [17, 18, 19, 20, 21, 22, 23].map((v, i) => (v * (fade - 1 - i)) / fade);
  assert.deepEqual(Array.from(out.subarray(0, fade - 1)), expectedFade);
  assert.deepEqual(Array.from(out.subarray(fade - 1)), new Array(16 - fade + 1).fill(0));
  let stats = r.stats();
  assert.equal(stats.paused, true);
  assert.equal(stats.pauseFrame, 1016 + fade - 1, "the first silent sample");
  assert.equal(stats.pauses, 1);
  assert.equal(stats.buffered, 200 - 23);

  // Paused: silence, nothing consumed, and what arrives meanwhile is kept.
  const played = stats.played;
  assert.equal(r.read(out, 1032), 0);
  assert.deepEqual(Array.from(out), new Array(16).fill(0));
  r.write(ramp(201, 50));
  r.read(out, 1048);
  stats = r.stats();
  assert.equal(stats.buffered, 250 - 23, "buffered holds still while paused (plus the new audio)");
  assert.equal(stats.played, played);
  assert.equal(stats.underruns, 0, "a pause is not a gap");

  r.resume();
  assert.equal(r.read(out, 1064), 16);
  // From sample 24 on, one step louder per sample (1/8 .. 8/8), then at full level.
  const expectedIn = Array.from(ramp(24, 16), (v, i) => (v * Math.min(fade, i + 1)) / fade);
  assert.deepEqual(Array.from(out), expectedIn);
  stats = r.stats();
  assert.equal(stats.paused, false);
  assert.equal(stats.resumeFrame, 1064);
  assert.equal(stats.resumes, 1);
  // The rest plays untouched, up to the last sample written while paused.
  const rest = readQuanta(r, 16, 15).filter((v) => v !== 0);
  assert.deepEqual(rest, Array.from(ramp(40, 211)));
  assert.equal(r.stats().played, 250, "every sample played exactly once");
  assert.equal(r.stats().underruns, 0);
});

test("fades are bounded steps: a sine paused and resumed at its peak has no click", () => {
  const rate = 48000;
  const fade = 240; // 5 ms
  const amplitude = 0.5;
  const sine = Float32Array.from({ length: rate }, (_, i) => amplitude * Math.sin((2 * Math.PI * 440 * i) / rate));
  // The largest step the sine itself makes from one sample to the next.
  const naturalStep = amplitude * 2 * Math.PI * (440 / rate);
  const maxStep = (/** @type {number[]} */ xs) => Math.max(...xs.slice(1).map((v, i) => Math.abs(v - xs[i])));

  const run = (/** @type {number} */ fadeSamples) => {
    const r = ring(rate);
    r.setFadeSamples(fadeSamples);
    r.write(sine);
    const output = readQuanta(r, 128, 10); // past the peak at sample 1, then mid-wave
    r.pause();
    output.push(...readQuanta(r, 128, 5));
    r.resume();
    output.push(...readQuanta(r, 128, 10));
    return { output, r };
  };
  const { output, r } = run(fade);
  assert.ok(maxStep(output) <= naturalStep + amplitude / fade + 1e-6, `max step ${maxStep(output)}`);
  assert.equal(r.stats().played, 20 * 128 + fade - 1, "fade-out samples are played, not dropped");
  // Without a fade the pause cuts mid-waveform: a step as large as the sample itself.
  const cut = run(0).output;
  assert.ok(maxStep(cut) > 10 * naturalStep, `an unfaded cut steps ${maxStep(cut)}`);
});

test("a resume during the fade-out, or a pause during the fade-in, turns around smoothly", () => {
  const fade = 32;
  const r = ring(1024);
  r.setFadeSamples(fade);
  r.write(new Float32Array(1000).fill(1));
  const output = readQuanta(r, 8, 2);
  r.pause();
  output.push(...readQuanta(r, 8, 2)); // half way down
  r.resume();
  output.push(...readQuanta(r, 8, 1)); // back up a little
  r.pause();
  output.push(...readQuanta(r, 8, 8)); // down to silence
  r.resume();
  output.push(...readQuanta(r, 8, 8)); // up to full level
  const steps = output.slice(1).map((v, i) => Math.abs(v - output[i]));
  assert.ok(Math.max(...steps) <= 1 / fade + 1e-6, `largest step ${Math.max(...steps)}`);
  assert.equal(output.at(-1), 1);
  assert.equal(output[31], 1 - 16 / fade, "half way down after 16 samples of fade-out");
  assert.equal(r.stats().pauses, 2);
  assert.equal(r.stats().resumes, 2);
  // Dropped nothing, played nothing twice: the read position moved by the samples played.
  assert.equal(r.stats().played + r.buffered, 1000);
});

test("a clear while paused drops the held audio, ends the pause, and the next reply plays", () => {
  const r = ring(256);
  r.setFadeSamples(4);
  r.write(ramp(1, 100));
  const out = new Float32Array(8);
  r.read(out, 100);
  r.pause();
  r.read(out, 108);
  r.write(ramp(101, 20)); // more of the paused reply
  r.clear();
  r.write(ramp(500, 20)); // the next reply
  assert.equal(r.read(out, 116), 8);
  assert.deepEqual(Array.from(out), Array.from(ramp(500, 8)), "at full level from its first sample");
  const stats = r.stats();
  assert.equal(stats.paused, false);
  assert.equal(stats.clearFrame, 116);
  assert.equal(stats.pauseFrame, 108 + 3);
  assert.equal(stats.pauses, 1);
  assert.equal(stats.resumes, 0, "ended by the clear, not resumed");
  assert.equal(stats.underruns, 0);
});

test("a pause made stale by a clear is ignored; one made after the clear applies", () => {
  const r = ring(256);
  r.write(ramp(1, 50));
  const out = new Float32Array(8);
  r.read(out);
  // Paused, then cleared before the player looked: the pause ended with the clear.
  r.pause();
  r.clear();
  r.write(ramp(100, 30));
  assert.equal(r.read(out), 8);
  assert.deepEqual(Array.from(out), Array.from(ramp(100, 8)));
  assert.equal(r.stats().paused, false);
  assert.equal(r.stats().pauses, 0);
  // Cleared, then the next reply paused, before the player looked: it stays held.
  r.clear();
  r.write(ramp(200, 30));
  r.pause();
  assert.equal(r.read(out, 64), 0, "idle when the pause came: silent at once, no fade");
  assert.equal(r.stats().paused, true);
  assert.equal(r.stats().pauseFrame, 64);
  assert.equal(r.stats().buffered, 30);
  r.resume();
  assert.equal(r.read(out), 8);
  assert.equal(out[7], 207, "the held reply plays from its first sample");
});

test("resume with no pause in effect changes nothing; a pause on a dry ring is silent at once", () => {
  const r = ring(128);
  r.setFadeSamples(16);
  r.write(ramp(1, 40));
  const out = new Float32Array(8);
  r.read(out);
  r.resume();
  r.read(out);
  assert.deepEqual(Array.from(out), Array.from(ramp(9, 8)));
  assert.equal(r.stats().resumes, 0);
  // The ring runs dry during the fade-out: silence from where the audio ended.
  r.read(out);
  r.read(out);
  r.pause();
  assert.equal(r.read(out, 500), 8, "8 of the 15 fade samples are there");
  assert.equal(r.read(out, 508), 0);
  assert.equal(r.stats().pauseFrame, 508, "silent where the ring ran dry");
  r.write(ramp(41, 8));
  r.resume();
  assert.equal(r.read(out, 516), 8);
  assert.equal(r.stats().underruns, 0, "the silence was the pause, not a gap");
  // Paused while starved: silent at once, and the pause does not add to the gap.
  const s = ring(128);
  s.write(ramp(1, 4));
  s.read(out);
  assert.equal(s.stats().state, PlayerState.STARVED);
  s.pause();
  readQuanta(s, 8, 10);
  s.write(ramp(5, 8));
  s.resume();
  s.read(out);
  assert.equal(s.stats().underruns, 1);
  assert.equal(s.stats().underrunSamples, 4, "the gap before the pause only");
});

test("random pauses, resumes and clears on one SharedArrayBuffer lose and repeat nothing", () => {
  const sab = PlayoutRing.allocate(4096, true);
  const writer = new PlayoutRing(sab);
  const reader = new PlayoutRing(sab);
  // No fade: every sample played is the written value, so order and loss are exact.
  writer.setFadeSamples(0);
  const out = new Float32Array(128);
  let written = 0;
  let expected = 0;
  let lastClearAt = 0;
  let paused = false;
  let pausedReads = 0;
  let rng = 99;
  const random = () => ((rng = (rng * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let step = 0; step < 20000; step++) {
    if (random() < 0.3 && writer.buffered + 240 <= writer.capacity) written += writer.write(ramp(written, 240));
    const action = random();
    if (action < 0.01) {
      writer.pause();
      paused = true;
    } else if (action < 0.02) {
      writer.resume();
      paused = false;
    } else if (action < 0.022) {
      writer.clear();
      lastClearAt = written;
      paused = false;
    }
    const n = reader.read(out);
    if (paused) {
      assert.equal(n, 0, `step ${step}: nothing plays while paused`);
      pausedReads++;
    }
    if (n > 0 && expected < lastClearAt) expected = Math.max(expected, out[0]);
    for (let i = 0; i < n; i++) assert.equal(out[i], expected++, `step ${step}`);
  }
  assert.ok(expected > 100000, `exercised ${expected} samples`);
  assert.ok(pausedReads > 1000, `${pausedReads} quanta paused`);
  assert.equal(writer.stats().overflow, 0);
});

test("the fade length is checked", () => {
  const r = ring(8);
  for (const bad of [-1, 1.5, 192001]) assert.throws(() => r.setFadeSamples(bad), RangeError);
  r.setFadeSamples(0);
  r.setFadeSamples(192000);
});
