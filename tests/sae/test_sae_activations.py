"""Activation source: residual stream after block L equals HF's hidden_states[L + 1] at content positions,
the forward stops after block L, special tokens and padding are handled; shuffle buffer and streaming.
Activation files: .npy written in chunks, read back memory-mapped; safetensors memory-mapped; Parquet list
or numeric columns; shuffled epochs cover every row once per epoch; clear shape errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

from sae.data.activation_files import open_activations, save_activations, shuffled_batches
from sae.data.subject import (
    ShuffleBuffer,
    find_blocks,
    load_subject_model,
    pad_contexts,
    streaming_token_batches,
)

CONTEXTS = [[2023, 2003, 1037, 3231, 1997, 1996], [7592, 2088], [1996, 4937, 2938, 2006, 1996]]


@pytest.fixture(scope="module")
def minilm():
    return load_subject_model(None)


def hf_reference(model, contexts, prefix, suffix, pad_id):
    """Full HF forward, one unpadded sequence at a time: hidden_states per context, content positions."""
    out = []
    for ctx in contexts:
        ids = torch.tensor([prefix + list(ctx) + suffix])
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        out.append([h[0, len(prefix) : len(prefix) + len(ctx)] for h in hidden])
    return out


def test_minilm_shape_and_special_tokens(minilm):
    assert (minilm.n_layers, minilm.d_model) == (6, 384)
    assert minilm.prefix_ids == [minilm.tokenizer.cls_token_id]
    assert minilm.suffix_ids == [minilm.tokenizer.sep_token_id]
    assert minilm.name == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize("layer", [0, 3, 5])
def test_minilm_matches_hidden_states(minilm, layer):
    token_ids, lengths = pad_contexts(CONTEXTS, minilm.pad_id)
    acts = minilm.residual_activations(token_ids, lengths, layer)
    assert acts.shape == (3, 6, 384) and acts.dtype == torch.float32
    reference = hf_reference(minilm.model, CONTEXTS, [101], [102], minilm.pad_id)
    for row, ctx in enumerate(CONTEXTS):
        torch.testing.assert_close(acts[row, : len(ctx)], reference[row][layer + 1], atol=1e-5, rtol=1e-4)
        assert acts[row, len(ctx) :].abs().sum() == 0  # padding zeroed


def test_forward_stops_after_layer(minilm):
    calls = []
    blocks = find_blocks(minilm.model)
    handles = [b.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, b in enumerate(blocks)]
    try:
        minilm.residual_activations(*pad_contexts(CONTEXTS, minilm.pad_id), layer=2)
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1, 2]


def test_two_argument_form_means_no_padding(minilm):
    token_ids = torch.tensor([CONTEXTS[0]])
    torch.testing.assert_close(minilm.residual_activations(token_ids, 4),
                               minilm.residual_activations(token_ids, torch.tensor([6]), 4))


def test_layer_out_of_range(minilm):
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.5"):
        minilm.residual_activations(torch.zeros(1, 2, dtype=torch.long), None, 6)


def test_iter_activation_batches(minilm):
    batches = list(minilm.iter_activation_batches(CONTEXTS, 3, batch_size=2, ctx_ids=[10, 11, 12],
                                                  progress=False))
    assert [b[0].tolist() for b in batches] == [[10, 11], [12]]
    ids, acts, valid = batches[0]
    assert acts.shape == (2, 6, 384) and valid.tolist()[1] == [True, True, False, False, False, False]
    # the same context gives the same activations whatever it is batched with
    alone = minilm.residual_activations(*pad_contexts([CONTEXTS[1]], minilm.pad_id), 3)
    torch.testing.assert_close(acts[1, :2], alone[0], atol=1e-5, rtol=1e-4)


def tiny_configs():
    common = dict(vocab_size=97, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return {
        "gpt2": GPT2Config(n_layer=3, n_embd=32, n_head=4, n_positions=64, **common),
        "gpt_neox": GPTNeoXConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, **common),
        "llama": LlamaConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=64, max_position_embeddings=64, **common),
    }


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_tiny_causal_lms_match_hidden_states(arch):
    torch.manual_seed(0)
    subject = load_subject_model(tiny_configs()[arch], prefix_ids=[1])
    assert subject.n_layers == 3 and subject.d_model == 32
    contexts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    token_ids, lengths = pad_contexts(contexts, subject.pad_id)
    reference = hf_reference(subject.model, contexts, [1], [], subject.pad_id)
    for layer in range(2):  # the last block is compared below: HF applies the final norm there
        acts = subject.residual_activations(token_ids, lengths, layer)
        for row, ctx in enumerate(contexts):
            torch.testing.assert_close(acts[row, : len(ctx)], reference[row][layer + 1], atol=1e-5, rtol=1e-4)
    last = subject.residual_activations(token_ids, lengths, 2)
    final_norm = {"gpt2": "ln_f", "gpt_neox": "final_layer_norm", "llama": "norm"}[arch]
    with torch.no_grad():
        normed = getattr(subject.model, final_norm)(last[0, :5])
    torch.testing.assert_close(normed, reference[0][3], atol=1e-5, rtol=1e-4)


def test_prebuilt_model_and_tokenizer_pair(minilm):
    subject = load_subject_model("my-minilm", model=minilm.model, tokenizer=minilm.tokenizer)
    assert subject.name == "my-minilm" and subject.prefix_ids == [101]


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load subject model"):
        load_subject_model(str(tmp_path / "no-such-model"))


def test_shuffle_buffer_is_a_seeded_permutation():
    rows = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 3)
    def run(seed):
        buffer = ShuffleBuffer(capacity=16, d=3, seed=seed)
        out = [c for start in range(0, 100, 7) for c in buffer.push(rows[start : start + 7])]
        return torch.cat([*out, buffer.flush()])
    mixed = run(0)
    assert sorted(mixed[:, 0].tolist()) == list(range(100))
    assert mixed[:, 0].tolist() != list(range(100))
    torch.testing.assert_close(mixed, run(0))
    assert not torch.equal(mixed, run(1))


def test_streaming_batches_cover_exactly_n_tokens():
    torch.manual_seed(0)
    subject = load_subject_model(tiny_configs()["gpt2"], prefix_ids=[1])
    contexts = [[3 + (i * 7 + j) % 90 for j in range(5 + i % 3)] for i in range(12)]
    all_acts = torch.cat([a[v] for _i, a, v in subject.iter_activation_batches(contexts, 1, progress=False)])
    n_corpus = len(all_acts)
    batches = list(streaming_token_batches(subject, contexts, 1, batch_size=16, n_tokens=2 * n_corpus + 5,
                                           buffer_tokens=32, model_batch_size=4, seed=3))
    assert sum(len(b) for b in batches) == 2 * n_corpus + 5
    assert all(len(b) == 16 for b in batches[:-1])
    streamed = torch.cat(batches)
    distance = torch.cdist(streamed, all_acts).min(dim=1).values
    assert distance.max() < 1e-3  # every streamed row is a real activation row (batching noise ~1e-5)
    one_pass = torch.cat(list(streaming_token_batches(subject, contexts, 1, batch_size=16, buffer_tokens=32)))
    assert len(one_pass) == n_corpus
    assert torch.cdist(all_acts, one_pass).min(dim=1).values.max() < 1e-3  # and each one appears


# --- activation files ------------------------------------------------------------------------
ROWS, D = 103, 6


def matrix() -> np.ndarray:
    """Row i is i + [0, 0.1, ..., 0.5]: every row identifies itself."""
    return (np.arange(ROWS, dtype=np.float32)[:, None] + np.arange(D, dtype=np.float32) / 10)


def test_npy_chunks_round_trip_memmapped(tmp_path):
    data = matrix()
    chunks = [torch.from_numpy(data[:40]), data[40:41], torch.from_numpy(data[41:])]
    path = save_activations(tmp_path / "acts.npy", iter(chunks))
    loaded = open_activations(path)
    assert isinstance(loaded, np.memmap) and loaded.shape == (ROWS, D)
    np.testing.assert_array_equal(loaded, data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.npy"]  # no temporary files left


def test_save_rejects_bad_chunks(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(2, 5\), expected \[n, 6\]"):
        save_activations(tmp_path / "a.npy", [np.zeros((3, 6)), np.zeros((2, 5))])
    with pytest.raises(ValueError, match="no activations"):
        save_activations(tmp_path / "a.npy", [])
    assert not list(tmp_path.iterdir())


def test_safetensors_memmapped(tmp_path):
    data = matrix()
    save_file({"acts": torch.from_numpy(data), "other": torch.zeros(2)}, str(tmp_path / "a.safetensors"))
    loaded = open_activations(tmp_path / "a.safetensors", name="acts")
    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, data)
    with pytest.raises(ValueError, match="say which one"):
        open_activations(tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match=r"must have shape \[tokens, d_in\], got \[2\]"):
        open_activations(tmp_path / "a.safetensors", name="other")


def test_parquet_list_column_and_numeric_columns(tmp_path):
    data = matrix()
    pl.DataFrame({"acts": data.tolist()}).write_parquet(tmp_path / "list.parquet")
    np.testing.assert_allclose(open_activations(tmp_path / "list.parquet"), data)
    pl.DataFrame({f"d{i}": data[:, i] for i in range(D)}).write_parquet(tmp_path / "cols.parquet")
    np.testing.assert_allclose(open_activations(tmp_path / "cols.parquet"), data)
    pl.DataFrame({"acts": [[1.0, 2.0], [3.0]]}).write_parquet(tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match="different lengths"):
        open_activations(tmp_path / "ragged.parquet")
    pl.DataFrame({"a": [1.0], "s": ["x"]}).write_parquet(tmp_path / "mixed.parquet")
    with pytest.raises(ValueError, match="only numeric columns"):
        open_activations(tmp_path / "mixed.parquet")


def test_wrong_files(tmp_path):
    np.save(tmp_path / "three_d.npy", np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"got \[2, 3, 4\]"):
        open_activations(tmp_path / "three_d.npy")
    np.save(tmp_path / "ints.npy", np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="must be floats"):
        open_activations(tmp_path / "ints.npy")
    with pytest.raises(ValueError, match="not found"):
        open_activations(tmp_path / "missing.npy")
    (tmp_path / "a.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported activation file"):
        open_activations(tmp_path / "a.csv")


def test_shuffled_batches_epochs(tmp_path):
    np.save(tmp_path / "a.npy", matrix())
    array = open_activations(tmp_path / "a.npy")
    batches = list(shuffled_batches(array, batch_size=10, n_tokens=2 * ROWS + 7, seed=0))
    assert sum(len(b) for b in batches) == 2 * ROWS + 7
    assert all(b.shape == (10, D) and b.dtype == torch.float32 for b in batches[:-1])
    row_ids = torch.cat(batches)[:, 0].long().tolist()
    counts = np.bincount(row_ids, minlength=ROWS)
    assert counts.min() == 2 and counts.max() == 3 and (counts == 3).sum() == 7  # two epochs and a bit
    assert len(set(row_ids[:100])) == 100  # no repeats inside an epoch
    assert row_ids[:100] != sorted(row_ids[:100])  # rows are shuffled across batches
    again = torch.cat(list(shuffled_batches(tmp_path / "a.npy", 10, 2 * ROWS + 7, seed=0)))
    assert torch.equal(again, torch.cat(batches))  # seeded
    one_epoch = list(shuffled_batches(array, batch_size=50))
    assert [len(b) for b in one_epoch] == [50, 50, 3]
    assert sorted(torch.cat(one_epoch)[:, 0].long().tolist()) == list(range(ROWS))
