// @ts-check
/**
 * The playout ring: a single-producer single-consumer ring of float32 samples between the
 * side that receives agent audio (the socket worker, or the player itself in MessagePort
 * mode) and the player AudioWorklet that reads 128 samples per render quantum.
 *
 * The same class runs on a `SharedArrayBuffer` (cross-origin isolated pages: the writer is
 * another thread) or a plain `ArrayBuffer` (fallback: writer and reader share one thread).
 * All control words go through `Atomics`, which also work on non-shared memory.
 *
 * Positions are free-running 32-bit sample counters (they wrap after 2^32 samples, ~24.8 h
 * at 48 kHz); `(a - b) >>> 0` is the distance from b to a, valid across the wrap. The writer
 * owns WRITE, the reader owns READ, so neither side ever moves the other's index:
 *
 * * overflow (the writer is more than `capacity` ahead): the writer drops the samples that do
 *   not fit (newest) and counts them in OVERFLOW; it cannot drop the oldest without racing the
 *   reader. The server's pacer keeps the client near its cushion (240 ms by default), so a
 *   full ring (seconds) means something upstream is broken, and a counted drop says so.
 * * clear (barge-in): the writer publishes the position to skip to (CLEAR_AT), then bumps
 *   CLEAR_GEN. The reader, at its next render quantum, sees a new generation and jumps READ to
 *   CLEAR_AT. Audio written after the clear (the next reply) lies beyond CLEAR_AT and is kept.
 * * end of reply: on `agent_done` the writer records its position in DONE_AT. When the reader
 *   reaches DONE_AT with nothing more to play, the reply is over: the player goes idle, and
 *   silence from then on is not an underrun.
 * * pause (the server ducks the agent while it decides whether the user is interrupting):
 *   the writer publishes a request word (PAUSE: paused or not, stamped with the clear
 *   generation it belongs to). The reader fades the output out over FADE samples and then
 *   stops reading: READ stays on the first sample not played, and the writer keeps
 *   appending. On resume it fades in from exactly that sample. A clear ends a pause: a
 *   request stamped with an older generation than the clears the reader applied is stale.
 *   Silence while paused is neither an underrun nor idle time that starts a reply.
 * * start of reply: an idle player starts a reply once START_THRESHOLD samples are buffered,
 *   the whole reply is (per DONE_AT), or it has waited the threshold's duration. The server
 *   bursts its cushion at the start of a reply, so this normally costs nothing; when the
 *   reply's first audio trickles in (a TTS slow to start, a loaded server), starting on the
 *   first 20 ms frame would play it and then stall: a gap a few tens of ms of patience avoids.
 * @module
 */

/** Indices of the Int32 control words at the start of the buffer. */
export const H = Object.freeze({
  /** writer: samples written (free-running) */
  WRITE: 0,
  /** reader: samples consumed (free-running; played or skipped by a clear) */
  READ: 1,
  /** writer: bumped on each clear */
  CLEAR_GEN: 2,
  /** writer: the WRITE position at the last clear */
  CLEAR_AT: 3,
  /** writer: the WRITE position at the last agent_done */
  DONE_AT: 4,
  /** writer: samples dropped because the ring was full */
  OVERFLOW: 5,
  /** reader: samples actually played (free-running) */
  PLAYED: 6,
  /** reader: gaps inside a reply (audio resumed after the ring ran dry) */
  UNDERRUNS: 7,
  /** reader: samples of silence those gaps lasted */
  UNDERRUN_SAMPLES: 8,
  /** reader: PlayerState */
  STATE: 9,
  /** writer: the sample rate in Hz (informational, for whoever reads the stats) */
  RATE: 10,
  /** reader: clears applied (the reader's copy of CLEAR_GEN) */
  CLEAR_ACK: 11,
  /** configuration: samples a reply must have buffered before it starts (see `read`) */
  START_THRESHOLD: 12,
  /** reader: the caller's clock (AudioContext frame) at the last clear applied; 0 if none */
  CLEAR_FRAME: 13,
  /**
   * writer: the pause request, `(clearGeneration << 1) | paused` (see `pause`): one word, so
   * the reader sees a request and the clear generation it belongs to together
   */
  PAUSE: 14,
  /** configuration: samples a fade-out (pause) or fade-in (resume) lasts; 0 or 1: none */
  FADE: 15,
  /** reader: 1 while a pause is in effect at the player (fading out or silent), else 0 */
  PAUSED: 16,
  /** reader: the caller's clock at which the last pause's fade-out ended (output silent) */
  PAUSE_FRAME: 17,
  /** reader: the caller's clock at which the last resume started playing again */
  RESUME_FRAME: 18,
  /** reader: pauses that took effect */
  PAUSES: 19,
  /** reader: pauses ended by a resume (not by a clear) */
  RESUMES: 20,
});

/** Control words reserved (a multiple of 4 keeps the float data 16-byte aligned). */
export const HEADER_WORDS = 24;

/** What the player is doing. */
export const PlayerState = Object.freeze({
  /** no reply playing: an empty ring is expected */
  IDLE: 0,
  /** playing a reply */
  PLAYING: 1,
  /** inside a reply, the ring ran dry: silence is going out (a gap, unless the reply ended) */
  STARVED: 2,
});

/**
 * @typedef {object} RingStats
 * @property {number} buffered samples written and not yet read
 * @property {number} played samples played (free-running uint32)
 * @property {number} underruns gaps inside replies
 * @property {number} underrunSamples samples of silence in those gaps
 * @property {number} overflow samples dropped because the ring was full
 * @property {number} state a PlayerState value
 * @property {number} sampleRate Hz
 * @property {number} capacity samples
 * @property {number} clearFrame the player's frame clock at the last clear applied (0: none)
 * @property {boolean} paused a pause is in effect at the player (fading out, or silent)
 * @property {number} pauseFrame the player's frame clock at which the last pause's fade-out
 *   ended: the first silent sample (0: none)
 * @property {number} resumeFrame the player's frame clock at which the last resume played
 *   its first sample (0: none)
 * @property {number} pauses pauses that took effect
 * @property {number} resumes pauses ended by a resume
 */

/** Distance from `from` to `to` on the free-running 32-bit counters. */
const dist = (/** @type {number} */ to, /** @type {number} */ from) => (to - from) >>> 0;

export class PlayoutRing {
  /**
   * Allocates the memory for a ring (shared when `shared` and SharedArrayBuffer exists).
   * @param {number} capacity samples the ring must hold at least (e.g. 4 s of audio); it is
   *   rounded up to a power of two
   * @param {boolean} shared
   * @returns {SharedArrayBuffer | ArrayBuffer}
   */
  static allocate(capacity, shared) {
    if (!Number.isInteger(capacity) || capacity <= 0 || capacity > 2 ** 30) {
      throw new RangeError(`capacity must be an integer in 1..2^30 samples, got ${capacity}`);
    }
    const bytes = HEADER_WORDS * 4 + PlayoutRing.slotsFor(capacity) * 4;
    if (shared && typeof SharedArrayBuffer === "function") return new SharedArrayBuffer(bytes);
    return new ArrayBuffer(bytes);
  }

  /**
   * The slots a ring of at least `capacity` samples uses: the next power of two. A position
   * maps to slot `position % slots`; with a power of two that mapping stays continuous when
   * the 32-bit position counter wraps (2^32 is a multiple of the slot count).
   * @param {number} capacity samples
   * @returns {number}
   */
  static slotsFor(capacity) {
    return 2 ** Math.ceil(Math.log2(capacity));
  }

  /**
   * A view on a ring's memory; every thread builds its own view on the same buffer.
   * @param {SharedArrayBuffer | ArrayBuffer} buffer from `PlayoutRing.allocate`
   */
  constructor(buffer) {
    if (buffer.byteLength <= HEADER_WORDS * 4 || buffer.byteLength % 4 !== 0) {
      throw new RangeError(`not a ring buffer: ${buffer.byteLength} bytes`);
    }
    this.buffer = buffer;
    this.header = new Int32Array(buffer, 0, HEADER_WORDS);
    this.data = new Float32Array(buffer, HEADER_WORDS * 4);
    this.capacity = this.data.length;
    if (this.capacity & (this.capacity - 1)) {
      throw new RangeError(`not a ring buffer: ${this.capacity} slots is not a power of two`);
    }
    this.mask = this.capacity - 1;
    /** True when another thread can see this memory. */
    this.shared = typeof SharedArrayBuffer === "function" && buffer instanceof SharedArrayBuffer;
    /** Reader-private: silence played since the ring ran dry inside a reply. */
    this.starvedSamples = 0;
    /** Reader-private: silence played while holding a reply's start for its threshold. */
    this.startWaited = 0;
    /**
     * Reader-private: how far the output is faded, in steps of 1/FADE: 0 plays at full
     * level, FADE is silent (paused).
     */
    this.attenuation = 0;
    /** Reader-private: a resume is fading in and has not played its first sample yet. */
    this.resumePending = false;
  }

  // ---- writer side (one thread) ---------------------------------------------------------

  /**
   * Appends samples. Samples that do not fit are dropped (the newest) and counted.
   * @param {Float32Array} samples
   * @returns {number} how many samples were written
   */
  write(samples) {
    const h = this.header;
    const write = Atomics.load(h, H.WRITE);
    const read = Atomics.load(h, H.READ);
    const free = this.capacity - dist(write, read);
    const n = Math.min(free, samples.length);
    if (n < samples.length) Atomics.add(h, H.OVERFLOW, samples.length - n);
    const start = write & this.mask;
    const first = Math.min(n, this.capacity - start);
    this.data.set(samples.subarray(0, first), start);
    if (n > first) this.data.set(samples.subarray(first, n), 0);
    // Publish after the data: Atomics.store is sequentially consistent, so a reader that
    // sees the new WRITE also sees the samples.
    Atomics.store(h, H.WRITE, (write + n) | 0);
    return n;
  }

  /**
   * Drops everything written so far (barge-in); the reader applies it at its next read.
   * Samples written after this call are kept. Ends a pause: the next reply plays.
   */
  clear() {
    const h = this.header;
    Atomics.store(h, H.CLEAR_AT, Atomics.load(h, H.WRITE));
    Atomics.add(h, H.CLEAR_GEN, 1);
  }

  /**
   * Stops the output (after a fade-out) and holds everything buffered; writes go on being
   * kept. The reader applies it at its next read.
   */
  pause() {
    this.#requestPause(1);
  }

  /** Ends a pause: the output fades in from the first sample the pause held back. */
  resume() {
    this.#requestPause(0);
  }

  /** @param {0 | 1} paused */
  #requestPause(paused) {
    // Stamped with the clear generation: a pause belongs to the audio of its generation, and
    // the reader drops a request that a later clear has ended (see `read`).
    const generation = Atomics.load(this.header, H.CLEAR_GEN);
    Atomics.store(this.header, H.PAUSE, (generation << 1) | paused);
  }

  /** Marks the end of a reply at the current write position (on `agent_done`). */
  markDone() {
    Atomics.store(this.header, H.DONE_AT, Atomics.load(this.header, H.WRITE));
  }

  /** @param {number} rate Hz */
  setSampleRate(rate) {
    Atomics.store(this.header, H.RATE, rate);
  }

  /**
   * How much of a reply must be buffered before the player starts it.
   * @param {number} samples 0 starts on the first sample; at most the capacity
   */
  setStartThreshold(samples) {
    if (!Number.isInteger(samples) || samples < 0 || samples > this.capacity) {
      throw new RangeError(`start threshold must be an integer in 0..${this.capacity} samples, got ${samples}`);
    }
    Atomics.store(this.header, H.START_THRESHOLD, samples);
  }

  /**
   * How long a pause fades out and a resume fades in (a cut to silence mid-waveform clicks).
   * @param {number} samples 0 or 1 cuts at once; at most 1 s at 192 kHz
   */
  setFadeSamples(samples) {
    if (!Number.isInteger(samples) || samples < 0 || samples > 192000) {
      throw new RangeError(`fade must be an integer in 0..192000 samples, got ${samples}`);
    }
    Atomics.store(this.header, H.FADE, samples);
  }

  // ---- reader side (the player, one thread) ------------------------------------------

  /**
   * Applies a pending clear, if any: skips READ to where the writer was at the clear.
   * @returns {boolean} whether a clear was applied
   */
  applyClear() {
    const h = this.header;
    const gen = Atomics.load(h, H.CLEAR_GEN);
    if (gen === Atomics.load(h, H.CLEAR_ACK)) return false;
    // Load CLEAR_AT after CLEAR_GEN: the writer stores it before bumping the generation, so
    // this is the position of this clear or of a later one (either is right to skip to).
    const clearAt = Atomics.load(h, H.CLEAR_AT);
    const read = Atomics.load(h, H.READ);
    const write = Atomics.load(h, H.WRITE);
    // Only move forward, and never past what was written.
    if (dist(clearAt, read) <= dist(write, read)) Atomics.store(h, H.READ, clearAt);
    Atomics.store(h, H.CLEAR_ACK, gen);
    // A cleared reply is over: the silence that follows is idle, not a gap.
    Atomics.store(h, H.STATE, PlayerState.IDLE);
    this.starvedSamples = 0;
    return true;
  }

  /**
   * Fills `out` from the ring for one render quantum: applies a pending clear and the pause
   * request, copies what is there (faded at a pause or a resume), fills the rest with
   * silence, and keeps the underrun accounting.
   *
   * An underrun is a gap inside a reply: the ring ran dry before the reply's end
   * (`markDone`) and audio then resumed. Silence between replies is idle, not an underrun;
   * a dry ring that reaches the reply's end is the reply ending, not a gap; silence while
   * paused is the server's decision, not a gap.
   * @param {Float32Array} out
   * @param {number} [nowFrame] the player's clock (the AudioContext's currentFrame) at
   *   `out[0]`: recorded in CLEAR_FRAME when this call applies a clear, in PAUSE_FRAME when a
   *   pause silences the output, in RESUME_FRAME when a resume takes effect
   * @returns {number} samples of audio copied (the rest of `out` is silence)
   */
  read(out, nowFrame = 0) {
    const h = this.header;
    // The pause request is loaded before the clear generation: a request made after a clear
    // is then never seen without that clear, and one made before it is seen as stale.
    const request = Atomics.load(h, H.PAUSE);
    const cleared = this.applyClear();
    if (cleared) {
      Atomics.store(h, H.CLEAR_FRAME, nowFrame | 0);
      // The clear ended any pause: the next reply plays at full level from its first sample.
      this.attenuation = 0;
    }
    const fade = Math.max(1, Atomics.load(h, H.FADE));
    this.attenuation = Math.min(this.attenuation, fade);
    const generation = Atomics.load(h, H.CLEAR_ACK) & 0x7fffffff;
    const wantPause = (request & 1) === 1 && request >>> 1 === generation;
    const pausedBefore = Atomics.load(h, H.PAUSED) === 1;
    if (wantPause && (!pausedBefore || cleared)) {
      Atomics.store(h, H.PAUSED, 1);
      Atomics.add(h, H.PAUSES, 1);
    } else if (!wantPause && pausedBefore) {
      Atomics.store(h, H.PAUSED, 0);
      if (!cleared) {
        Atomics.add(h, H.RESUMES, 1);
        Atomics.store(h, H.RESUME_FRAME, nowFrame | 0);
      }
    }
    if (wantPause) return this.#readPaused(out, nowFrame, fade);

    const read = Atomics.load(h, H.READ);
    const write = Atomics.load(h, H.WRITE);
    let available = dist(write, read);
    const threshold = Atomics.load(h, H.START_THRESHOLD);
    if (
      available > 0 &&
      available < threshold &&
      this.startWaited < threshold &&
      Atomics.load(h, H.STATE) === PlayerState.IDLE &&
      Atomics.load(h, H.DONE_AT) !== write
    ) {
      // A reply is arriving: hold it (idle silence) until its start threshold is buffered,
      // but never longer than the threshold's own duration.
      this.startWaited += out.length;
      available = 0;
    }
    const n = Math.min(available, out.length);
    if (n > 0) this.startWaited = 0;
    this.#copy(out, read, n);
    // After a resume: one step louder per sample, from the first sample the pause held back.
    for (let i = 0; i < n && this.attenuation > 0; i++) out[i] *= (fade - --this.attenuation) / fade;
    if (n < out.length) out.fill(0, n);
    const newRead = (read + n) | 0;
    Atomics.store(h, H.READ, newRead);
    Atomics.add(h, H.PLAYED, n);

    let state = Atomics.load(h, H.STATE);
    if (n > 0 && state === PlayerState.STARVED) {
      // Audio came back inside the same reply: the silence played meanwhile was a gap.
      Atomics.add(h, H.UNDERRUNS, 1);
      Atomics.add(h, H.UNDERRUN_SAMPLES, this.starvedSamples);
      this.starvedSamples = 0;
    }
    if (n > 0) state = PlayerState.PLAYING;
    if (n < out.length && state !== PlayerState.IDLE) {
      // Dry. At the reply's end (possibly marked only now, when agent_done arrived after the
      // ring ran dry) this is the reply finishing; otherwise a gap may be starting. Whether
      // it is one is known only if audio resumes, so the silence is held back until then.
      if (newRead === Atomics.load(h, H.DONE_AT)) {
        state = PlayerState.IDLE;
        this.starvedSamples = 0;
      } else {
        state = PlayerState.STARVED;
        this.starvedSamples += out.length - n;
      }
    }
    Atomics.store(h, H.STATE, state);
    return n;
  }

  /**
   * One render quantum while a pause is in effect: the rest of the fade-out, then silence.
   * The fade plays each sample one step (1/fade) quieter, down to the last audible one, so
   * no sample is consumed at zero gain and the resume starts on the next one. The player
   * state (playing, starved, idle) is left as it was: it goes on after the resume.
   * @param {Float32Array} out
   * @param {number} nowFrame
   * @param {number} fade samples
   * @returns {number} samples of audio copied
   */
  #readPaused(out, nowFrame, fade) {
    if (this.attenuation >= fade) {
      out.fill(0);
      return 0;
    }
    const h = this.header;
    let n = 0;
    // Only a sounding output needs a fade: idle or starved, it is silent already.
    if (Atomics.load(h, H.STATE) === PlayerState.PLAYING) {
      const read = Atomics.load(h, H.READ);
      n = Math.min(dist(Atomics.load(h, H.WRITE), read), out.length, fade - 1 - this.attenuation);
      this.#copy(out, read, n);
      for (let i = 0; i < n; i++) out[i] *= (fade - ++this.attenuation) / fade;
      Atomics.store(h, H.READ, (read + n) | 0);
      Atomics.add(h, H.PLAYED, n);
    }
    if (n < out.length) {
      // Faded out (or nothing left to fade, the ring ran dry): silent from out[n] on.
      this.attenuation = fade;
      Atomics.store(h, H.PAUSE_FRAME, (nowFrame + n) | 0);
      out.fill(0, n);
    }
    return n;
  }

  /**
   * Copies `n` samples from position `read` into the start of `out`.
   * @param {Float32Array} out
   * @param {number} read
   * @param {number} n
   */
  #copy(out, read, n) {
    const start = read & this.mask;
    const first = Math.min(n, this.capacity - start);
    out.set(this.data.subarray(start, start + first), 0);
    if (n > first) out.set(this.data.subarray(0, n - first), first);
  }

  // ---- either side -----------------------------------------------------------------------

  /** Samples written and not yet read. */
  get buffered() {
    return dist(Atomics.load(this.header, H.WRITE), Atomics.load(this.header, H.READ));
  }

  /** @returns {RingStats} */
  stats() {
    const h = this.header;
    return {
      buffered: this.buffered,
      played: Atomics.load(h, H.PLAYED) >>> 0,
      underruns: Atomics.load(h, H.UNDERRUNS),
      underrunSamples: Atomics.load(h, H.UNDERRUN_SAMPLES),
      overflow: Atomics.load(h, H.OVERFLOW),
      state: Atomics.load(h, H.STATE),
      sampleRate: Atomics.load(h, H.RATE),
      capacity: this.capacity,
      clearFrame: Atomics.load(h, H.CLEAR_FRAME) >>> 0,
      paused: Atomics.load(h, H.PAUSED) === 1,
      pauseFrame: Atomics.load(h, H.PAUSE_FRAME) >>> 0,
      resumeFrame: Atomics.load(h, H.RESUME_FRAME) >>> 0,
      pauses: Atomics.load(h, H.PAUSES),
      resumes: Atomics.load(h, H.RESUMES),
    };
  }
}
