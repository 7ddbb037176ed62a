// @ts-check
/**
 * PCM conversion and framing for the audio path: Web Audio works in float32 samples in
 * [-1, 1]; the wire carries PCM16 little-endian mono. Every function writes into a buffer the
 * caller owns, so the audio thread allocates nothing per render quantum.
 * @module
 */

/** The little-endian check: typed arrays use the platform's byte order, the wire is LE. */
export const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Converts float samples to int16, clamping to [-1, 1] first (a hot mic or a gain stage can
 * exceed full scale; wrapping around would turn a clip into a loud click).
 * Positive values scale by 32767 and negative by 32768, so -1 maps to -32768 and 1 to 32767
 * and the conversion round-trips with `int16ToFloat` within one step.
 * NaN becomes 0.
 * @param {Float32Array} input
 * @param {Int16Array} output at least `input.length` long
 * @param {number} [outputOffset] where in `output` to start writing
 * @returns {Int16Array} `output`
 */
export function floatToInt16(input, output, outputOffset = 0) {
  if (output.length - outputOffset < input.length) {
    throw new RangeError(
      `output has room for ${output.length - outputOffset} samples, input has ${input.length}`,
    );
  }
  for (let i = 0; i < input.length; i++) {
    const s = input[i];
    // `s > 0` is false for NaN, and NaN * 32768 rounds to 0 through the Int16Array store.
    if (s >= 1) output[outputOffset + i] = 32767;
    else if (s <= -1) output[outputOffset + i] = -32768;
    else output[outputOffset + i] = Math.round(s > 0 ? s * 32767 : s * 32768);
  }
  return output;
}

/**
 * Converts int16 samples to float32 in [-1, 1): divides by 32768 (the usual convention:
 * -32768 maps exactly to -1).
 * @param {Int16Array} input
 * @param {Float32Array} output at least `input.length` long
 * @returns {Float32Array} `output`
 */
export function int16ToFloat(input, output) {
  if (output.length < input.length) {
    throw new RangeError(`output has room for ${output.length} samples, input has ${input.length}`);
  }
  for (let i = 0; i < input.length; i++) output[i] = input[i] / 32768;
  return output;
}

/**
 * Reads a binary WebSocket message (PCM16 little-endian) as int16 samples without copying
 * when the platform is little-endian (every browser platform in practice).
 * @param {ArrayBuffer} buffer
 * @returns {Int16Array}
 * @throws {RangeError} on an odd byte length (half a sample: a framing bug upstream)
 */
export function pcm16FromBytes(buffer) {
  if (buffer.byteLength % 2 !== 0) {
    throw new RangeError(`PCM16 needs an even number of bytes, got ${buffer.byteLength}`);
  }
  if (LITTLE_ENDIAN) return new Int16Array(buffer);
  const view = new DataView(buffer);
  const out = new Int16Array(buffer.byteLength / 2);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true);
  return out;
}

/**
 * Samples in one frame of `frameMs` at `sampleRate` (e.g. 960 for 20 ms at 48 kHz).
 * @param {number} sampleRate Hz
 * @param {number} frameMs milliseconds
 * @returns {number}
 */
export function samplesPerFrame(sampleRate, frameMs) {
  const n = (sampleRate * frameMs) / 1000;
  if (!Number.isInteger(n) || n <= 0) {
    throw new RangeError(`${frameMs} ms at ${sampleRate} Hz is not a whole number of samples`);
  }
  return n;
}

/**
 * Cuts a stream of float blocks (the 128-sample render quanta of an AudioWorklet) into
 * fixed frames of PCM16 (e.g. 20 ms) and measures the level of each frame.
 *
 * A render quantum does not divide a 20 ms frame (960 / 128 = 7.5), so a block can complete
 * a frame part-way through; the remainder starts the next frame.
 */
export class FrameAssembler {
  /**
   * @param {number} frameSamples samples per output frame
   * @param {(frame: Int16Array, level: {rms: number, peak: number}, end: number) => void} onFrame
   *   called with a fresh Int16Array per frame (it is handed off, e.g. transferred to a worker,
   *   so it cannot be reused), the frame's level (linear, 0..1), and where in the block being
   *   pushed the frame ended (index just past its last sample: the caller's clock for it)
   */
  constructor(frameSamples, onFrame) {
    if (!Number.isInteger(frameSamples) || frameSamples <= 0) {
      throw new RangeError(`frameSamples must be a positive integer, got ${frameSamples}`);
    }
    this.frameSamples = frameSamples;
    this.onFrame = onFrame;
    this.frame = new Int16Array(frameSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.peak = 0;
  }

  /**
   * Appends float samples; emits every frame they complete.
   * @param {Float32Array} block
   * @param {Float32Array} [measured] the samples whose level is reported, as long as `block`
   *   (default: `block`; the capture worklet sends mic + simulated echo but meters the mic)
   */
  push(block, measured = block) {
    if (measured.length !== block.length) {
      throw new RangeError(`measured has ${measured.length} samples, block ${block.length}`);
    }
    let offset = 0;
    while (offset < block.length) {
      const take = Math.min(block.length - offset, this.frameSamples - this.filled);
      floatToInt16(block.subarray(offset, offset + take), this.frame, this.filled);
      const part = measured.subarray(offset, offset + take);
      for (let i = 0; i < part.length; i++) {
        const a = Math.abs(part[i]);
        if (a > this.peak) this.peak = a;
        this.sumSquares += part[i] * part[i];
      }
      this.filled += take;
      offset += take;
      if (this.filled === this.frameSamples) {
        const level = {
          rms: Math.min(1, Math.sqrt(this.sumSquares / this.frameSamples)),
          peak: Math.min(1, this.peak),
        };
        const full = this.frame;
        this.frame = new Int16Array(this.frameSamples);
        this.filled = 0;
        this.sumSquares = 0;
        this.peak = 0;
        this.onFrame(full, level, offset);
      }
    }
  }
}

/**
 * A level in decibels relative to full scale, floored at `floorDb` (silence is -Infinity).
 * @param {number} linear 0..1
 * @param {number} [floorDb]
 * @returns {number}
 */
export function toDbfs(linear, floorDb = -90) {
  if (!(linear > 0)) return floorDb;
  return Math.max(floorDb, 20 * Math.log10(linear));
}
