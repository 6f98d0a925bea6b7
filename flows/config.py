"""The run configuration: one pydantic model, validated at the edge; the CLI is built from it."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCORERS = ("simulation", "detection", "fuzzing")


class RunConfig(BaseModel):
    """Everything `latent-atlas run` needs; the defaults are the embedded offline run."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    store: str = "atlas-store"
    """Store directory (Parquet tables, SAEs, reports); env LATENT_ATLAS_STORE overrides the default."""
    model: str | None = None
    """Subject model: HF id or local path; default the embedded all-MiniLM-L6-v2."""
    layer: int | None = None
    """Block whose residual-stream output is read (0-based); default the middle block."""
    corpus: str | None = None
    """Corpus: .txt / .jsonl / .parquet file or HF dataset; default CPython's pydoc topics."""
    ctx_len: int = Field(64, ge=4, le=8192)
    """Tokens per context."""
    max_contexts: int | None = Field(None, ge=1)
    """Use at most this many contexts of the corpus."""
    sae: str | None = None
    """Existing SAE directory or file (ours, SAELens, sparsify, OpenAI v5) instead of training one."""
    n_latents: int = Field(4096, ge=1)
    """SAE dictionary size when training."""
    k: int = Field(32, ge=1)
    """Active latents per token (TopK) when training."""
    stream_activations: bool = False
    """Keep no activation file: stream from the model (shuffle buffer) for training and encoding."""
    train_tokens: int = Field(2_000_000, ge=1)
    """Training tokens (epochs over the cached activations when the corpus is smaller)."""
    batch_size: int = Field(4096, ge=1)
    """SAE training batch size in tokens."""
    dead_tokens: int = Field(1_000_000, ge=1)
    """A latent unseen for this many training tokens counts as dead (AuxK revives it)."""
    max_latents: int | None = Field(None, ge=1)
    """Explain and score at most this many latents (lowest ids first)."""
    explainer: Literal["n2g", "llm"] = "n2g"
    """Explainer: n2g (n-gram, no LLM) or llm (OpenAI-compatible server)."""
    scorers: list[str] = ["simulation"]
    """Scorers, comma separated: simulation, detection, fuzzing (the last two need an LLM)."""
    llm_model: str | None = None
    """LLM model name for the llm explainer/simulator and the detection/fuzzing scorers."""
    llm_base_url: str | None = None
    """OpenAI-compatible base URL (vLLM, Ollama, llama.cpp...); default OpenAI's."""
    llm_api_key_env: str = "OPENAI_API_KEY"
    """Environment variable that holds the API key (the key itself is never stored)."""
    llm_concurrency: int = Field(16, ge=1)
    """Concurrent LLM requests."""
    max_cost_usd: float | None = Field(None, ge=0)
    """Stop issuing LLM calls once this much has been spent in this run."""
    dry_run: bool = False
    """Print the LLM calls, tokens and cost the run would spend, then stop."""
    device: str = "auto"
    """Torch device: auto, cpu, cuda, cuda:1 ..."""
    seed: int = 0
    """Seed for training, sampling and baselines."""

    @field_validator("scorers", mode="before")
    @classmethod
    def _split_scorers(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [v for v in value if v not in SCORERS]  # type: ignore[union-attr]
        if unknown:
            raise ValueError(f"unknown scorer {unknown[0]!r}; choose from {', '.join(SCORERS)}")
        return value

    def llm_scorers(self) -> list[str]:
        """Scorers that ask the LLM: detection and fuzzing always; simulation of free-text (LLM)
        explanations too (N2G explanations are simulated by pattern matching)."""
        return [s for s in self.scorers if s != "simulation" or self.explainer == "llm"]

    def needs_llm(self) -> bool:
        return self.explainer == "llm" or bool(self.llm_scorers())


def stable_hash(payload: dict, n: int = 10) -> str:
    """Short content hash of a JSON-able dict: ids that change exactly when their inputs change."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]
