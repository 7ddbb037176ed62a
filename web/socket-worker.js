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
 * The worker also reconnects (unless `reconnect` is null): when the socket closes without
 * being asked to, lib/reconnect.mjs decides whether and when to open a new one, whose `hello`
 * carries `resume` = the last `ready.conversation`. Meanwhile the player plays what it holds
 * (the reply in flight ends where its audio ends; a reply the server had paused is cleared:
 * no server is left to resume it) and mic frames are dropped, not queued.
 *
 * Main -> worker:
 *   { type: "connect", url, inputRate, outputRate, frameMs, capabilities?, resume?,
 *     reconnect: Partial<ReconnectSettings> | null, ring: SharedArrayBuffer | null,
 *     capturePort: MessagePort, playerPort: MessagePort | null, reportMs?, statsMs? }
 *   { type: "disconnect" }
 * Worker -> main:
 *   { type: "state", state }              ConnectionState, or "reconnecting" from the loss of
 *                                         a session until the next one is ready
 *   { type: "message", msg, receivedAt }  every server JSON message, after it is applied;
 *                                         receivedAt: epoch ms it arrived in this worker
 *   { type: "stats", stats, sent, dropped, arrivalGapMs }  PlayoutStats 8x/s; mic frames
 *                                         sent / dropped; longest wait between two agent audio
 *                                         frames of a reply since the previous stats (ms)
 *   { type: "protocol_error", message }   the server broke the protocol (the worker closes)
 *   { type: "reconnecting", attempt, delayMs, code, reason, clearedTurn }  the socket closed;
 *                                         attempt number `attempt` of this outage starts in
 *                                         `delayMs`; clearedTurn: the paused turn whose
 *                                         audio was dropped (null: none)
 *   { type: "reconnected", resumed, downtimeMs, attempts }  a session is ready again
 *                                         (after its `ready` message and "ready" state)
 *   { type: "closed", info }              CloseInfo; the worker is done
 */
import { ClientProtocol, ProtocolError, describeClose, playoutMessage } from "./lib/protocol.mjs";
import { Reconnector } from "./lib/reconnect.mjs";
import { PlayoutRing } from "./lib/ring.mjs";
import { PlayoutCounter } from "./lib/playout-stats.mjs";
import { int16ToFloat, pcm16FromBytes } from "./lib/pcm.mjs";

/** Mic frames are dropped (counted) while this much is queued unsent: the network is stuck. */
const MAX_SEND_BACKLOG_BYTES = 256 * 1024;

const scope = /** @type {DedicatedWorkerGlobalScope} */ (/** @type {unknown} */ (self));

/**
 * @typedef {{url: string, inputRate: number, outputRate: number, frameMs: number,
 *   capabilities?: string[], resume?: string | null,
 *   reconnect: Partial<import("./lib/reconnect.mjs").ReconnectSettings> | null,
 *   ring: SharedArrayBuffer | null, capturePort: MessagePort, playerPort: MessagePort | null,
 *   reportMs?: number, statsMs?: number}} ConnectOptions
 */

/** @type {ConnectOptions | null} */
let options = null;
/** @type {ClientProtocol | null} the current socket's protocol (one per socket) */
let proto = null;
/** @type {WebSocket | null} */
let socket = null;
/** @type {Reconnector | null} null: the session ends with its first socket */
let reconnector = null;
/** @type {string | null} the conversation to resume on the next socket */
let conversation = null;
/** A session was lost and the next one is not ready yet. */
let outage = false;
/** @type {ReturnType<typeof setTimeout> | null} the next attempt, while waiting for it */
let retryTimer = null;
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

/** Posts the connection state; the attempts of an outage are all "reconnecting". */
function postState() {
  if (!proto) return;
  const between = proto.state === "connecting" || proto.state === "handshaking" || proto.state === "closed";
  post({ type: "state", state: outage && between ? "reconnecting" : proto.state });
}

/** @param {ConnectOptions} connectOptions */
function connect(connectOptions) {
  options = connectOptions;
  conversation = connectOptions.resume ?? null;
  reconnector = connectOptions.reconnect ? new Reconnector(connectOptions.reconnect) : null;
  counter = new PlayoutCounter(connectOptions.outputRate);
  if (connectOptions.ring) {
    ring = new PlayoutRing(connectOptions.ring);
    ring.setSampleRate(connectOptions.outputRate);
  }
  playerPort = connectOptions.playerPort;
  if (playerPort) playerPort.onmessage = (e) => (portStats = e.data?.stats ?? portStats);
  connectOptions.capturePort.onmessage = (e) => sendMic(e.data);
  openSocket();

  // Stats for the page every statsMs; a playout report to the server every reportMs. Both
  // go on across a reconnection: the player plays on.
  const statsMs = connectOptions.statsMs ?? 125;
  const reportEvery = Math.max(1, Math.round((connectOptions.reportMs ?? 250) / statsMs));
  let ticks = 0;
  timer = setInterval(() => {
    const stats = collectStats();
    if (!stats.stats) return;
    post({ type: "stats", ...stats });
    if (++ticks % reportEvery === 0 && proto?.canSendAudio && socket?.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(playoutMessage(stats.stats)));
    }
  }, statsMs);
}

/** Opens a socket and greets the server, resuming the conversation if there is one. */
function openSocket() {
  retryTimer = null;
  const settings = /** @type {ConnectOptions} */ (options);
  const p = new ClientProtocol({ ...settings, resume: conversation });
  proto = p;
  p.connect();
  postState();
  const ws = new WebSocket(settings.url);
  socket = ws;
  ws.binaryType = "arraybuffer";
  /** This side closed the socket (a protocol error): no reconnection. */
  let closedHere = false;
  ws.onopen = () => {
    if (ws !== socket) return;
    ws.send(JSON.stringify(p.opened()));
    postState();
  };
  ws.onmessage = (event) => {
    if (ws !== socket) return;
    try {
      if (typeof event.data === "string") onText(event.data);
      else onAudio(/** @type {ArrayBuffer} */ (event.data));
    } catch (error) {
      if (!(error instanceof ProtocolError) && !(error instanceof RangeError)) throw error;
      post({ type: "protocol_error", message: error.message });
      // 1000 is the only standard code a browser may send; the reason says what went wrong.
      closedHere = true;
      ws.close(1000, "protocol error");
    }
  };
  ws.onclose = (event) => {
    if (ws !== socket) return;
    socket = null;
    const wasReady = p.state === "ready";
    const onPurpose = p.state === "closing" || closedHere;
    const info = p.closed(event.code, event.reason);
    const clearedTurn = wasReady ? endHeldReply(p) : null;
    if (!onPurpose && reconnector) {
      const decision = reconnector.closed(event.code, performance.now());
      if (decision.reconnect) {
        outage = true;
        post({ type: "reconnecting", attempt: decision.attempt, delayMs: decision.delayMs, code: event.code, reason: event.reason, clearedTurn });
        postState();
        retryTimer = setTimeout(openSocket, decision.delayMs);
        return;
      }
      if (decision.reconnect === false && decision.why === "gave_up") {
        info.attempts = decision.attempt - 1;
        info.message = `${info.message} Reconnecting failed (${info.attempts} attempts).`;
      }
    }
    finish(info);
  };
}

/**
 * The session's socket is gone: nothing more of the reply in flight will come. The player
 * plays what it holds, and the reply ends there (its silence then is not an underrun); a
 * reply the server had paused is dropped, as no server is left to resume it.
 * @param {ClientProtocol} p the closed socket's protocol
 * @returns {number | null} the turn whose paused audio was dropped
 */
function endHeldReply(p) {
  lastAudioAt = 0;
  const paused = p.pausedTurn;
  const action = paused === null ? "done" : "clear";
  if (ring) {
    if (action === "done") ring.markDone();
    else ring.clear();
  } else {
    playerPort?.postMessage({ type: action });
  }
  return paused;
}

/** @param {import("./lib/protocol.mjs").CloseInfo | null} info */
function finish(info) {
  stopReporting();
  post({ type: "stats", ...collectStats() });
  post({ type: "closed", info });
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
  if (msg.type === "ready") {
    // A server that cannot resume sends no token: this client then never asks it to.
    conversation = msg.conversation ?? null;
    outage = false;
  }
  if (proto.state !== before) postState();
  if (msg.type === "ready") {
    const outageEnded = reconnector?.ready(performance.now()) ?? null;
    if (outageEnded) post({ type: "reconnected", resumed: msg.resumed === true, ...outageEnded });
  }
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
  if (!socket || !proto?.canSendAudio) {
    // Between sessions the mic's audio is dropped: replayed later, it would be stale.
    if (outage) dropped++;
    return;
  }
  if (socket.bufferedAmount > MAX_SEND_BACKLOG_BYTES) {
    dropped++;
    return;
  }
  socket.send(frame);
  sent++;
}

function disconnect() {
  if (retryTimer !== null) {
    // Waiting to reconnect: no socket to close.
    clearTimeout(retryTimer);
    retryTimer = null;
    finish({ ...describeClose(1000, "bye"), message: "Disconnected." });
    return;
  }
  if (!proto || !socket) {
    post({ type: "closed", info: null });
    return;
  }
  const bye = proto.disconnect();
  postState();
  if (bye && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(bye));
  socket.close(1000, "bye");
}

scope.onmessage = (event) => {
  const msg = event.data;
  if (msg?.type === "connect") connect(msg);
  else if (msg?.type === "disconnect") disconnect();
};
