"""Training robustness: lr schedule, scaled dead window, NaN/inf rejection, checkpoint and resume after kill -9."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sae.config import SAEConfig, TrainConfig
from sae.data.activation_files import check_finite, shuffled_batches
from sae.train import dead_window, train_sae

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


def test_lr_warms_up_stays_flat_and_decays_to_zero():
    cfg = TrainConfig(tokens=100 * 10, batch_size=10, warmup_frac=0.1, decay_frac=0.2)
    factors = [cfg.lr_factor(step, 100) for step in range(100)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11)
    assert all(f == 1.0 for f in factors[10:80])
    assert factors[80] == pytest.approx(1.0) and factors[99] == pytest.approx(1 / 20)
    assert all(a >= b for a, b in zip(factors[80:], factors[81:], strict=False))


def test_dead_window_is_scaled_to_the_run():
    sae_cfg = SAEConfig(d_in=4, n_latents=8, k=2, dead_tokens=10_000_000)
    assert dead_window(sae_cfg, TrainConfig(tokens=2_000_000, dead_window_frac=0.05)) == 100_000
    assert dead_window(sae_cfg.model_copy(update={"dead_tokens": 50_000}), TrainConfig(tokens=2_000_000)) == 50_000


def _data(n=4000, d=8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_nan_activations_stop_training_naming_the_first_bad_row():
    acts = _data()
    acts[1234, 3] = np.nan
    acts[2000, 0] = np.inf
    with pytest.raises(ValueError, match="row 1234 "):
        check_finite(acts, "acts.npy")
    cfg = SAEConfig(d_in=8, n_latents=16, k=2)
    train_cfg = TrainConfig(tokens=4000, batch_size=4000, progress=False)
    with pytest.raises(ValueError, match="training token"):
        train_sae(cfg, train_cfg, [torch.from_numpy(acts)], torch.from_numpy(_data(100)))


def test_cli_turns_nan_activations_into_one_line_and_exit_2(tmp_path, capsys):
    from flows.cli.main import main

    acts = _data(500)
    acts[77] = np.nan
    np.save(tmp_path / "a.npy", acts)
    code = main(["train-sae", "--activations", str(tmp_path / "a.npy"), "--out", str(tmp_path / "sae"),
                 "--n-latents", "16", "--k", "2", "--train-tokens", "1000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "row 77 " in err[0]


SCRIPT = textwrap.dedent("""
    import os, signal, sys, numpy as np, torch
    sys.path.insert(0, {root!r})
    from sae.config import SAEConfig, TrainConfig
    from sae.data.activation_files import shuffled_batches
    from sae.train import train_sae
    torch.set_num_threads(1)
    acts = np.load({acts!r})
    kill_at = int(sys.argv[1])
    def die(step, sae, out):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    cfg = SAEConfig(d_in=8, n_latents=32, k=2, dead_tokens=600)
    train_cfg = TrainConfig(tokens=12_000, batch_size=200, checkpoint_every=7, progress=False, log_every=10)
    result = train_sae(cfg, train_cfg, lambda done: shuffled_batches(acts, 200, 12_000, seed=0, start=done),
                       torch.from_numpy(acts[:500]), callback=die, checkpoint=__import__("pathlib").Path({ckpt!r}))
    torch.save({{k: v for k, v in result.sae.state_dict().items()}}, {out!r})
""")


def test_training_resumes_after_kill_9_and_ends_with_the_same_sae(tmp_path):
    acts = _data(3000)
    np.save(tmp_path / "acts.npy", acts)
    ckpt, out = tmp_path / "train.ckpt", tmp_path / "resumed.pt"
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(root=str(ROOT), acts=str(tmp_path / "acts.npy"), ckpt=str(ckpt), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, str(script), "40"], env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL and ckpt.exists() and not out.exists()
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 35 and state["tokens_seen"] == 35 * 200  # last checkpoint before the kill
    resumed = subprocess.run([sys.executable, str(script), "-1"], env=env, capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    cfg = SAEConfig(d_in=8, n_latents=32, k=2, dead_tokens=600)
    train_cfg = TrainConfig(tokens=12_000, batch_size=200, progress=False, log_every=10)
    straight = train_sae(cfg, train_cfg, shuffled_batches(acts, 200, 12_000, seed=0), torch.from_numpy(acts[:500]))
    for name, tensor in torch.load(out).items():
        assert torch.allclose(tensor, straight.sae.state_dict()[name], atol=1e-6), name


def test_shuffled_batches_start_skips_whole_batches_exactly():
    acts = _data(1000)
    full = list(shuffled_batches(acts, 128, 3000, seed=3))
    rest = list(shuffled_batches(acts, 128, 3000, seed=3, start=5 * 128))
    assert len(rest) == len(full) - 5 and all(torch.equal(a, b) for a, b in zip(full[5:], rest, strict=True))


def test_cpu_bf16_autocast_trains_to_the_fp32_fvu():
    """bf16 encoder matmul on CPU (forced on; auto turns it on only where oneDNN has native bf16)."""
    from fixtures.planted_dictionary import PlantedDictionary

    fvus = {}
    for bf16 in (False, True):
        data = PlantedDictionary(d=32, n_atoms=128, active=4, seed=0)
        cfg = SAEConfig(d_in=32, n_latents=128, k=4, normalize_activations="none")
        train_cfg = TrainConfig(tokens=60_000, batch_size=1000, bf16_autocast=bf16, progress=False)
        sae = train_sae(cfg, train_cfg, data.batches(1000), data.sample(2000)).sae
        x = data.sample(8000)
        with torch.no_grad():
            fvus[bf16] = float((x - sae(x).x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert fvus[True] == pytest.approx(fvus[False], rel=0.05)
