import { test } from "node:test";
import assert from "node:assert/strict";
import {
  RECONNECT_DEFAULTS,
  Reconnector,
  backoffMs,
  closeKind,
  reconnectDecision,
  reconnectSettings,
} from "../lib/reconnect.mjs";

/** A lost session, as the policy sees it: ready once, first attempt, just now. */
const lost = (code, more = {}) => ({ code, everReady: true, attempt: 1, downMs: 0, ...more });
const NO_JITTER = () => 0; // the delay at its longest
const FULL_JITTER = () => 1 - Number.EPSILON; // the delay at its shortest

test("every close code falls in its class", () => {
  assert.equal(closeKind(1001), "at_once");
  for (const code of [1005, 1006, 1011, 1012, 1013, 1014, 3000]) assert.equal(closeKind(code), "backoff", String(code));
  assert.equal(closeKind(4000), "once");
  for (const code of [1000, 1002, 1003, 1007, 1008, 1009, 1015, 4001, 4999]) assert.equal(closeKind(code), "never", String(code));
});

test("a close that reconnecting cannot help is final; so is any close before a first ready", () => {
  for (const code of [1000, 1002, 1003, 1007, 1008, 1009, 4001]) {
    assert.deepEqual(reconnectDecision(lost(code)), { reconnect: false, why: "final" }, String(code));
  }
  for (const code of [1001, 1006, 1011, 1013, 4000]) {
    assert.deepEqual(reconnectDecision(lost(code, { everReady: false })), { reconnect: false, why: "never_ready" });
  }
});

test("1001 reconnects at once, within the small jitter; a failed attempt after it backs off", () => {
  const s = RECONNECT_DEFAULTS;
  assert.deepEqual(reconnectDecision(lost(1001), s, NO_JITTER), { reconnect: true, delayMs: 0 });
  const latest = reconnectDecision(lost(1001), s, FULL_JITTER);
  assert.ok(latest.reconnect && latest.delayMs < s.goingAwayMaxDelayMs && latest.delayMs > s.goingAwayMaxDelayMs - 1);
  // The server that answered the first attempt was draining too: the backoff takes over.
  assert.deepEqual(reconnectDecision(lost(1001, { attempt: 2 }), s, NO_JITTER), { reconnect: true, delayMs: 500 });
});

test("the backoff doubles from 250 ms up to 5 s", () => {
  const delays = [1, 2, 3, 4, 5, 6, 7].map((n) => backoffMs(n, RECONNECT_DEFAULTS));
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 5000, 5000]);
  for (const code of [1006, 1011, 1012, 1013]) {
    const decision = reconnectDecision(lost(code, { attempt: 3 }), RECONNECT_DEFAULTS, NO_JITTER);
    assert.deepEqual(decision, { reconnect: true, delayMs: 1000 }, String(code));
  }
});

test("jitter shortens a delay by at most its fraction, uniformly", () => {
  const settings = reconnectSettings({ jitter: 0.5 });
  /** @type {number[]} */
  const seen = [];
  for (let i = 0; i < 1000; i++) {
    const decision = reconnectDecision(lost(1006, { attempt: 4 }), settings);
    assert.ok(decision.reconnect);
    seen.push(decision.delayMs);
  }
  assert.ok(Math.min(...seen) >= 1000 && Math.max(...seen) <= 2000, `${Math.min(...seen)}..${Math.max(...seen)}`);
  // Spread over the range, not bunched: both halves are used.
  assert.ok(seen.some((d) => d < 1250) && seen.some((d) => d > 1750));
  const exact = reconnectDecision(lost(1006, { attempt: 4 }), reconnectSettings({ jitter: 0 }), FULL_JITTER);
  assert.deepEqual(exact, { reconnect: true, delayMs: 2000 });
});

test("it gives up after maxAttempts, or rather than start an attempt past maxDownMs", () => {
  const s = RECONNECT_DEFAULTS;
  assert.equal(reconnectDecision(lost(1006, { attempt: s.maxAttempts }), s, NO_JITTER).reconnect, true);
  assert.deepEqual(reconnectDecision(lost(1006, { attempt: s.maxAttempts + 1 }), s, NO_JITTER), { reconnect: false, why: "gave_up" });
  // 4 s of backoff would end past the 30 s bound; with full jitter (2 s) it fits.
  assert.deepEqual(reconnectDecision(lost(1006, { attempt: 5, downMs: 27000 }), s, NO_JITTER), { reconnect: false, why: "gave_up" });
  assert.equal(reconnectDecision(lost(1006, { attempt: 5, downMs: 27000 }), s, FULL_JITTER).reconnect, true);
});

test("4000 (too slow) is retried once", () => {
  assert.equal(reconnectDecision(lost(4000)).reconnect, true);
  assert.deepEqual(reconnectDecision(lost(4000, { retriedTooSlow: true })), { reconnect: false, why: "final" });
});

test("settings are checked", () => {
  assert.deepEqual(reconnectSettings(), RECONNECT_DEFAULTS);
  assert.equal(reconnectSettings({ maxAttempts: 3 }).maxAttempts, 3);
  for (const bad of [{ jitter: 1.5 }, { initialDelayMs: -1 }, { maxDelayMs: 100 }, { maxAttempts: 2.5 }, { maxDownMs: NaN }]) {
    assert.throws(() => reconnectSettings(bad), RangeError, JSON.stringify(bad));
  }
});

test("Reconnector: a first connection that fails is not retried", () => {
  const r = new Reconnector();
  assert.deepEqual(r.closed(1006, 0), { reconnect: false, why: "never_ready", attempt: 1 });
});

test("Reconnector: an outage's attempts back off, and the next ready reports the outage", () => {
  const r = new Reconnector({}, NO_JITTER);
  assert.equal(r.ready(0), null, "the first session is no reconnection");
  let now = 60_000;
  const first = r.closed(1006, now); // the session is lost
  assert.deepEqual(first, { reconnect: true, delayMs: 250, attempt: 1 });
  now += 250 + 10;
  assert.deepEqual(r.closed(1006, now), { reconnect: true, delayMs: 500, attempt: 2 }); // attempt 1 failed
  now += 500 + 10;
  assert.deepEqual(r.closed(1013, now), { reconnect: true, delayMs: 1000, attempt: 3 }); // full: try later
  now += 1000 + 40;
  assert.deepEqual(r.ready(now), { attempts: 3, downtimeMs: 1810 });
  // Up for longer than stableMs: the next outage starts afresh.
  now += RECONNECT_DEFAULTS.stableMs;
  assert.deepEqual(r.closed(1001, now), { reconnect: true, delayMs: 0, attempt: 1 });
});

test("Reconnector: it gives up after maxAttempts of one outage", () => {
  const r = new Reconnector({ jitter: 0, maxAttempts: 3, maxDownMs: 1e9 });
  r.ready(0);
  let now = 1e6;
  const decisions = [];
  for (let i = 0; i < 4; i++) {
    const d = r.closed(1006, now);
    decisions.push(d);
    if (d.reconnect) now += d.delayMs;
  }
  assert.deepEqual(decisions.map((d) => d.reconnect), [true, true, true, false]);
  assert.deepEqual(decisions[3], { reconnect: false, why: "gave_up", attempt: 4 });
});

test("Reconnector: a server that accepts and drops at once is backed off from, then given up on", () => {
  const r = new Reconnector({ jitter: 0, maxAttempts: 4, maxDownMs: 1e9 });
  r.ready(0);
  let now = 1e6;
  /** @type {number[]} */
  const delays = [];
  for (;;) {
    const d = r.closed(1011, now);
    if (!d.reconnect) break;
    delays.push(d.delayMs);
    now += d.delayMs;
    assert.ok(r.ready(now), "each attempt reaches ready");
    now += 100; // and is dropped 100 ms later
  }
  assert.deepEqual(delays, [250, 500, 1000, 2000]);
});

test("Reconnector: a too-slow close is retried once per client", () => {
  const r = new Reconnector({ jitter: 0 });
  r.ready(0);
  assert.equal(r.closed(4000, 100_000).reconnect, true);
  r.ready(100_300);
  assert.deepEqual(r.closed(4000, 200_000), { reconnect: false, why: "final", attempt: 1 });
});
