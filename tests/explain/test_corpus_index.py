"""CorpusIndex lookups equal a brute-force scan, for every n-gram shape (wildcards included)."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl

from explain.latents.corpus_index import NO_KEY, CorpusIndex


def _index(rng: np.random.Generator) -> tuple[CorpusIndex, np.ndarray]:
    ids = rng.integers(0, 6, size=(30, 12))
    contexts = pl.DataFrame({"ctx_id": np.arange(30, dtype=np.int64), "token_ids": ids.tolist(),
                             "tokens": [[f"t{i}" for i in row] for row in ids]})
    return CorpusIndex.from_contexts(contexts), ids


def test_occurrences_equal_a_brute_force_scan_for_every_shape():
    index, ids = _index(np.random.default_rng(0))
    for n in (1, 2, 3):
        for shape in itertools.product([True, False], repeat=n):
            if not any(shape):
                continue
            grams = [tuple(g) for g in itertools.product(range(6), repeat=n)][:40]
            keys = np.array([index.key_of([g if fixed else None for g, fixed in zip(gram, shape, strict=True)])
                             for gram in grams])
            which, flat = index.occurrences(shape, keys)
            found = set(zip(which.tolist(), flat.tolist(), strict=True))
            expected = {(k, r * 12 + t) for k, gram in enumerate(grams) for r in range(30) for t in range(n - 1, 12)
                        if all(not fixed or ids[r, t - n + 1 + j] == gram[j] for j, fixed in enumerate(shape))}
            assert found == expected
            np.testing.assert_array_equal(index.counts(shape, keys), np.bincount(which, minlength=len(keys)))


def test_windows_are_padded_and_padding_matches_nothing():
    index = CorpusIndex.from_windows([["a", "b", "c"], ["a"]], [10, 11])
    assert index.token_ids.shape == (2, 3) and index.token_ids[1, 1] == index.pad_id
    keys = index.keys_at((True, False))  # "a [any]": the window ["a"] has no token after "a"
    assert keys[1] != NO_KEY and keys[4] == NO_KEY
    _, flat = index.occurrences((True, False), np.array([index.key_of([index.tokens_of["a"][0], None])]))
    assert flat.tolist() == [1]


def test_folded_index_merges_casings():
    contexts = pl.DataFrame({"ctx_id": [0], "token_ids": [[0, 1, 2]], "tokens": [["Dog", "dog", "cat"]]})
    folded = CorpusIndex.from_contexts(contexts).folded()
    assert folded.token_ids[0, 0] == folded.token_ids[0, 1] != folded.token_ids[0, 2]
    assert folded.token_of[int(folded.token_ids[0, 0])] == "dog"
