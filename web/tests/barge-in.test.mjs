import { test } from "node:test";
import assert from "node:assert/strict";
import { OnsetDetector, bargeInMs, silenceOfClear, silenceOfResume } from "../lib/barge-in.mjs";

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

const frames = (clearFrame, pauseFrame, resumeFrame) => ({ clearFrame, pauseFrame, resumeFrame });

test("a clear with no pause before it: silent at the clear", () => {
  assert.deepEqual(silenceOfClear(frames(5000, 0, 0), 0), { silentFrame: 5000, via: "clear" });
});

test("a clear that confirms a pause: silent since the pause's fade-out ended", () => {
  assert.deepEqual(silenceOfClear(frames(9000, 4000, 0), 0), { silentFrame: 4000, via: "pause" });
  // The same after an earlier clear and an earlier resumed pause.
  assert.deepEqual(silenceOfClear(frames(9000, 4000, 3000), 2000), { silentFrame: 4000, via: "pause" });
});

test("a pause that was resumed, or ended by an earlier clear, does not explain a clear", () => {
  assert.deepEqual(silenceOfClear(frames(9000, 4000, 5000), 0), { silentFrame: 9000, via: "clear" }, "resumed");
  assert.deepEqual(silenceOfClear(frames(9000, 4000, 0), 6000), { silentFrame: 9000, via: "clear" }, "cleared");
  // A pause still fading out when the clear came never recorded its silence: the frame shown
  // is an older pause's, ended by the previous clear.
  assert.deepEqual(silenceOfClear(frames(9000, 1000, 0), 2000), { silentFrame: 9000, via: "clear" });
});

test("a resume ends a duck that went silent at the pause's frame", () => {
  const none = frames(0, 0, 0);
  assert.equal(silenceOfResume(frames(0, 4000, 6000), none), 4000);
  assert.equal(silenceOfResume(frames(0, 4000, 6000), frames(0, 4000, 0)), 4000, "pause seen in the stats before");
  // Resumed during its fade-out: the pause frame is an older pause's, already resumed.
  assert.equal(silenceOfResume(frames(0, 4000, 8000), frames(0, 4000, 6000)), null);
  // Or one that a clear ended.
  assert.equal(silenceOfResume(frames(5000, 4000, 8000), frames(5000, 4000, 0)), null);
});

test("the earlier silence is what the barge-in latency is measured to", () => {
  const rate = 48000;
  const onsets = [96000];
  const { silentFrame } = silenceOfClear(frames(96000 + 14400, 96000 + 2400, 0), 0);
  assert.equal(bargeInMs(onsets, silentFrame, rate, 0.02), 50 + 20, "paused 50 ms after the onset");
});
