// @ts-check
/**
 * The socket worker: owns the WebSocket, so neither direction of audio waits for the main
 * thread. Mic frames arrive from the capture worklet on a MessagePort and go straight to
 * the socket; agent audio goes straight from the socket into the player's ring (shared
 * mode) or to the player's port (port mode); `clear`, `pause`, `resume` and `agent_done`
 * are applied to the ring here, before the main thread hears of them (in shared mode the
 * audio thread sees a pause in the ring's header at its next render quantum, with no other
 * thread on the way). The worker sends the playout reports.
 *
 * Main -> worker:
 *   { type: "connect", url, inputRate, outputRate, frameMs, capabilities?,
 *     ring: SharedArrayBuffer | null, capturePort: MessagePort,
 *     playerPort: MessagePort | null, reportMs?, statsMs? }
 *   { type: "disconnect" }
 * Worker -> main:
 *   { type: "state", state }              ConnectionState
 *   { type: "message", msg, receivedAt }  every server JSON message, after it is applied;
 *                                         receivedAt: epoch ms it arrived in this worker
 *   { type: "stats", stats, sent, dropped, arrivalGapMs }  PlayoutStats 8x/s; mic frames
 *                                         sent / dropped; longest wait between two agent audio
 *                                         frames of a reply since the previous stats (ms)
 *   { type: "protocol_error", message }   the server broke the protocol (the worker closes)
 *   { type: "closed", info }              CloseInfo; the worker is done
 */
import { ClientProtocol, ProtocolError, playoutMessage } from "./lib/protocol.mjs";
import { PlayoutRing } from "./lib/ring.mjs";
import { PlayoutCounter } from "./lib/playout-stats.mjs";
import { int16ToFloat, pcm16FromBytes } from "./lib/pcm.mjs";

/** Mic frames are dropped (counted) while this much is queued unsent: the network is stuck. */
const MAX_SEND_BACKLOG_BYTES = 256 * 1024;

const scope = /** @type {DedicatedWorkerGlobalScope} */ (/** @type {unknown} */ (self));

/** @type {ClientProtocol | null} */
let proto = null;
/** @type {WebSocket | null} */
let socket = null;
/** @type {PlayoutRing | null} */
let ring = null;
/** @type {MessagePort | null} */
let playerPort = null;
/** @type {PlayoutCounter | null} */
let counter = null;
/** @type {import("./lib/ring.mjs").RingStats | null} port mode: the player's latest stats */
let portStats = null;
/** @type {ReturnType<typeof setInterval> | null} */
let timer = null;
let sent = 0;
let dropped = 0;
/**
 * The longest wait between two agent audio frames of one reply since the last stats post
 * (ms), and when the last frame arrived (0: no reply under way). An underrun that comes with
 * a long wait here was a late server or network, not this client.
 */
let arrivalGapMs = 0;
let lastAudioAt = 0;
/** Reused in shared mode, where the ring copies out of it. */
let scratch = new Float32Array(0);

/** @param {unknown} msg */
const post = (msg) => scope.postMessage(msg);

/**
 * @param {{url: string, inputRate: number, outputRate: number, frameMs: number,
 *   capabilities?: string[], ring: SharedArrayBuffer | null, capturePort: MessagePort,
 *   playerPort: MessagePort | null, reportMs?: number, statsMs?: number}} options
 */
function connect(options) {
  proto = new ClientProtocol(options);
  counter = new PlayoutCounter(options.outputRate);
  if (options.ring) {
    ring = new PlayoutRing(options.ring);
    ring.setSampleRate(options.outputRate);
  }
  playerPort = options.playerPort;
  if (playerPort) playerPort.onmessage = (e) => (portStats = e.data?.stats ?? portStats);
  options.capturePort.onmessage = (e) => sendMic(e.data);

  proto.connect();
  post({ type: "state", state: proto.state });
  const ws = new WebSocket(options.url);
  socket = ws;
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    if (!proto) return;
    ws.send(JSON.stringify(proto.opened()));
    post({ type: "state", state: proto.state });
  };
  ws.onmessage = (event) => {
    try {
      if (typeof event.data === "string") onText(event.data);
      else onAudio(/** @type {ArrayBuffer} */ (event.data));
    } catch (error) {
      if (!(error instanceof ProtocolError) && !(error instanceof RangeError)) throw error;
      post({ type: "protocol_error", message: error.message });
      // 1000 is the only standard code a browser may send; the reason says what went wrong.
      ws.close(1000, "protocol error");
    }
  };
  ws.onclose = (event) => {
    const info = proto ? proto.closed(event.code, event.reason) : null;
    stopReporting();
    post({ type: "stats", ...collectStats() });
    post({ type: "closed", info });
    socket = null;
  };

  // Stats for the page every statsMs; a playout report to the server every reportMs.
  const statsMs = options.statsMs ?? 125;
  const reportEvery = Math.max(1, Math.round((options.reportMs ?? 250) / statsMs));
  let ticks = 0;
  timer = setInterval(() => {
    const stats = collectStats();
    if (!stats.stats) return;
    post({ type: "stats", ...stats });
    if (++ticks % reportEvery === 0 && proto?.canSendAudio && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(playoutMessage(stats.stats)));
    }
  }, statsMs);
}

function collectStats() {
  const raw = ring ? ring.stats() : portStats;
  const gap = arrivalGapMs;
  arrivalGapMs = 0;
  return { stats: raw && counter ? counter.update(raw) : null, sent, dropped, arrivalGapMs: gap };
}

function stopReporting() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

/** @param {string} text */
function onText(text) {
  if (!proto) return;
  const before = proto.state;
  const msg = proto.receiveText(text);
  if (msg === null) return; // a message type added after this client was written
  // Apply playback control before anything else can run: a clear or a pause must silence
  // the player even if the main thread is busy.
  // The reply is over, or held: the server sends no audio until it goes on, and that wait
  // is not a late frame.
  if (msg.type === "clear" || msg.type === "agent_done" || msg.type === "pause") lastAudioAt = 0;
  if (msg.type === "clear" || msg.type === "pause" || msg.type === "resume") {
    if (ring) ring[msg.type]();
    else playerPort?.postMessage({ type: msg.type });
  } else if (msg.type === "agent_done") {
    if (ring) ring.markDone();
    else playerPort?.postMessage({ type: "done" });
  }
  // Epoch milliseconds (comparable across the page, workers and worklet clocks mapped with
  // AudioContext.getOutputTimestamp), so a test can time a clear from arrival to silence.
  post({ type: "message", msg, receivedAt: performance.timeOrigin + performance.now() });
  if (proto.state !== before) post({ type: "state", state: proto.state });
}

/** @param {ArrayBuffer} data */
function onAudio(data) {
  if (!proto || !proto.receiveBinary(data)) return;
  const now = performance.now();
  if (lastAudioAt > 0) arrivalGapMs = Math.max(arrivalGapMs, now - lastAudioAt);
  lastAudioAt = now;
  const pcm = pcm16FromBytes(data);
  if (ring) {
    if (scratch.length !== pcm.length) scratch = new Float32Array(pcm.length);
    ring.write(int16ToFloat(pcm, scratch));
  } else if (playerPort) {
    const samples = int16ToFloat(pcm, new Float32Array(pcm.length));
    playerPort.postMessage({ type: "audio", samples }, [samples.buffer]);
  }
}

/** @param {ArrayBuffer} frame */
function sendMic(frame) {
  if (!socket || !proto?.canSendAudio) return;
  if (socket.bufferedAmount > MAX_SEND_BACKLOG_BYTES) {
    dropped++;
    return;
  }
  socket.send(frame);
  sent++;
}

function disconnect() {
  if (!proto || !socket) {
    post({ type: "closed", info: null });
    return;
  }
  const bye = proto.disconnect();
  post({ type: "state", state: proto.state });
  if (bye && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(bye));
  socket.close(1000, "bye");
}

scope.onmessage = (event) => {
  const msg = event.data;
  if (msg?.type === "connect") connect(msg);
  else if (msg?.type === "disconnect") disconnect();
};
