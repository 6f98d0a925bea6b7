"""Bad inputs are refused up front: `python -m flows.cli.main ...` exits 2 with ONE line on stderr that
names the input, no traceback (Prefect's included), within seconds, and before any heavy stage ran (no
table part, activation file or SAE in the store)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fixtures.llm_server import LLMTestServer

from sae.config import SAEConfig
from sae.formats import save_sae
from sae.model import TopKSAE

MINILM_WIDTH, MINILM_BLOCKS = 384, 6
FAST_RUN = ["--max-contexts", "40", "--n-latents", "64", "--k", "4", "--train-tokens", "2000"]


def _sae(folder: Path, d_in: int = MINILM_WIDTH, layer: int = 3, model: str = "all-MiniLM-L6-v2") -> Path:
    torch.manual_seed(0)
    save_sae(TopKSAE(SAEConfig(d_in=d_in, n_latents=16, k=4)), folder, metadata={"layer": layer, "model": model})
    return folder


def _corrupt_sae(folder: Path) -> Path:
    _sae(folder)
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a download cut short
    return folder


def _unwritable(tmp: Path) -> Path:
    if os.getuid() == 0:  # root writes through permission bits: use a folder the kernel refuses
        return Path("/sys/latent-atlas-store")
    store = tmp / "readonly"
    store.mkdir()
    store.chmod(0o555)
    return store


def _file(name: str, data: bytes) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / name).write_bytes(data)
        return ["--corpus", str(tmp / name)]
    return make


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing model path": (lambda t: ["--model", str(t / "no-such-model")], "--model"),
    "empty corpus": (_file("empty.txt", b""), "empty"),
    "whitespace corpus": (_file("blank.txt", b"\n \n\t\n"), "only whitespace"),
    "non-UTF-8 corpus": (_file("latin1.txt", "caf\u00e9 cr\u00e8me\n".encode("latin-1")), "not UTF-8 (byte 3)"),
    "corpus without extension": (lambda t: ["--corpus", "my_text_that_does_not_exist"], "--corpus my_text"),
    "k > n_latents": (lambda t: ["--n-latents", "100", "--k", "200"], "--k 200 exceeds --n-latents 100"),
    "SAE d_in != model width": (lambda t: ["--sae", str(_sae(t / "narrow", d_in=100))], "d_in is 100"),
    "SAE of another layer": (lambda t: ["--sae", str(_sae(t / "l3")), "--layer", "1"], "trained on layer 3"),
    "SAE of another model": (lambda t: ["--sae", str(_sae(t / "gpt2", model="gpt2")), "--layer", "3"],
                             "trained on model gpt2"),
    "corrupt SAE weights": (lambda t: ["--sae", str(_corrupt_sae(t / "cut"))], "corrupt or truncated"),
    "unwritable store": (lambda t: ["--store", str(_unwritable(t))], "cannot write"),
    "layer out of range": (lambda t: ["--layer", str(MINILM_BLOCKS)], "out of range"),
    "negative layer": (lambda t: ["--layer", "-1"], "--layer"),
    "no API key for a remote LLM": (lambda t: ["--explainer", "llm", "--llm-model", "m", "--llm-base-url",
                                               "https://llm.example.com/v1", "--llm-api-key-env", "NO_SUCH_KEY_ENV"],
                                    "no API key for https://llm.example.com/v1"),
    "unreachable LLM": (lambda t: ["--explainer", "llm", "--llm-model", "m", "--llm-base-url", "http://127.0.0.1:9/v1"],
                        "unreachable"),
}
if not torch.cuda.is_available():
    CASES["--device cuda on a CPU build"] = (lambda t: ["--device", "cuda"], "--device cuda")


def run_cli(args: list[str], tmp: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home"), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    return done, time.monotonic() - started


def assert_clean_error(done: subprocess.CompletedProcess, elapsed: float, expected: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("latent-atlas: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert elapsed < 30, f"{elapsed:.1f} s to the error"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_before_any_work(case, tmp_path):
    make, expected = CASES[case]
    store = tmp_path / "store"
    extra = make(tmp_path)
    args = ["run", "--store", str(store), *FAST_RUN, *extra]
    if "--store" in extra:
        args = ["run", *FAST_RUN, *extra]
        store = Path(extra[extra.index("--store") + 1])
    done, elapsed = run_cli(args, tmp_path)
    assert_clean_error(done, elapsed, expected)
    written = [p for p in store.rglob("*") if p.is_file()] if store.exists() else []
    assert written == [], written  # no table part, activation file, SAE or report


def test_force_accepts_an_sae_of_another_layer_but_never_another_width(tmp_path):
    from flows.cli.preflight import check_run_config
    from flows.config import RunConfig

    other_layer = RunConfig(store=str(tmp_path / "s"), sae_path=str(_sae(tmp_path / "l3")), data={"layer": 1})
    with pytest.raises(ValueError, match="trained on layer 3"):
        check_run_config(other_layer, llm=False)
    check_run_config(other_layer.model_copy(update={"force": True}), llm=False)
    narrow = RunConfig(store=str(tmp_path / "s"), sae_path=str(_sae(tmp_path / "n", d_in=100)), force=True)
    with pytest.raises(ValueError, match="d_in is 100"):
        check_run_config(narrow, llm=False)


def test_an_sae_of_the_requested_layer_and_model_passes(tmp_path):
    from flows.cli.preflight import check_run_config
    from flows.config import RunConfig

    check_run_config(RunConfig(store=str(tmp_path / "s"), sae_path=str(_sae(tmp_path / "l3")), data={"layer": 3}),
                     llm=False)
    # the default layer is the middle block (6 // 2 = 3): the same SAE passes without --layer
    check_run_config(RunConfig(store=str(tmp_path / "s"), sae_path=str(_sae(tmp_path / "d"))), llm=False)


def test_llm_endpoint_that_refuses_the_key_is_one_line(tmp_path, monkeypatch):
    from explain.llm.settings import LLMSettings
    from flows.cli.preflight_llm import check_llm_endpoint

    with LLMTestServer() as server:
        server.state.api_key = "sk-right"
        monkeypatch.setenv("LA_TEST_KEY", "sk-wrong-0123456789")
        settings = LLMSettings(model="fake", base_url=server.base_url, api_key_env="LA_TEST_KEY")
        with pytest.raises(ValueError, match="refused the API key in .LA_TEST_KEY") as caught:
            check_llm_endpoint(settings)
        assert "sk-wrong" not in str(caught.value)
        monkeypatch.setenv("LA_TEST_KEY", "sk-right")
        check_llm_endpoint(settings)  # the right key passes: the check is not always-fail


def test_invalid_cron_is_one_line(tmp_path):
    args = ["serve", "--name", "nightly", "--cron", "every night", "--store", str(tmp_path / "s")]
    done, elapsed = run_cli(args, tmp_path)
    assert_clean_error(done, elapsed, "cron")


def test_a_good_llm_run_passes_preflight(tmp_path):
    """The checks are not always-fail: a local fake server with the right settings passes them."""
    from flows.cli.preflight import check_run_config
    from flows.config import RunConfig

    with LLMTestServer() as server:
        cfg = RunConfig(store=str(tmp_path / "s"), explainer="llm", llm={"model": "fake", "base_url": server.base_url})
        check_run_config(cfg)
        assert server.state.total == 0  # GET /models only: no chat request, nothing billed
