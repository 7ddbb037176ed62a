// @ts-check
/// <reference path="./worklet-globals.d.ts" />
/**
 * Player AudioWorklet: plays agent audio from a PlayoutRing, 128 samples per render
 * quantum, on the audio thread; nothing on the main thread is on this path.
 *
 * Two modes, chosen by the client:
 * * shared (cross-origin isolated page): processorOptions.ring is a SharedArrayBuffer the
 *   socket worker writes into (and clears, pauses, resumes, and marks at agent_done); the
 *   worker also reads the stats from it. The player only reads.
 * * port (no SharedArrayBuffer): the player owns a ring on plain memory and the socket worker
 *   talks to it over a MessagePort: { type: "audio", samples: Float32Array } (transferred),
 *   { type: "clear" }, { type: "pause" }, { type: "resume" }, { type: "done" }; the player
 *   answers with { type: "stats", stats: RingStats } every `statsMs`.
 *
 * Either way a pause fades the output out and a resume fades it in, here on the audio
 * thread, sample by sample (lib/ring.mjs).
 *
 * processorOptions: { ring?: SharedArrayBuffer, capacity: number, startThreshold?: number
 *   (samples; port mode), fadeSamples?: number (port mode), statsMs?: number }
 * node.port in: { type: "port", port: MessagePort }   port mode: the socket worker's end
 */
import { PlayoutRing } from "../lib/ring.mjs";

class PlayerProcessor extends AudioWorkletProcessor {
  /**
   * @param {{processorOptions: {ring?: SharedArrayBuffer, capacity: number,
   *   startThreshold?: number, fadeSamples?: number, statsMs?: number}}} options
   */
  constructor(options) {
    super();
    const { ring, capacity, startThreshold = 0, fadeSamples = 0, statsMs = 50 } = options.processorOptions;
    this.ring = new PlayoutRing(ring ?? PlayoutRing.allocate(capacity, false));
    if (!ring) {
      // Port mode: this ring is the player's own (in shared mode the client configured it).
      this.ring.setSampleRate(sampleRate);
      this.ring.setStartThreshold(startThreshold);
      this.ring.setFadeSamples(fadeSamples);
    }
    /** @type {MessagePort | null} port mode: the socket worker */
    this.feed = null;
    this.statsEvery = Math.max(1, Math.round((statsMs / 1000) * sampleRate));
    this.sinceStats = 0;
    this.port.onmessage = (/** @type {MessageEvent} */ event) => {
      if (event.data?.type !== "port") return;
      this.feed = event.data.port;
      this.feed.onmessage = (/** @type {MessageEvent} */ e) => this.onFeed(e.data);
    };
  }

  /** @param {{type: string, samples?: Float32Array}} msg */
  onFeed(msg) {
    if (msg.type === "audio" && msg.samples) this.ring.write(msg.samples);
    else if (msg.type === "clear") this.ring.clear();
    else if (msg.type === "pause") this.ring.pause();
    else if (msg.type === "resume") this.ring.resume();
    else if (msg.type === "done") this.ring.markDone();
  }

  /**
   * @param {Float32Array[][]} _inputs
   * @param {Float32Array[][]} outputs
   * @returns {boolean}
   */
  process(_inputs, outputs) {
    const out = outputs[0][0];
    this.ring.read(out, currentFrame);
    // Any further output channels carry the same mono signal.
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (this.feed) {
      this.sinceStats += out.length;
      if (this.sinceStats >= this.statsEvery) {
        this.sinceStats = 0;
        this.feed.postMessage({ type: "stats", stats: this.ring.stats() });
      }
    }
    return true;
  }
}

registerProcessor("voicecore-player", PlayerProcessor);
