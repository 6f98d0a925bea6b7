"""Versioned prompts of the LLM simulator and the detection / fuzzing judges, and checks of their replies.

Rendering and the data block (corpus text is data, never instructions) are explain/llm/render.py's.
Replies are JSON objects and only the expected field is read (`expect_field`), so extra keys an
injected context talks a model into adding are ignored. Each latent is its own request (the simulator
batches windows of ONE latent per request, never of two), so nothing can leak from one latent's
contexts into another latent's row.

Bump SIMULATE_PROMPT_VERSION (simulator) or JUDGE_PROMPT_VERSION (detection, fuzzing) whenever a
template or the rendering changes: stored rows are tied to them (cached replies are keyed by the
prompt text itself).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from explain.llm.parse import LLMParseError, expect_field
from explain.llm.render import DATA_RULE, display_token, with_data

SIMULATE_PROMPT_VERSION = "llm-v3"
"""Version of the simulation prompt and reply format (v2: several windows per request, keyed replies;
v3: every level keyed by its token position, [[position, level], ...], so a dropped or shifted value
is detected instead of silently misaligning the rest of the window)."""
JUDGE_PROMPT_VERSION = "judge-v1"
"""Version of the detection and fuzzing prompts and their reply format."""

SIMULATE_SYSTEM = (
    "You predict the activation of one neural-network latent from a short explanation of what it "
    "detects. You are given the explanation and one or more independent text windows; each window has "
    "an index, its number of tokens and a list of [position, token] pairs. For EVERY token of EVERY "
    "window predict the activation as an integer from 0 (does not fire) to 10 (fires maximally); most "
    "tokens are 0. Write each prediction as a [position, activation] pair, with the token's position as "
    "given, once for every position 0 .. n_tokens - 1 of the window. "
    f"{DATA_RULE} Reply with JSON only, one entry per window: "
    "{\"windows\": [{\"window\": index, \"activations\": [[position, activation], ...]}, ...]}"
)
DETECT_SYSTEM = (
    "You check an explanation of a neural-network latent. You are given the explanation and a list of "
    "texts. For each text, answer 1 if the latent, as explained, would fire on at least one token of "
    "the text, else 0. "
    f"{DATA_RULE} Reply with JSON only: {{\"answers\": [one 0 or 1 per text, in order]}}"
)
FUZZ_SYSTEM = (
    "You check an explanation of a neural-network latent. You are given the explanation and a list of "
    "texts in which some tokens are wrapped in <<double angle brackets>>. For each text, answer 1 if the "
    "marked tokens are exactly the kind of tokens the explanation describes (correctly marked), else 0. "
    f"{DATA_RULE} Reply with JSON only: {{\"answers\": [one 0 or 1 per text, in order]}}"
)

_PAIR_SCHEMA = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
"""[position, level]."""
_WINDOW_SCHEMA = {"type": "object", "properties": {"window": {"type": "integer"},
                                                 "activations": {"type": "array", "items": _PAIR_SCHEMA}},
                  "required": ["window", "activations"], "additionalProperties": False}
SIMULATE_SCHEMA = {"type": "object", "properties": {"windows": {"type": "array", "items": _WINDOW_SCHEMA}},
                   "required": ["windows"], "additionalProperties": False}
ANSWERS_SCHEMA = {"type": "object", "properties": {"answers": {"type": "array", "items": {"type": "integer"}}},
                  "required": ["answers"], "additionalProperties": False}


# ------------------------------------------------------------------ prompts
def simulate_messages(explanation: str, windows: Sequence[Sequence[str]]) -> list[dict[str, str]]:
    """Simulator prompt: predict an activation for every token of each of `windows` ([n][window]) from
    `explanation`. Windows are numbered 0..n-1 in the given order; the reply is keyed by that number."""
    payload = {"task": "simulate", "explanation": explanation,
               "windows": [{"window": w, "n_tokens": len(tokens),
                            "tokens": [[i, display_token(t)] for i, t in enumerate(tokens)]}
                           for w, tokens in enumerate(windows)]}
    sizes = ", ".join(str(len(tokens)) for tokens in windows)
    noun = "window" if len(windows) == 1 else "windows"
    user = with_data(f"Predict the activation of every token of the {len(windows)} {noun} below "
                     f"({sizes} tokens).", payload)
    return [{"role": "system", "content": SIMULATE_SYSTEM}, {"role": "user", "content": user}]


def detect_messages(explanation: str, texts: list[str]) -> list[dict[str, str]]:
    """Detection prompt: does the latent fire anywhere in each of `texts`?"""
    payload = {"task": "detect", "explanation": explanation, "texts": texts}
    user = with_data(f"Answer for each of the {len(texts)} texts below.", payload)
    return [{"role": "system", "content": DETECT_SYSTEM}, {"role": "user", "content": user}]


def fuzz_messages(explanation: str, texts: list[str]) -> list[dict[str, str]]:
    """Fuzzing prompt: are the <<marked>> tokens of each of `texts` the ones the explanation describes?"""
    payload = {"task": "fuzz", "explanation": explanation, "texts": texts}
    user = with_data(f"Answer for each of the {len(texts)} texts below.", payload)
    return [{"role": "system", "content": FUZZ_SYSTEM}, {"role": "user", "content": user}]


# ------------------------------------------------------------------ reply validation
def parse_pairs(value: Any, n: int) -> list[tuple[int, float]]:
    """The [position, level] pairs of one window of n tokens, in reply order, levels clipped to 0-10.

    Valid only when the positions are exactly 0..n-1, once each (in any order): a dropped, repeated or
    out-of-range position is an LLMParseError, so a value can never land on the wrong token.
    """
    items = expect_field({"activations": value} if isinstance(value, list) else value, "activations", list)
    pairs = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and _is_int(item[0])):
            raise LLMParseError(f"activations: {str(item)[:20]!r} is not a [position, level] pair")
        if not isinstance(item[1], int | float) or isinstance(item[1], bool):
            raise LLMParseError(f"activations: non-numeric level {str(item[1])[:20]!r} at position {item[0]}")
        pairs.append((item[0], min(10.0, max(0.0, float(item[1])))))
    problems = _position_problems([p for p, _ in pairs], n)
    if problems:
        count = f"got {len(pairs)} values for {n} tokens; " if len(pairs) != n else ""
        raise LLMParseError(f"activations: {count}{problems}")
    return pairs


def parse_levels(value: Any, n: int) -> list[float]:
    """One window's levels ([n], 0-10) by token position (see parse_pairs)."""
    return _by_position(parse_pairs(value, n), n)


def _by_position(pairs: list[tuple[int, float]], n: int) -> list[float]:
    levels = [0.0] * n
    for position, level in pairs:
        levels[position] = level
    return levels


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _position_problems(positions: list[int], n: int) -> str:
    """What is wrong with `positions` for a window of n tokens ("" when they are 0..n-1 once each)."""
    counts = Counter(positions)
    found = {"missing": set(range(n)) - set(counts),
             "out of range": {p for p in counts if not 0 <= p < n},
             "repeated": {p for p, c in counts.items() if c > 1}}
    return "; ".join(f"positions {label} {sorted(bad)[:5]}" for label, bad in found.items() if bad)


@dataclass
class WindowLevels:
    """A simulator reply split per window: `levels[w]` (0-10 per token, by position) or None with
    `errors[w]` set."""

    levels: list[list[float] | None]
    errors: list[str]
    entries: list[int | None]
    """Ordinal of window w's {"activations": [...]} object among such objects of the reply (None for a
    bare list): lets the caller find that list in the reply text to align logprobs."""
    order: list[list[int] | None]
    """Window w's positions in the order the reply wrote them (to walk its pairs in the reply text)."""
    n_keyed: int = 0
    """How many {"activations": [...]} objects the reply holds."""

    @property
    def failed(self) -> list[int]:
        return [w for w, levels in enumerate(self.levels) if levels is None]


def parse_windows(value: Any, lengths: Sequence[int], strict: bool = False) -> WindowLevels:
    """The per-window levels of a simulator reply for windows of `lengths` tokens.

    Entries are matched to windows by their "window" index, not their position (a bare list of windows
    is matched by position). Each window is validated on its own (parse_pairs: its positions exactly
    0..lengths[w]-1, levels clipped to 0-10); a missing, duplicated, misaligned or non-numeric window
    gets None and an error. LLMParseError if the reply has no "windows" list at all, or (`strict`) if
    any window failed.
    """
    if isinstance(value, list):
        value = {"windows": value}
    if isinstance(value, dict) and "windows" not in value and "activations" in value and len(lengths) == 1:
        value = {"windows": [{"window": 0, "activations": value["activations"]}]}  # a one-window shortcut
    found, n_keyed = _keyed_windows(expect_field(value, "windows", list), len(lengths))
    out = WindowLevels([], [], [], [], n_keyed)
    for w, n in enumerate(lengths):
        hits = found.get(w, [])
        levels, error, entry, order = None, "", None, None
        if len(hits) != 1:
            error = f"window {w}: {'missing' if not hits else 'given more than once'}"
        else:
            try:
                pairs = parse_pairs({"activations": hits[0][0]}, n)
                levels, order, entry = _by_position(pairs, n), [p for p, _ in pairs], hits[0][1]
            except LLMParseError as exc:
                error = f"window {w}: {exc}"
        out.levels.append(levels)
        out.errors.append(error)
        out.entries.append(entry)
        out.order.append(order)
    if strict and out.failed:
        raise LLMParseError("; ".join(e for e in out.errors if e))
    return out


def _keyed_windows(items: list, n_windows: int) -> tuple[dict[int, list[tuple[Any, int | None]]], int]:
    """Reply entries by window index: (activations, keyed-entry ordinal) per hit; and the keyed count."""
    found: dict[int, list[tuple[Any, int | None]]] = {}
    n_keyed = 0
    for position, item in enumerate(items):
        if isinstance(item, dict) and "activations" in item:
            index, acts, entry = item.get("window"), item["activations"], n_keyed
            n_keyed += 1
        elif isinstance(item, list):
            index, acts, entry = position, item, None
        else:
            continue
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < n_windows:
            found.setdefault(index, []).append((acts, entry))
    return found, n_keyed


def parse_answers(value: Any, n: int) -> list[bool]:
    """The `answers` list of a detection/fuzzing reply: exactly n values read as yes (>= 0.5) / no."""
    return [x >= 0.5 for x in _numbers(value, "answers", n)]


def _numbers(value: Any, field: str, n: int) -> list[float]:
    if isinstance(value, list):  # a bare list is accepted from servers without JSON mode
        value = {field: value}
    items = expect_field(value, field, list)
    if len(items) != n:
        raise LLMParseError(f"{field}: got {len(items)} values for {n} items")
    out = []
    for item in items:
        if not isinstance(item, int | float):  # bool is an int: true/false answers are accepted
            raise LLMParseError(f"{field}: non-numeric value {str(item)[:20]!r}")
        out.append(float(item))
    return out
