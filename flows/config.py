"""The run configuration: one pydantic model with a nested config per stage, validated at the edge.

Every setting that changes a result lives here; the CLI's flags and `--help` are generated from the
fields and their docstrings (flows/cli/flags.py), the whole config is written to `runs.config`, and
the fields that change a stage's output make up that stage's resume key (flows/store/ids.py), so a
changed setting recomputes exactly the stages it affects. Fields that only change speed or memory
(batch sizes of streaming passes, concurrency, timeouts) are listed in `NOT_IN_KEY` and never
invalidate stored rows.

Stage groups (the stage configs are the core packages' own classes, one definition each):
`data` (subject model, layer, corpus), `sae` (dictionary shape and objective), `train`, `stats`
(which latents get explained), `sampling` (example sets), `n2g`, and `llm` (the endpoint and its
sampling settings). One `seed` and one `device` feed every stage.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from explain.explainers.n2g import N2GConfig
from explain.latents.stats import LatentStatsConfig
from explain.llm.settings import LLMSettings
from explain.sampling.config import SamplingConfig
from sae.config import EvalConfig, SAEOptions, TrainConfig
from score.simulators.llm import LLMSimulatorConfig

SCORERS = ("simulation", "detection", "fuzzing")


class DataConfig(BaseModel):
    """What is read: the subject model, the layer and the corpus, cut into contexts."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

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
    stream_activations: bool = False
    """Keep no activation file: stream from the model (shuffle buffer) for training and encoding."""


class RunLLMSettings(LLMSettings):
    """The LLM endpoint of a run; `model` is required only when an LLM explains or scores."""

    model: str | None = None  # type: ignore[assignment]
    """LLM model name for the llm explainer/simulator and the detection/fuzzing scorers."""


class RunConfig(BaseModel):
    """Everything `latent-atlas run` needs; the defaults are the embedded offline run."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    store: str = "atlas-store"
    """Store directory (Parquet tables, SAEs, reports); env LATENT_ATLAS_STORE overrides the default."""
    data: DataConfig = DataConfig()
    """Subject model, layer and corpus."""
    sae_path: str | None = None
    """Existing SAE directory or file (ours, SAELens, sparsify, OpenAI v5) instead of training one."""
    sae: SAEOptions = SAEOptions(n_latents=4096, k=32, dead_tokens=1_000_000)
    """Shape and objective of the SAE trained when no --sae is given."""
    train: TrainConfig = TrainConfig(tokens=2_000_000)
    """SAE training."""
    sae_eval: EvalConfig = EvalConfig()
    """SAE quality metrics (sae_metrics): held-out FVU, downstream loss, probe loss, ablation sparsity."""
    stats: LatentStatsConfig = LatentStatsConfig()
    """Per-latent statistics: which latents are worth explaining."""
    sampling: SamplingConfig = SamplingConfig()
    """Per-latent explain and score example sets."""
    n2g: N2GConfig = N2GConfig()
    """The N2G explainer."""
    llm: RunLLMSettings = RunLLMSettings()
    """The OpenAI-compatible LLM endpoint."""
    simulator: LLMSimulatorConfig = LLMSimulatorConfig()
    """The LLM simulator (scoring free-text explanations)."""
    max_latents: int | None = Field(None, ge=1)
    """Explain and score at most this many latents (lowest ids first, after --latents)."""
    latents: str | None = None
    """Explicit latents: ids and ranges (0-99,512,1000-1099) or sample:N (a seeded random sample)."""
    explainer: Literal["n2g", "llm"] = "n2g"
    """Explainer: n2g (n-gram, no LLM) or llm (OpenAI-compatible server)."""
    scorers: list[str] = ["simulation"]
    """Scorers, comma separated: simulation, detection, fuzzing (the last two need an LLM)."""
    max_cost_usd: float | None = Field(None, ge=0)
    """Stop issuing LLM calls once this much has been spent in this run."""
    dry_run: bool = False
    """Print the LLM calls, tokens and cost the run would spend, then stop."""
    device: str = "auto"
    """Torch device: auto, cpu, cuda, cuda:1 ..."""
    chunk_latents: int = Field(256, ge=1)
    """Latents per task (one part per table each): the most work an interruption loses."""
    workers: int = Field(1, ge=1)
    """Worker processes for explain and score: more than 1 starts a local Dask cluster."""
    dask_address: str | None = None
    """Run explain and score on this Dask scheduler (tcp://host:port) instead of in this process."""
    seed: int = 0
    """Seed for training, sampling and baselines."""
    force: bool = False
    """Use an --sae whose cfg.json names another layer or model than the run's (the width must still match)."""

    @field_validator("scorers", mode="before")
    @classmethod
    def _split_scorers(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [v for v in value if v not in SCORERS]  # type: ignore[union-attr]
        if unknown:
            raise ValueError(f"unknown scorer {unknown[0]!r}; choose from {', '.join(SCORERS)}")
        return value

    @field_validator("latents")
    @classmethod
    def _check_latents(cls, value: str | None) -> str | None:
        if value is not None:
            parse_latents(value)
        return value

    @model_validator(mode="after")
    def _one_seed(self) -> RunConfig:
        """The run's seed is every stage's seed (one number to report and to vary)."""
        self.train = self.train.model_copy(update={"seed": self.seed})
        self.sampling = self.sampling.model_copy(update={"seed": self.seed})
        self.simulator = self.simulator.model_copy(update={"seed": self.seed})
        return self

    def llm_scorers(self) -> list[str]:
        """Scorers that ask the LLM: detection and fuzzing always; simulation of free-text (LLM)
        explanations too (N2G explanations are simulated by pattern matching)."""
        return [s for s in self.scorers if s != "simulation" or self.explainer == "llm"]

    def needs_llm(self) -> bool:
        return self.explainer == "llm" or bool(self.llm_scorers())


def parse_latents(spec: str) -> tuple[list[tuple[int, int]], int | None]:
    """`--latents` -> (inclusive id ranges, None) for "0-99,512", or ([], N) for "sample:N"."""
    spec = spec.strip()
    if spec.startswith("sample:"):
        n = spec.removeprefix("sample:")
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"sample:N needs a positive count, got {spec!r}")
        return [], int(n)
    ranges = []
    for part in (p.strip() for p in spec.split(",")):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()) or (hi and int(hi) < int(lo)):
            raise ValueError(f"bad latent selection {part!r}: use ids and ranges like 0-99,512 or sample:N")
        ranges.append((int(lo), int(hi or lo)))
    return ranges, None


GROUPS = ("data", "sae", "train", "sae_eval", "stats", "sampling", "n2g", "llm", "simulator")
"""Nested stage configs; each becomes a block of CLI flags."""

PLACEMENT = frozenset({"store", "workers", "dask_address", "chunk_latents", "force"})
"""Top-level fields that say where and in what pieces a run writes and runs, or whether preflight may be
overridden (force), never what it computes (not in config_hash)."""

NOT_IN_KEY: dict[str, frozenset[str]] = {
    "train": frozenset({"device", "log_every", "progress", "checkpoint_every"}),
    "sampling": frozenset({"batch_rows", "neighbour_block", "context_chunk"}),
    "llm": frozenset({"base_url", "api_key_env", "max_concurrency", "requests_per_minute", "tokens_per_minute",
                      "max_retries", "retry_initial_wait_s", "retry_max_wait_s", "timeout_s", "json_mode",
                      "parse_retries", "prices"}),
}
"""Fields of a group that change speed, memory or transport but never a stored value."""

CLI_HIDDEN: dict[str, frozenset[str]] = {
    "train": frozenset({"seed", "device", "betas", "progress"}),
    "sampling": frozenset({"seed"}),
    "llm": frozenset({"prices"}),
    "simulator": frozenset({"seed"}),
}
"""Group fields without a flag: set from the run's seed/device, or structured (a price table)."""


def key_fields(cfg: RunConfig, group: str) -> dict:
    """The fields of one stage group that change its results (JSON-able)."""
    values = getattr(cfg, group).model_dump(mode="json")
    return {k: v for k, v in values.items() if k not in NOT_IN_KEY.get(group, frozenset())}


def stable_hash(payload: dict, n: int = 10) -> str:
    """Short content hash of a JSON-able dict: ids that change exactly when their inputs change."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]
