"""Known answers for the LLM path through the real CLI: planted latents on the real MiniLM.

A planted TopK SAE is built on MiniLM's residual stream after block 0 (the CLI's earliest `--layer`;
the embedding output itself is not selectable, sae/data/subject.py): for each of 8 trigger tokens, one
latent whose encoder column and bias fire on exactly that token's occurrences in the test corpus and
nowhere else (checked with the SAE's own `encode` before the run, and against the run's `latent_acts`
after it); 8 more latents never fire. It is saved with `save_sae` and given to `latent-atlas run --sae`.

The oracle server (tests/fixtures/llm_server.py) follows the prompts honestly: as explainer it names the
most frequent <<marked>> token, as simulator it marks the tokens the explanation quotes. So an exact
pipeline gives every planted latent precision and recall 1: we ask >= 0.95 on the score set (population
"sampled") and on the corpus (population "natural", estimator "ipw": weighted from the score set), with
and without logprobs, batched (the default 10 windows per simulation request) and one window per request.
The random baseline must stay near the latents' base rate; N2G's exact natural scores must be >= 0.95.

Store A gets the N2G run and both logprobs variants; store B is a copy of A taken after the N2G run and
gets the written variants. The server's logprobs behaviour is transport, part of no resume key, so the
written variants need a store whose response cache holds no logprobs replies.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from fixtures.llm_server import LLMTestServer

from flows.cli.main import main
from flows.config import RunConfig
from flows.stages.data import build_contexts, cache_activations, load_subject, read_contexts
from flows.stages.latents import latent_acts_dir
from flows.store import Store
from sae.config import SAEConfig
from sae.data.activation_files import open_activations
from sae.formats import save_sae
from sae.model import TopKSAE

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

N_CONTEXTS, LAYER = 240, 0
N_PLANTED, N_LATENTS, K = 8, 16, 2
MIN_SCORE = 0.95
RANDOM_MAX = 0.05
"""Bound on the random baseline's precision and recall. An explanation that carries no information about
the latent has expected precision equal to the latent's base rate, which we assert is <= MAX_BASE_RATE
(measured <= 0.018 on the score sets, <= 0.012 on the corpus); here the donor's trigger never coincides
with the recipient's, so the exact answer is 0 and anything above 2.5x the base rate means a leak."""
MAX_BASE_RATE = 0.02
VARIANTS = {  # name: (store, server logprobs, windows per simulation request, expected scores.mode)
    "logprobs-batched": ("A", "full", 10, "logprobs"),
    "logprobs-single": ("A", "full", 1, "logprobs"),
    "written-batched": ("B", "ignore", 10, "written"),
    "written-single": ("B", "ignore", 1, "written"),
}


@dataclass
class Planted:
    store: Path
    sae_dir: Path
    triggers: list[str]
    """triggers[j]: the token latent j fires on."""
    firing: set[tuple[int, int, int]]
    """(ctx_id, pos, latent) of every planted activation on the corpus."""


def choose_triggers(tokens: np.ndarray, ctx_index: np.ndarray, x_n: torch.Tensor, n: int
                    ) -> list[tuple[str, torch.Tensor, float, float]]:
    """(token, direction, midpoint, half gap) of the n most frequent whole-word tokens that occur in 20-60%
    of the contexts, have no "##" twin (the simulator sees word pieces without "##") and whose
    occurrences a linear score separates exactly from every other token: direction = mean normalised
    activation at the occurrences minus the mean elsewhere."""
    counts = Counter(tokens.tolist())
    twins = {t[2:] for t in counts if t.startswith("##")}
    n_ctx = int(ctx_index.max()) + 1
    chosen = []
    for token, _ in counts.most_common():
        if not (token.isalpha() and len(token) > 1 and token not in twins):
            continue
        at = torch.from_numpy(tokens == token)
        if not 0.2 <= len(np.unique(ctx_index[at.numpy()])) / n_ctx <= 0.6:
            continue
        direction = x_n[at].mean(0) - x_n[~at].mean(0)
        score = x_n @ direction
        lo, hi = float(score[at].min()), float(score[~at].max())
        if lo - hi > 1e-3 * max(abs(lo), abs(hi)):  # a clear margin, not float noise
            chosen.append((token, direction, (lo + hi) / 2, (lo - hi) / 2))
        if len(chosen) == n:
            break
    assert len(chosen) == n, f"only {len(chosen)} separable trigger tokens"
    return chosen


def build_planted(store: Path, sae_dir: Path) -> Planted:
    """Contexts and layer-0 activations computed by the pipeline's own data stage (the CLI reuses them),
    then the planted SAE, verified on the whole corpus with TopKSAE.encode."""
    cfg = RunConfig(store=str(store), data={"max_contexts": N_CONTEXTS, "layer": LAYER})
    subject = load_subject(cfg)
    ds, corpus_fp = build_contexts(cfg, subject)
    ref = cache_activations(cfg, subject, ds, corpus_fp, LAYER)
    contexts = read_contexts(Store(store), ds)  # activation row r * T + t is context r, token t
    tokens = np.array([t for row in contexts["tokens"].to_list() for t in row])
    ctx_ids = np.repeat(contexts["ctx_id"].to_numpy(), ref.ctx_len)
    positions = np.tile(np.arange(ref.ctx_len), contexts.height)
    acts = torch.from_numpy(np.array(open_activations(ref.activations_path), dtype=np.float32))

    sae = TopKSAE(SAEConfig(d_in=ref.d_model, n_latents=N_LATENTS, k=K))  # layer_norm inputs, as trained SAEs
    x_n, _ = sae.normalize(acts)
    chosen = choose_triggers(tokens, np.repeat(np.arange(contexts.height), ref.ctx_len), x_n, N_PLANTED)
    w_enc = torch.zeros(ref.d_model, N_LATENTS)
    b_enc = torch.full((N_LATENTS,), -1.0)  # latents N_PLANTED.. have a zero column: pre-activation -1 everywhere
    w_dec = torch.randn(N_LATENTS, ref.d_model, generator=torch.Generator().manual_seed(0))
    for j, (_, direction, mid, half) in enumerate(chosen):
        # pre = (x_n @ direction - mid) / half: >= 1 at every occurrence, <= -1 at every other token
        w_enc[:, j], b_enc[j], w_dec[j] = direction / half, -mid / half, direction
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.b_enc.copy_(b_enc)
        sae.b_dec.zero_()  # so pre = (x_n - b_dec) @ W_enc + b_enc = x_n @ W_enc + b_enc
        sae.W_dec.copy_(w_dec / w_dec.norm(dim=1, keepdim=True))
        values, indices = sae.encode(acts)
    triggers = [token for token, *_ in chosen]
    for j, token in enumerate(triggers):
        fires = ((indices == j) & (values > 0)).any(1).numpy()
        assert np.array_equal(fires, tokens == token), f"latent {j} does not fire exactly on {token!r}"
    assert not ((indices >= N_PLANTED) & (values > 0)).any(), "an unplanted latent fires"
    save_sae(sae, sae_dir, metadata={"model_name": subject.name, "layer": LAYER, "triggers": triggers})
    firing = {(int(c), int(p), j) for j, token in enumerate(triggers)
              for c, p in zip(ctx_ids[tokens == token], positions[tokens == token], strict=True)}
    log.info("planted triggers %s: %d activations on %d tokens", triggers, len(firing), len(tokens))
    return Planted(store, sae_dir, triggers, firing)


def run_cli(planted: Planted, store: Path, *extra: str) -> str:
    """`latent-atlas run` on the planted SAE; returns the run's id (its rows carry it)."""
    args = ["run", "--store", str(store), "--max-contexts", str(N_CONTEXTS), "--layer", str(LAYER),
            "--sae", str(planted.sae_dir), *extra]
    assert main(args) == 0
    run = Store(store).read("runs").sort("started_at").row(-1, named=True)
    assert run["status"] == "ok", run["error"]
    return run["run_id"]


def llm_args(base_url: str) -> list[str]:
    return ["--explainer", "llm", "--llm-model", "fake-model", "--llm-base-url", base_url, "--scorer", "simulation"]


@dataclass
class LLMRun:
    store: Path
    run_id: str
    window_counts: list[int]
    """Windows per simulation request the server received."""
    asked_logprobs: bool


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Planted:
    root = tmp_path_factory.mktemp("planted")
    return build_planted(root / "A", root / "sae")


@pytest.fixture(scope="module")
def runs(planted: Planted, prefect_server) -> dict[str, LLMRun | str]:  # noqa: ANN001
    """The N2G run (its run id under "n2g") and every LLM variant, each against a fresh oracle server."""
    out: dict[str, LLMRun | str] = {"n2g": run_cli(planted, planted.store)}
    stores = {"A": planted.store, "B": planted.store.parent / "B"}
    shutil.copytree(stores["A"], stores["B"])
    for name, (store, logprobs, per_call, _) in VARIANTS.items():
        with LLMTestServer(logprobs=logprobs) as server:
            run_id = run_cli(planted, stores[store], *llm_args(server.base_url),
                             "--simulator-windows-per-call", str(per_call))
            asked = any(b.get("logprobs") for b in server.state.bodies)
            out[name] = LLMRun(stores[store], run_id, server.simulate_window_counts(), asked)
    return out


def scores(store: Path, run_id: str, explainer: str, population: str, estimator: str = "sample"
           ) -> pl.DataFrame:
    """The simulation score rows `run_id` wrote for (explainer, population, estimator), by latent."""
    return (Store(store).read("scores")
            .filter((pl.col("run_id") == run_id) & (pl.col("explainer") == explainer)
                    & (pl.col("scorer") == "simulation") & (pl.col("population") == population)
                    & (pl.col("estimator") == estimator))
            .sort("latent"))


def assert_planted_scores(rows: pl.DataFrame, what: str) -> None:
    log.info("%s:\n%s", what, rows.select("latent", "precision", "recall", "mode", "n_tokens", "n_positive"))
    assert rows["latent"].to_list() == list(range(N_PLANTED)), what
    for row in rows.iter_rows(named=True):
        assert row["precision"] >= MIN_SCORE and row["recall"] >= MIN_SCORE, (what, row)


def test_the_pipeline_encodes_exactly_the_planted_firing(planted: Planted, runs) -> None:  # noqa: ANN001
    store = Store(planted.store)
    (sid,) = set(store.read("scores").filter(pl.col("run_id") == runs["n2g"])["sae_id"])
    acts = pl.read_parquet(latent_acts_dir(store, sid) / "*.parquet")
    assert set(acts.select("ctx_id", "pos", "latent").iter_rows()) == planted.firing
    stats = store.read("latent_stats").filter(pl.col("sae_id") == sid).sort("latent")
    assert stats.filter(pl.col("status") == "ok")["latent"].to_list() == list(range(N_PLANTED))


@pytest.mark.parametrize("store", ["A", "B"])
def test_every_llm_explanation_names_its_trigger(planted: Planted, runs, store: str) -> None:  # noqa: ANN001
    run = runs["logprobs-batched" if store == "A" else "written-batched"]
    expl = (Store(run.store).read("explanations")
            .filter((pl.col("run_id") == run.run_id) & (pl.col("explainer") == "llm")).sort("latent"))
    assert expl["latent"].to_list() == list(range(N_PLANTED))
    for latent, status, text in expl.select("latent", "status", "explanation").iter_rows():
        assert status == "ok" and re.findall(r'"([^"]+)"', text) == [planted.triggers[latent]], (latent, text)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sampled_scores_of_planted_latents(runs, variant: str) -> None:  # noqa: ANN001
    rows = scores(runs[variant].store, runs[variant].run_id, "llm", "sampled")
    assert_planted_scores(rows, f"{variant} llm sampled")
    assert set(rows["mode"]) == {VARIANTS[variant][3]}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_natural_scores_of_planted_latents(runs, variant: str) -> None:  # noqa: ANN001
    """Free-text explanations get natural rows estimated from the score set (inverse-probability weights)."""
    rows = scores(runs[variant].store, runs[variant].run_id, "llm", "natural", "ipw")
    assert_planted_scores(rows, f"{variant} llm natural (ipw)")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_simulation_requests_carry_the_windows_asked_for(runs, variant: str) -> None:  # noqa: ANN001
    run, per_call = runs[variant], VARIANTS[variant][2]
    counts = run.window_counts
    assert counts and run.asked_logprobs  # the client asks; the "ignore" server answers without them
    if per_call == 1:
        assert set(counts) == {1}
    else:
        assert max(counts) == per_call and min(counts) >= 1
    # every score window of the planted latents and of their random baseline is asked once: in a request,
    # or answered by the response cache when an identical prompt was already sent (a random-baseline
    # explanation is another latent's, and the two score sets can share a window)
    keys = scores(run.store, run.run_id, "llm", "sampled")["score_key"].to_list()
    keys += scores(run.store, run.run_id, "llm-random", "sampled")["score_key"].to_list()
    n_windows = Store(run.store).read("simulations").filter(pl.col("score_key").is_in(keys)).height
    calls = Store(run.store).read("llm_calls").filter((pl.col("run_id") == run.run_id)
                                                      & (pl.col("purpose") == "simulation"))
    sent, cached = (calls.filter(pl.col("status") == status).height for status in ("ok", "cached"))
    assert n_windows > 0 and sent == len(counts) and calls.height == sent + cached
    assert sum(counts) <= n_windows <= sum(counts) + per_call * cached
    if per_call == 1:
        assert sum(counts) + cached == n_windows


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_random_baseline_stays_at_the_base_rate(runs, variant: str) -> None:  # noqa: ANN001
    run = runs[variant]
    for population, estimator in (("sampled", "sample"), ("natural", "ipw")):
        rows = scores(run.store, run.run_id, "llm-random", population, estimator)
        log.info("%s llm-random %s:\n%s", variant, population, rows.select("latent", "precision", "recall",
                                                                         "n_tokens", "n_positive"))
        assert rows["latent"].to_list() == list(range(N_PLANTED)), population
        assert (rows["n_positive"] / rows["n_tokens"]).max() <= MAX_BASE_RATE, population
        assert rows["precision"].max() <= RANDOM_MAX and rows["recall"].max() <= RANDOM_MAX, population


def test_n2g_natural_scores_of_planted_latents(planted: Planted, runs) -> None:  # noqa: ANN001
    rows = scores(planted.store, runs["n2g"], "n2g", "natural", "exact")
    assert_planted_scores(rows, "n2g natural (exact)")


def test_top_logprobs_zero_after_a_logprobs_run_is_written(planted: Planted, runs) -> None:  # noqa: ANN001
    with LLMTestServer() as server:
        run_id = run_cli(planted, planted.store, *llm_args(server.base_url), "--llm-top-logprobs", "0")
        assert not any(b.get("logprobs") for b in server.state.bodies)
    rows = scores(planted.store, run_id, "llm", "sampled")
    assert_planted_scores(rows, "top-logprobs 0 llm sampled")
    assert set(rows["mode"]) == {"written"}
