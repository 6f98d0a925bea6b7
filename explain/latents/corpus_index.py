"""The corpus as a token-id matrix with every n-gram packed into one int64 key: pattern matching at scale.

Both sides of a pattern explanation read the whole corpus: N2G mines its n-grams on every token of a
latent's explain-side contexts (explain/explainers/n2g.py), and the natural scorer matches them on
every token of its held-out contexts (score/natural.py). Matching one pattern must not cost a pass
over the corpus, so every n-gram ending at a token is packed into one int64 key (exact while
n * bits(vocab) <= 62, a 64-bit hash beyond), sorted once per n, and a pattern's occurrences are a
binary search away: O(corpus log corpus) once per n-gram shape, then O(log corpus + matches) per
pattern. A shape may hold wildcards (any token at that position): they are packed as `wildcard_id`.

Rows may differ in length (explain windows): shorter rows are padded at the end with `pad_id`, an id
no token has, so an n-gram that ends at a real token never contains padding.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from explain.sampling.keys import mix64, split_of

NO_KEY = -1
"""Key of a position where no n-gram of that length ends (fewer than n - 1 tokens before it)."""
Shape = tuple[bool, ...]
"""An n-gram's shape: one entry per position, True where the token is fixed, False for a wildcard (any
token). (True,) * n is a plain n-gram; (True, False) is "any token right after A"."""


@dataclass
class CorpusIndex:
    """Token ids [n_rows, row_len], their strings, and the n-gram keys of every position (cached per n)."""

    token_ids: np.ndarray
    """[n_rows, row_len] int64 token ids; `pad_id` after the end of a shorter row."""
    ctx_ids: np.ndarray
    """[n_rows] int64 context id of each row, ascending when built from the contexts table."""
    token_of: dict[int, str]
    """Token id -> its string (patterns name tokens by their strings)."""
    pad_id: int
    _tokens_of: dict[str, list[int]] | None = field(default=None, repr=False)
    _lowered: dict[str, list[int]] | None = field(default=None, repr=False)
    _sorted: dict[Shape, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_contexts(cls, contexts: pl.DataFrame) -> CorpusIndex:
        """From `contexts` rows (ctx_id, token_ids, tokens) of one dataset; every context the same length."""
        contexts = contexts.sort("ctx_id")
        token_ids = np.array(contexts["token_ids"].to_list(), dtype=np.int64)
        pairs = contexts.select(pl.col("token_ids").explode().alias("id"), pl.col("tokens").explode().alias("tok"))
        token_of = dict(pairs.unique("id").iter_rows())
        return cls(token_ids, contexts["ctx_id"].to_numpy().astype(np.int64), token_of,
                   pad_id=int(token_ids.max(initial=0)) + 1)

    @classmethod
    def from_windows(cls, windows: Sequence[Sequence[str]], ctx_ids: Sequence[int]) -> CorpusIndex:
        """From token strings per row (e.g. a latent's explain windows), with ids assigned here."""
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in window] for window in windows]
        pad = len(vocab)
        width = max((len(row) for row in ids), default=0)
        token_ids = np.full((len(ids), max(width, 1)), pad, dtype=np.int64)
        for r, row in enumerate(ids):
            token_ids[r, :len(row)] = row
        return cls(token_ids, np.asarray(ctx_ids, dtype=np.int64), {i: t for t, i in vocab.items()}, pad_id=pad)

    def folded(self) -> CorpusIndex:
        """The same rows with every token replaced by one id per lower-cased string (ignore_case mining)."""
        canonical: dict[str, int] = {}
        remap = np.arange(self.pad_id + 1, dtype=np.int64)
        for token_id in sorted(self.token_of):
            remap[token_id] = canonical.setdefault(self.token_of[token_id].lower(), token_id)
        return CorpusIndex(remap[self.token_ids], self.ctx_ids, {i: t for t, i in canonical.items()}, self.pad_id)

    @property
    def row_len(self) -> int:
        return int(self.token_ids.shape[1])

    @property
    def tokens_of(self) -> dict[str, list[int]]:
        """Token string -> the ids that render as it."""
        if self._tokens_of is None:
            self._tokens_of = {}
            for token_id, token in self.token_of.items():
                self._tokens_of.setdefault(token, []).append(int(token_id))
        return self._tokens_of

    def split_rows(self, latent: int, seed: int, explain_fraction: float) -> np.ndarray:
        """[n_rows] the split ("explain" / "score") each row's context is in for `latent`
        (explain/sampling/keys.py::split_of, the one definition)."""
        return split_of(seed, np.full(len(self.ctx_ids), latent), self.ctx_ids, explain_fraction)

    @property
    def wildcard_id(self) -> int:
        """The id packed at a wildcard position (after pad_id: no token has it)."""
        return self.pad_id + 1

    def _bits(self) -> int:
        return (self.wildcard_id + 1).bit_length()

    def pack(self, grams: np.ndarray) -> np.ndarray:
        """int64 keys [m] of n-grams [m, n] of token ids: exact packing when it fits, else a 64-bit hash
        (shifted to be non-negative, so NO_KEY never collides)."""
        n, bits = grams.shape[1], self._bits()
        key = np.zeros(len(grams), dtype=np.int64)
        if n * bits <= 62:
            for j in range(n):
                key = (key << bits) | grams[:, j]
            return key
        h = np.zeros(len(grams), dtype=np.uint64)
        for j in range(n):
            h = mix64(h ^ grams[:, j].astype(np.uint64))
        return (h >> np.uint64(1)).astype(np.int64)

    def keys_at(self, shape: Shape, flat: np.ndarray | None = None) -> np.ndarray:
        """Key of the n-gram of `shape` ending at each flat position (row * row_len + t) of `flat` [m]
        (default: every position, [n_rows * row_len]); NO_KEY where t < n - 1 or the n-gram reaches
        into padding. Not cached: only the sorted form is kept (`sorted_keys`)."""
        n, T = len(shape), self.row_len
        flat = np.arange(self.token_ids.size) if flat is None else np.asarray(flat, dtype=np.int64)
        t = flat % T
        valid = t >= n - 1
        ids = self.token_ids.reshape(-1)
        grams = np.stack([ids[np.where(valid, flat - (n - 1 - j), 0)] for j in range(n)], axis=1)
        valid &= ~(grams == self.pad_id).any(axis=1)  # nothing matches padding
        grams = np.where(np.array(shape), grams, self.wildcard_id)
        return np.where(valid, self.pack(grams), NO_KEY)

    def sorted_keys(self, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
        """(sorted keys, flat positions) of every n-gram of `shape` ending at a token. Cached per shape:
        16 bytes per corpus token and shape."""
        if shape not in self._sorted:
            keys = self.keys_at(shape)
            valid = np.flatnonzero(keys != NO_KEY)
            order = np.argsort(keys[valid], kind="stable")
            self._sorted[shape] = (keys[valid][order], valid[order])
        return self._sorted[shape]

    def occurrences(self, shape: Shape, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every flat position where one of `keys` [m] (n-grams of `shape`) ends: (which key, flat), [matches] each."""
        sorted_keys, flat = self.sorted_keys(shape)
        left, right = np.searchsorted(sorted_keys, keys, "left"), np.searchsorted(sorted_keys, keys, "right")
        counts = right - left
        which = np.repeat(np.arange(len(keys)), counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(left, counts)
        return which, flat[offset]

    def counts(self, shape: Shape, keys: np.ndarray) -> np.ndarray:
        """[m] occurrences of each key (n-grams of `shape`) in the whole index."""
        sorted_keys, _ = self.sorted_keys(shape)
        return np.searchsorted(sorted_keys, keys, "right") - np.searchsorted(sorted_keys, keys, "left")

    def spelling_keys(self, gram: Sequence[str | None], ignore_case: bool = False) -> np.ndarray:
        """Keys [m] of every token-id spelling of an n-gram of token strings (None: a wildcard): a string
        can render from several ids, and with `ignore_case` from every casing. Empty when a token of the
        n-gram is not in the index (the n-gram can never match)."""
        if ignore_case and self._lowered is None:
            self._lowered = {}
            for token, ids in self.tokens_of.items():
                self._lowered.setdefault(token.lower(), []).extend(ids)
        spell = self._lowered if ignore_case else self.tokens_of
        options = [[None] if t is None else spell.get(t.lower() if ignore_case else t, []) for t in gram]
        if not all(options):
            return np.zeros(0, dtype=np.int64)
        return np.array([self.key_of(s) for s in itertools.product(*options)], dtype=np.int64)

    def key_of(self, gram: Sequence[int | None]) -> int:
        """The key of one n-gram of token ids, None for a wildcard position."""
        ids = [self.wildcard_id if i is None else int(i) for i in gram]
        return int(self.pack(np.array([ids], dtype=np.int64))[0])


def shape_of(gram: Sequence[object | None]) -> Shape:
    """The shape of an n-gram: True where a token is fixed, False at a wildcard (None)."""
    return tuple(g is not None for g in gram)
