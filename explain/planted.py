"""A synthetic corpus with planted latents whose firing rule is known exactly (tests, benchmarks).

Tokens are wordpiece-like strings drawn at random. Each planted latent fires on a known set of
trigger tokens (optionally only after a given previous token), with an activation that varies by
occurrence so that its deciles are populated. Extra latents are planted dead, too dense and too
rare, so every status of `latent_stats` has a known answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch

from explain.latent_cache import sparse_activation_frame


@dataclass(frozen=True)
class PlantedRule:
    """Latent fires on `tokens` (vocab strings), only after `after` when that is set."""

    tokens: tuple[str, ...]
    after: str | None = None


@dataclass
class PlantedCorpus:
    vocab: list[str]
    token_ids: np.ndarray
    """[n_contexts, ctx_len] token ids."""
    acts: np.ndarray
    """[n_contexts, ctx_len, n_latents] dense activations (ground truth)."""
    rules: dict[int, PlantedRule] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.size)

    def contexts(self) -> pl.DataFrame:
        """contexts table rows: dataset_id, ctx_id, token_ids, tokens."""
        vocab = np.array(self.vocab)
        return pl.DataFrame({
            "dataset_id": ["planted"] * len(self.token_ids),
            "ctx_id": np.arange(len(self.token_ids), dtype=np.int64),
            "token_ids": [row.tolist() for row in self.token_ids],
            "tokens": [vocab[row].tolist() for row in self.token_ids],
        })

    def frames(self, batch_size: int = 32, k: int | None = None) -> list[pl.DataFrame]:
        """latent_acts frames as flows would write them (TopK codes per batch of contexts)."""
        n_latents = self.acts.shape[-1]
        k = k or n_latents
        out = []
        for lo in range(0, len(self.token_ids), batch_size):
            dense = torch.from_numpy(self.acts[lo:lo + batch_size])
            values, indices = dense.topk(k, dim=-1)
            ctx_ids = torch.arange(lo, lo + dense.shape[0])
            valid = torch.ones(dense.shape[:2], dtype=torch.bool)
            out.append(sparse_activation_frame(ctx_ids, values, indices, valid))
        return out


def make_vocab(n: int) -> list[str]:
    """n distinct wordpiece-like strings ('w17', '##s3', ...)."""
    return [f"##s{i}" if i % 5 == 4 else f"w{i}" for i in range(n)]


def _fire(token_ids: np.ndarray, vocab: list[str], rule: PlantedRule) -> np.ndarray:
    """[n_contexts, ctx_len] bool: where the rule fires."""
    index = {t: i for i, t in enumerate(vocab)}
    hit = np.isin(token_ids, [index[t] for t in rule.tokens])
    if rule.after is not None:
        prev = np.full_like(token_ids, -1)
        prev[:, 1:] = token_ids[:, :-1]
        hit &= prev == index[rule.after]
    return hit


def plant(token_ids: np.ndarray, vocab: list[str], rules: dict[int, PlantedRule], n_latents: int,
          dense_latents: tuple[int, ...] = (), rare_latents: tuple[int, ...] = (), seed: int = 0) -> PlantedCorpus:
    """Planted activations for given tokens [n_contexts, ctx_len]: rule latents fire exactly where
    their rule holds (value uniform in [0.5, 5)); dense ones on ~60 % of tokens; rare ones in 3 contexts."""
    rng = np.random.default_rng(seed)
    acts = np.zeros((*token_ids.shape, n_latents), dtype=np.float32)
    for latent, rule in rules.items():
        fire = _fire(token_ids, vocab, rule)
        acts[..., latent] = np.where(fire, rng.uniform(0.5, 5.0, size=fire.shape), 0.0)
    for latent in dense_latents:
        acts[..., latent] = np.where(rng.random(token_ids.shape) < 0.6, 1.0, 0.0)
    for latent in rare_latents:
        acts[:3, 0, latent] = 2.0
    return PlantedCorpus(vocab=vocab, token_ids=token_ids, acts=acts, rules=dict(rules))


def planted_corpus(rules: dict[int, PlantedRule], n_latents: int, n_contexts: int = 400, ctx_len: int = 32,
                   vocab_size: int = 120, dense_latents: tuple[int, ...] = (), rare_latents: tuple[int, ...] = (),
                   seed: int = 0) -> PlantedCorpus:
    """Uniformly random tokens + planted latents (see `plant`)."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, vocab_size, size=(n_contexts, ctx_len))
    return plant(token_ids, make_vocab(vocab_size), rules, n_latents, dense_latents, rare_latents, seed + 1)
