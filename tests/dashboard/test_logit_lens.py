"""Logit lens: top promoted/suppressed tokens of W_dec · W_U against a brute-force sort, the unembedding
of a causal LM (tied GPT-2) and none for an encoder (BERT), and the rows the latent pages read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from planted_store import SAE, fill

from explain.latents.logit_lens import top_output_tokens, unembedding
from flows.config import RunConfig
from flows.reports.latent_view import latent_view
from flows.reports.logits import NO_LENS_FILE, latent_logits, logits_for
from flows.stages.logit_lens import ensure_logit_lens, logit_rows


def test_top_tokens_match_a_brute_force_sort() -> None:
    gen = torch.Generator().manual_seed(0)
    w_dec, w_u = torch.randn(37, 8, generator=gen), torch.randn(8, 50, generator=gen)
    top, top_ids, bottom, bottom_ids = top_output_tokens(w_dec, w_u, k=5, batch=7)  # batches split the latents
    logits = (w_dec @ w_u).numpy()
    order = np.argsort(-logits, axis=1)
    assert (top_ids.numpy() == order[:, :5]).all() and (bottom_ids.numpy() == order[:, ::-1][:, :5]).all()
    assert np.allclose(top.numpy(), np.take_along_axis(logits, order[:, :5], 1), atol=1e-5)
    assert np.allclose(bottom.numpy(), np.take_along_axis(logits, order[:, ::-1][:, :5], 1), atol=1e-5)


def test_unembedding_of_a_tied_causal_lm_and_of_an_encoder() -> None:
    from transformers import AutoModel, BertConfig, GPT2Config

    gpt2 = AutoModel.from_config(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40))
    w_u, why = unembedding(gpt2)
    assert why == "" and w_u.shape == (16, 40)
    assert torch.equal(w_u, gpt2.get_input_embeddings().weight.t())
    bert = AutoModel.from_config(BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                            intermediate_size=32, vocab_size=40))
    w_u, why = unembedding(bert)
    assert w_u is None and "encoder" in why


class _Tokenizer:
    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [f"<tok{i}>" for i in ids]


def test_rows_reach_the_latent_page(tmp_path: Path) -> None:
    store = fill(tmp_path / "store")
    w_dec = torch.eye(5, 6)  # latent j is the unit direction j
    w_u = torch.zeros(6, 12)
    w_u[0, 3], w_u[0, 7] = 2.0, -1.5  # latent 0 promotes token 3 most and suppresses token 7 most
    store.append("latent_logits", logit_rows(SAE, w_dec, w_u, _Tokenizer()), part=SAE)
    lens = latent_logits(store, SAE)
    entry = logits_for(lens, 0)
    assert entry["promoted"][0] == ["<tok3>", 2.0] and entry["suppressed"][0] == ["<tok7>", -1.5]
    assert len(entry["promoted"]) == 10
    from flows.reports.data import load_report_data

    view = latent_view(load_report_data(store, SAE), (SAE, 0), [], None, entry)
    assert view["logits"]["promoted"][0][0] == "<tok3>"


def test_an_encoder_subject_records_why_it_has_none(tmp_path: Path) -> None:
    store = fill(tmp_path / "store")
    ensure_logit_lens(RunConfig(store=str(store.root)), store, SAE, torch.eye(5, 6))  # the default MiniLM
    assert "encoder" in json.loads((store.sae_dir(SAE) / NO_LENS_FILE).read_text())["none"]
    assert "encoder" in logits_for(latent_logits(store, SAE), 3)["none"]
