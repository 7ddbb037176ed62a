// @ts-check
/**
 * The demo page: wires a VoicecoreClient to the UI, and exposes `window.voicecore` for
 * browser tests:
 *
 *   window.voicecore.client          the VoicecoreClient
 *   window.voicecore.connect()       same as pressing Connect (resolves when ready)
 *   window.voicecore.disconnect()
 *   window.voicecore.setMic(m)       a deviceId, a MediaStream, or undefined (default mic)
 *   window.voicecore.listMics()      audio input devices
 *   window.voicecore.stats()         state, mode, session, capabilities (in use: announced and
 *                                    confirmed by the server's ready), echoLoop (settings or
 *                                    null), playout (buffer, played, underruns, paused,
 *                                    pauses, resumes, clear/pause/resume frames), underrunLog
 *                                    (when each underrun was seen), bargeIns (speech onset at
 *                                    the mic -> silence at the speaker, ms, via pause or
 *                                    clear), ducks (pauses a resume ended), mic frames
 *                                    sent/dropped, mic level, turns, restarts (reconnections
 *                                    that did not resume the conversation), conversation (the
 *                                    token a reconnection resumes), errors
 *   window.voicecore.tap             OutputTap: start(maxSeconds), stop() -> Recording of what
 *                                    the page played and what the mic heard, sample-aligned
 *   window.voicecore.events          every client event seen: `time` (this page's
 *                                    performance.now()), `receivedAt` (epoch ms the socket
 *                                    worker got the last server message, for server events)
 *
 * URL parameters: `?connect=1` connects on load (tests; needs autoplay allowed),
 * `?mode=port` forces the MessagePort player even when SharedArrayBuffer is available,
 * `?token=...` is passed on to the socket (a server started with --token),
 * `?reconnect=0` turns reconnection off (the session ends with its connection),
 * `?pause=0` announces no capabilities (the server cuts with `clear` only, as for a client
 * that predates `pause`), `?echo_gain_db=-10&echo_delay_ms=80` (either one; the other takes
 * its default) simulates a speakerphone without echo cancellation (the client's `echoLoop`
 * test option).
 */
import { Conversation } from "./lib/conversation.mjs";
import { TimeSeries } from "./lib/history.mjs";
import { toDbfs } from "./lib/pcm.mjs";
import { ECHO_LOOP_DEFAULTS, VoicecoreClient, listMics } from "./voicecore-client.mjs";

const params = new URLSearchParams(location.search);

/** @template {HTMLElement} T @param {string} id @returns {T} */
const $ = (id) => /** @type {T} */ (document.getElementById(id));

const ui = {
  status: $("status"),
  statusText: $("status-text"),
  banner: $("banner"),
  bannerText: $("banner-text"),
  bannerClose: /** @type {HTMLButtonElement} */ ($("banner-close")),
  turns: $("turns"),
  empty: $("empty"),
  speaking: $("speaking"),
  agentPaused: $("agent-paused"),
  controls: /** @type {HTMLFormElement} */ ($("controls")),
  micSelect: /** @type {HTMLSelectElement} */ ($("mic-select")),
  connect: /** @type {HTMLButtonElement} */ ($("connect")),
  micMeter: $("mic-meter"),
  micFill: $("mic-fill"),
  micPeak: $("mic-peak"),
  micDb: $("mic-db"),
  figures: $("figures"),
  mode: $("mode"),
  graph: /** @type {HTMLCanvasElement} */ ($("buffer-graph")),
  buffered: $("buffered"),
  underruns: $("underruns"),
  played: $("played"),
  sessionInfo: $("session-info"),
};

/** The socket URL: /ws on this host, with the page's `?token=` passed on (browsers cannot set
 * an Authorization header on a WebSocket, so the server also accepts the token there). */
function socketUrl() {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = params.get("token");
  if (token) url.searchParams.set("token", token);
  return url.href;
}

/**
 * The echo simulation the URL asks for (`echo_gain_db`, `echo_delay_ms`), or undefined.
 * @returns {import("./voicecore-client.mjs").EchoLoop | undefined}
 */
function echoLoopFromUrl() {
  const gainDb = params.get("echo_gain_db");
  const delayMs = params.get("echo_delay_ms");
  if (gainDb === null && delayMs === null) return undefined;
  return {
    gainDb: gainDb === null ? ECHO_LOOP_DEFAULTS.gainDb : Number(gainDb),
    delayMs: delayMs === null ? ECHO_LOOP_DEFAULTS.delayMs : Number(delayMs),
  };
}

const client = new VoicecoreClient({
  url: socketUrl(),
  // A reloaded tab resumes its conversation (sessionStorage is per tab).
  conversationStorage: sessionStorage,
  ...(params.get("reconnect") === "0" ? { reconnect: false } : {}),
  forcePortMode: params.get("mode") === "port",
  ...(params.get("pause") === "0" ? { capabilities: [] } : {}),
  echoLoop: echoLoopFromUrl(),
});
let conversation = new Conversation();
const GRAPH_SECONDS = 30;
const buffer = new TimeSeries(GRAPH_SECONDS * 8 + 8);
/** @type {{time: number, receivedAt: number | null, type: string, detail: unknown}[]} */
const events = [];
/** @type {{time: number, message: string}[]} */
const errors = [];
let lastUnderruns = 0;

const STATUS_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  handshaking: "Starting session…",
  ready: "Live",
  reconnecting: "Reconnecting…",
  closing: "Disconnecting…",
  closed: "Not connected",
};

// ---- status, banner, controls ----------------------------------------------------------

/** @param {import("./voicecore-client.mjs").ClientState} state */
function renderState(state) {
  clearTimeout(statusNoteTimer);
  ui.status.dataset.state = state;
  ui.statusText.textContent = STATUS_TEXT[state];
  const busy = state === "connecting" || state === "handshaking" || state === "closing";
  const live = state === "ready";
  // Disconnect also stops a reconnection.
  const session = live || state === "reconnecting";
  ui.connect.textContent = session ? "Disconnect" : busy ? STATUS_TEXT[state] : "Connect";
  ui.connect.disabled = busy;
  ui.connect.classList.toggle("danger", session);
  ui.micSelect.disabled = state !== "idle" && state !== "closed";
  if (!live) {
    ui.speaking.hidden = true;
    ui.agentPaused.hidden = true;
    renderLevel(0, 0);
  }
}

/** @param {string} message */
function showError(message) {
  errors.push({ time: performance.now(), message });
  ui.banner.title = "";
  ui.bannerText.textContent = message;
  ui.banner.hidden = false;
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let statusNoteTimer;

/**
 * Shows `text` in the status pill for a few seconds, then the state's own text again.
 * @param {string} text
 */
function noteStatus(text) {
  clearTimeout(statusNoteTimer);
  ui.statusText.textContent = text;
  statusNoteTimer = setTimeout(() => (ui.statusText.textContent = STATUS_TEXT[client.state]), 4000);
}

/**
 * A reconnection did not resume the conversation: the turns shown so far stay, greyed, under
 * a note; the agent remembers none of them, and the new turns (whose ids start over) follow.
 */
function markRestarted() {
  if (turnNodes.size === 0) return; // nothing was said: nothing was lost
  for (const li of turnNodes.values()) li.classList.add("earlier");
  turnNodes.clear();
  const note = document.createElement("li");
  note.className = "turn-note";
  note.textContent = "Reconnected, but the server had lost the conversation: the agent starts over.";
  ui.turns.append(note);
}

function hideError() {
  ui.banner.hidden = true;
}

ui.bannerClose.addEventListener("click", hideError);

ui.controls.addEventListener("submit", (event) => {
  event.preventDefault();
  if (client.state === "ready" || client.state === "reconnecting") void disconnect();
  else void connect().catch(() => {}); // the banner shows why
});

async function connect() {
  hideError();
  conversation = new Conversation();
  buffer.clear();
  lastUnderruns = 0;
  renderTurns();
  renderFigures();
  const choice = ui.micSelect.value;
  if (!(client.options.mic instanceof MediaStream)) client.options.mic = choice || undefined;
  const ready = await client.connect();
  void refreshMics();
  return ready;
}

async function disconnect() {
  await client.disconnect();
}

async function refreshMics() {
  try {
    const mics = await listMics();
    const selected = ui.micSelect.value;
    ui.micSelect.replaceChildren(new Option("Default microphone", ""));
    mics.forEach((mic, i) => {
      if (mic.deviceId === "default" || mic.deviceId === "") return;
      ui.micSelect.append(new Option(mic.label || `Microphone ${i + 1}`, mic.deviceId));
    });
    ui.micSelect.value = selected;
  } catch {
    // No media devices API (insecure origin): the default mic is the only choice.
  }
}

// ---- conversation ----------------------------------------------------------------------

/** @type {Map<number, HTMLLIElement>} */
const turnNodes = new Map();

/**
 * @param {string} who "user" | "agent"
 * @returns {HTMLElement}
 */
function bubble(who) {
  const div = document.createElement("div");
  div.className = `bubble ${who}`;
  const label = document.createElement("span");
  label.className = "who";
  label.textContent = who === "user" ? "You" : "Agent";
  const text = document.createElement("p");
  text.className = "text";
  div.append(label, text);
  return div;
}

/** @param {import("./lib/conversation.mjs").Turn} turn */
function renderTurn(turn) {
  let li = turnNodes.get(turn.id);
  if (!li) {
    li = document.createElement("li");
    li.className = "turn";
    li.dataset.turnId = String(turn.id);
    li.append(bubble("user"), bubble("agent"));
    const meta = document.createElement("div");
    meta.className = "turn-meta";
    li.append(meta);
    turnNodes.set(turn.id, li);
    const next = [...turnNodes.entries()].filter(([id]) => id > turn.id).sort((a, b) => a[0] - b[0])[0];
    ui.turns.insertBefore(li, next ? next[1] : null);
  }
  const [user, agent] = /** @type {HTMLElement[]} */ ([...li.querySelectorAll(".bubble")]);
  const userText = /** @type {HTMLElement} */ (user.querySelector(".text"));
  user.hidden = !turn.userText;
  userText.textContent = turn.userText;
  user.classList.toggle("partial", !turn.userFinal);
  const agentText = /** @type {HTMLElement} */ (agent.querySelector(".text"));
  agent.hidden = !turn.agentText;
  const { heard, unheard } = Conversation.splitHeard(turn);
  if (unheard) {
    // What the barge-in cut off stays visible, struck through: the agent never said it.
    const cut = document.createElement("s");
    cut.className = "unheard";
    cut.title = "Not heard: you interrupted";
    cut.textContent = unheard;
    agentText.replaceChildren(heard, cut);
  } else {
    agentText.textContent = heard;
  }
  agent.classList.toggle("interrupted", turn.interrupted);
  agent.classList.toggle("streaming", !turn.agentDone && !turn.interrupted && !turn.dropped);
  const meta = /** @type {HTMLElement} */ (li.querySelector(".turn-meta"));
  const parts = [];
  if (turn.dropped) parts.push("Connection lost");
  if (turn.interrupted) parts.push("Interrupted");
  if (turn.latency?.voiceToVoiceMs != null) parts.push(`${fmtMs(turn.latency.voiceToVoiceMs)} voice to voice`);
  const heardMs = turn.latency?.bargeInHeardMs;
  if (heardMs != null) parts.push(`stopped ${fmtMs(heardMs)} after you spoke`);
  meta.textContent = parts.join(" · ");
  meta.hidden = parts.length === 0;
  ui.empty.hidden = true;
  li.scrollIntoView({ block: "end", behavior: "smooth" });
}

function renderTurns() {
  ui.turns.replaceChildren();
  turnNodes.clear();
  ui.empty.hidden = conversation.turns.length > 0;
  conversation.turns.forEach(renderTurn);
}

/** @param {number} ms */
function fmtMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

function renderFigures() {
  const last = conversation.lastMeasured?.latency;
  for (const node of ui.figures.querySelectorAll(".figure")) {
    const key = /** @type {keyof import("./lib/conversation.mjs").TurnLatency} */ (
      /** @type {HTMLElement} */ (node).dataset.key
    );
    const lastValue = last?.[key];
    const median = conversation.median(key);
    const [lastNode, medianNode] = /** @type {HTMLElement[]} */ ([...node.querySelectorAll("dd span")]);
    lastNode.textContent = lastValue != null ? fmtMs(lastValue) : "–";
    medianNode.textContent = median != null ? fmtMs(median) : "–";
  }
}

// ---- mic level ----------------------------------------------------------------------------

let levelFrame = 0;
let pendingLevel = { rms: 0, peak: 0 };

/** @param {number} rms @param {number} peak linear */
function renderLevel(rms, peak) {
  const db = toDbfs(rms, -60);
  const peakDb = toDbfs(peak, -60);
  ui.micFill.style.transform = `scaleX(${(db + 60) / 60})`;
  ui.micPeak.style.left = `${((peakDb + 60) / 60) * 100}%`;
  ui.micPeak.style.opacity = peakDb <= -60 ? "0" : "";
  ui.micDb.textContent = db <= -60 ? "–∞ dB" : `${Math.round(db)} dB`;
  ui.micMeter.setAttribute("aria-valuenow", String(Math.round(db)));
  ui.micMeter.setAttribute("aria-valuetext", db <= -60 ? "silent" : `${Math.round(db)} decibels`);
}

// ---- playback graph -------------------------------------------------------------------------

let graphQueued = false;

function queueGraph() {
  if (graphQueued) return;
  graphQueued = true;
  requestAnimationFrame(() => {
    graphQueued = false;
    drawGraph();
  });
}

function drawGraph() {
  const canvas = ui.graph;
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const css = getComputedStyle(canvas);
  const color = (/** @type {string} */ name) => css.getPropertyValue(name).trim();
  const cushion = client.session?.cushion_ms ?? 240;
  const top = Math.max(cushion * 2, buffer.max() * 1.15, 50);
  const now = performance.now() / 1000;
  const x = (/** @type {number} */ t) => width - ((now - t) / GRAPH_SECONDS) * width;
  const y = (/** @type {number} */ v) => height - 4 - (v / top) * (height - 8);

  // Grid and the cushion the server aims for.
  ctx.lineWidth = 1;
  ctx.strokeStyle = color("--grid");
  ctx.beginPath();
  for (let s = 0; s <= GRAPH_SECONDS; s += 5) {
    const gx = Math.round(x(now - s)) + 0.5;
    ctx.moveTo(gx, 0);
    ctx.lineTo(gx, height);
  }
  ctx.stroke();
  ctx.setLineDash([4, 4]);
  ctx.strokeStyle = color("--muted");
  ctx.beginPath();
  ctx.moveTo(0, Math.round(y(cushion)) + 0.5);
  ctx.lineTo(width, Math.round(y(cushion)) + 0.5);
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = color("--muted");
  ctx.font = `11px ${css.fontFamily}`;
  ctx.fillText(`cushion ${cushion} ms`, 6, Math.max(12, y(cushion) - 4));

  // Underruns: a red line where each was seen.
  ctx.strokeStyle = color("--danger");
  ctx.lineWidth = 2;
  for (const t of buffer.marks) {
    ctx.beginPath();
    ctx.moveTo(x(t), 0);
    ctx.lineTo(x(t), height);
    ctx.stroke();
  }

  if (buffer.length < 2) return;
  const accent = color("--accent");
  ctx.beginPath();
  ctx.moveTo(x(buffer.at(0)[0]), height);
  for (let i = 0; i < buffer.length; i++) {
    const [t, v] = buffer.at(i);
    ctx.lineTo(x(t), y(v));
  }
  ctx.lineTo(x(buffer.at(buffer.length - 1)[0]), height);
  ctx.closePath();
  ctx.fillStyle = color("--accent-soft");
  ctx.fill();
  ctx.beginPath();
  for (let i = 0; i < buffer.length; i++) {
    const [t, v] = buffer.at(i);
    if (i === 0) ctx.moveTo(x(t), y(v));
    else ctx.lineTo(x(t), y(v));
  }
  ctx.strokeStyle = accent;
  ctx.lineWidth = 1.5;
  ctx.stroke();
}

// Keep the graph scrolling while connected, even when no stats arrive (a stalled server).
setInterval(() => {
  if (client.state === "ready") queueGraph();
}, 250);
new ResizeObserver(queueGraph).observe(ui.graph);

// ---- client events ------------------------------------------------------------------------------

/** @param {string} type @param {(detail: any) => void} handler */
function on(type, handler) {
  client.addEventListener(type, (event) => {
    const detail = /** @type {CustomEvent} */ (event).detail;
    if (type !== "level" && type !== "playout") {
      events.push({ time: performance.now(), receivedAt: client.lastMessageAt || null, type, detail });
    }
    if (events.length > 5000) events.splice(0, 1000);
    handler(detail);
  });
}

on("state", ({ state }) => renderState(state));
on("ready", (ready) => {
  const inFlight = conversation.turns.at(-1);
  const start = conversation.start(ready);
  if (inFlight?.dropped) renderTurn(inFlight);
  if (start === "restarted") {
    markRestarted();
    renderFigures(); // the figures of the new conversation
  } else if (start === "resumed" && turnNodes.size === 0) {
    renderTurns(); // rebuilt from the history
  }
  ui.mode.textContent = client.mode === "shared" ? "SharedArrayBuffer" : "MessagePort";
  ui.mode.title =
    client.mode === "shared"
      ? "Agent audio goes from the socket worker into a shared ring the audio thread reads"
      : "Agent audio goes from the socket worker to the audio thread over a MessagePort";
  ui.sessionInfo.textContent = [
    `Session ${ready.session_id}`,
    `${ready.output_rate / 1000} kHz`,
    `${ready.frame_ms} ms frames`,
    `protocol v${ready.protocol}`,
  ].join(" · ");
});
on("speech_start", () => {
  conversation.userSpeaking = true;
  ui.speaking.hidden = false;
});
on("speech_end", () => {
  conversation.userSpeaking = false;
  ui.speaking.hidden = true;
});
for (const type of ["transcript", "agent_text", "agent_done", "clear"]) {
  on(type, (msg) => {
    if (type === "clear") ui.agentPaused.hidden = true; // a clear ends a pause
    const turn = conversation.apply(msg);
    if (turn) renderTurn(turn);
  });
}
// The server holds the agent's reply while it decides whether the user is interrupting.
on("pause", () => (ui.agentPaused.hidden = false));
on("resume", () => (ui.agentPaused.hidden = true));
// Kept in `events` for tests; the figures live in client.ducks.
on("duck", () => {});
on("metrics", (msg) => {
  const turn = conversation.apply(msg);
  if (turn) renderTurn(turn);
  renderFigures();
});
on("barge_in", ({ turnId, ms }) => {
  renderTurn(conversation.setBargeInHeard(turnId, ms));
  renderFigures();
});
on("reconnecting", ({ attempt }) => {
  ui.speaking.hidden = true;
  ui.agentPaused.hidden = true;
  ui.statusText.textContent = attempt > 1 ? `Reconnecting… (attempt ${attempt})` : STATUS_TEXT.reconnecting;
});
on("reconnected", ({ resumed }) => noteStatus(resumed ? "Reconnected" : "Reconnected: new conversation"));
on("server_error", (err) => showError(err.message || `Server error: ${err.code}`));
on("error", ({ message }) => showError(message));
on("closed", (info) => {
  // The close's own sentence is the clearest for the user; the server's reason (often the
  // same story as its `error` message just before) goes into the tooltip.
  if (info && !info.clean) {
    showError(info.message);
    ui.banner.title = info.reason;
  }
});
on("level", ({ rms, peak }) => {
  pendingLevel = { rms, peak };
  if (levelFrame) return;
  levelFrame = requestAnimationFrame(() => {
    levelFrame = 0;
    if (client.state === "ready") renderLevel(pendingLevel.rms, pendingLevel.peak);
  });
});
on("playout", (stats) => {
  const now = performance.now() / 1000;
  buffer.push(now, stats.bufferedMs);
  if (stats.underruns > lastUnderruns) buffer.mark(now);
  lastUnderruns = stats.underruns;
  ui.buffered.textContent = `${Math.round(stats.bufferedMs)} ms`;
  ui.underruns.textContent = String(stats.underruns);
  ui.underruns.classList.toggle("bad", stats.underruns > 0);
  ui.played.textContent = fmtMs(stats.playedMs);
  queueGraph();
});

renderState(client.state);
queueGraph();
void refreshMics();

// ---- test hooks ---------------------------------------------------------------------------------

/** @type {any} */ (window).voicecore = {
  client,
  connect,
  disconnect,
  listMics,
  /** @param {MediaStream | string | undefined} mic */
  setMic(mic) {
    client.options.mic = mic;
    if (typeof mic === "string") ui.micSelect.value = mic;
  },
  get tap() {
    return client.tap;
  },
  get conversation() {
    return conversation;
  },
  events,
  stats() {
    return {
      state: client.state,
      mode: client.mode,
      crossOriginIsolated: globalThis.crossOriginIsolated === true,
      session: client.session,
      capabilities: client.capabilities,
      echoLoop: client.options.echoLoop ?? null,
      sampleRate: client.context?.sampleRate ?? null,
      playout: client.playout,
      underruns: client.playout?.underruns ?? 0,
      underrunLog: client.underrunLog.slice(),
      maxArrivalGapMs: client.maxArrivalGapMs,
      micFrames: client.micFrames,
      level: client.level,
      turns: conversation.turns.map((t) => ({ ...t })),
      restarts: conversation.restarts,
      conversation: client.conversationToken,
      bargeIns: client.bargeIns.slice(),
      ducks: client.ducks.slice(),
      errors: errors.slice(),
    };
  },
};

if (params.get("connect") === "1") void connect().catch(() => {});
