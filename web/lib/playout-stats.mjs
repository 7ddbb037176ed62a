// @ts-check
/**
 * Turns the player's raw ring counters into the figures the protocol and the page use:
 * milliseconds, and a played position that keeps counting past the 32-bit wrap of the
 * ring's free-running counter.
 * @module
 */

/**
 * @typedef {object} PlayoutStats
 * @property {number} bufferedMs agent audio held, not yet played
 * @property {number} playedMs agent audio played since the session started
 * @property {number} underruns gaps inside replies
 * @property {number} underrunMs total length of those gaps
 * @property {number} overflowMs audio dropped because the ring was full
 * @property {"idle" | "playing" | "starved"} state
 * @property {number} capacityMs the ring's size
 * @property {number} clearFrame AudioContext frame at which the last clear silenced the
 *   player (0: none yet)
 * @property {boolean} paused a `pause` is in effect at the player (fading out, or silent)
 * @property {number} pauseFrame AudioContext frame at which the last pause's fade-out ended:
 *   the first silent sample (0: none yet)
 * @property {number} resumeFrame AudioContext frame at which the last `resume` took effect
 *   (0: none yet)
 * @property {number} pauses pauses that took effect at the player
 * @property {number} resumes pauses ended by a `resume` (the others ended with a `clear`)
 */

const STATES = /** @type {const} */ (["idle", "playing", "starved"]);

export class PlayoutCounter {
  /** @param {number} sampleRate Hz */
  constructor(sampleRate) {
    if (!(sampleRate > 0)) throw new RangeError(`sampleRate must be > 0, got ${sampleRate}`);
    this.sampleRate = sampleRate;
    this.lastPlayed = 0;
    this.totalPlayed = 0;
  }

  /**
   * @param {import("./ring.mjs").RingStats} raw
   * @returns {PlayoutStats}
   */
  update(raw) {
    // The ring's counter is uint32; the distance since the last look survives one wrap, and
    // a look happens many times a second, far inside the ~24 h a wrap takes.
    this.totalPlayed += (raw.played - this.lastPlayed) >>> 0;
    this.lastPlayed = raw.played;
    const ms = 1000 / this.sampleRate;
    return {
      bufferedMs: raw.buffered * ms,
      playedMs: this.totalPlayed * ms,
      underruns: raw.underruns,
      underrunMs: raw.underrunSamples * ms,
      overflowMs: raw.overflow * ms,
      state: STATES[raw.state] ?? "idle",
      capacityMs: raw.capacity * ms,
      clearFrame: raw.clearFrame,
      paused: raw.paused,
      pauseFrame: raw.pauseFrame,
      resumeFrame: raw.resumeFrame,
      pauses: raw.pauses,
      resumes: raw.resumes,
    };
  }
}
