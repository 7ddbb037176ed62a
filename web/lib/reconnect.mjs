// @ts-check
/**
 * When to reconnect after the socket closed, sans-I/O: a pure decision from the close code
 * and how long the session has been lost (`reconnectDecision`), and the bookkeeping of one
 * client's outages around it (`Reconnector`). The socket worker does the I/O; node's test
 * runner tests this. The close codes' meanings are in docs/protocol.md.
 *
 * Only a session that reached `ready` at least once is reconnected: a first connection that
 * fails is the user's to retry (connect() rejects and says why).
 * @module
 */

/**
 * @typedef {object} ReconnectSettings
 * @property {number} initialDelayMs the first backoff delay (before jitter)
 * @property {number} maxDelayMs the backoff doubles up to this
 * @property {number} jitter each backoff delay is drawn uniformly from
 *   `[(1 - jitter) * d, d]` (0..1), so that the clients of a dead server do not all come
 *   back at the same instant
 * @property {number} goingAwayMaxDelayMs after 1001 (the server is draining), the first
 *   attempt is made at once: after a uniform 0..this ms, to spread the clients of a worker
 * @property {number} maxAttempts attempts per outage before giving up (an outage that
 *   follows a session shorter than `stableMs` goes on counting those of the one before)
 * @property {number} maxDownMs give up rather than start an attempt this long after the
 *   session was lost
 * @property {number} stableMs a session must stay up this long for the next outage to start
 *   its backoff afresh: a server that accepts and drops the client at once is retried with
 *   growing delays and given up on, not hammered
 */

/**
 * The defaults: 250 ms doubling to 5 s (jittered down by up to half), at most 10 attempts
 * and 30 s per outage: about 23 s of waiting at most, enough for a restarted server or a
 * replaced pod, short enough that a user is not left talking to nobody for long.
 * @type {Readonly<ReconnectSettings>}
 */
export const RECONNECT_DEFAULTS = Object.freeze({
  initialDelayMs: 250,
  maxDelayMs: 5000,
  jitter: 0.5,
  goingAwayMaxDelayMs: 250,
  maxAttempts: 10,
  maxDownMs: 30000,
  stableMs: 10000,
});

/**
 * The defaults with `overrides` on top, checked.
 * @param {Partial<ReconnectSettings>} [overrides]
 * @returns {ReconnectSettings}
 * @throws {RangeError} a setting out of range
 */
export function reconnectSettings(overrides = {}) {
  const s = { ...RECONNECT_DEFAULTS, ...overrides };
  for (const [name, v] of Object.entries(s)) {
    if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`reconnect.${name} must be finite and >= 0, got ${v}`);
  }
  if (s.jitter > 1) throw new RangeError(`reconnect.jitter must be in 0..1, got ${s.jitter}`);
  if (s.maxDelayMs < s.initialDelayMs) {
    throw new RangeError(`reconnect.maxDelayMs (${s.maxDelayMs}) is below initialDelayMs (${s.initialDelayMs})`);
  }
  if (!Number.isInteger(s.maxAttempts)) throw new RangeError(`reconnect.maxAttempts must be an integer, got ${s.maxAttempts}`);
  return s;
}

/**
 * How a close code is handled:
 * * `"at_once"`: 1001, the server is draining or shutting down: reconnect at once.
 * * `"backoff"`: the worker died (1006, also what a browser reports for a connection that
 *   failed), failed (1011), is restarting (1012), is full (1013), or another code that
 *   may pass: reconnect with exponential backoff.
 * * `"once"`: 4000, this client was too slow to keep up: one more try, not a loop.
 * * `"never"`: a normal end (1000, after `bye`), a refusal (1008: origin or token), a
 *   protocol error (1002, 1003, 1007, 1009), a TLS failure (1015), or an application code
 *   this client does not know (4001-4999): trying again would fail the same way.
 * @typedef {"at_once" | "backoff" | "once" | "never"} CloseKind
 */

const NEVER = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1015]);

/**
 * @param {number} code
 * @returns {CloseKind}
 */
export function closeKind(code) {
  if (code === 1001) return "at_once";
  if (code === 4000) return "once";
  if (NEVER.has(code) || (code >= 4000 && code <= 4999)) return "never";
  return "backoff";
}

/**
 * The backoff delay before attempt `attempt` (1-based), before jitter:
 * `initialDelayMs * 2^(attempt-1)`, at most `maxDelayMs`.
 * @param {number} attempt
 * @param {ReconnectSettings} settings
 */
export function backoffMs(attempt, settings) {
  return Math.min(settings.maxDelayMs, settings.initialDelayMs * 2 ** Math.max(0, attempt - 1));
}

/**
 * @typedef {object} LostConnection
 * @property {number} code the WebSocket close code (1006 for a connection that failed)
 * @property {boolean} everReady this client had a session (a `ready`) since connect()
 * @property {number} attempt the number of the attempt this close would lead to (1: the
 *   first since the session was lost)
 * @property {number} downMs how long ago the session was lost (0 for the close that lost it)
 * @property {boolean} [retriedTooSlow] a 4000 close has already been retried once
 */

/**
 * Reconnect after `delayMs`, or not, and `why` not: `final`, the close code says trying
 * again would not help (see CloseKind); `never_ready`, there was never a session to
 * continue; `gave_up`, too many attempts or too long.
 * @typedef {{reconnect: true, delayMs: number}} Reconnect
 * @typedef {{reconnect: false, why: "final" | "never_ready" | "gave_up"}} GiveUp
 * @typedef {Reconnect | GiveUp} ReconnectDecision
 */

/**
 * Whether and when to reconnect after a close.
 * @param {LostConnection} lost
 * @param {ReconnectSettings} [settings] default RECONNECT_DEFAULTS
 * @param {() => number} [random] uniform in [0, 1) (the jitter)
 * @returns {ReconnectDecision}
 */
export function reconnectDecision(lost, settings = RECONNECT_DEFAULTS, random = Math.random) {
  if (!lost.everReady) return { reconnect: false, why: "never_ready" };
  const kind = closeKind(lost.code);
  if (kind === "never" || (kind === "once" && lost.retriedTooSlow)) return { reconnect: false, why: "final" };
  if (lost.attempt > settings.maxAttempts) return { reconnect: false, why: "gave_up" };
  const delayMs =
    kind === "at_once" && lost.attempt === 1
      ? random() * settings.goingAwayMaxDelayMs
      : backoffMs(lost.attempt, settings) * (1 - settings.jitter * random());
  if (lost.downMs + delayMs > settings.maxDownMs) return { reconnect: false, why: "gave_up" };
  return { reconnect: true, delayMs };
}

/**
 * One client's reconnection bookkeeping across its sockets: counts the attempts of an
 * outage, measures its length, remembers whether a too-slow close was retried. Times are
 * the caller's clock in ms (performance.now()).
 *
 *     const r = new Reconnector(settings);
 *     r.ready(now)                    // each `ready`: null the first time, else the outage
 *     r.closed(code, now)             // each close the client did not ask for: the decision
 */
export class Reconnector {
  /**
   * @param {Partial<ReconnectSettings>} [settings]
   * @param {() => number} [random]
   */
  constructor(settings = {}, random = Math.random) {
    this.settings = reconnectSettings(settings);
    this.random = random;
    this.everReady = false;
    /** @type {number | null} when the current outage began (null: a session is up) */
    this.lostAt = null;
    /** @type {number} when the last session became ready */
    this.readyAt = 0;
    /** attempts since the backoff last started afresh */
    this.attempt = 0;
    /** `attempt` when the current outage began */
    this.attemptAtLoss = 0;
    this.retriedTooSlow = false;
  }

  /**
   * A socket closed that the client did not close on purpose.
   * @param {number} code
   * @param {number} now ms
   * @returns {ReconnectDecision & {attempt: number}} `attempt`: the number of the attempt
   *   scheduled (or the one that was not), counted from the start of the outage
   */
  closed(code, now) {
    if (this.lostAt === null) {
      this.lostAt = now;
      if (now - this.readyAt >= this.settings.stableMs) this.attempt = 0;
      this.attemptAtLoss = this.attempt;
    }
    this.attempt++;
    const decision = reconnectDecision(
      { code, everReady: this.everReady, attempt: this.attempt, downMs: now - this.lostAt, retriedTooSlow: this.retriedTooSlow },
      this.settings,
      this.random,
    );
    if (decision.reconnect && closeKind(code) === "once") this.retriedTooSlow = true;
    return { ...decision, attempt: this.attempt - this.attemptAtLoss };
  }

  /**
   * A session is ready.
   * @param {number} now ms
   * @returns {{attempts: number, downtimeMs: number} | null} the outage it ends (null: the
   *   first session, not a reconnection)
   */
  ready(now) {
    this.everReady = true;
    this.readyAt = now;
    if (this.lostAt === null) return null;
    const outage = { attempts: this.attempt - this.attemptAtLoss, downtimeMs: now - this.lostAt };
    this.lostAt = null;
    return outage;
  }
}
