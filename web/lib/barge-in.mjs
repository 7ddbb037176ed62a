// @ts-check
/**
 * Barge-in as the user experiences it: from the moment they start talking over the agent to
 * the moment the agent falls silent at the speaker. The server reports its own part (the
 * cancel-flush-clear step); this measures the whole, on the AudioContext's sample clock:
 *
 * * the capture worklet marks speech onsets in the mic signal (`OnsetDetector`: a frame above
 *   a level after a stretch of quiet frames), stamped with the context frame;
 * * the player records the context frame at which it applied the server's `clear`;
 * * `bargeInMs` pairs a clear with the latest onset before it and adds the output latency
 *   (audio rendered before the clear was still on its way to the speaker).
 *
 * It cannot see the mic's input latency (capture to worklet), so it starts from when the
 * user's speech reached the page; and an echo of the agent's own voice that the browser's
 * echo canceller lets through can only shorten a quiet stretch, never invent an onset
 * inside the user's speech.
 * @module
 */

export class OnsetDetector {
  /**
   * @param {{thresholdRms?: number, quietFrames?: number}} [options] a frame is speech above
   *   `thresholdRms` (linear; 0.02 is about -34 dBFS); an onset needs `quietFrames` frames of
   *   quiet before it
   */
  constructor({ thresholdRms = 0.02, quietFrames = 10 } = {}) {
    this.thresholdRms = thresholdRms;
    this.quietFrames = quietFrames;
    this.quiet = quietFrames; // the stream starts quiet
  }

  /**
   * Feeds one frame's level.
   * @param {number} rms linear
   * @returns {boolean} whether this frame is a speech onset
   */
  push(rms) {
    if (rms < this.thresholdRms) {
      this.quiet++;
      return false;
    }
    const onset = this.quiet >= this.quietFrames;
    this.quiet = 0;
    return onset;
  }
}

/**
 * The user-perceived barge-in latency of a clear, or null when no onset explains it.
 * @param {number[]} onsetFrames context frames of speech onsets, oldest first
 * @param {number} clearFrame context frame at which the player went silent
 * @param {number} sampleRate Hz
 * @param {number} outputLatencyS seconds between rendering a sample and hearing it
 * @param {number} [windowS] an onset older than this before the clear is not its cause
 * @returns {number | null} ms
 */
export function bargeInMs(onsetFrames, clearFrame, sampleRate, outputLatencyS, windowS = 3) {
  for (let i = onsetFrames.length - 1; i >= 0; i--) {
    const onset = onsetFrames[i];
    if (onset > clearFrame) continue;
    if (clearFrame - onset > windowS * sampleRate) return null;
    return ((clearFrame - onset) / sampleRate + outputLatencyS) * 1000;
  }
  return null;
}
