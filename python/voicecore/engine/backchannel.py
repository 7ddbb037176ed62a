"""Is what the user said over the agent an interruption, or a backchannel?

Listeners talk while they listen: "mm-hm", "yeah", "okay", "right", "I see". Those
*backchannels* tell the speaker to go on; treating them as interruptions makes an agent stop
for good every time the user shows they are listening. ``is_backchannel`` decides from the
recognized words alone (the duration is the other test, ``voicecore.engine.contest``'s: a
backchannel is short), so it works with any STT that returns text.

The vocabulary is English conversational feedback (acknowledgements, agreement, surprise,
filled pauses) as described in the conversation-analysis literature, with the spellings STTs
produce for it ("mhm", "mm-hmm", "uh huh", "okay"/"ok"/"k"). A phrase counts when every word
is feedback and it has at most ``MAX_WORDS`` words: "yeah yeah okay" goes on, "yeah but
wait" is an interruption, and so is anything the list does not know (a question, a name, a
"stop").
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["BACKCHANNEL_WORDS", "MAX_WORDS", "is_backchannel", "words"]

BACKCHANNEL_WORDS: Final = frozenset(
    {
        # acknowledgement and continuers
        "mhm", "mm", "mmm", "hm", "hmm", "mmhmm", "mhmm", "uhhuh", "uh", "huh", "um", "umm",
        "ah", "ahh", "oh", "ooh", "aha", "ha",
        "yeah", "yea", "yes", "yep", "yup", "ya", "yah",
        "ok", "okay", "k", "kay", "alright", "allright",
        "right", "sure", "fine", "good", "great", "cool", "nice", "wow", "neat",
        "true", "exactly", "totally", "absolutely", "definitely", "indeed", "really",
        "i", "see", "got", "it", "gotcha", "understood", "makes", "sense",
        "interesting", "of", "course", "go", "on",
    }
)  # fmt: skip
"""Words that may make up a backchannel (lowercase, letters only). Function words such as
"i", "it", "of", "go", "on" are here only as parts of phrases ("I see", "got it", "of
course", "go on"): alone they are too short to matter, and in a longer sentence the other
words decide."""

MAX_WORDS: Final = 4
"""A backchannel has at most this many words ("yeah yeah I see"); more is a sentence."""

_SPLIT = re.compile(r"[^a-z']+")
_JOINED = {"mmhm": "mmhmm", "mmhmm": "mmhmm", "mhmm": "mhmm", "uhhuh": "uhhuh", "uhuh": "uhhuh"}


def words(text: str) -> list[str]:
    """``text``'s words, lowercase, without punctuation; hyphenated fillers joined
    ("mm-hmm" -> "mmhmm", "uh-huh" -> "uhhuh")."""
    lowered = text.lower()
    for spaced in ("mm hmm", "mm-hmm", "mm-hm", "m-hm", "uh-huh", "uh huh", "mm hm"):
        lowered = lowered.replace(spaced, "mmhmm" if spaced.startswith("m") else "uhhuh")
    tokens = [t.strip("'") for t in _SPLIT.split(lowered)]
    return [_JOINED.get(t, t) for t in tokens if t]


def is_backchannel(text: str) -> bool:
    """Whether ``text`` (what the STT heard the user say over the agent) is only listener
    feedback: at most ``MAX_WORDS`` words, every one of them in ``BACKCHANNEL_WORDS``.
    Nothing recognized (a cough, a breath) is not a backchannel here: the caller decides what
    an empty transcript means."""
    found = words(text)
    return 0 < len(found) <= MAX_WORDS and all(w in BACKCHANNEL_WORDS for w in found)
