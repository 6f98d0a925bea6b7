"""SAE files: our SAELens-v6 round trip; sparsify and OpenAI v5 files built here from their documented
names/shapes, checked against hand-written reference encoders; interop with the real `sae_lens`."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from sae.config import SAEConfig
from sae.formats import SAEFormatError, detect_format, load_sae, load_sae_metadata, save_sae
from sae.model import TopKSAE

D_IN, N_LATENTS, K = 24, 96, 5


def random_sae(normalize: str = "none", seed: int = 0) -> TopKSAE:
    torch.manual_seed(seed)
    sae = TopKSAE(SAEConfig(d_in=D_IN, n_latents=N_LATENTS, k=K, normalize_activations=normalize))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
        sae.W_enc.normal_(0, 0.3)
    return sae.eval()


def inputs(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def dense_code(sae: TopKSAE, x: torch.Tensor) -> torch.Tensor:
    """Our encoding as a dense [batch, n_latents] tensor."""
    values, indices = sae.encode(x)
    return torch.zeros(len(x), sae.cfg.n_latents).scatter_(1, indices, values)


def topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())


# --- ours ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", ["none", "layer_norm"])
def test_round_trip(tmp_path, normalize):
    sae = random_sae(normalize)
    save_sae(sae, tmp_path / "sae", metadata={"model_name": "m", "hook_name": "layer.3"},
             training_stats={"fvu": torch.tensor(0.25), "l0": 5.0})
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and (cfg["d_in"], cfg["d_sae"], cfg["k"]) == (D_IN, N_LATENTS, K)
    assert cfg["normalize_activations"] == normalize and cfg["metadata"]["hook_name"] == "layer.3"
    assert cfg["training_stats"] == {"fvu": 0.25, "l0": 5.0}
    assert detect_format(tmp_path / "sae") == "saelens"
    loaded = load_sae(tmp_path / "sae")
    assert loaded.cfg == sae.cfg
    x = inputs()
    torch.testing.assert_close(dense_code(loaded, x), dense_code(sae, x), atol=0, rtol=0)
    torch.testing.assert_close(loaded(x).x_hat, sae(x).x_hat, atol=0, rtol=0)
    assert load_sae_metadata(tmp_path / "sae")["metadata"]["model_name"] == "m"


def saelens_folder(tmp_path, W_enc, b_enc, W_dec, b_dec, **cfg_fields):
    """A SAELens v6 folder written by hand (cfg.json + sae_weights.safetensors)."""
    folder = tmp_path / "saelens"
    folder.mkdir()
    save_file({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec},
              str(folder / "sae_weights.safetensors"))
    cfg = {"architecture": "topk", "d_in": D_IN, "d_sae": N_LATENTS, "k": K, "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
           "metadata": {"sae_lens_version": "6.5.0"}, **cfg_fields}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def test_saelens_options_folded_into_weights(tmp_path):
    """apply_b_dec_to_input=false and rescale_acts_by_decoder_norm=true, reference = SAELens's maths."""
    g = torch.Generator().manual_seed(5)
    W_enc, W_dec = torch.randn(D_IN, N_LATENTS, generator=g), torch.randn(N_LATENTS, D_IN, generator=g) * 3
    b_enc, b_dec = torch.randn(N_LATENTS, generator=g), torch.randn(D_IN, generator=g)
    folder = saelens_folder(tmp_path, W_enc, b_enc, W_dec, b_dec, apply_b_dec_to_input=False,
                            rescale_acts_by_decoder_norm=True)
    x = inputs()
    norms = W_dec.norm(dim=1)
    acts = topk_relu((x @ W_enc + b_enc) * norms, K)
    recon = acts @ (W_dec / norms[:, None]) + b_dec
    sae = load_sae(folder)
    torch.testing.assert_close(dense_code(sae, x), acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x).x_hat, recon, atol=1e-4, rtol=1e-5)


# --- sparsify ------------------------------------------------------------------------------------
def sparsify_folder(tmp_path, **cfg_overrides):
    g = torch.Generator().manual_seed(3)
    tensors = {"encoder.weight": torch.randn(N_LATENTS, D_IN, generator=g),  # nn.Linear(d_in, n)
               "encoder.bias": torch.randn(N_LATENTS, generator=g) * 0.1,
               "W_dec": torch.randn(N_LATENTS, D_IN, generator=g),
               "b_dec": torch.randn(D_IN, generator=g)}
    folder = tmp_path / "layers.3"
    folder.mkdir()
    save_file({k: v.to(torch.bfloat16 if k == "W_dec" else torch.float32) for k, v in tensors.items()},
              str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 4, "normalize_decoder": True, "num_latents": 0,
           "k": K, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D_IN,
           **cfg_overrides}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    tensors["W_dec"] = tensors["W_dec"].to(torch.bfloat16).float()
    return folder, tensors


def test_sparsify_folder(tmp_path):
    folder, t = sparsify_folder(tmp_path)
    assert detect_format(folder) == "sparsify"
    x = inputs()
    # sparsify: ReLU(encoder(x - b_dec)), then top-k; decode = sum acts * W_dec rows + b_dec
    pre = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
    acts = topk_relu(pre, K)
    sae = load_sae(folder)
    assert (sae.cfg.d_in, sae.cfg.n_latents, sae.cfg.normalize_activations) == (D_IN, N_LATENTS, "none")
    torch.testing.assert_close(dense_code(sae, x), acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x).x_hat, acts @ t["W_dec"] + t["b_dec"], atol=1e-4, rtol=1e-5)
    with pytest.raises(SAEFormatError, match=r"holds several SAEs \(layers\.3"):
        load_sae(tmp_path)


@pytest.mark.parametrize(("override", "message"), [({"activation": "groupmax"}, "groupmax"),
                                                   ({"transcode": True}, "transcoder"),
                                                   ({"skip_connection": True}, "skip")])
def test_sparsify_unsupported_options(tmp_path, override, message):
    folder, _ = sparsify_folder(tmp_path, **override)
    with pytest.raises(SAEFormatError, match=message):
        load_sae(folder)


# --- OpenAI v5 -----------------------------------------------------------------------------------
def openai_state_dict(k: int = K, activation: str = "TopK"):
    g = torch.Generator().manual_seed(4)
    return {"pre_bias": torch.randn(D_IN, generator=g) * 0.1,
            "encoder.weight": torch.randn(N_LATENTS, D_IN, generator=g),   # nn.Linear(n_inputs, n_latents)
            "latent_bias": torch.randn(N_LATENTS, generator=g) * 0.1,
            "decoder.weight": torch.randn(D_IN, N_LATENTS, generator=g),   # nn.Linear(n_latents, n_inputs)
            "stats_last_nonzero": torch.zeros(N_LATENTS, dtype=torch.long),
            "latents_activation_frequency": torch.ones(N_LATENTS),
            "latents_mean_square": torch.zeros(N_LATENTS),
            "activation": activation, "activation_state_dict": {"k": k, "postact_fn": "ReLU"}}


def test_openai_v5_with_input_layer_norm(tmp_path):
    state = openai_state_dict()
    torch.save(state, tmp_path / "v5.pt")
    x = inputs()
    # OpenAI's TopK checkpoints: LN(x) = (x - mean) / (std + 1e-5) (unbiased std), then
    # latents = ReLU(TopK((LN(x) - pre_bias) @ encoder.T + latent_bias)); recon un-normalised with (mu, std)
    mu = x.mean(-1, keepdim=True)
    std = (x - mu).std(-1, keepdim=True)
    x_ln = (x - mu) / (std + 1e-5)
    acts = topk_relu((x_ln - state["pre_bias"]) @ state["encoder.weight"].T + state["latent_bias"], K)
    recon = (acts @ state["decoder.weight"].T + state["pre_bias"]) * std + mu
    sae = load_sae(tmp_path / "v5.pt")
    assert sae.cfg.normalize_activations == "layer_norm" and sae.cfg.k == K
    torch.testing.assert_close(dense_code(sae, x), acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x).x_hat, recon, atol=1e-4, rtol=1e-5)


def test_openai_relu_sae_is_rejected(tmp_path):
    torch.save(openai_state_dict(activation="ReLU"), tmp_path / "v1.pt")
    with pytest.raises(SAEFormatError, match="'ReLU' is not TopK"):
        load_sae(tmp_path / "v1.pt")


# --- clear errors --------------------------------------------------------------------------------
def test_unknown_formats_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    for path, message in [(tmp_path / "missing", "not found"), (tmp_path / "empty", "unknown SAE format"),
                          (tmp_path / "weights.bin", "unknown SAE file"), (tmp_path / "junk.pt", "not a readable")]:
        with pytest.raises(SAEFormatError, match=message) as info:
            load_sae(path)
        assert "\n" not in str(info.value)


def test_wrong_shapes_and_architecture(tmp_path):
    W_enc = torch.zeros(D_IN, N_LATENTS)
    folder = saelens_folder(tmp_path, W_enc, torch.zeros(N_LATENTS), torch.zeros(N_LATENTS, D_IN + 1),
                            torch.zeros(D_IN))
    with pytest.raises(SAEFormatError, match=r"W_dec has shape \(96, 25\), expected \(96, 24\)"):
        load_sae(folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "architecture": "jumprelu"}))
    with pytest.raises(SAEFormatError, match="'jumprelu' is not a TopK SAE"):
        load_sae(folder)


# --- the real sae_lens (installed only in the interop environment) -------------------------------
@pytest.mark.parametrize("normalize", ["none", "layer_norm"])
def test_saelens_loads_ours(tmp_path, normalize):
    sae_lens = pytest.importorskip("sae_lens")
    ours = random_sae(normalize)
    save_sae(ours, tmp_path / "sae", metadata={"model_name": "minilm", "hook_name": "blocks.3.hook_resid_post"})
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"))
    assert type(theirs).__name__ == "TopKSAE"
    x = inputs()
    with torch.no_grad():
        code = theirs.encode(x)
        torch.testing.assert_close(code, dense_code(ours, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(theirs.decode(code), ours(x).x_hat, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [{}, {"normalize_activations": "layer_norm"},
                                     {"apply_b_dec_to_input": False, "rescale_acts_by_decoder_norm": True}])
def test_we_load_saelens(tmp_path, options):
    pytest.importorskip("sae_lens")
    from sae_lens.saes.topk_sae import TopKSAE as SAELensTopKSAE
    from sae_lens.saes.topk_sae import TopKSAEConfig

    torch.manual_seed(7)
    theirs = SAELensTopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=N_LATENTS, k=K, **options))
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.5)
    theirs.save_model(str(tmp_path / "theirs"))
    ours = load_sae(tmp_path / "theirs")
    x = inputs()
    with torch.no_grad():
        code = theirs.encode(x)
        torch.testing.assert_close(dense_code(ours, x), code, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x).x_hat, theirs.decode(code), atol=1e-5, rtol=1e-5)
