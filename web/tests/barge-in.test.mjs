import { test } from "node:test";
import assert from "node:assert/strict";
import { OnsetDetector, bargeInMs } from "../lib/barge-in.mjs";

test("an onset is a loud frame after enough quiet ones", () => {
  const d = new OnsetDetector({ thresholdRms: 0.1, quietFrames: 3 });
  const levels = [0.5, 0.5, 0, 0, 0.5, 0, 0, 0, 0.2, 0.3, 0, 0.01, 0.02, 0.9];
  const onsets = levels.map((l) => d.push(l));
  // Frame 0: the stream starts quiet. Frame 4: only 2 quiet frames before. Frame 8: 3 quiet.
  assert.deepEqual(
    onsets.flatMap((o, i) => (o ? [i] : [])),
    [0, 8, 13],
  );
});

test("bargeInMs pairs a clear with the latest onset before it", () => {
  const rate = 48000;
  const onsets = [48000, 96000, 200000];
  // Clear at 1.25 s after the onset at 96000 (200000 is after the clear: not its cause).
  assert.equal(bargeInMs(onsets, 96000 + 6000, rate, 0.03), 125 + 30);
  assert.equal(bargeInMs(onsets, 96000, rate, 0), 0);
  assert.equal(bargeInMs(onsets, 40000, rate, 0), null, "no onset before");
  assert.equal(bargeInMs([0], 4 * rate, rate, 0), null, "older than the window");
  assert.equal(bargeInMs([], 1000, rate, 0), null);
});
