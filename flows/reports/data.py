"""Load the store tables the reports need, deduplicate reruns, and group rows by latent once.

Every table is read once (filtered to one SAE if asked) and turned into plain Python rows grouped by
(sae_id, latent), so building thousands of pages never re-filters a full table.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from flows.store import Store
from flows.store.rows import latest_rows
from score.baselines import PATTERN_BASELINES, RANDOM_SUFFIX

log = logging.getLogger(__name__)

LatentKey = tuple[str, int]


@dataclass
class TokenText:
    """Display form of one context's tokens: separator and raw text per token ([ctx_len]); the browser
    escapes them (textContent), so they stay raw here."""

    seps: list[str]
    texts: list[str]
    plain: list[str] = field(default_factory=list)
    """seps[i] + texts[i], precomputed: how an inactive token is shown."""

    def __post_init__(self) -> None:
        if not self.plain:
            self.plain = [sep + text for sep, text in zip(self.seps, self.texts, strict=True)]

    def window(self, start: int, n: int) -> TokenText:
        end = start + n
        return TokenText(seps=self.seps[start:end], texts=self.texts[start:end], plain=self.plain[start:end])


@dataclass
class ReportData:
    """Everything the pages show, grouped by (sae_id, latent)."""

    stats: dict[LatentKey, dict] = field(default_factory=dict)
    explanations: dict[LatentKey, list[dict]] = field(default_factory=dict)
    scores: dict[LatentKey, list[dict]] = field(default_factory=dict)
    examples: dict[LatentKey, list[dict]] = field(default_factory=dict)
    simulations: dict[LatentKey, list[dict]] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    tokens: dict[int, TokenText] = field(default_factory=dict)

    def latent_keys(self) -> list[LatentKey]:
        """Every latent that has stats, an explanation or a score, sorted."""
        return sorted(set(self.stats) | set(self.explanations) | set(self.scores))


def is_baseline(explainer: str) -> bool:
    """Random (`<explainer>-random`) and pattern baselines (top-token, always-on): reference rows, not explanations."""
    return explainer.endswith(RANDOM_SUFFIX) or explainer in PATTERN_BASELINES


def load_report_data(store: Store, sae_id: str | None = None, keys: dict[str, set[str]] | None = None,
                     latent: int | None = None, examples: bool = True,
                     latent_range: tuple[int, int] | None = None) -> ReportData:
    """Read runs, latent_stats, explanations, scores, examples, simulations and contexts from `store`.

    Rows are those of `keys` (a run's own resume keys, merged per key column) when given, else those of
    the settings of each SAE's newest ok run (`runs.keys`, `current_keys`), so a rerun with changed
    settings replaces what the pages show while the old rows stay in the tables. `latent`: that latent
    only (a served page); `latent_range`: latents lo <= latent < hi (the export, a slice at a time, so its
    memory stays bounded); `examples=False`: no examples, simulations or tokens (the dashboard's index).
    """
    runs = _read(store, "runs", None)
    keys = current_keys(runs, sae_id) if keys is None else keys

    def where(column: str) -> pl.Expr | None:
        by_key = _in_keys(keys, column)
        if latent is not None:
            some = pl.col("latent") == latent
        elif latent_range is not None:
            some = pl.col("latent").is_between(latent_range[0], latent_range[1], closed="left")
        else:
            return by_key
        return some if by_key is None else by_key & some

    example_rows = _latest(_read(store, "examples", sae_id, where("sample_key")),
                           ["sae_id", "latent", "split", "kind", "ctx_id", "start"]) if examples else pl.DataFrame()
    stats = _latest(_read(store, "latent_stats", sae_id, where("stats_key")), ["sae_id", "latent"])
    explanations = _read(store, "explanations", sae_id, where("explain_key"))
    simulations = _real_simulations(store, sae_id, where("score_key")) if examples else pl.DataFrame()
    data = ReportData(
        stats={k: rows[0] for k, rows in _grouped(stats).items()},
        explanations=_grouped(_latest_explanations(explanations)),
        scores=_grouped(_latest_scores(_read(store, "scores", sae_id, where("score_key")), runs)),
        examples=_grouped(example_rows, array_columns=("acts",)),
        simulations=_grouped(simulations, array_columns=("true_acts", "sim_acts")),
        runs=_recent_runs(runs),
    )
    data.tokens = _context_tokens(store, example_rows)
    log.info("reports: %d latents, %d contexts with tokens", len(data.latent_keys()), len(data.tokens))
    return data


def _read(store: Store, table: str, sae_id: str | None, where: pl.Expr | None = None) -> pl.DataFrame:
    """A whole table (empty frame if missing), filtered to one SAE and by `where` before loading."""
    if not store.has(table):
        return pl.DataFrame()
    frame = store.scan(table)
    if sae_id is not None and "sae_id" in frame.collect_schema().names():
        frame = frame.filter(pl.col("sae_id") == sae_id)
    if where is not None:
        frame = frame.filter(where)
    return frame.collect()


def _latest(frame: pl.DataFrame, key: list[str], order: str | list[str] | None = None) -> pl.DataFrame:
    """The newest row of each key (rows of a rerun replace those of the run before).

    Key or order columns missing from the frame (a store written before they existed) are left out.
    """
    present = [k for k in key if k in frame.columns]
    if frame.height == 0 or not present:
        return frame
    orders = [o for o in ([order] if isinstance(order, str) else order or []) if o in frame.columns]
    return latest_rows(frame, present, orders or None)


def _latest_explanations(frame: pl.DataFrame) -> pl.DataFrame:
    return _latest(frame, ["sae_id", "latent", "explainer"], "created_at")


HEADLINE_RANK = {("natural", "exact"): 3, ("natural", None): 3, ("natural", "ipw"): 2}
"""Which row of a (latent, explainer, scorer) is the headline: the exact natural row (pattern explanations;
a null estimator is a store written before estimators existed, when natural rows were all exact), else
the ipw estimate of the natural population, else the sampled row (rank 0)."""


def _headline_rank() -> pl.Expr:
    rank = pl.lit(0, dtype=pl.Int8)
    for (population, estimator), value in HEADLINE_RANK.items():
        same = pl.col("estimator").is_null() if estimator is None else pl.col("estimator") == estimator
        rank = pl.when((pl.col("population") == population) & same).then(pl.lit(value, dtype=pl.Int8)).otherwise(rank)
    return rank


def _latest_scores(scores: pl.DataFrame, runs: pl.DataFrame) -> pl.DataFrame:
    """One score row per (sae_id, latent, explainer, scorer): the one of the most recently started run,
    its headline row by HEADLINE_RANK (exact natural > ipw natural > sampled)."""
    key = ["sae_id", "latent", "explainer", "scorer"]
    if scores.height and "population" in scores.columns:
        if "estimator" not in scores.columns:
            scores = scores.with_columns(pl.lit(None, dtype=pl.String).alias("estimator"))
        scores = scores.with_columns(_headline_rank().alias("_natural"))
    if scores.height and "run_id" in scores.columns and {"run_id", "started_at"} <= set(runs.columns):
        started = runs.select("run_id", pl.col("started_at").cast(pl.String).alias("_started"))
        started = started.unique(subset=["run_id"], keep="last")
        scores = scores.join(started, on="run_id", how="left", maintain_order="left")
        order = ["_started", "_natural"] if "_natural" in scores.columns else "_started"
        return _latest(scores, key, order).drop("_started", "_natural", strict=False)
    return _latest(scores, key, "_natural" if "_natural" in scores.columns else None).drop("_natural",
                                                                                         strict=False)


def _real_simulations(store: Store, sae_id: str | None, where: pl.Expr | None) -> pl.DataFrame:
    """Simulations of real explainers only: the pages never show a random baseline's simulation."""
    real = ~pl.col("explainer").str.ends_with(RANDOM_SUFFIX)
    return _read(store, "simulations", sae_id, real if where is None else real & where)


def merged_keys(keys: dict) -> dict[str, set[str]]:
    """A run's `keys` ({"stats_key": k, "score_keys": [...], ...}) as sets per key column ("score_key": {...})."""
    merged: dict[str, set[str]] = {}
    for name, value in keys.items():
        column = name[:-1] if name.endswith("_keys") else name  # "score_keys" -> score_key values
        merged.setdefault(column, set()).update(value if isinstance(value, list) else [value])
    return merged


def current_keys(runs: pl.DataFrame, sae_id: str | None) -> dict[str, set[str]]:
    """Resume keys of the newest ok run that scored, per SAE (of `sae_id` only, when given), merged per key name.

    Empty when no run recorded keys (a store written before they existed): then nothing is filtered.
    """
    if runs.is_empty() or not {"keys", "inputs", "status"} <= set(runs.columns):
        return {}
    ok = runs.filter((pl.col("status") == "ok") & pl.col("keys").is_not_null()).sort("started_at")
    newest: dict[str, dict] = {}
    for keys_json, inputs_json in ok.select("keys", "inputs").iter_rows():
        run_sae, keys = json.loads(inputs_json or "{}").get("sae_id"), json.loads(keys_json)
        # only runs that scored say which rows are current (an `explain` alone names no score keys)
        if run_sae and (sae_id is None or run_sae == sae_id) and keys.get("score_keys"):
            newest[run_sae] = keys
    merged: dict[str, set[str]] = {}
    for keys in newest.values():
        for column, values in merged_keys(keys).items():
            merged.setdefault(column, set()).update(values)
    return merged


def _in_keys(keys: dict[str, set[str]], column: str) -> pl.Expr | None:
    """Filter to the current keys of `column`, or None (no filter) when no run recorded them."""
    return pl.col(column).is_in(sorted(keys[column])) if column in keys else None


def _grouped(frame: pl.DataFrame, array_columns: tuple[str, ...] = ()) -> dict[LatentKey, list[dict]]:
    """Rows as dicts grouped by (sae_id, latent), table order kept; one pass over the frame.

    `array_columns` (list[float] columns) come back as float32 numpy views into one flat buffer per
    column instead of Python lists: millions of activations stay compact and slice fast. Each also gets
    a `<column>_max` entry (0.0 for an empty list), computed once for the whole column.
    """
    if frame.height == 0 or not {"sae_id", "latent"} <= set(frame.columns):
        return {}
    arrays = {c: _row_arrays(frame.get_column(c)) for c in array_columns if c in frame.columns}
    scalars = frame.drop(list(arrays)).with_columns(
        frame.get_column(c).list.max().cast(pl.Float64).fill_null(0.0).alias(f"{c}_max") for c in arrays
    )
    groups: dict[LatentKey, list[dict]] = defaultdict(list)
    for i, row in enumerate(scalars.iter_rows(named=True)):
        for name, values in arrays.items():
            row[name] = values[i]
        groups[(row["sae_id"], int(row["latent"]))].append(row)
    return dict(groups)


def _row_arrays(column: pl.Series) -> list[np.ndarray]:
    """A list[float] column as one float32 numpy view per row ([len(row)] each; nulls become empty)."""
    lengths = column.list.len().fill_null(0).to_numpy()
    nonempty = column.filter(column.list.len().fill_null(0) > 0)
    flat = nonempty.explode().cast(pl.Float32).fill_null(0.0).to_numpy()
    ends = np.cumsum(lengths)
    return [flat[end - n : end] for end, n in zip(ends.tolist(), lengths.tolist(), strict=True)]


def _recent_runs(runs: pl.DataFrame, limit: int = 10) -> list[dict]:
    if runs.height == 0:
        return []
    if "started_at" in runs.columns:
        runs = runs.sort("started_at", descending=True, nulls_last=True)
    keep = [c for c in ("run_id", "flow", "status", "started_at", "finished_at", "code_version") if c in runs.columns]
    return runs.select(keep).head(limit).to_dicts()


def _context_tokens(store: Store, examples: pl.DataFrame) -> dict[int, TokenText]:
    """Display tokens of every context that an example points into."""
    if examples.height == 0 or not store.has("contexts"):
        return {}
    wanted = examples.get_column("ctx_id").unique().implode()
    contexts = store.scan("contexts").filter(pl.col("ctx_id").is_in(wanted)).select("ctx_id", "tokens").collect()
    if contexts.get_column("ctx_id").n_unique() != contexts.height:
        log.warning("contexts: a ctx_id appears in several datasets; showing the last one's tokens")
    sample = [t for toks in contexts.get_column("tokens").head(50).to_list() for t in toks]
    bpe = any(t[:1] in ("Ġ", "▁") for t in sample)
    return {
        int(ctx_id): display_tokens(tokens, bpe)
        for ctx_id, tokens in zip(contexts["ctx_id"].to_list(), contexts["tokens"].to_list(), strict=True)
    }


def display_tokens(tokens: list[str], bpe: bool) -> TokenText:
    """Readable token text (raw, not escaped): WordPiece `##x` joins the previous token; BPE `Ġx`/`▁x` starts a word."""
    seps, texts = [], []
    for i, token in enumerate(tokens):
        if bpe:
            spaced = token[:1] in ("Ġ", "▁")
            sep, text = (" ", token[1:]) if spaced else ("", token)
            text = text.replace("Ċ", "↵")
        elif token.startswith("##"):
            sep, text = "", token[2:]
        else:
            sep, text = (" " if i else ""), token
        seps.append(sep)
        texts.append(text)
    return TokenText(seps=seps, texts=texts)


def parse_patterns(value: object) -> list[dict]:
    """N2G patterns from an explanations row: a JSON string, a list of structs, or nothing."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return []
    return [p for p in value if isinstance(p, dict)] if isinstance(value, list) else []
