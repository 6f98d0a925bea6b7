"""The versioned prompt of the LLM explainer and the check of its reply.

Rendering and the data block (corpus text is data, never instructions) are explain/llm/render.py's; the
simulator's and the judges' prompts are score/prompts.py's. Each latent is its own request, so nothing
can leak from one latent's contexts into another latent's row. The reply is a JSON object and only the
expected field is read (`expect_field`), so extra keys an injected context talks a model into adding
are ignored.

Bump PROMPT_VERSION whenever the template or the rendering changes: stored rows are tied to it
(cached replies are keyed by the prompt text itself).
"""

from __future__ import annotations

from typing import Any

from explain.llm.parse import LLMParseError, expect_field
from explain.llm.render import DATA_RULE, display_token, render_text, with_data

PROMPT_VERSION = "llm-v1"
"""Version of the explainer prompt (stored in `explanations.prompt_version`)."""

EXPLAIN_SYSTEM = (
    "You are studying one latent (feature) of a neural network's sparse autoencoder. You are shown text "
    "excerpts where it activates: each token where it fires is wrapped in <<double angle brackets>>, and "
    "its activation on a 0-10 scale is listed next to the excerpt. You may also see excerpts where it "
    "does not fire at all. Write a short explanation (a phrase, at most one sentence) of what the latent "
    "detects, specific enough that someone could predict which tokens it fires on. "
    f"{DATA_RULE} Reply with JSON only: {{\"explanation\": \"...\"}}"
)
EXPLAIN_SCHEMA = {"type": "object", "properties": {"explanation": {"type": "string"}},
                  "required": ["explanation"], "additionalProperties": False}


def explain_messages(activating: list[tuple[list[str], list[int]]],
                     non_activating: list[list[str]]) -> list[dict[str, str]]:
    """Explainer prompt. `activating`: (tokens, activation 0-10 per token) per example; tokens with
    activation > 0 are marked. `non_activating`: token lists where the latent is zero."""
    examples = []
    for tokens, levels in activating:
        marked = [level > 0 for level in levels]
        pairs = [[display_token(t), int(level)] for t, level in zip(tokens, levels, strict=True) if level > 0]
        examples.append({"text": render_text(tokens, marked), "activations": pairs})
    payload = {"task": "explain", "activating_examples": examples,
               "non_activating_examples": [render_text(tokens) for tokens in non_activating]}
    user = with_data("Explain this latent from the examples below.", payload)
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]


def parse_explanation(value: Any, max_chars: int = 300) -> str:
    """The explanation string of an explainer reply (whitespace collapsed); LLMParseError if unusable."""
    text = " ".join(str(expect_field(value, "explanation", str)).split())
    if not text:
        raise LLMParseError("empty explanation")
    if len(text) > max_chars:
        raise LLMParseError(f"explanation longer than {max_chars} characters")
    return text
