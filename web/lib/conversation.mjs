// @ts-check
/**
 * The conversation as the page shows it, built from server messages: per turn, what the
 * user said (partial then final transcript), what the agent said, whether it was cut off by
 * a barge-in, and the turn's latency figures. Pure data, no DOM, so node can test it.
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
 */

/** @param {unknown} v */
const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

export class Conversation {
  /** @param {{maxTurns?: number}} [options] turns kept (oldest dropped first) */
  constructor({ maxTurns = 50 } = {}) {
    this.maxTurns = maxTurns;
    /** @type {Turn[]} oldest first */
    this.turns = [];
    /** Whether the user is speaking right now (speech_start .. speech_end). */
    this.userSpeaking = false;
  }

  /**
   * @param {number} id
   * @returns {Turn}
   */
  turn(id) {
    let turn = this.turns.find((t) => t.id === id);
    if (!turn) {
      turn = {
        id,
        userText: "",
        userFinal: false,
        agentText: "",
        agentDone: false,
        interrupted: false,
        heard: null,
        latency: null,
      };
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
