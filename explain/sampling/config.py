"""How many examples of which kind each latent gets, and how they are cut into windows."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

EXAMPLES_VERSION = 3
"""Version of what explain/sampling/examples.py writes for given settings; part of the sample key
(flows/store/ids.py), so a store sampled by older code samples again instead of lacking the new
values. 2: score examples carry natural-population weights (explain/sampling/weights.py). 3: the weights
post-stratify the silent contexts by trigger token (the trigger-token hard negatives stand for a stratum)."""


class SamplingConfig(BaseModel):
    """Per-latent example sets. Defaults give N2G and an LLM explainer enough to work with and a
    score set that covers the activation range plus verified and hard negatives."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    seed: int = 0
    """Seed of every draw (split assignment, quantile picks, random and similar negatives)."""
    window: int = Field(default=32, ge=1)
    """Tokens per example window (shorter only when the context itself is shorter)."""
    peak_offset: int = Field(default=24, ge=0)
    """Index of the peak token inside the window; the tokens before it give n-gram context."""
    explain_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    """Share of each latent's contexts assigned to the explain split (the rest go to score)."""
    explain_top: int = Field(default=20, ge=0)
    """Explain set: activating contexts with the highest max activation."""
    explain_quantile: int = Field(default=20, ge=0)
    """Explain set: further activating contexts spread evenly across the 10 activation deciles."""
    explain_random: int = Field(default=20, ge=0)
    """Explain set: random contexts verified to have zero activation for the latent."""
    explain_similar: int = Field(default=10, ge=0)
    """Explain set: hard negatives (trigger-token contexts and embedding neighbours where it never fires)."""
    score_activating: int = Field(default=20, ge=0)
    """Score set: activating contexts spread evenly across the 10 activation deciles."""
    score_random: int = Field(default=70, ge=0)
    """Score set: random contexts verified silent; they carry the natural (ipw) estimate (fewer: cheaper, biased)."""
    score_similar: int = Field(default=10, ge=0)
    """Score set: hard negatives (trigger-token contexts and embedding neighbours, latent silent)."""
    similar_embedding_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    """Share of each split's similar quota from embedding neighbours (they also fill trigger shortfall; 0: off)."""
    embedding_dims: int = Field(default=256, ge=8)
    """Dimensions of the context embedding: hashed, signed TF-IDF bag of token ids, L2-normalised."""
    neighbour_pool: int = Field(default=40, ge=1)
    """Nearest silent contexts (by cosine to the mean embedding of the top contexts) kept per latent."""
    neighbour_block: int = Field(default=1 << 23, ge=1)
    """Latent x context cosine scores per chunk of the neighbour search (~12 bytes each while it runs)."""
    n_trigger_tokens: int = Field(default=3, ge=1)
    """Most frequent peak tokens of a latent's top explain contexts that define its hard negatives."""
    oversample: float = Field(default=2.0, ge=1.0)
    """Candidates kept per needed example, so enough survive verification and de-duplication."""
    quantile_pool: int = Field(default=8, ge=1)
    """Candidates kept per (latent, split, decile); > needed/10 lets full deciles backfill empty ones."""
    similar_pool: int = Field(default=80, ge=1)
    """Trigger-token contexts kept per latent before dropping those where the latent fires."""
    batch_rows: int = Field(default=2_000_000, ge=1)
    """latent_acts rows per streaming chunk (bounds memory of the activating pass)."""
    context_chunk: int = Field(default=8192, ge=1)
    """Contexts per chunk when searching for trigger tokens."""

    def similar_needs(self, split: str) -> tuple[int, int]:
        """(trigger-token need, similar total) of a split; neighbours fill the total minus trigger picks."""
        total = self.explain_similar if split == "explain" else self.score_similar
        return total - int(total * self.similar_embedding_fraction + 0.5), total

    def random_draws(self, active_context_fraction: float) -> int:
        """Random contexts to draw for a latent so both splits fill after dropping active ones."""
        per_split = max(self.explain_random / self.explain_fraction,
                        self.score_random / (1.0 - self.explain_fraction))
        silent = max(1.0 - active_context_fraction, 0.05)
        return math.ceil(per_split * self.oversample / silent) + 8
