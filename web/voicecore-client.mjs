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
 * When the connection drops, the client reconnects by itself (ClientOptions.reconnect) and
 * resumes the conversation: the mic and the player keep running (the player plays out what
 * it holds; the mic's audio meanwhile is dropped), and the new session's `hello` carries the
 * last `ready.conversation` as `resume`.
 *
 * Events (CustomEvent, payload in `detail`):
 *   state        { state }  "idle" | "connecting" | "handshaking" | "ready" | "reconnecting" |
 *                "closing" | "closed"
 *   audio_started { tap, sampleRate, mode }  the audio graph runs (before the server is
 *                ready): the moment to start a tap recording that must include the mic's start
 *   ready, speech_start, speech_end, transcript, agent_text, agent_done, clear, pause,
 *   resume, metrics
 *                the server message itself (see lib/protocol.mjs); `pause` and `resume`
 *                come only from a server that confirmed the "pause" capability in `ready`,
 *                and have already been applied to the player when they are dispatched
 *   server_error a server `error` message { code, message }
 *   error        { message } something failed on this side (mic, audio, protocol)
 *   reconnecting { attempt, delayMs, code, reason }  the connection closed unasked (`code`,
 *                `reason`: its close); attempt `attempt` (1, 2, ... of this outage) starts
 *                in `delayMs`
 *   reconnected  { resumed, downtimeMs, attempts }  a session is ready again (after its
 *                `ready`): `resumed` says whether the server still had the conversation
 *                (false: the agent starts over), `downtimeMs` since the connection dropped
 *   closed       CloseInfo | null  the session is over: ended on purpose, a close that
 *                reconnecting cannot help, or reconnecting gave up (`attempts` then says
 *                how many were made); see lib/protocol.mjs describeClose
 *   level        { rms, peak }  mic level per frame, linear 0..1
 *   playout      PlayoutStats  8x per second (see lib/playout-stats.mjs)
 *   barge_in     BargeIn  a clear cut the agent: the user's speech onset at the mic to the
 *                agent's silence at the speaker, which came with the pause the clear
 *                confirmed (via "pause") or with the clear itself (see lib/barge-in.mjs)
 *   duck         Duck  a pause silenced the agent and a resume let it go on (a cough, an
 *                "mm-hm"): how fast it went silent, how long it stayed so
 * @module
 */
import { bargeInMs, silenceOfClear, silenceOfResume } from "./lib/barge-in.mjs";
import { CLIENT_CAPABILITIES, MAX_RATE, MIN_RATE, describeClose } from "./lib/protocol.mjs";
import { reconnectSettings } from "./lib/reconnect.mjs";
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
 * @property {readonly string[]} [capabilities] announced in `hello` (default
 *   `["pause"]`); `[]` behaves as a client that predates them: the server never pauses it
 *   and cuts the agent with `clear` only (a baseline for tests)
 * @property {number} [fadeMs] how long a `pause` fades the agent out and a `resume` fades it
 *   back in (default 5 ms: no click, and the fade-out's samples are played, not lost)
 * @property {EchoLoop} [echoLoop] test and diagnostic option: simulate a speakerphone with no
 *   echo cancellation (see EchoLoop)
 * @property {boolean | Partial<import("./lib/reconnect.mjs").ReconnectSettings>} [reconnect]
 *   reconnect by itself when the connection drops (default true, with RECONNECT_DEFAULTS of
 *   lib/reconnect.mjs; an object overrides some of them); false: the session ends with its
 *   first connection, as before reconnection existed
 * @property {Storage | null} [conversationStorage] where to keep the conversation's token
 *   besides the client, so that a reloaded page resumes it (e.g. `sessionStorage`: per tab,
 *   so two tabs never share a conversation); default none. disconnect() removes it.
 */

/** The key under which ClientOptions.conversationStorage keeps the token of a server's conversation. */
export const CONVERSATION_STORAGE_KEY = "voicecore.conversation";

/** @typedef {import("./lib/protocol.mjs").ConnectionState | "reconnecting"} ClientState */

/**
 * A simulated acoustic echo, for tests and diagnostics: the player's output, delayed and
 * attenuated, is added to the mic audio the capture worklet sends to the server, and the
 * browser's echo canceller is turned off (it could not remove this echo anyway: it is added
 * after the browser's processing). The server then hears the agent's own voice, as from a
 * laptop's speaker into its mic, and must not take it for the user. The level meter, the
 * speech onsets behind `barge_in`, and the tap's `input` stay the mic alone (the user); what
 * the server heard is `input` plus the tap's `output` delayed by `delayMs` and scaled by
 * `gainDb`.
 * @typedef {object} EchoLoop
 * @property {number} [gainDb] level of the echo relative to the output (default -10 dB)
 * @property {number} [delayMs] speaker-to-mic delay (default 80 ms; whole samples)
 */

/** The echo a speakerphone without echo cancellation makes (EchoLoop's defaults). */
export const ECHO_LOOP_DEFAULTS = Object.freeze({ gainDb: -10, delayMs: 80 });

/**
 * @typedef {object} BargeIn
 * @property {number} turnId the turn the clear named
 * @property {number} ms the user's speech onset at the mic to the agent's silence at the
 *   speaker (the output latency included)
 * @property {number} silentFrame AudioContext frame of the first silent sample
 * @property {"pause" | "clear"} via what silenced the agent: a pause the clear confirmed, or
 *   the clear itself
 * @property {number} clearFrame AudioContext frame at which the clear was applied
 * @property {number} outputLatencyMs
 */

/**
 * @typedef {object} Duck
 * @property {number} turnId the turn the pause named
 * @property {number | null} ms the user's speech onset to the agent's silence at the speaker;
 *   null when no onset at the mic explains the pause (e.g. the server took echo for speech)
 * @property {number} silentFrame AudioContext frame of the first silent sample
 * @property {number} resumeFrame AudioContext frame at which the resume took effect
 * @property {number} pausedMs how long the agent stayed silent
 * @property {number} outputLatencyMs
 */

const BASE = new URL(".", import.meta.url);

/**
 * The mic constraints: the browser's echo canceller keeps the agent's own voice out of the
 * mic (else it would barge in on itself), and one channel is all the session uses.
 * @param {string} [deviceId]
 * @param {{echoCancellation?: boolean}} [options] false only to test without it (EchoLoop)
 * @returns {MediaStreamConstraints}
 */
export function micConstraints(deviceId, { echoCancellation = true } = {}) {
  return {
    audio: {
      ...(deviceId ? { deviceId: { exact: deviceId } } : {}),
      channelCount: 1,
      echoCancellation,
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
    /** @type {ClientState} */
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
    /** the turn named by the last `pause` */
    this.lastPauseTurn = 0;
    /**
     * Barge-ins as the user experienced them (see `measureSilences`).
     * @type {BargeIn[]}
     */
    this.bargeIns = [];
    /**
     * Pauses that a resume ended, as the user experienced them (see `measureSilences`).
     * @type {Duck[]}
     */
    this.ducks = [];
    /** disconnect() was called while connect() was still starting the audio */
    this.abandoned = false;
    /** Epoch ms at which the socket worker received the server message being dispatched. */
    this.lastMessageAt = 0;
    /**
     * The conversation's token (the last `ready.conversation`): the next connect() resumes
     * it; null: none, or a server that cannot resume. disconnect() forgets it.
     * @type {string | null}
     */
    this.conversationToken = null;
  }

  /** The storage key of this client's server (conversations belong to a server). */
  get storageKey() {
    return `${CONVERSATION_STORAGE_KEY} ${this.options.url ?? defaultUrl()}`;
  }

  /**
   * Remembers the conversation's token (null: forgets it), here and in the storage.
   * @param {string | null} token
   */
  rememberConversation(token) {
    this.conversationToken = token;
    const storage = this.options.conversationStorage;
    if (!storage) return;
    if (token === null) storage.removeItem(this.storageKey);
    else storage.setItem(this.storageKey, token);
  }

  /**
   * The capabilities in use this session: announced by this client and confirmed in the
   * server's `ready` (empty before it, and with a server that predates them).
   * @returns {string[]}
   */
  get capabilities() {
    const announced = this.options.capabilities ?? CLIENT_CAPABILITIES;
    return (this.session?.capabilities ?? []).filter((c) => announced.includes(c));
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
    const { reconnect = true } = this.options;
    if (typeof reconnect === "object") reconnectSettings(reconnect); // a bad setting fails here
    this.session = null;
    this.playout = null;
    this.micFrames = { sent: 0, dropped: 0 };
    this.underrunLog = [];
    this.maxArrivalGapMs = 0;
    this.recentArrivalGapMs = [];
    this.onsetFrames = [];
    this.bargeIns = [];
    this.ducks = [];
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
    const { sampleRate, mic, echoLoop } = this.options;
    if (echoLoop) echoLoopSettings(echoLoop); // a bad setting fails here, before any audio
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
      const echoCancellation = !this.options.echoLoop;
      this.stream = await navigator.mediaDevices.getUserMedia(micConstraints(mic, { echoCancellation }));
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
    const fadeSamples = Math.round(((this.options.fadeMs ?? 5) / 1000) * rate);
    if (ring) {
      const config = new PlayoutRing(ring);
      config.setStartThreshold(startThreshold);
      config.setFadeSamples(fadeSamples);
    }

    const source = context.createMediaStreamSource(stream);
    const capture = new AudioWorkletNode(context, "voicecore-capture", {
      // Input 0: the mic; input 1: the simulated echo (EchoLoop), silent when unconnected.
      numberOfInputs: 2,
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
      processorOptions: { ring, capacity, startThreshold, fadeSamples },
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
    if (this.options.echoLoop) this.nodes.push(...connectEchoLoop(context, player, capture, this.options.echoLoop));
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
    const { reconnect = true, conversationStorage } = this.options;
    const resume = this.conversationToken ?? conversationStorage?.getItem(this.storageKey) ?? null;
    worker.postMessage(
      {
        type: "connect",
        url,
        resume,
        reconnect: reconnect === false ? null : reconnect === true ? {} : reconnect,
        inputRate: rate,
        outputRate: rate,
        frameMs,
        capabilities: [...(this.options.capabilities ?? CLIENT_CAPABILITIES)],
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
        if (msg.type === "ready") {
          this.session = msg;
          this.rememberConversation(msg.conversation ?? null);
        }
        if (msg.type === "clear") this.lastClearTurn = msg.turn_id;
        if (msg.type === "pause") this.lastPauseTurn = msg.turn_id;
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
          this.measureSilences(data.stats, this.playout);
          this.playout = data.stats;
          this.emit("playout", data.stats);
        }
        return false;
      case "reconnecting":
        // The paused reply the worker dropped: what silenced it, for the barge-in figures.
        if (data.clearedTurn !== null) this.lastClearTurn = data.clearedTurn;
        this.emit("reconnecting", { attempt: data.attempt, delayMs: data.delayMs, code: data.code, reason: data.reason });
        return false;
      case "reconnected":
        this.emit("reconnected", { resumed: data.resumed, downtimeMs: data.downtimeMs, attempts: data.attempts });
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
   * Times what silenced the agent since the previous stats, from the player's clock: a new
   * resume ends a duck (`duck`), a new clear a barge-in (`barge_in`, only if a speech onset
   * at the mic explains it), silent since the pause it confirmed or since the clear.
   * @param {import("./lib/playout-stats.mjs").PlayoutStats} stats
   * @param {import("./lib/playout-stats.mjs").PlayoutStats | null} before the previous stats
   */
  measureSilences(stats, before) {
    const context = this.context;
    if (!context) return;
    const rate = context.sampleRate;
    const outputLatency = context.outputLatency || context.baseLatency || 0;
    const outputLatencyMs = outputLatency * 1000;
    const previous = before ?? { clearFrame: 0, pauseFrame: 0, resumeFrame: 0 };
    // The resume first: within one stats interval it can only precede the clear.
    if (stats.resumeFrame !== 0 && stats.resumeFrame !== previous.resumeFrame) {
      const silentFrame = silenceOfResume(stats, previous);
      if (silentFrame !== null) {
        /** @type {Duck} */
        const duck = {
          turnId: this.lastPauseTurn,
          ms: bargeInMs(this.onsetFrames, silentFrame, rate, outputLatency),
          silentFrame,
          resumeFrame: stats.resumeFrame,
          pausedMs: ((stats.resumeFrame - silentFrame) / rate) * 1000,
          outputLatencyMs,
        };
        this.ducks.push(duck);
        this.emit("duck", duck);
      }
    }
    if (stats.clearFrame !== 0 && stats.clearFrame !== previous.clearFrame) {
      const { silentFrame, via } = silenceOfClear(stats, previous.clearFrame);
      const ms = bargeInMs(this.onsetFrames, silentFrame, rate, outputLatency);
      if (ms === null) return;
      /** @type {BargeIn} */
      const bargeIn = { turnId: this.lastClearTurn, ms, silentFrame, via, clearFrame: stats.clearFrame, outputLatencyMs };
      this.bargeIns.push(bargeIn);
      this.emit("barge_in", bargeIn);
    }
  }

  /** @param {ClientState} state */
  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit("state", { state });
  }

  /**
   * Ends the session (sends bye, closes the socket; also stops reconnecting), forgets the
   * conversation (the next connect() starts a new one), and releases the mic and audio.
   */
  async disconnect() {
    this.rememberConversation(null);
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

/**
 * EchoLoop's settings with its defaults, checked.
 * @param {EchoLoop} echo
 * @returns {{gainDb: number, delayMs: number}}
 */
export function echoLoopSettings(echo) {
  const { gainDb, delayMs } = { ...ECHO_LOOP_DEFAULTS, ...echo };
  if (!Number.isFinite(gainDb) || !(delayMs >= 0 && delayMs <= 1000)) {
    throw new RangeError(`echoLoop needs a finite gainDb and a delayMs in 0..1000, got ${JSON.stringify(echo)}`);
  }
  return { gainDb, delayMs };
}

/**
 * Feeds the player's output, delayed and attenuated, into the capture worklet's echo input
 * (see EchoLoop).
 * @param {AudioContext} context
 * @param {AudioNode} player
 * @param {AudioNode} capture
 * @param {EchoLoop} echo
 * @returns {AudioNode[]} the nodes added
 */
function connectEchoLoop(context, player, capture, echo) {
  const { gainDb, delayMs } = echoLoopSettings(echo);
  // A whole number of samples: the echo is the output shifted, not interpolated.
  const delaySamples = Math.round((delayMs / 1000) * context.sampleRate);
  const delay = context.createDelay(Math.max(1, delaySamples / context.sampleRate));
  delay.delayTime.value = delaySamples / context.sampleRate;
  const gain = context.createGain();
  gain.gain.value = 10 ** (gainDb / 20);
  player.connect(delay);
  delay.connect(gain);
  gain.connect(capture, 0, 1);
  return [delay, gain];
}

/** `/ws` on the page's own host, ws: or wss: to match the page. */
export function defaultUrl() {
  const { protocol, host } = globalThis.location;
  return `${protocol === "https:" ? "wss:" : "ws:"}//${host}/ws`;
}
