// @ts-check
/**
 * A fixed-size time series for the page's live graphs: (time, value) points in preallocated
 * arrays, oldest dropped first, plus marks (e.g. underruns) at points in time.
 * @module
 */

export class TimeSeries {
  /** @param {number} capacity points kept */
  constructor(capacity) {
    if (!Number.isInteger(capacity) || capacity < 2) {
      throw new RangeError(`capacity must be an integer >= 2, got ${capacity}`);
    }
    this.times = new Float64Array(capacity);
    this.values = new Float64Array(capacity);
    this.capacity = capacity;
    /** index of the oldest point */
    this.start = 0;
    this.length = 0;
    /** @type {number[]} times of marks, oldest first */
    this.marks = [];
  }

  /** @param {number} time @param {number} value */
  push(time, value) {
    const at = (this.start + this.length) % this.capacity;
    this.times[at] = time;
    this.values[at] = value;
    if (this.length < this.capacity) this.length++;
    else this.start = (this.start + 1) % this.capacity;
    // Marks older than the oldest point can no longer be drawn.
    const oldest = this.times[this.start];
    while (this.marks.length && this.marks[0] < oldest) this.marks.shift();
  }

  /** @param {number} time */
  mark(time) {
    this.marks.push(time);
  }

  /**
   * The i-th point, oldest first.
   * @param {number} i
   * @returns {[number, number]}
   */
  at(i) {
    const j = (this.start + i) % this.capacity;
    return [this.times[j], this.values[j]];
  }

  /** The largest value held (0 when empty). */
  max() {
    let m = 0;
    for (let i = 0; i < this.length; i++) m = Math.max(m, this.at(i)[1]);
    return m;
  }

  clear() {
    this.start = 0;
    this.length = 0;
    this.marks = [];
  }
}
