// @ts-check
/**
 * Barge-in as the user experiences it: from the moment they start talking over the agent to
 * the moment the agent falls silent at the speaker. The server reports its own part (the
 * cancel-flush-clear step); this measures the whole, on the AudioContext's sample clock:
 *
 * * the capture worklet marks speech onsets in the mic signal (`OnsetDetector`: a frame above
 *   a level after a stretch of quiet frames), stamped with the context frame;
 * * the player records the context frame at which it applied the server's `clear`, and the
 *   one at which a `pause` (the server ducking the agent while it decides) had faded the
 *   output to silence;
 * * the agent fell silent at the earlier of the two (`silenceOfClear`): a pause that the
 *   clear confirmed, else the clear itself;
 * * `bargeInMs` pairs that silence with the latest onset before it and adds the output
 *   latency (audio rendered before it was still on its way to the speaker).
 *
 * A pause that ends in a `resume` (a cough, an "mm-hm") is a duck, not a barge-in: the same
 * pairing times it (`silenceOfResume`).
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
 * The user-perceived latency of the agent falling silent at `silentFrame`, or null when no
 * onset explains it.
 * @param {number[]} onsetFrames context frames of speech onsets, oldest first
 * @param {number} silentFrame context frame at which the player went silent
 * @param {number} sampleRate Hz
 * @param {number} outputLatencyS seconds between rendering a sample and hearing it
 * @param {number} [windowS] an onset older than this before the silence is not its cause
 * @returns {number | null} ms
 */
export function bargeInMs(onsetFrames, silentFrame, sampleRate, outputLatencyS, windowS = 3) {
  for (let i = onsetFrames.length - 1; i >= 0; i--) {
    const onset = onsetFrames[i];
    if (onset > silentFrame) continue;
    if (silentFrame - onset > windowS * sampleRate) return null;
    return ((silentFrame - onset) / sampleRate + outputLatencyS) * 1000;
  }
  return null;
}

/**
 * The player's pause and clear clock, as its stats report them (context frames; 0: never).
 * @typedef {object} SilenceFrames
 * @property {number} clearFrame the last clear applied
 * @property {number} pauseFrame the last pause's fade-out ended (the output went silent)
 * @property {number} resumeFrame the last resume took effect
 */

/**
 * When the agent fell silent for the latest clear: at the pause before it, if that pause
 * silenced the output and neither a resume nor the previous clear ended it (the clear
 * confirmed the pause: a barge-in the server ducked first), else at the clear (no pause, or
 * the clear came during the fade-out).
 * @param {SilenceFrames} now the stats that show the new clear
 * @param {number} previousClearFrame the clear frame in the stats before (0: none)
 * @returns {{silentFrame: number, via: "pause" | "clear"}}
 */
export function silenceOfClear({ clearFrame, pauseFrame, resumeFrame }, previousClearFrame) {
  const pauseHeld =
    pauseFrame !== 0 && pauseFrame <= clearFrame && pauseFrame > resumeFrame && pauseFrame > previousClearFrame;
  return pauseHeld ? { silentFrame: pauseFrame, via: "pause" } : { silentFrame: clearFrame, via: "clear" };
}

/**
 * The silence a resume ended: the frame the pause before it went silent, or null when that
 * pause never silenced the output (resumed during its fade-out) or its silence was already
 * ended (by the resume or the clear the stats before showed).
 * @param {SilenceFrames} now the stats that show the new resume
 * @param {SilenceFrames} before the stats before them (zeros: none)
 * @returns {number | null} the context frame the output went silent
 */
export function silenceOfResume({ pauseFrame, resumeFrame }, before) {
  const silenced =
    pauseFrame !== 0 &&
    pauseFrame <= resumeFrame &&
    pauseFrame > before.resumeFrame &&
    pauseFrame > before.clearFrame;
  return silenced ? pauseFrame : null;
}
