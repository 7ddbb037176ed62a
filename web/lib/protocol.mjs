// @ts-check
/**
 * voicecore wire protocol v1, client side, sans-I/O: message builders, a validating parser
 * of server messages, and the connection state machine. No WebSocket, no DOM: the socket
 * worker drives it, node's test runner tests it. The protocol is written up in
 * docs/protocol.md.
 *
 * Text frames are JSON objects with a "type"; binary frames are PCM16 little-endian mono
 * (mic audio up at `input_rate`, agent audio down at `output_rate`).
 * @module
 */

export const PROTOCOL_VERSION = 1;
export const CLIENT_NAME = "voicecore-web/1";
/** Rates the server accepts, Hz. */
export const MIN_RATE = 8000;
export const MAX_RATE = 48000;
/**
 * What this client can do beyond the v1 baseline, announced in `hello.capabilities`:
 * * `"pause"`: the client honours `pause` (stop playing, keep the audio) and `resume`
 *   (continue from the exact sample), so the server may duck the agent at the user's
 *   speech onset and decide later whether it was an interruption.
 */
export const CLIENT_CAPABILITIES = Object.freeze(["pause"]);

/**
 * @typedef {object} Hello
 * @property {"hello"} type
 * @property {number} protocol
 * @property {number} input_rate Hz of the mic audio the client sends
 * @property {number} output_rate Hz the client plays agent audio at
 * @property {number} frame_ms
 * @property {string} client
 * @property {string[]} capabilities what this client can do beyond the baseline (see
 *   CLIENT_CAPABILITIES); a server ignores the ones it does not know
 * @property {string} [resume] the `conversation` of an earlier `ready`: continue that
 *   conversation (its history) on whichever server answers
 */

/** The longest `conversation` token a client may send back as `hello.resume`. */
export const MAX_CONVERSATION_CHARS = 128;

/**
 * One exchange of a resumed conversation, as the agent remembers it (an assistant text cut
 * by a barge-in ends with "…").
 * @typedef {{role: "user" | "assistant", text: string}} HistoryEntry
 */

/**
 * `ready.capabilities`: those of the client's the server will use with it (absent from a
 * server that predates them: none). `conversation`: the token naming this conversation, to
 * send as `hello.resume` when reconnecting (absent from a server that cannot resume: the
 * client then never asks to). `resumed`: `hello.resume` named a conversation the server
 * found; `history`: that conversation so far, oldest first (only when resumed).
 * @typedef {{type: "ready", protocol: number, session_id: string, input_rate: number,
 *   output_rate: number, frame_ms: number, cushion_ms: number, capabilities?: string[] | null,
 *   conversation?: string | null, resumed?: boolean | null, history?: HistoryEntry[] | null}} Ready
 * @typedef {{type: "speech_start" | "speech_end", time_s: number}} SpeechEvent
 * @typedef {{type: "transcript", turn_id: number, text: string, final: boolean}} Transcript
 * @typedef {{type: "agent_text", turn_id: number, text: string}} AgentText
 * @typedef {{type: "agent_done", turn_id: number, interrupted?: boolean, heard?: string}} AgentDone
 * @typedef {{type: "clear", turn_id: number}} Clear
 * @typedef {{type: "pause", turn_id: number}} Pause  stop playing, keep every sample held
 * @typedef {{type: "resume", turn_id: number}} Resume  play on from the sample after the pause
 * @typedef {{type: "metrics", turn_id: number, voice_to_voice_ms?: number | null,
 *   stt_final_ms?: number | null, llm_first_token_ms?: number | null,
 *   tts_first_audio_ms?: number | null, barge_in_ms?: number | null,
 *   [extra: string]: unknown}} Metrics
 * @typedef {{type: "error", code: string, message: string}} ServerError
 * @typedef {Ready | SpeechEvent | Transcript | AgentText | AgentDone | Clear | Pause | Resume |
 *   Metrics | ServerError} ServerMessage
 */

/** A message the client cannot accept: malformed, or out of order for the connection state. */
export class ProtocolError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "ProtocolError";
  }
}

/**
 * @param {number} rate
 * @param {string} what
 */
function checkRate(rate, what) {
  if (!Number.isInteger(rate) || rate < MIN_RATE || rate > MAX_RATE) {
    throw new RangeError(`${what} must be an integer in ${MIN_RATE}..${MAX_RATE} Hz, got ${rate}`);
  }
}

/**
 * @typedef {object} HelloOptions
 * @property {number} inputRate Hz
 * @property {number} outputRate Hz
 * @property {number} [frameMs] default 20
 * @property {readonly string[]} [capabilities] default CLIENT_CAPABILITIES; `[]` makes the
 *   client behave as one that predates them (the server then never pauses it)
 * @property {string | null} [resume] the conversation to continue (`ready.conversation` of an
 *   earlier session); null or absent: a new conversation
 */

/**
 * The first message of a session.
 * @param {HelloOptions} options
 * @returns {Hello}
 */
export function helloMessage({ inputRate, outputRate, frameMs = 20, capabilities = CLIENT_CAPABILITIES, resume = null }) {
  checkRate(inputRate, "inputRate");
  checkRate(outputRate, "outputRate");
  if (!Array.isArray(capabilities) || !capabilities.every((c) => typeof c === "string" && c.length > 0)) {
    throw new TypeError(`capabilities must be a list of non-empty strings, got ${JSON.stringify(capabilities)}`);
  }
  if (resume !== null && !isToken(resume)) {
    throw new TypeError(`resume must be a string of 1..${MAX_CONVERSATION_CHARS} characters, got ${JSON.stringify(resume)}`);
  }
  return {
    type: "hello",
    protocol: PROTOCOL_VERSION,
    input_rate: inputRate,
    output_rate: outputRate,
    frame_ms: frameMs,
    client: CLIENT_NAME,
    capabilities: [...new Set(capabilities)],
    ...(resume !== null ? { resume } : {}),
  };
}

/**
 * Whether `v` can be sent back as `hello.resume`.
 * @param {unknown} v
 * @returns {v is string}
 */
function isToken(v) {
  return typeof v === "string" && v.length > 0 && v.length <= MAX_CONVERSATION_CHARS;
}

/**
 * A playout report: how much agent audio the client holds and has played, in ms.
 * @param {{bufferedMs: number, playedMs: number, underruns: number}} stats
 */
export function playoutMessage({ bufferedMs, playedMs, underruns }) {
  for (const [name, v] of Object.entries({ bufferedMs, playedMs, underruns })) {
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be finite and >= 0, got ${v}`);
  }
  // One decimal is finer than any decision the server makes on it, and keeps frames short.
  return {
    type: "playout",
    buffered_ms: Math.round(bufferedMs * 10) / 10,
    played_ms: Math.round(playedMs * 10) / 10,
    underruns,
  };
}

export const BYE = Object.freeze({ type: "bye" });

/**
 * @typedef {"number" | "string" | "boolean" | "number?" | "boolean?" | "strings?" | "token?" |
 *   "history?"} FieldKind
 */

/** @type {Record<string, Record<string, FieldKind>>} */
const SCHEMA = {
  ready: {
    protocol: "number",
    session_id: "string",
    input_rate: "number",
    output_rate: "number",
    frame_ms: "number",
    cushion_ms: "number",
    capabilities: "strings?",
    conversation: "token?",
    resumed: "boolean?",
    history: "history?",
  },
  speech_start: { time_s: "number" },
  speech_end: { time_s: "number" },
  transcript: { turn_id: "number", text: "string", final: "boolean" },
  agent_text: { turn_id: "number", text: "string" },
  agent_done: { turn_id: "number" },
  clear: { turn_id: "number" },
  pause: { turn_id: "number" },
  resume: { turn_id: "number" },
  metrics: {
    turn_id: "number",
    voice_to_voice_ms: "number?",
    stt_final_ms: "number?",
    llm_first_token_ms: "number?",
    tts_first_audio_ms: "number?",
    barge_in_ms: "number?",
  },
  error: { code: "string", message: "string" },
};

/**
 * Parses and validates one server text frame. Unknown extra fields are kept and unknown
 * message types are ignored (returns null): within v1 the server may add both. A missing or
 * mistyped known field is an error.
 * @param {string} text
 * @returns {ServerMessage | null}
 * @throws {ProtocolError}
 */
export function parseServerMessage(text) {
  /** @type {unknown} */
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError(`server sent invalid JSON: ${text.slice(0, 80)}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError("server message is not a JSON object");
  }
  const msg = /** @type {Record<string, unknown>} */ (value);
  const type = msg.type;
  if (typeof type !== "string") throw new ProtocolError("server message has no string type");
  if (!Object.hasOwn(SCHEMA, type)) return null;
  for (const [field, kind] of Object.entries(SCHEMA[type])) {
    const v = msg[field];
    if (!fieldOk(kind, v)) throw new ProtocolError(`${type}.${field} should be ${kind}, got ${JSON.stringify(v)}`);
  }
  return /** @type {ServerMessage} */ (/** @type {unknown} */ (msg));
}

/**
 * Whether `v` is a valid value of a field of `kind` (`?`: may be absent or null;
 * `strings`: a list of strings; `token`: a string a client can send back as `hello.resume`;
 * `history`: a list of HistoryEntry).
 * @param {FieldKind} kind
 * @param {unknown} v
 */
function fieldOk(kind, v) {
  switch (kind) {
    case "number?":
      return v === undefined || v === null || (typeof v === "number" && Number.isFinite(v));
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "boolean?":
      return v === undefined || v === null || typeof v === "boolean";
    case "strings?":
      return v === undefined || v === null || (Array.isArray(v) && v.every((c) => typeof c === "string"));
    case "token?":
      return v === undefined || v === null || isToken(v);
    case "history?":
      return v === undefined || v === null || (Array.isArray(v) && v.every(isHistoryEntry));
    default:
      return typeof v === kind;
  }
}

/**
 * @param {unknown} v
 * @returns {v is HistoryEntry}
 */
function isHistoryEntry(v) {
  if (typeof v !== "object" || v === null) return false;
  const { role, text } = /** @type {Record<string, unknown>} */ (v);
  return (role === "user" || role === "assistant") && typeof text === "string";
}

/**
 * @typedef {object} CloseInfo
 * @property {number} code WebSocket close code
 * @property {string} reason the server's reason text
 * @property {string} message a sentence for the user
 * @property {boolean} retryable whether trying again later may work
 * @property {boolean} clean whether this was a normal end of session
 * @property {number} [attempts] the client tried this many times to reconnect before it
 *   gave up (absent: it did not try)
 */

/** @type {Record<number, [string, boolean]>} */
const CLOSE_MESSAGES = {
  1000: ["The session ended.", false],
  1001: ["The server is shutting down.", true],
  1003: ["The server could not accept the audio this client sent.", false],
  1006: ["The connection was lost.", true],
  1008: ["The server refused the connection (origin, token or protocol).", false],
  1009: ["A message was too large for the server.", false],
  1011: ["The server hit an internal error.", true],
  1012: ["The server is restarting.", true],
  1013: ["The server is at its session limit. Try again in a moment.", true],
  4000: ["The connection was too slow to keep up with the agent's audio.", true],
};

/**
 * Describes a close for the user.
 * @param {number} code
 * @param {string} [reason]
 * @returns {CloseInfo}
 */
export function describeClose(code, reason = "") {
  const [message, retryable] = CLOSE_MESSAGES[code] ?? [`The connection closed (code ${code}).`, true];
  return { code, reason, message, retryable, clean: code === 1000 };
}

/**
 * @typedef {"idle" | "connecting" | "handshaking" | "ready" | "closing" | "closed"} ConnectionState
 */

/**
 * The client's side of a session, as a state machine:
 *
 *     idle -connect-> connecting -open-> handshaking -ready-> ready
 *     connecting|handshaking|ready -disconnect-> closing -close-> closed
 *     any -close-> closed
 *
 * It decides what to send (hello on open, bye on disconnect) and which incoming frames are
 * acceptable in each state; the caller does the I/O. Within `ready` it also follows the
 * pause of the agent's audio (capability "pause"): `pause` starts one, `resume` of the same
 * turn or any `clear` ends it; a `resume` with no pause of its turn in effect is ignored, as
 * are `pause` and `resume` for a client that did not announce "pause".
 */
export class ClientProtocol {
  /** @param {HelloOptions} options */
  constructor(options) {
    this.hello = helloMessage(options);
    /** @type {ConnectionState} */
    this.state = "idle";
    /** @type {Ready | null} */
    this.ready = null;
    /**
     * The capabilities in use: announced by this client and confirmed in `ready`.
     * @type {Set<string>}
     */
    this.capabilities = new Set();
    /** @type {number | null} the turn whose audio is paused (null: none) */
    this.pausedTurn = null;
    /** @type {CloseInfo | null} */
    this.closeInfo = null;
    /** @type {ServerError | null} the last error the server reported */
    this.lastError = null;
  }

  /** @param {ConnectionState[]} allowed @param {string} action */
  #expect(allowed, action) {
    if (!allowed.includes(this.state)) {
      throw new ProtocolError(`cannot ${action} while ${this.state}`);
    }
  }

  /** The socket is being opened. */
  connect() {
    this.#expect(["idle"], "connect");
    this.state = "connecting";
  }

  /**
   * The socket opened.
   * @returns {Hello} the message to send now
   */
  opened() {
    this.#expect(["connecting", "closing"], "open");
    if (this.state === "closing") return this.hello; // still greet; the bye follows
    this.state = "handshaking";
    return this.hello;
  }

  /**
   * A text frame arrived.
   * @param {string} text
   * @returns {ServerMessage | null} null for a message this client ignores: a type it does not
   *   know, or a pause message it has no use for (see the class)
   * @throws {ProtocolError} malformed, or not acceptable now
   */
  receiveText(text) {
    const msg = parseServerMessage(text);
    if (msg === null) return null;
    if (msg.type === "error") {
      this.lastError = msg;
      return msg;
    }
    if (this.state === "handshaking") {
      if (msg.type !== "ready") throw new ProtocolError(`expected ready, got ${msg.type}`);
      if (msg.protocol !== PROTOCOL_VERSION) {
        throw new ProtocolError(`server speaks protocol ${msg.protocol}, this client ${PROTOCOL_VERSION}`);
      }
      if (msg.input_rate !== this.hello.input_rate || msg.output_rate !== this.hello.output_rate) {
        throw new ProtocolError(
          `server chose ${msg.input_rate}/${msg.output_rate} Hz, ` +
            `this client runs at ${this.hello.input_rate}/${this.hello.output_rate} Hz`,
        );
      }
      this.ready = msg;
      this.capabilities = new Set((msg.capabilities ?? []).filter((c) => this.hello.capabilities.includes(c)));
      this.state = "ready";
      return msg;
    }
    if (msg.type === "ready") throw new ProtocolError(`unexpected ready while ${this.state}`);
    this.#expect(["ready", "closing"], `receive ${msg.type}`);
    return this.#followPause(msg);
  }

  /**
   * Tracks the pause state; drops the pause messages this client must ignore.
   * @param {ServerMessage} msg
   * @returns {ServerMessage | null}
   */
  #followPause(msg) {
    if (msg.type === "clear") {
      this.pausedTurn = null;
    } else if (msg.type === "pause" || msg.type === "resume") {
      // Announced, not necessarily confirmed: a client that can pause honours a pause from a
      // server that did not list the capability in `ready` rather than play over the user.
      if (!this.hello.capabilities.includes("pause")) return null;
      if (msg.type === "pause") {
        this.pausedTurn = msg.turn_id;
      } else {
        // A resume of another turn than the one paused is stale: it must not restart audio.
        if (this.pausedTurn !== msg.turn_id) return null;
        this.pausedTurn = null;
      }
    }
    return msg;
  }

  /**
   * A binary frame (agent audio) arrived.
   * @param {ArrayBuffer} data
   * @returns {boolean} whether to play it (audio arriving while closing is dropped)
   * @throws {ProtocolError} audio before ready, or half a sample
   */
  receiveBinary(data) {
    if (data.byteLength % 2 !== 0) {
      throw new ProtocolError(`odd-length PCM16 frame (${data.byteLength} bytes)`);
    }
    this.#expect(["ready", "closing"], "receive audio");
    return this.state === "ready";
  }

  /** Whether mic audio may be sent now. */
  get canSendAudio() {
    return this.state === "ready";
  }

  /**
   * The user asked to disconnect.
   * @returns {typeof BYE | null} the message to send before closing (null if the socket is not open)
   */
  disconnect() {
    if (this.state === "closed" || this.state === "idle" || this.state === "closing") return null;
    const wasOpen = this.state !== "connecting";
    this.state = "closing";
    return wasOpen ? BYE : null;
  }

  /**
   * The socket closed.
   * @param {number} code
   * @param {string} [reason]
   * @returns {CloseInfo}
   */
  closed(code, reason = "") {
    const info = describeClose(code, reason);
    if (this.state === "closing") {
      // A close we asked for is a clean end whatever code the browser reports for it.
      info.clean = true;
      info.message = "Disconnected.";
    } else if (this.state === "connecting") {
      // The socket never opened: no server there, or it refused the upgrade (a browser does
      // not show a refused handshake's status, e.g. 403 for an origin not allowed).
      info.message = "Could not reach the voice server.";
      info.retryable = true;
    }
    this.state = "closed";
    this.closeInfo = info;
    return info;
  }
}
