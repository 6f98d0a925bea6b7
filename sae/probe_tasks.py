"""Binary token-level tasks computable from text alone, the labels of the probe-loss metric (sae/probes.py).

Each task maps the token strings of a context (wordpieces or BPE pieces, as the `contexts` table stores
them) to one bool per token. A task that is constant on the evaluated tokens is skipped by the prober.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

import numpy as np

STOPWORDS = frozenset("the a an of and to in is it that for on with as by this be are or from at".split())
"""Frequent function words (one 'frequent word class')."""
CODE_CHARS = frozenset("()[]{}=_<>+*/%:;.\\|&^~`#@$")
PUNCT = frozenset(string.punctuation)
OPEN, CLOSE = {"(", "[", "{"}, {")", "]", "}"}
QUOTES = frozenset({'"', "'", "`", "``", "''"})

Task = Callable[[list[str]], np.ndarray]


def _clean(token: str) -> str:
    """Strip wordpiece '##' and BPE/sentencepiece space markers ('Ġ', '▁')."""
    return token.removeprefix("##").lstrip("Ġ▁ ")


def _per_token(test: Callable[[str], bool]) -> Task:
    return lambda tokens: np.array([test(_clean(t)) for t in tokens], dtype=bool)


def inside_brackets_or_quotes(tokens: list[str]) -> np.ndarray:
    """True for tokens strictly between an opening bracket or quote and its closing one."""
    out, depth, quoted = np.zeros(len(tokens), dtype=bool), 0, False
    for i, token in enumerate(_clean(t) for t in tokens):
        if token in CLOSE:
            depth = max(depth - 1, 0)
        elif token in QUOTES:
            quoted = not quoted
        elif token in OPEN:
            depth += 1
        else:
            out[i] = depth > 0 or quoted
    return out


def sentence_start(tokens: list[str]) -> np.ndarray:
    """True for the first token of a context and every token after '.', '!' or '?'."""
    out = np.zeros(len(tokens), dtype=bool)
    if len(tokens):
        out[0] = True
    for i in range(1, len(tokens)):
        out[i] = _clean(tokens[i - 1]) in {".", "!", "?"}
    return out


TASKS: dict[str, Task] = {
    "digit": _per_token(lambda t: any(c.isdigit() for c in t)),
    "capitalised": _per_token(lambda t: t[:1].isupper()),
    "punctuation": _per_token(lambda t: bool(t) and all(c in PUNCT for c in t)),
    "code_like": _per_token(lambda t: bool(t) and (any(c in CODE_CHARS for c in t) or "_" in t
                                                    or bool(re.fullmatch(r"[a-z]+[A-Z]\w*", t)))),
    "stopword": _per_token(lambda t: t.lower() in STOPWORDS),
    "word_continuation": lambda tokens: np.array([t.startswith("##") for t in tokens], dtype=bool),
    "inside_brackets_or_quotes": inside_brackets_or_quotes,
    "sentence_start": sentence_start,
}
"""Task name -> labeller of one context's tokens."""


def task_labels(contexts: list[list[str]]) -> dict[str, np.ndarray]:
    """Every task's labels over the concatenated tokens of `contexts` -> {task: bool [n_tokens]}."""
    return {name: np.concatenate([task(list(c)) for c in contexts]) if contexts else np.zeros(0, dtype=bool)
            for name, task in TASKS.items()}
