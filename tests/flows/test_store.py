"""The Parquet store: append-only parts, atomic writes, tables readable with a plain glob."""

from __future__ import annotations

import polars as pl
import pytest

from flows.store import Store


def test_append_and_read_back(tmp_path):
    store = Store(tmp_path)
    store.append("scores", pl.DataFrame({"latent": [1, 2], "f1": [0.5, 1.0]}))
    store.append("scores", pl.DataFrame({"latent": [3], "f1": [0.0]}))
    assert len(store.parts("scores")) == 2
    assert sorted(store.read("scores")["latent"]) == [1, 2, 3]
    by_glob = pl.read_parquet(str(tmp_path / "scores" / "**" / "*.parquet"))
    assert by_glob.height == 3
    assert not list((tmp_path / "scores").glob(".*"))  # no temp files left behind


def test_parts_with_a_column_added_later_read_as_one_table(tmp_path):
    store = Store(tmp_path)
    store.append("latent_stats", pl.DataFrame({"latent": [0], "n_active": [5]}), part="a-old")
    store.append("latent_stats", pl.DataFrame({"latent": [1], "n_active": [7], "cooccurring": [[3, 4]]}),
                 part="b-new")
    frame = store.read("latent_stats").sort("latent")
    assert frame.columns == ["latent", "n_active", "cooccurring"]
    assert frame["cooccurring"].to_list() == [None, [3, 4]]


def test_empty_frames_write_nothing_and_unknown_tables_are_refused(tmp_path):
    store = Store(tmp_path)
    assert store.append("scores", pl.DataFrame({"latent": []})) is None
    assert store.read("scores").is_empty()
    with pytest.raises(ValueError, match="unknown table"):
        store.append("nope", pl.DataFrame({"a": [1]}))
