"""The prompt-injection detector: an offline linear model over character and word n-grams, scored on
overlapping windows of the text so that a short injection inside a long tool output is not diluted.

Trained on public data only (``guards/`` at the repository root: sources, script, report). The model is
``models/injection-linear-v1.json``, plain JSON read without pickle and without numpy:

``format``
    ``"agex-injection-linear/1"``.
``char_ngrams`` / ``window`` / ``stride``
    ``[min, max]`` character n-gram lengths; window and stride in characters of the normalised text.
``bias``, ``char``, ``word``
    The logit is ``bias + sum(weight * count) / sqrt(n)`` over the n-grams of a window, ``n`` being the
    number of n-gram occurrences in it (known or not): ``char`` maps character n-grams, ``word`` maps words
    and word bigrams (two words joined by a space) to weights; absent n-grams weigh 0.
``quarantine_threshold`` / ``suspicion_threshold``
    Chosen on the training data by cross-validation (copied below as constants).

A text's score is the highest window's probability. Scoring is pure Python: prefix sums make every window
cost O(1) once each n-gram has been looked up once.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from importlib import resources
from itertools import accumulate, repeat
from typing import Any

from agex.core.errors import ConfigurationError
from agex.core.guard import (
    ACTIONS_BY_CHANNEL,
    Action,
    Channel,
    Content,
    GuardSpec,
    Verdict,
    allow,
    map_strings,
)

NAME = "prompt_injection"
MODEL_FILE = "injection-linear-v1.json"
FORMAT = "agex-injection-linear/1"

QUARANTINE_THRESHOLD = 0.7802
"""Score at or above which content is quarantined by default (see guards/REPORT.md for its error rates)."""
SUSPICION_THRESHOLD = 0.20
"""A lower score that marks untrusted content as suspicious for the tool-call provenance policy. Training
cross-validation put it at 0.40 (97% recall there); a short "TODO:" injection of the sample agent's red-team
cases scored under that and its refund ran, so it was lowered to the point of the dev split near 5% false
positives: 97.2% recall, 4.1% of benign texts suspicious there (a false positive costs only an approval of a
sensitive call with arguments the user did not give). docs/guardrails.md reports the figures with this
caveat: the choice looked at the dev split."""

USER_THRESHOLD = 0.99
"""The bar on the user's own input: a request to an assistant is instructions to the model by nature, and
the detector (trained on tool outputs, injections and jailbreaks, with no benign user requests) scores
ordinary requests high: 6 of the 51 distinct user requests of the red-team cases score above
``QUARANTINE_THRESHOLD``. Fixed a priori at 0.99 (near-certain), not tuned; docs/guardrails.md gives what it
catches and what it lets through."""

REDACTION = "[removed by prompt_injection]"

_ESCAPES = re.compile(r"\\[nrt]|\\\"|\\u[0-9a-fA-F]{4}")
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"\s+")
WORD = re.compile(r"(?u)\b\w\w+\b")


def _unescape(m: re.Match[str]) -> str:
    s = m.group(0)
    if s == '\\"':
        return '"'
    if s[1] == "u":
        try:
            return chr(int(s[2:], 16))
        except ValueError:
            return " "
    return " "


def normalize(text: str) -> str:
    """What the model reads: NFKC, JSON escapes undone (a tool's JSON output reads like its text), invisible
    characters dropped, lower case, every digit a 0, runs of white space one space."""
    text = _ESCAPES.sub(_unescape, text)
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text).lower()
    text = _DIGITS.sub("0", text)
    return _SPACES.sub(" ", text).strip()


def spans(text: str, window: int, stride: int) -> list[tuple[int, int]]:
    """The windows of normalised ``text``: about ``window`` characters every ``stride``, both ends moved
    to a space so that no word is cut (a window's words are exactly the text's words inside it)."""
    n = len(text)
    if n <= window:
        return [(0, n)]
    out: list[tuple[int, int]] = []
    start = 0
    while True:
        end = start + window
        if end >= n:
            out.append((start, n))
            break
        cut = text.rfind(" ", start + window // 2, end)
        end = cut if cut > start else end
        out.append((start, end))
        nxt = start + stride
        if nxt >= n - window // 4:
            break
        sp = text.find(" ", nxt, nxt + 40)
        start = sp + 1 if sp != -1 else nxt
    last = out[-1]
    if last[1] < n:
        sp = text.find(" ", max(0, n - window), n)
        out.append((sp + 1 if sp != -1 else max(0, n - window), n))
    return out


@dataclass
class InjectionDetector:
    """A loaded model. ``score(text)``: 0..1, higher is more likely an injection."""

    bias: float
    char: dict[str, float]
    word: dict[str, float]
    char_ngrams: tuple[int, int] = (3, 5)
    window: int = 256
    stride: int = 128
    quarantine_threshold: float = QUARANTINE_THRESHOLD
    suspicion_threshold: float = SUSPICION_THRESHOLD
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InjectionDetector:
        if data.get("format") != FORMAT:
            raise ConfigurationError(f"injection model: format {data.get('format')!r} is not {FORMAT!r}")
        lo, hi = data["char_ngrams"]
        return cls(bias=float(data["bias"]), char=data["char"], word=data["word"], char_ngrams=(int(lo), int(hi)),
                   window=int(data["window"]), stride=int(data["stride"]),
                   quarantine_threshold=float(data.get("quarantine_threshold", QUARANTINE_THRESHOLD)),
                   suspicion_threshold=float(data.get("suspicion_threshold", SUSPICION_THRESHOLD)),
                   meta=dict(data.get("meta", {})))

    def score(self, text: str) -> float:
        return max((p for _, _, p in self.window_scores(text)), default=0.0)

    def window_scores(self, text: str) -> list[tuple[int, int, float]]:
        """Each window of the normalised text, with its probability."""
        t = normalize(text)
        if not t:
            return []
        lo, hi = self.char_ngrams
        get = self.char.get
        prefix = {}
        for k in range(lo, hi + 1):
            grams = [t[i:i + k] for i in range(len(t) - k + 1)]
            prefix[k] = list(accumulate(map(get, grams, repeat(0.0)), initial=0.0))
        toks = [(m.start(), m.end(), m.group(0)) for m in WORD.finditer(t)]
        wget = self.word.get
        starts = [a for a, _, _ in toks]
        ends = [b for _, b, _ in toks]
        words = [w for _, _, w in toks]
        uni = list(accumulate(map(wget, words, repeat(0.0)), initial=0.0))
        bi = list(accumulate(map(wget, [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)], repeat(0.0)),
                             initial=0.0))
        out = []
        for a, b in spans(t, self.window, self.stride):
            total, n = 0.0, 0
            for k, p in prefix.items():
                m = b - a - k + 1
                if m > 0:
                    total += p[a + m] - p[a]
                    n += m
            i, j = bisect_left(starts, a), bisect_right(ends, b)
            if j > i:
                total += uni[j] - uni[i]
                n += j - i
                if j - i > 1:
                    total += bi[j - 1] - bi[i]
                    n += j - i - 1
            z = self.bias + (total / math.sqrt(n) if n else 0.0)
            out.append((a, b, 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0))
        return out

    def redact(self, text: str, threshold: float) -> str:
        """``text`` with what scores at or above ``threshold`` replaced by a marker: its lines and sentences
        are grouped up to a window; in a group that scores that high, the run from the first to the last of
        its sentences that score that high on their own is replaced (the instruction between two flagged
        sentences goes too), or the whole group when none does alone."""
        pieces = [p for p in re.split(r"(?<=\n)|(?<=[.!?] )", text) if p]
        groups: list[list[str]] = []
        for p in pieces:
            if groups and sum(map(len, groups[-1])) + len(p) <= self.window:
                groups[-1].append(p)
            else:
                groups.append([p])
        out: list[str] = []
        for g in groups:
            if self.score("".join(g)) < threshold:
                out += g
                continue
            hits = [i for i, p in enumerate(g) if self.score(p) >= threshold] or [0, len(g) - 1]
            first, last = hits[0], hits[-1]
            out += g[:first] + [REDACTION + g[last][len(g[last].rstrip()):]] + g[last + 1:]
        return "".join(out)


@functools.cache
def detector() -> InjectionDetector:
    """The shipped model, loaded once per process on first use."""
    raw = resources.files("agex.guards").joinpath("models", MODEL_FILE).read_text(encoding="utf-8")
    return InjectionDetector.from_json(json.loads(raw))


WATCHABLE = frozenset({Channel.user_input, Channel.tool_output, Channel.model_output})
DEFAULT_CHANNELS = frozenset({Channel.user_input, Channel.tool_output})


@dataclass(frozen=True)
class PromptInjectionGuard:
    """Scores each user input and tool output (by default) and acts at or above ``threshold``; its verdict
    carries the score even when it allows, for the provenance policy."""

    channels: frozenset[Channel] = DEFAULT_CHANNELS
    action: Action = Action.quarantine
    threshold: float = QUARANTINE_THRESHOLD
    user_threshold: float = USER_THRESHOLD
    name: str = NAME

    def check(self, content: Content) -> Verdict:
        det = detector()
        score = det.score(content.text)
        bar = self.user_threshold if content.channel == Channel.user_input else self.threshold
        if score < bar:
            return allow(self.name, score)
        redacted = None
        if self.action == Action.redact:
            redacted = map_strings(content.value, lambda s: det.redact(s, bar))
        return Verdict(self.action, self.name, reason=f"prompt injection detected (score {score:.2f})", score=score,
                       redacted=redacted, findings=(NAME,))


def from_spec(spec: GuardSpec) -> PromptInjectionGuard:
    if spec.use != NAME:
        raise ConfigurationError(f"guard {spec.use!r}: the prompt-injection guard is declared as {NAME!r}")
    channels = frozenset(spec.channels) if spec.channels is not None else DEFAULT_CHANNELS
    if not channels:
        raise ConfigurationError(f"guard {NAME}: channels must not be empty")
    bad = sorted(c.value for c in channels - WATCHABLE)
    if bad:
        raise ConfigurationError(f"guard {NAME}: cannot watch {', '.join(bad)}; it scans "
                                 f"{', '.join(sorted(c.value for c in WATCHABLE))}")
    action = spec.action or Action.quarantine
    refused = sorted(c.value for c in channels if action not in ACTIONS_BY_CHANNEL[c])
    if refused:
        raise ConfigurationError(f"guard {NAME}: action {action.value} is not possible on {', '.join(refused)}")
    unknown = sorted(set(spec.options) - {"user_threshold"})
    if unknown:
        raise ConfigurationError(f"guard {NAME}: unknown option(s) {', '.join(unknown)}; it has: user_threshold")
    user = spec.options.get("user_threshold", USER_THRESHOLD)
    if not isinstance(user, int | float) or isinstance(user, bool) or not 0.0 <= user <= 1.0:
        raise ConfigurationError(f"guard {NAME}: option user_threshold must be a number from 0 to 1")
    threshold = spec.threshold if spec.threshold is not None else QUARANTINE_THRESHOLD
    return PromptInjectionGuard(channels=channels, action=action, threshold=threshold, user_threshold=float(user))
