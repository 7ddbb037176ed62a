// @ts-check
/// <reference path="./worklet-globals.d.ts" />
/**
 * Capture AudioWorklet: cuts the mic's float samples into 20 ms PCM16 frames at the
 * AudioContext's rate and hands each frame, transferred (no copy), to the socket worker
 * through a MessagePort, so mic audio never waits for the main thread. The frame's level
 * goes to the main thread (node.port) for the meter.
 *
 * Input 0 is the mic. Input 1, connected only for the EchoLoop test option, is a simulated
 * echo of the agent: it is added to the frames sent (the server hears it), not to the level
 * and the onsets (they describe the user).
 *
 * processorOptions: { frameMs: number }
 * node.port in: { type: "port", port: MessagePort }   the socket worker's end
 * node.port out: { type: "level", rms, peak, onset, frame }   once per frame: its level
 *                (linear 0..1), whether it starts speech after quiet (lib/barge-in.mjs), and
 *                the AudioContext frame of its first sample
 * worker port out: ArrayBuffer (one frame of PCM16 little-endian mono)
 */
import { OnsetDetector } from "../lib/barge-in.mjs";
import { FrameAssembler, samplesPerFrame } from "../lib/pcm.mjs";

class CaptureProcessor extends AudioWorkletProcessor {
  /** @param {{processorOptions?: {frameMs?: number}}} options */
  constructor(options) {
    super();
    const frameMs = options.processorOptions?.frameMs ?? 20;
    /** @type {MessagePort | null} */
    this.sink = null;
    this.onsets = new OnsetDetector();
    /** The context frame of the block being pushed (the frames' clock). */
    this.blockFrame = 0;
    const frameSamples = samplesPerFrame(sampleRate, frameMs);
    this.assembler = new FrameAssembler(frameSamples, (frame, level, end) => {
      // Frames before the worker is attached are dropped: the session has not started.
      this.sink?.postMessage(frame.buffer, [frame.buffer]);
      this.port.postMessage({
        type: "level",
        rms: level.rms,
        peak: level.peak,
        onset: this.onsets.push(level.rms),
        frame: this.blockFrame + end - frameSamples,
      });
    });
    this.port.onmessage = (/** @type {MessageEvent} */ event) => {
      if (event.data?.type === "port") this.sink = event.data.port;
    };
    /** Mic plus echo, one render quantum (allocated once; resized if a quantum differs). */
    this.mixed = new Float32Array(128);
    /** Silence, standing in for a mic that delivers nothing while the echo plays. */
    this.silence = new Float32Array(128);
  }

  /**
   * @param {Float32Array[][]} inputs
   * @returns {boolean}
   */
  process(inputs) {
    // Channel 0 only: the session is mono, and the constraints ask the browser for one channel.
    const mic = inputs[0]?.[0];
    const echo = inputs[1]?.[0];
    this.blockFrame = currentFrame;
    if (!echo) {
      if (mic) this.assembler.push(mic);
      return true;
    }
    if (this.mixed.length !== echo.length) {
      this.mixed = new Float32Array(echo.length);
      this.silence = new Float32Array(echo.length);
    }
    const user = mic ?? this.silence;
    for (let i = 0; i < echo.length; i++) this.mixed[i] = user[i] + echo[i];
    this.assembler.push(this.mixed, user);
    return true;
  }
}

registerProcessor("voicecore-capture", CaptureProcessor);
