import { test } from "node:test";
import assert from "node:assert/strict";
import {
  FrameAssembler,
  floatToInt16,
  int16ToFloat,
  pcm16FromBytes,
  samplesPerFrame,
  toDbfs,
} from "../lib/pcm.mjs";

test("floatToInt16 scales, rounds and clamps", () => {
  const input = new Float32Array([0, 1, -1, 0.5, -0.5, 1.5, -2, 1e-6, NaN, Infinity, -Infinity]);
  const out = floatToInt16(input, new Int16Array(input.length));
  assert.deepEqual(Array.from(out), [0, 32767, -32768, 16384, -16384, 32767, -32768, 0, 0, 32767, -32768]);
});

test("floatToInt16 writes at an offset and refuses a short output", () => {
  const out = new Int16Array(4);
  floatToInt16(new Float32Array([1, -1]), out, 2);
  assert.deepEqual(Array.from(out), [0, 0, 32767, -32768]);
  assert.throws(() => floatToInt16(new Float32Array(3), out, 2), RangeError);
});

test("int16ToFloat maps the full range into [-1, 1)", () => {
  const out = int16ToFloat(new Int16Array([-32768, 0, 32767, 16384]), new Float32Array(4));
  assert.equal(out[0], -1);
  assert.equal(out[1], 0);
  assert.ok(out[2] < 1 && out[2] > 0.9999);
  assert.equal(out[3], 0.5);
  assert.throws(() => int16ToFloat(new Int16Array(3), new Float32Array(2)), RangeError);
});

test("int16 -> float -> int16 round-trips every value", () => {
  const all = new Int16Array(65536);
  for (let i = 0; i < all.length; i++) all[i] = i - 32768;
  const back = floatToInt16(int16ToFloat(all, new Float32Array(all.length)), new Int16Array(all.length));
  // Negative values come back exactly; positive ones differ by at most one step (the
  // asymmetric 32767/32768 scaling).
  for (let i = 0; i < all.length; i++) assert.ok(Math.abs(back[i] - all[i]) <= 1, `at ${all[i]}`);
  assert.equal(back[0], -32768);
});

test("pcm16FromBytes reads little-endian and rejects half samples", () => {
  const bytes = new Uint8Array([0x01, 0x00, 0xff, 0x7f, 0x00, 0x80]);
  assert.deepEqual(Array.from(pcm16FromBytes(bytes.buffer)), [1, 32767, -32768]);
  assert.throws(() => pcm16FromBytes(new ArrayBuffer(3)), RangeError);
});

test("samplesPerFrame", () => {
  assert.equal(samplesPerFrame(48000, 20), 960);
  assert.equal(samplesPerFrame(16000, 20), 320);
  assert.equal(samplesPerFrame(44100, 20), 882);
  assert.throws(() => samplesPerFrame(22050, 15), RangeError); // 330.75 samples
  assert.throws(() => samplesPerFrame(48000, 0), RangeError);
});

test("FrameAssembler cuts 128-sample blocks into 20 ms frames, carrying the remainder", () => {
  /** @type {Int16Array[]} */
  const frames = [];
  const levels = [];
  const asm = new FrameAssembler(960, (frame, level) => {
    frames.push(frame);
    levels.push(level);
  });
  let t = 0;
  const block = new Float32Array(128);
  // 15 blocks = 1920 samples = exactly two frames; a ramp lets us check order and continuity.
  for (let b = 0; b < 15; b++) {
    for (let i = 0; i < 128; i++) block[i] = ((t++ % 1000) - 500) / 1000;
    asm.push(block);
  }
  assert.equal(frames.length, 2);
  assert.notEqual(frames[0], frames[1], "each frame is a fresh buffer (it gets transferred)");
  const joined = [...frames[0], ...frames[1]];
  for (let i = 0; i < joined.length; i++) {
    const expected = ((i % 1000) - 500) / 1000;
    assert.equal(joined[i], Math.round(expected > 0 ? expected * 32767 : expected * 32768));
  }
  assert.equal(asm.filled, 0);
  assert.ok(levels[0].peak <= 0.5 && levels[0].peak > 0.49);
  assert.ok(levels[0].rms > 0.2 && levels[0].rms < 0.35);
});

test("FrameAssembler measures silence and full scale", () => {
  const levels = [];
  const ends = [];
  const asm = new FrameAssembler(4, (_f, level, end) => {
    levels.push(level);
    ends.push(end);
  });
  asm.push(new Float32Array([0, 0, 0, 0, 1, -1, 1, -1, 3, 3]));
  assert.deepEqual(ends, [4, 8], "where in the block each frame ended");
  assert.deepEqual(levels, [
    { rms: 0, peak: 0 },
    { rms: 1, peak: 1 },
  ]);
  assert.equal(asm.filled, 2);
  assert.throws(() => new FrameAssembler(0, () => {}), RangeError);
});

test("toDbfs", () => {
  assert.equal(toDbfs(1), 0);
  assert.ok(Math.abs(toDbfs(0.5) + 6.0206) < 1e-3);
  assert.equal(toDbfs(0), -90);
  assert.equal(toDbfs(1e-9, -60), -60);
});

test("FrameAssembler can meter other samples than those it sends (mic + echo out, mic metered)", () => {
  /** @type {[number[], number][]} */
  const seen = [];
  const asm = new FrameAssembler(4, (frame, level) => seen.push([Array.from(frame), level.peak]));
  const sent = Float32Array.from([0.5, 0.5, 0.5, 0.5, 0.25, 0.25]);
  const metered = Float32Array.from([0, 0.1, 0, 0, 0.2, 0]);
  asm.push(sent, metered);
  asm.push(Float32Array.from([0, 0]), Float32Array.from([0, 0]));
  assert.deepEqual(seen, [
    [[16384, 16384, 16384, 16384], Math.fround(0.1)],
    [[8192, 8192, 0, 0], Math.fround(0.2)],
  ]);
  assert.throws(() => asm.push(sent, metered.subarray(1)), RangeError);
});
