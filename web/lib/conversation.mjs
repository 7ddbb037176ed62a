// @ts-check
/**
 * The conversation as the page shows it, built from server messages: per turn, what the
 * user said (partial then final transcript), what the agent said, whether it was cut off by
 * a barge-in, and the turn's latency figures. It spans the sessions of a conversation the
 * client resumed after a reconnection (`start`). Pure data, no DOM, so node can test it.
 * @module
 */

/**
 * @typedef {object} TurnLatency
 * @property {number | null} voiceToVoiceMs end of user speech -> first agent audio out
 * @property {number | null} sttFinalMs end of user speech -> final transcript
 * @property {number | null} llmFirstTokenMs LLM request -> first token
 * @property {number | null} ttsFirstAudioMs first sentence -> first TTS audio
 * @property {number | null} bargeInMs the server's barge-in step: confirmed -> cancelled,
 *   flushed and cleared
 * @property {number | null} bargeInHeardMs measured here: the user's speech onset at the mic
 *   -> the agent silent at the speaker (lib/barge-in.mjs)
 */

/** @returns {TurnLatency} */
const noLatency = () => ({
  voiceToVoiceMs: null,
  sttFinalMs: null,
  llmFirstTokenMs: null,
  ttsFirstAudioMs: null,
  bargeInMs: null,
  bargeInHeardMs: null,
});

/**
 * @typedef {object} Turn
 * @property {number} id
 * @property {string} userText the latest transcript (partial until `userFinal`)
 * @property {boolean} userFinal
 * @property {string} agentText everything the agent said, chunks joined
 * @property {boolean} agentDone all the reply's audio was sent
 * @property {boolean} interrupted the user barged in (a clear named this turn)
 * @property {string | null} heard the part of the reply the user heard, once the server
 *   says (agent_done); null until then
 * @property {TurnLatency | null} latency
 * @property {boolean} dropped the connection dropped during the turn: nothing more of it
 *   will come (the agent's reply, the final transcript)
 */

/**
 * What a session's `ready` meant for the conversation (`Conversation.start`):
 * * `"new"`: the first session of a new conversation;
 * * `"resumed"`: the server continues the conversation (its history): the turns stay;
 * * `"restarted"`: a later session did not resume (the server lost the conversation, or
 *   cannot resume): the agent starts over, remembering nothing of the turns before.
 * @typedef {"new" | "resumed" | "restarted"} ConversationStart
 */

/** The end of an assistant text a barge-in cut, in `ready.history`. */
const CUT_MARK = "…";

/** @param {unknown} v */
const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

/**
 * @param {number} id
 * @returns {Turn}
 */
const blankTurn = (id) => ({
  id,
  userText: "",
  userFinal: false,
  agentText: "",
  agentDone: false,
  interrupted: false,
  heard: null,
  latency: null,
  dropped: false,
});

export class Conversation {
  /** @param {{maxTurns?: number}} [options] turns kept (oldest dropped first) */
  constructor({ maxTurns = 50 } = {}) {
    this.maxTurns = maxTurns;
    /** @type {Turn[]} oldest first */
    this.turns = [];
    /** Whether the user is speaking right now (speech_start .. speech_end). */
    this.userSpeaking = false;
    /** The sessions started (`ready`s seen). */
    this.sessions = 0;
    /** How many times the conversation restarted (a reconnection that did not resume). */
    this.restarts = 0;
  }

  /**
   * A session is ready: the first one, or one after a reconnection. A turn in flight when
   * the connection dropped is marked `dropped`. Resumed, the turns shown stay (the server's
   * turn ids continue after them), and a view with none (a reloaded page) is rebuilt from
   * `ready.history`. Restarted, the turns are dropped: the server's turn ids start over, and
   * the agent remembers none of them.
   * @param {import("./protocol.mjs").Ready} ready
   * @returns {ConversationStart}
   */
  start(ready) {
    const first = this.sessions++ === 0;
    this.userSpeaking = false;
    const last = this.turns.at(-1);
    if (last && !last.agentDone) last.dropped = true;
    if (ready.resumed === true) {
      if (this.turns.length === 0 && ready.history) this.rebuild(ready.history);
      return "resumed";
    }
    if (first) return "new";
    this.turns = [];
    this.restarts++;
    return "restarted";
  }

  /**
   * The turns of a resumed conversation's history: a user entry starts a turn, the
   * assistant's answer joins it. Their ids are negative (the oldest -n), below any id the
   * server gives the session's turns.
   * @param {import("./protocol.mjs").HistoryEntry[]} history oldest first
   */
  rebuild(history) {
    /** @type {Turn[]} ids set at the end */
    const turns = [];
    for (const { role, text } of history) {
      const current = turns.at(-1);
      if (role === "assistant" && current && !current.agentText) {
        current.agentText = text;
        continue;
      }
      turns.push({ ...blankTurn(0), userText: role === "user" ? text : "", agentText: role === "assistant" ? text : "" });
    }
    for (const turn of turns) {
      turn.userFinal = true;
      turn.agentDone = true;
      if (turn.agentText.endsWith(CUT_MARK)) {
        turn.interrupted = true;
        turn.heard = turn.agentText;
      }
    }
    this.turns = turns.slice(-this.maxTurns).map((turn, i, kept) => ({ ...turn, id: i - kept.length }));
  }

  /**
   * @param {number} id
   * @returns {Turn}
   */
  turn(id) {
    let turn = this.turns.find((t) => t.id === id);
    if (!turn) {
      turn = blankTurn(id);
      this.turns.push(turn);
      this.turns.sort((a, b) => a.id - b.id);
      if (this.turns.length > this.maxTurns) this.turns.splice(0, this.turns.length - this.maxTurns);
    }
    return turn;
  }

  /**
   * Applies one server message.
   * @param {import("./protocol.mjs").ServerMessage} msg
   * @returns {Turn | null} the turn it changed, if any
   */
  apply(msg) {
    switch (msg.type) {
      case "speech_start":
        this.userSpeaking = true;
        return null;
      case "speech_end":
        this.userSpeaking = false;
        return null;
      case "transcript": {
        const turn = this.turn(msg.turn_id);
        // A late partial must not overwrite the final.
        if (turn.userFinal && !msg.final) return turn;
        turn.userText = msg.text;
        turn.userFinal = msg.final;
        return turn;
      }
      case "agent_text": {
        const turn = this.turn(msg.turn_id);
        const sep = turn.agentText && !/\s$/.test(turn.agentText) && !/^\s/.test(msg.text) ? " " : "";
        turn.agentText += sep + msg.text;
        return turn;
      }
      case "agent_done": {
        const turn = this.turn(msg.turn_id);
        turn.agentDone = true;
        if (msg.interrupted === true) turn.interrupted = true;
        if (typeof msg.heard === "string") turn.heard = msg.heard;
        return turn;
      }
      case "clear": {
        const turn = this.turn(msg.turn_id);
        turn.interrupted = true;
        return turn;
      }
      case "metrics": {
        const turn = this.turn(msg.turn_id);
        turn.latency = {
          voiceToVoiceMs: num(msg.voice_to_voice_ms),
          sttFinalMs: num(msg.stt_final_ms),
          llmFirstTokenMs: num(msg.llm_first_token_ms),
          ttsFirstAudioMs: num(msg.tts_first_audio_ms),
          bargeInMs: num(msg.barge_in_ms),
          bargeInHeardMs: turn.latency?.bargeInHeardMs ?? null,
        };
        if (msg.interrupted === true) turn.interrupted = true;
        return turn;
      }
      default:
        return null;
    }
  }

  /**
   * A reply split into what the user heard and what the barge-in cut off. Uncut replies, and
   * replies whose heard text is not a prefix of what was said (it should be), are all heard.
   * @param {Turn} turn
   * @returns {{heard: string, unheard: string}}
   */
  static splitHeard(turn) {
    const heard = turn.heard;
    if (!turn.interrupted || heard === null || !turn.agentText.startsWith(heard)) {
      return { heard: turn.agentText, unheard: "" };
    }
    return { heard, unheard: turn.agentText.slice(heard.length) };
  }

  /**
   * Records the barge-in latency the client measured for a turn it interrupted.
   * @param {number} turnId
   * @param {number} ms
   * @returns {Turn}
   */
  setBargeInHeard(turnId, ms) {
    const turn = this.turn(turnId);
    turn.latency = { ...(turn.latency ?? noLatency()), bargeInHeardMs: ms };
    return turn;
  }

  /** The latest turn with latency figures, or null. */
  get lastMeasured() {
    for (let i = this.turns.length - 1; i >= 0; i--) if (this.turns[i].latency) return this.turns[i];
    return null;
  }

  /**
   * The median of a latency figure over the turns that have it.
   * @param {keyof TurnLatency} key
   * @returns {number | null}
   */
  median(key) {
    /** @type {number[]} */
    const values = [];
    for (const turn of this.turns) {
      const v = turn.latency?.[key];
      if (typeof v === "number") values.push(v);
    }
    if (values.length === 0) return null;
    values.sort((a, b) => a - b);
    const mid = values.length >> 1;
    return values.length % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
  }
}
