// @ts-check
/**
 * VoicecoreClient: a browser voice session with a voicecore server, protocol v1.
 *
 *     const client = new VoicecoreClient({ url: "ws://host:8000/ws" });
 *     client.addEventListener("transcript", (e) => console.log(e.detail.text));
 *     await client.connect();          // asks for the mic, opens the session
 *     ...
 *     await client.disconnect();
 *
 * The audio path avoids the main thread entirely: the capture worklet hands 20 ms PCM16
 * frames to a socket worker, which sends them; the worker writes agent audio into the
 * player worklet's ring (a SharedArrayBuffer when the page is cross-origin isolated, else
 * a MessagePort to the player). A busy main thread delays the page's display, never the
 * audio.
 *
 * Events (CustomEvent, payload in `detail`):
 *   state        { state }  "idle" | "connecting" | "handshaking" | "ready" | "closing" | "closed"
 *   audio_started { tap, sampleRate, mode }  the audio graph runs (before the server is
 *                ready): the moment to start a tap recording that must include the mic's start
 *   ready, speech_start, speech_end, transcript, agent_text, agent_done, clear, metrics
 *                the server message itself (see lib/protocol.mjs)
 *   server_error a server `error` message { code, message }
 *   error        { message } something failed on this side (mic, audio, protocol)
 *   closed       CloseInfo | null  the session is over (see lib/protocol.mjs describeClose)
 *   level        { rms, peak }  mic level per frame, linear 0..1
 *   playout      PlayoutStats  8x per second (see lib/playout-stats.mjs)
 *   barge_in     { turnId, ms, clearFrame, outputLatencyMs }  the user's speech onset at the
 *                mic to the agent's silence at the speaker (see lib/barge-in.mjs)
 * @module
 */
import { bargeInMs } from "./lib/barge-in.mjs";
import { MAX_RATE, MIN_RATE, describeClose } from "./lib/protocol.mjs";
import { PlayoutRing } from "./lib/ring.mjs";

/**
 * @typedef {object} ClientOptions
 * @property {string} [url] WebSocket URL (default: `/ws` on the page's host)
 * @property {MediaStream | string} [mic] a MediaStream to send, or an audio input deviceId;
 *   default: the browser's default mic
 * @property {number} [frameMs] mic frame length in ms (default 20)
 * @property {number} [ringSeconds] playout ring capacity (default 4 s)
 * @property {number} [sampleRate] AudioContext rate in Hz (default: the device's, or 48000
 *   when the device's rate is outside what the protocol allows)
 * @property {number} [startMs] agent audio a reply must have buffered before it starts
 *   playing (default 40 ms; the whole reply if it is shorter). The server bursts its cushion
 *   at the start of a reply, so this costs nothing then; when the first audio trickles in it
 *   trades those ms of latency for not stalling right after the first frame.
 * @property {boolean} [forcePortMode] use the MessagePort player even when
 *   SharedArrayBuffer is available (tests both paths)
 */

const BASE = new URL(".", import.meta.url);

/**
 * The mic constraints: the browser's echo canceller keeps the agent's own voice out of the
 * mic (else it would barge in on itself), and one channel is all the session uses.
 * @param {string} [deviceId]
 * @returns {MediaStreamConstraints}
 */
export function micConstraints(deviceId) {
  return {
    audio: {
      ...(deviceId ? { deviceId: { exact: deviceId } } : {}),
      channelCount: 1,
      echoCancellation: true,
      noiseSuppression: true,
      autoGainControl: true,
    },
    video: false,
  };
}

/** The audio inputs the user can pick from (labels appear once mic permission is granted). */
export async function listMics() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices.filter((d) => d.kind === "audioinput");
}

/**
 * @typedef {object} Recording
 * @property {number} sampleRate Hz
 * @property {number} startFrame AudioContext frame of the first sample
 * @property {number} startTime AudioContext time (s) of the first sample
 * @property {number} frames samples in each of `output` and `input`
 * @property {Float32Array} output what the page played (the player's output)
 * @property {Float32Array} input what the mic delivered, sample-aligned with `output`
 * @property {boolean} truncated the recording hit its maximum length
 * @property {number} discontinuities times the render clock jumped while recording (0: the
 *   recording is one contiguous stretch of the context's time)
 * @property {{contextTime: number, epochMs: number}} clock one point of the output clock:
 *   the sample at `contextTime` (s) reached the speaker at `epochMs` (ms since the epoch, as
 *   `performance.timeOrigin + performance.now()`); frame f was heard at
 *   `epochMs + (f / sampleRate - contextTime) * 1000`
 */

/**
 * Records what the page plays and what the mic hears on the AudioContext's sample clock,
 * for tests (find gaps in a reply, time a barge-in) and diagnostics.
 */
export class OutputTap {
  /**
   * @param {AudioWorkletNode} node
   * @param {AudioContext} context
   */
  constructor(node, context) {
    this.node = node;
    this.context = context;
    /** @type {((r: Recording) => void) | null} */
    this.pending = null;
    node.port.onmessage = (event) => {
      if (event.data?.type !== "recording" || !this.pending) return;
      const { sampleRate, startFrame } = event.data;
      const stamp = context.getOutputTimestamp();
      this.pending({
        ...event.data,
        startTime: startFrame / sampleRate,
        clock: {
          contextTime: stamp.contextTime ?? 0,
          epochMs: performance.timeOrigin + (stamp.performanceTime ?? performance.now()),
        },
      });
      this.pending = null;
    };
  }

  /** Starts (or restarts) recording. @param {number} [maxSeconds] default 60 */
  start(maxSeconds = 60) {
    this.node.port.postMessage({ type: "start", maxSeconds });
  }

  /**
   * Stops and returns the recording.
   * @returns {Promise<Recording>} rejects if the session's audio has already been torn down
   */
  stop() {
    if (this.context.state === "closed") {
      return Promise.reject(new Error("the AudioContext is closed: stop the tap before disconnecting"));
    }
    return new Promise((resolve) => {
      this.pending = resolve;
      this.node.port.postMessage({ type: "stop" });
    });
  }
}

export class VoicecoreClient extends EventTarget {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    super();
    this.options = options;
    /** @type {import("./lib/protocol.mjs").ConnectionState} */
    this.state = "idle";
    /** @type {import("./lib/protocol.mjs").Ready | null} */
    this.session = null;
    /** @type {import("./lib/playout-stats.mjs").PlayoutStats | null} */
    this.playout = null;
    /** Mic frames sent, and dropped because the socket was backed up. */
    this.micFrames = { sent: 0, dropped: 0 };
    /** @type {{rms: number, peak: number}} */
    this.level = { rms: 0, peak: 0 };
    /** @type {"shared" | "port" | null} how agent audio reaches the player */
    this.mode = null;
    /** @type {AudioContext | null} */
    this.context = null;
    /** @type {OutputTap | null} */
    this.tap = null;
    /** @type {Worker | null} */
    this.worker = null;
    /** @type {MediaStream | null} */
    this.stream = null;
    /** @type {AudioNode[]} */
    this.nodes = [];
    this.ownsStream = false;
    /** @type {Promise<void> | null} resolves once the session is over and torn down */
    this.closedPromise = null;
    /** @type {Promise<void> | null} the teardown after the session ended */
    this.finished = null;
    /**
     * When the player's underrun counter went up, as seen by the stats (8x per second):
     * epoch ms it was seen, the played position then (ms), the counters after it, and the
     * longest wait between two agent audio frames in the second before (ms): a wait longer
     * than the cushion means the audio arrived late (server or network), not that this
     * client failed to play what it had.
     * @type {{epochMs: number, playedMs: number, underruns: number, underrunMs: number,
     *   arrivalGapMs: number}[]}
     */
    this.underrunLog = [];
    /** The longest wait between two agent audio frames of one reply this session (ms). */
    this.maxArrivalGapMs = 0;
    /** @type {number[]} the last second's per-stats arrival gaps */
    this.recentArrivalGapMs = [];
    /** @type {number[]} AudioContext frames of recent speech onsets at the mic */
    this.onsetFrames = [];
    /** the turn named by the last `clear` */
    this.lastClearTurn = 0;
    /**
     * Barge-ins as the user experienced them (see `measureBargeIn`).
     * @type {{turnId: number, ms: number, clearFrame: number, outputLatencyMs: number}[]}
     */
    this.bargeIns = [];
    /** disconnect() was called while connect() was still starting the audio */
    this.abandoned = false;
    /** Epoch ms at which the socket worker received the server message being dispatched. */
    this.lastMessageAt = 0;
  }

  /**
   * @param {string} type
   * @param {unknown} [detail]
   */
  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * Opens the mic and the session. Resolves once the server is ready; rejects (and cleans
   * up) if the mic, the audio graph or the connection fails.
   * @returns {Promise<import("./lib/protocol.mjs").Ready>}
   */
  async connect() {
    if (this.state !== "idle" && this.state !== "closed") {
      throw new Error(`connect() while ${this.state}`);
    }
    this.session = null;
    this.playout = null;
    this.micFrames = { sent: 0, dropped: 0 };
    this.underrunLog = [];
    this.maxArrivalGapMs = 0;
    this.recentArrivalGapMs = [];
    this.onsetFrames = [];
    this.bargeIns = [];
    this.setState("connecting");
    this.abandoned = false;
    this.finished = null;
    try {
      await this.startAudio();
      if (this.abandoned) throw new Error("disconnected while starting");
    } catch (error) {
      await this.teardown();
      this.setState("closed");
      const message = error instanceof Error ? error.message : String(error);
      this.emit("error", { message: `Audio could not start: ${message}` });
      throw error;
    }
    return new Promise((resolve, reject) => {
      /** @param {Event} e */
      const onReady = (e) => {
        this.removeEventListener("closed", onClosed);
        resolve(/** @type {CustomEvent} */ (e).detail);
      };
      /** @param {Event} e */
      const onClosed = (e) => {
        this.removeEventListener("ready", onReady);
        const info = /** @type {CustomEvent} */ (e).detail;
        reject(new Error(info?.message ?? "The connection closed."));
      };
      this.addEventListener("ready", onReady, { once: true });
      this.addEventListener("closed", onClosed, { once: true });
      this.startWorker();
    });
  }

  async startAudio() {
    const { sampleRate, mic } = this.options;
    let context = new AudioContext({ latencyHint: "interactive", ...(sampleRate ? { sampleRate } : {}) });
    if (context.sampleRate < MIN_RATE || context.sampleRate > MAX_RATE) {
      await context.close();
      context = new AudioContext({ latencyHint: "interactive", sampleRate: 48000 });
    }
    this.context = context;
    await Promise.all(
      ["capture-processor.js", "player-processor.js", "tap-processor.js"].map((f) =>
        context.audioWorklet.addModule(new URL(`worklets/${f}`, BASE)),
      ),
    );
    if (mic instanceof MediaStream) {
      this.stream = mic;
      this.ownsStream = false;
    } else {
      this.stream = await navigator.mediaDevices.getUserMedia(micConstraints(mic));
      this.ownsStream = true;
    }
    // A page that is not user-activated may start suspended; connect() is normally a click.
    await context.resume();
  }

  startWorker() {
    const context = /** @type {AudioContext} */ (this.context);
    const stream = /** @type {MediaStream} */ (this.stream);
    const rate = context.sampleRate;
    const frameMs = this.options.frameMs ?? 20;
    const capacity = Math.round((this.options.ringSeconds ?? 4) * rate);
    const shared =
      !this.options.forcePortMode &&
      globalThis.crossOriginIsolated === true &&
      typeof SharedArrayBuffer === "function";
    this.mode = shared ? "shared" : "port";
    const ring = shared ? PlayoutRing.allocate(capacity, true) : null;
    const startThreshold = Math.round(((this.options.startMs ?? 40) / 1000) * rate);
    if (ring) new PlayoutRing(ring).setStartThreshold(startThreshold);

    const source = context.createMediaStreamSource(stream);
    const capture = new AudioWorkletNode(context, "voicecore-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { frameMs },
    });
    const player = new AudioWorkletNode(context, "voicecore-player", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { ring, capacity, startThreshold },
    });
    const tap = new AudioWorkletNode(context, "voicecore-tap", {
      numberOfInputs: 2,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      channelCount: 1,
      channelCountMode: "explicit",
    });
    source.connect(capture);
    source.connect(tap, 0, 1);
    player.connect(context.destination);
    player.connect(tap, 0, 0);
    // Capture and tap output silence; connecting them to the destination makes sure the
    // graph renders them.
    capture.connect(context.destination);
    tap.connect(context.destination);
    this.nodes = [source, capture, player, tap];
    this.tap = new OutputTap(tap, context);
    this.emit("audio_started", { tap: this.tap, sampleRate: rate, mode: this.mode });
    capture.port.onmessage = (event) => {
      const data = event.data;
      if (data?.type !== "level") return;
      if (data.onset) {
        this.onsetFrames.push(data.frame);
        if (this.onsetFrames.length > 32) this.onsetFrames.shift();
      }
      this.level = { rms: data.rms, peak: data.peak };
      this.emit("level", this.level);
    };

    const worker = new Worker(new URL("socket-worker.js", BASE), { type: "module", name: "voicecore-socket" });
    this.worker = worker;
    const captureChannel = new MessageChannel();
    capture.port.postMessage({ type: "port", port: captureChannel.port1 }, [captureChannel.port1]);
    /** @type {MessagePort | null} */
    let playerPort = null;
    /** @type {Transferable[]} */
    const transfer = [captureChannel.port2];
    if (!shared) {
      const playerChannel = new MessageChannel();
      player.port.postMessage({ type: "port", port: playerChannel.port1 }, [playerChannel.port1]);
      playerPort = playerChannel.port2;
      transfer.push(playerPort);
    }
    this.closedPromise = new Promise((resolve) => {
      worker.onmessage = (event) => {
        if (this.onWorkerMessage(event.data)) void this.finished?.then(resolve);
      };
      worker.onerror = (event) => {
        // The worker could not load or crashed: the session cannot go on.
        event.preventDefault();
        this.emit("error", { message: `The socket worker failed: ${event.message || "could not load"}` });
        const info = describeClose(1006);
        if (this.onWorkerMessage({ type: "closed", info })) void this.finished?.then(resolve);
      };
    });
    const url = this.options.url ?? defaultUrl();
    worker.postMessage(
      {
        type: "connect",
        url,
        inputRate: rate,
        outputRate: rate,
        frameMs,
        ring,
        capturePort: captureChannel.port2,
        playerPort,
      },
      transfer,
    );
  }

  /**
   * @param {any} data a message from the socket worker
   * @returns {boolean} whether the session is over
   */
  onWorkerMessage(data) {
    switch (data?.type) {
      case "state":
        this.setState(data.state);
        return false;
      case "message": {
        const msg = data.msg;
        this.lastMessageAt = data.receivedAt;
        if (msg.type === "ready") this.session = msg;
        if (msg.type === "clear") this.lastClearTurn = msg.turn_id;
        this.emit(msg.type === "error" ? "server_error" : msg.type, msg);
        this.lastMessageAt = 0;
        return false;
      }
      case "stats":
        this.micFrames = { sent: data.sent, dropped: data.dropped };
        this.maxArrivalGapMs = Math.max(this.maxArrivalGapMs, data.arrivalGapMs ?? 0);
        this.recentArrivalGapMs.push(data.arrivalGapMs ?? 0);
        if (this.recentArrivalGapMs.length > 8) this.recentArrivalGapMs.shift();
        if (data.stats && data.stats.underruns > (this.playout?.underruns ?? 0)) {
          this.underrunLog.push({
            epochMs: performance.timeOrigin + performance.now(),
            playedMs: data.stats.playedMs,
            underruns: data.stats.underruns,
            underrunMs: data.stats.underrunMs,
            arrivalGapMs: Math.max(...this.recentArrivalGapMs),
          });
        }
        if (data.stats) {
          const clearFrame = data.stats.clearFrame;
          if (clearFrame !== 0 && clearFrame !== (this.playout?.clearFrame ?? 0)) this.measureBargeIn(clearFrame);
          this.playout = data.stats;
          this.emit("playout", data.stats);
        }
        return false;
      case "protocol_error":
        this.emit("error", { message: `Protocol error: ${data.message}` });
        return false;
      case "closed":
        if (this.finished) return true; // already closing (a worker error, then its close)
        this.finished = this.teardown().then(() => {
          this.setState("closed");
          this.emit("closed", data.info);
        });
        return true;
      default:
        return false;
    }
  }

  /**
   * The player went silent on a clear at `clearFrame`: emits `barge_in` with the latency the
   * user experienced (their speech onset at the mic to silence at the speaker), if a speech
   * onset explains the clear.
   * @param {number} clearFrame AudioContext frame
   */
  measureBargeIn(clearFrame) {
    const context = this.context;
    if (!context) return;
    const outputLatency = context.outputLatency || context.baseLatency || 0;
    const ms = bargeInMs(this.onsetFrames, clearFrame, context.sampleRate, outputLatency);
    if (ms === null) return;
    const detail = { turnId: this.lastClearTurn, ms, clearFrame, outputLatencyMs: outputLatency * 1000 };
    this.bargeIns.push(detail);
    this.emit("barge_in", detail);
  }

  /** @param {import("./lib/protocol.mjs").ConnectionState} state */
  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit("state", { state });
  }

  /** Ends the session (sends bye, closes the socket) and releases the mic and audio. */
  async disconnect() {
    if (!this.worker) {
      // Still asking for the mic or loading the worklets: connect() gives up once they are done.
      if (this.state === "connecting") this.abandoned = true;
      return;
    }
    const closed = this.closedPromise;
    this.worker.postMessage({ type: "disconnect" });
    await closed;
  }

  async teardown() {
    this.worker?.terminate();
    this.worker = null;
    this.tap = null;
    for (const node of this.nodes) node.disconnect();
    this.nodes = [];
    if (this.ownsStream) this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
    // Closing the context ends a tap recording: stop() it before disconnecting.
    const context = this.context;
    this.context = null;
    if (context && context.state !== "closed") await context.close();
  }
}

/** `/ws` on the page's own host, ws: or wss: to match the page. */
export function defaultUrl() {
  const { protocol, host } = globalThis.location;
  return `${protocol === "https:" ? "wss:" : "ws:"}//${host}/ws`;
}
