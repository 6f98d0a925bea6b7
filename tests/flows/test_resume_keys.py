"""Resume keys: a changed setting recomputes its stage and every later one, old rows stay, an unchanged
rerun does nothing; inputs are named by content, not by path or by what else the store holds."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.cli.main import main
from flows.config import NOT_IN_KEY, RunConfig
from flows.store import Store
from flows.store.ids import ctx_id_base, explain_key, sae_id, sample_key, score_key, stats_key

TINY_FLAGS = ["--max-contexts", "160", "--layer", "2", "--n-latents", "512", "--k", "16", "--dead-tokens", "20000",
              "--train-tokens", "40000", "--train-batch-size", "1024", "--max-latents", "60"]
"""The session's tiny run (tests/conftest.py TINY_RUN) as CLI flags."""
SMALL_FLAGS = ["--max-contexts", "90", "--layer", "2", "--n-latents", "256", "--k", "8", "--dead-tokens", "20000",
               "--train-tokens", "20000", "--train-batch-size", "1024", "--max-latents", "20"]
STAGE_TABLES = ("examples", "explanations", "simulations", "scores")


def test_every_key_field_changes_its_key_and_speed_settings_do_not():
    base = RunConfig()

    def trained_sae_id(cfg: RunConfig) -> str:
        return sae_id(cfg, "pydoc", "bert", "weights-hash", 3, 384)

    for group, keyfn in (("stats", stats_key), ("sampling", sample_key), ("train", trained_sae_id)):
        for name, value in getattr(base, group).model_dump().items():
            if name == "seed" or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            bumped = (value / 2 or 0.01) if isinstance(value, float) else value + 1  # fractions stay below 1
            changed = base.model_copy(update={group: getattr(base, group).model_copy(update={name: bumped})})
            same = keyfn(changed) == keyfn(base)
            assert same == (name in NOT_IN_KEY.get(group, ())), (group, name)
    # a stats setting also changes the sample key (examples depend on which latents qualify)
    stats = base.model_copy(update={"stats": base.stats.model_copy(update={"min_contexts": 3})})
    assert sample_key(stats) != sample_key(base)
    assert sample_key(RunConfig(seed=1)) != sample_key(base)
    one = explain_key("s", {"explainer": "llm", "model": "a", "prompt_version": "llm-v1"})
    assert one != explain_key("s", {"explainer": "llm", "model": "a", "prompt_version": "llm-v2"})
    assert one != explain_key("s", {"explainer": "llm", "model": "b", "prompt_version": "llm-v1"})
    assert score_key(one, {"scorer": "simulation"}) != score_key(one, {"scorer": "detection"})


def test_ctx_ids_are_unique_per_dataset_and_keep_their_index_in_the_low_bits():
    a, b = ctx_id_base("pydoc-topics-1234abcd"), ctx_id_base("notes-99999999")
    assert a != b and a % (1 << 32) == 0 and b % (1 << 32) == 0
    assert 0 < a < (1 << 63) and 0 < b < (1 << 63)


def _rows(store: Store) -> dict[str, int]:
    return {t: store.read(t).height for t in STAGE_TABLES}


def _parts(store: Store) -> dict[str, int]:
    return {t: len(store.parts(t)) for t in (*STAGE_TABLES, "contexts", "latent_stats")}


@pytest.mark.integration
def test_a_changed_sampling_setting_recomputes_from_examples_on(tiny_run, tmp_path):
    cfg, _ = tiny_run
    store_dir = tmp_path / "store"
    shutil.copytree(cfg.store, store_dir)
    store = Store(store_dir)
    argv = ["run", "--store", str(store_dir), *TINY_FLAGS]
    assert main(argv) == 0  # the session's run, from the CLI: nothing to do
    before_rows, before_parts = _rows(store), _parts(store)
    old_keys = set(store.read("examples")["sample_key"])

    assert main([*argv, "--sampling-window", "16"]) == 0
    after = _rows(store)
    for table in STAGE_TABLES:
        assert after[table] > before_rows[table], table
    examples = store.read("examples")
    assert set(examples["sample_key"]) > old_keys  # a new key beside the old one
    old = examples.filter(pl.col("sample_key").is_in(sorted(old_keys)))
    assert old.height == before_rows["examples"]  # the old rows stay
    assert examples.filter(~pl.col("sample_key").is_in(sorted(old_keys)))["acts"].list.len().max() == 16
    assert _parts(store)["contexts"] == before_parts["contexts"]  # upstream stages were not redone
    assert _parts(store)["latent_stats"] == before_parts["latent_stats"]

    parts = _parts(store)
    assert main([*argv, "--sampling-window", "16"]) == 0  # identical rerun: nothing added
    assert _parts(store) == parts


@pytest.fixture(scope="module")
def corpus_runs(prefect_server, tmp_path_factory):
    """Store one: corpus X at a/x.txt, the same text at b/y.txt, then X edited (a second dataset).
    Store two: the edited text alone (its first dataset)."""
    from sae.data.corpus import load_texts

    root = tmp_path_factory.mktemp("corpus")
    text = "\n\n".join(load_texts(None)[:120])
    (root / "a").mkdir()
    (root / "b").mkdir()
    (root / "a" / "x.txt").write_text(text)
    (root / "b" / "y.txt").write_text(text)
    one, two = root / "store-one", root / "store-two"
    snapshots = {}
    assert main(["run", "--store", str(one), "--corpus", str(root / "a" / "x.txt"), *SMALL_FLAGS]) == 0
    snapshots["first"] = _parts(Store(one))
    assert main(["run", "--store", str(one), "--corpus", str(root / "b" / "y.txt"), *SMALL_FLAGS]) == 0
    snapshots["other_path"] = _parts(Store(one))
    edited = text.replace("the", "a", 50)
    (root / "a" / "x.txt").write_text(edited)
    assert main(["run", "--store", str(one), "--corpus", str(root / "a" / "x.txt"), *SMALL_FLAGS]) == 0
    snapshots["edited"] = _parts(Store(one))
    (root / "c").mkdir()
    (root / "c" / "z.txt").write_text(edited)
    assert main(["run", "--store", str(two), "--corpus", str(root / "c" / "z.txt"), *SMALL_FLAGS]) == 0
    return Store(one), Store(two), snapshots


@pytest.mark.integration
def test_the_same_corpus_under_two_paths_is_computed_once(corpus_runs):
    _, _, snapshots = corpus_runs
    assert snapshots["other_path"] == snapshots["first"]


@pytest.mark.integration
def test_editing_the_corpus_recomputes_from_the_contexts_on(corpus_runs):
    one, _, snapshots = corpus_runs
    assert one.read("contexts")["dataset_id"].n_unique() == 2
    assert one.read("scores")["sae_id"].n_unique() == 2
    for table, n in snapshots["first"].items():
        assert snapshots["edited"][table] > n, table


@pytest.mark.integration
def test_a_dataset_scores_the_same_whether_first_or_second_in_a_store(corpus_runs):
    one, two, _ = corpus_runs
    alone = two.read("scores")
    (sid,) = alone["sae_id"].unique().to_list()
    columns = ["latent", "explainer", "scorer", "population", "estimator", "precision", "recall", "f1", "auroc",
               "correlation"]
    order = ["explainer", "population", "estimator", "latent"]
    second = one.read("scores").filter(pl.col("sae_id") == sid)
    assert second.height == alone.height > 0
    assert second.select(columns).sort(order).equals(alone.select(columns).sort(order))
    assert Path(one.sae_dir(sid)).exists()


def test_the_default_learning_rate_is_keyed_by_its_value(monkeypatch):
    """lr None is a formula (LR_BASE / sqrt(n / 2^14) / sqrt(d_in / 384)): a release that changes LR_BASE must
    not reuse SAEs trained at the old value, an explicit lr equal to the formula's is the same SAE, and the
    input width the formula reads is keyed."""
    import sae.config
    from flows.store.ids import sae_id

    cfg = RunConfig()
    args = ("data", "bert", "fp", 3, 384)
    default = sae_id(cfg, *args)
    explicit = cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"lr": cfg.train.resolved_lr(cfg.sae.n_latents, 384)})})
    assert sae_id(explicit, *args) == default
    monkeypatch.setattr(sae.config, "LR_BASE", sae.config.LR_BASE * 2)
    assert sae_id(cfg, *args) != default
    assert sae_id(cfg, "data", "bert", "fp", 3, 768) != sae_id(cfg, "data", "bert", "fp", 3, 1536)
