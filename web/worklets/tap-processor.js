// @ts-check
/// <reference path="./worklet-globals.d.ts" />
/**
 * Tap AudioWorklet (for tests and diagnostics): records what the page plays (input 0: the
 * player's output) and what the mic delivers (input 1), sample-aligned on the AudioContext's
 * frame clock, into buffers allocated up front (no allocation while recording).
 *
 * node.port in:  { type: "start", maxSeconds: number }  (re)starts a recording
 *                { type: "stop" }                      ends it and posts the result
 * node.port out: { type: "recording", sampleRate, startFrame, frames, output: Float32Array,
 *                  input: Float32Array, truncated: boolean, discontinuities: number }
 *                (buffers transferred; discontinuities: times the render clock jumped)
 * Output: silence (it is connected to the destination only so the graph renders it).
 */

class TapProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    /** @type {Float32Array | null} */
    this.output = null;
    /** @type {Float32Array | null} */
    this.input = null;
    this.frames = 0;
    this.startFrame = -1;
    this.truncated = false;
    this.discontinuities = 0;
    this.port.onmessage = (/** @type {MessageEvent} */ event) => {
      const msg = event.data;
      if (msg?.type === "start") {
        const capacity = Math.ceil(Math.max(1, Math.min(600, msg.maxSeconds ?? 60)) * sampleRate);
        this.output = new Float32Array(capacity);
        this.input = new Float32Array(capacity);
        this.frames = 0;
        this.startFrame = -1;
        this.truncated = false;
        this.discontinuities = 0;
      } else if (msg?.type === "stop" && this.output && this.input) {
        const output = this.output.slice(0, this.frames);
        const input = this.input.slice(0, this.frames);
        this.port.postMessage(
          {
            type: "recording",
            sampleRate,
            startFrame: this.startFrame,
            frames: this.frames,
            output,
            input,
            truncated: this.truncated,
            discontinuities: this.discontinuities,
          },
          [output.buffer, input.buffer],
        );
        this.output = this.input = null;
      }
    };
  }

  /**
   * @param {Float32Array[][]} inputs
   * @returns {boolean}
   */
  process(inputs) {
    if (!this.output || !this.input) return true;
    if (this.startFrame < 0) this.startFrame = currentFrame;
    const n = inputs[0]?.[0]?.length ?? 128;
    // The render clock jumped (the context was suspended, or the device skipped): the
    // recording is no longer one contiguous stretch of time. Say so rather than hide it.
    if (this.frames > 0 && currentFrame !== this.startFrame + this.frames) this.discontinuities++;
    const room = this.output.length - this.frames;
    if (room < n) {
      this.truncated = true;
      return true;
    }
    // An input with nothing connected (or a source that has ended) has zero channels: silence.
    const played = inputs[0]?.[0];
    const heard = inputs[1]?.[0];
    if (played) this.output.set(played, this.frames);
    if (heard) this.input.set(heard, this.frames);
    this.frames += n;
    return true;
  }
}

registerProcessor("voicecore-tap", TapProcessor);
