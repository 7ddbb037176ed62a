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
 * @typedef {object} Hello
 * @property {"hello"} type
 * @property {number} protocol
 * @property {number} input_rate Hz of the mic audio the client sends
 * @property {number} output_rate Hz the client plays agent audio at
 * @property {number} frame_ms
 * @property {string} client
 */

/**
 * @typedef {{type: "ready", protocol: number, session_id: string, input_rate: number,
 *   output_rate: number, frame_ms: number, cushion_ms: number}} Ready
 * @typedef {{type: "speech_start" | "speech_end", time_s: number}} SpeechEvent
 * @typedef {{type: "transcript", turn_id: number, text: string, final: boolean}} Transcript
 * @typedef {{type: "agent_text", turn_id: number, text: string}} AgentText
 * @typedef {{type: "agent_done", turn_id: number, interrupted?: boolean, heard?: string}} AgentDone
 * @typedef {{type: "clear", turn_id: number}} Clear
 * @typedef {{type: "metrics", turn_id: number, voice_to_voice_ms?: number | null,
 *   stt_final_ms?: number | null, llm_first_token_ms?: number | null,
 *   tts_first_audio_ms?: number | null, barge_in_ms?: number | null,
 *   [extra: string]: unknown}} Metrics
 * @typedef {{type: "error", code: string, message: string}} ServerError
 * @typedef {Ready | SpeechEvent | Transcript | AgentText | AgentDone | Clear | Metrics |
 *   ServerError} ServerMessage
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
 * The first message of a session.
 * @param {{inputRate: number, outputRate: number, frameMs?: number}} options rates in Hz
 * @returns {Hello}
 */
export function helloMessage({ inputRate, outputRate, frameMs = 20 }) {
  checkRate(inputRate, "inputRate");
  checkRate(outputRate, "outputRate");
  return {
    type: "hello",
    protocol: PROTOCOL_VERSION,
    input_rate: inputRate,
    output_rate: outputRate,
    frame_ms: frameMs,
    client: CLIENT_NAME,
  };
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

/** @type {Record<string, Record<string, "number" | "string" | "boolean" | "number?">>} */
const SCHEMA = {
  ready: {
    protocol: "number",
    session_id: "string",
    input_rate: "number",
    output_rate: "number",
    frame_ms: "number",
    cushion_ms: "number",
  },
  speech_start: { time_s: "number" },
  speech_end: { time_s: "number" },
  transcript: { turn_id: "number", text: "string", final: "boolean" },
  agent_text: { turn_id: "number", text: "string" },
  agent_done: { turn_id: "number" },
  clear: { turn_id: "number" },
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
    const ok =
      kind === "number?"
        ? v === undefined || v === null || (typeof v === "number" && Number.isFinite(v))
        : kind === "number"
          ? typeof v === "number" && Number.isFinite(v)
          : typeof v === kind;
    if (!ok) throw new ProtocolError(`${type}.${field} should be ${kind}, got ${JSON.stringify(v)}`);
  }
  return /** @type {ServerMessage} */ (/** @type {unknown} */ (msg));
}

/**
 * @typedef {object} CloseInfo
 * @property {number} code WebSocket close code
 * @property {string} reason the server's reason text
 * @property {string} message a sentence for the user
 * @property {boolean} retryable whether trying again later may work
 * @property {boolean} clean whether this was a normal end of session
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
 * acceptable in each state; the caller does the I/O.
 */
export class ClientProtocol {
  /** @param {{inputRate: number, outputRate: number, frameMs?: number}} options */
  constructor(options) {
    this.hello = helloMessage(options);
    /** @type {ConnectionState} */
    this.state = "idle";
    /** @type {Ready | null} */
    this.ready = null;
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
   * @returns {ServerMessage | null} null for a message type this client does not know (ignored)
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
      this.state = "ready";
      return msg;
    }
    if (msg.type === "ready") throw new ProtocolError(`unexpected ready while ${this.state}`);
    this.#expect(["ready", "closing"], `receive ${msg.type}`);
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
