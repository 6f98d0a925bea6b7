"""Tolerant JSON extraction from LLM replies.

Servers without structured output (and some with it) wrap JSON in prose or code fences, or leave a
trailing comma. `parse_json_reply` strips fences, takes the FIRST complete JSON object or array in the
text (string-aware bracket matching, so braces inside strings don't confuse it), and repairs trailing
commas. Anything else is a `LLMParseError`: the caller retries or records a failed row, never guesses.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_CLOSERS = {"{": "}", "[": "]"}


class LLMParseError(ValueError):
    """The reply holds no usable JSON (or not the expected fields)."""


def parse_json_reply(text: str) -> Any:
    """Return the first JSON object/array found in `text`; raise LLMParseError if there is none."""
    if not text or not text.strip():
        raise LLMParseError("empty reply")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        block = _first_json_block(candidate)
        if block is None:
            continue
        value = _loads_repaired(block)
        if value is not None:
            return value
    raise LLMParseError(f"no JSON object or array in reply: {_preview(text)}")


def _first_json_block(text: str) -> str | None:
    """The first balanced {...} or [...] substring, ignoring brackets inside JSON strings."""
    for start, char in enumerate(text):
        if char not in _CLOSERS:
            continue
        end = _matching_close(text, start)
        if end is not None:
            return text[start : end + 1]
    return None


def _matching_close(text: str, start: int) -> int | None:
    stack: list[str] = []
    in_string = escaped = False
    for i in range(start, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif char in "}]":
            if not stack or stack.pop() != char:
                return None
            if not stack:
                return i
    return None  # truncated: never closed


def _loads_repaired(block: str) -> Any:
    for attempt in (block, _TRAILING_COMMA.sub(r"\1", block)):
        try:
            return json.loads(attempt)
        except json.JSONDecodeError:
            continue
    return None


def _preview(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def expect_field(value: Any, field: str, kind: type) -> Any:
    """`value[field]` if value is a dict holding a `kind`; raise LLMParseError otherwise.

    Only the expected field is read: any other keys a (possibly prompt-injected) reply adds are ignored.
    """
    if not isinstance(value, dict) or field not in value:
        raise LLMParseError(f"reply lacks the field {field!r}")
    item = value[field]
    if not isinstance(item, kind):
        raise LLMParseError(f"field {field!r} is {type(item).__name__}, expected {kind.__name__}")
    return item
