"""The store contract: every table, what one row is, its key columns and its typed columns, in order.

This module is the single declaration of the store's tables: `Store` takes its table names from it,
`Store.append` checks and casts every frame against it, `Store.ensure_tables` creates empty tables
from it, and docs/store.md (`python -m flows.store.schemas`) and README.md's table list are generated
from it (tests/flows/test_store.py fails when they drift). To add a column: declare it here, make
every producer write it, regenerate docs/store.md; parts written before read back with nulls there.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import polars as pl

from flows.store.checks import VALUE_CHECKS, ValueCheck, check_values
from score.intervals import INTERVAL_COLUMNS

__all__ = [
    "SCHEMAS",
    "Column",
    "TableSchema",
    "VALUE_CHECKS",
    "ValueCheck",
    "check_values",
    "conform",
    "markdown_summary",
    "markdown_tables",
    "table_schema",
]

UTC_TIME = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class Column:
    """One column: name, polars dtype, one-line meaning."""

    name: str
    dtype: pl.DataType
    description: str


@dataclass(frozen=True)
class TableSchema:
    """One table of the store."""

    name: str
    row: str
    """What one row is ("one row per ...")."""
    description: str
    key: tuple[str, ...]
    """The columns that identify a row; appending a row with an existing key supersedes the old one."""
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    def empty(self) -> pl.DataFrame:
        """A frame with no rows and exactly this table's columns and dtypes."""
        return pl.DataFrame(schema=self.schema)


def _table(name: str, row: str, description: str, key: tuple[str, ...],
           columns: list[tuple[str, pl.DataType, str]]) -> TableSchema:
    # Tuples keep the declarations below one line per column; the checks catch typos in `key`.
    table = TableSchema(name, row, description, key, tuple(Column(*c) for c in columns))
    if len(set(table.names)) != len(table.names) or not set(key) <= set(table.names):
        raise ValueError(f"table {name!r}: duplicate column names or key columns that are not columns")
    return table


_SAE_ID = ("sae_id", pl.String(), "the SAE (flows/store/ids.py::sae_id); its files are under `saes/<sae_id>/`")
_LATENT = ("latent", pl.Int32(), "latent index, 0 .. n_latents - 1")
_EXPLAINER = ("explainer", pl.String(), 'explainer name: "n2g", "llm", or `<explainer>-random` (its random baseline)')
_SCORER = ("scorer", pl.String(), 'scorer name: "simulation", "detection", "fuzzing"')
_RUN_ID = ("run_id", pl.String(), "the pipeline run that wrote the row (`runs.run_id`)")

_TABLES = [
    _table("runs", "pipeline run", "Written once when a run ends (ok, failed or interrupted), or by the next run "
           "that finds it was killed.", ("run_id",), [
        ("run_id", pl.String(), "run id, `run-<yyyymmdd-hhmmss, UTC>-<6 hex digits>`"),
        ("flow", pl.String(), 'what ran: "pipeline" (`run`) or a stage command ("explain", "score", ...)'),
        ("status", pl.String(), '"ok", "failed", "interrupted" (Ctrl-C) or "killed" (found dead by the next run)'),
        ("started_at", UTC_TIME, "when the run started"),
        ("finished_at", UTC_TIME, "when the run ended; null for a killed run"),
        ("config", pl.String(), "the run's RunConfig as JSON"),
        ("code_version", pl.String(), 'installed latent-atlas version ("unknown" when not installed)'),
        ("error", pl.String(), '`<ExceptionType>: <message>` of a failed run; "" when ok'),
        ("config_hash", pl.String(), "hash of every setting of the run except the store (equal settings, equal hash)"),
        ("keys", pl.String(), 'the resume keys the run used, as JSON {"stats_key": ..., "sample_key": ...}'),
        ("inputs", pl.String(), "fingerprints of the run's inputs as JSON: model, model_fingerprint, layer, "
                                "corpus_fingerprint, dataset_id, sae_id ({} when the run failed before them); "
                                "fvu_heldout and fvu_above_one (true: the SAE reconstructs worse than the mean)"),
    ]),
    _table("contexts", "context of a corpus", "Fixed-length token windows of a corpus, stored once per dataset.",
           ("ctx_id",), [
        ("dataset_id", pl.String(), "the dataset: corpus text, tokenizer and context length (flows/store/ids.py)"),
        ("ctx_id", pl.Int64(), "context id, unique across the store's datasets (dataset prefix, then index)"),
        ("token_ids", pl.List(pl.Int64()), "the context's token ids (ctx_len of them)"),
        ("tokens", pl.List(pl.String()), "the tokenizer's token strings, aligned with token_ids"),
    ]),
    _table("latent_stats", "latent of an SAE, per statistics setting",
           "Per-latent statistics from one streaming pass over latent_acts; status says which latents are "
           "explained.", ("sae_id", "stats_key", "latent"), [
        _SAE_ID,
        _LATENT,
        ("n_active", pl.Int64(), "tokens on which the latent is > 0"),
        ("n_contexts", pl.Int64(), "contexts in which the latent is > 0 at least once"),
        ("frequency", pl.Float64(), "n_active / number of cached tokens"),
        ("max_act", pl.Float32(), "largest activation"),
        ("mean_act", pl.Float32(), "mean activation over the tokens where it is active"),
        ("decile_edges", pl.List(pl.Float32()),
         "11 edges of the per-context max activation: min, deciles 10..90 %, max; empty when dead"),
        ("status", pl.String(), '"ok", "dead", "too_dense" or "too_few"; only "ok" latents are explained'),
        ("reason", pl.String(), 'why the latent is not "ok", readable; "" when ok'),
        ("cooccurring", pl.List(pl.Int32()), "latents most often active on the same tokens, most frequent first"),
        ("stats_key", pl.String(), "hash of the statistics settings (flows/store/ids.py::stats_key)"),
    ]),
    _table("latent_acts", "non-zero activation of a latent on a token",
           "The sparse latent cache. Written as `latent_acts/<sae_id>/part-NNNNNN.parquet`, staged and "
           "renamed into place as a whole; each part holds whole contexts.", ("sae_id", "ctx_id", "pos", "latent"), [
        ("ctx_id", pl.Int64(), "the context (`contexts.ctx_id`)"),
        ("pos", pl.Int32(), "token position in the context"),
        _LATENT,
        ("value", pl.Float32(), "the latent's (post-ReLU TopK) activation, > 0"),
        _SAE_ID,
    ]),
    _table("latent_logits", "output token a latent promotes or suppresses",
           "Logit lens of a causal LM's SAE (explain/latents/logit_lens.py): the top tokens of W_dec[latent] · W_U, "
           "written by the latent-cache stage; none for encoders (`saes/<sae_id>/logit_lens.json` says why).",
           ("sae_id", "latent", "direction", "rank"), [
        _SAE_ID,
        _LATENT,
        ("direction", pl.String(), '"promoted" (largest logits) or "suppressed" (smallest)'),
        ("rank", pl.Int32(), "0 for the strongest token of its direction"),
        ("token_id", pl.Int64(), "the token's id in the subject model's vocabulary"),
        ("token", pl.String(), "the tokenizer's token string"),
        ("logit", pl.Float32(), "W_dec[latent] · W_U[:, token] (no final norm)"),
    ]),
    _table("examples", "example window of a latent",
           "Each latent's explain and score example sets; a latent uses a context at most once, and its "
           "explain and score splits share no context.", ("sae_id", "sample_key", "latent", "ctx_id"), [
        _SAE_ID,
        _LATENT,
        ("split", pl.String(), '"explain" (shown to the explainer) or "score" (held out for the scorers)'),
        ("kind", pl.String(), '"activating", "random" or "similar" (a hard negative)'),
        ("quantile", pl.Int32(), "activation decile of an activating example (0 weakest .. 9 top); -1 otherwise"),
        ("ctx_id", pl.Int64(), "the context (`contexts.ctx_id`)"),
        ("start", pl.Int32(), "first token of the window in the context"),
        ("acts", pl.List(pl.Float32()), "acts[i]: the latent's activation on the context's token start + i"),
        ("sample_key", pl.String(), "hash of the statistics and sampling settings (flows/store/ids.py)"),
        ("weight", pl.Float64(), "score examples: natural (score-side) tokens each token of the window stands for "
                                 "(decile d: N_d / taken_d; embedding neighbours: 1; trigger-token contexts and random "
                                 "windows: their stratum's tokens / its tokens taken), explain/sampling/weights.py; "
                                 "null for explain examples and for every score "
                                 "example of a latent whose weights cannot cover its population"),
    ]),
    _table("explanations", "explanation attempt",
           "Failures are rows too (status, error). Append-only: the newest created_at per key wins.",
           ("sae_id", "explain_key", "latent", "explainer"), [
        _SAE_ID,
        _LATENT,
        _EXPLAINER,
        ("model", pl.String(), 'LLM model that explained; "" for N2G'),
        ("prompt_version", pl.String(), 'version of the explainer prompt; "" for N2G'),
        ("explanation", pl.String(), "the explanation text"),
        ("patterns", pl.String(), 'N2G patterns as JSON [{"ngram": [...], "act": float}]; null for free text'),
        ("status", pl.String(), '"ok", "failed" or "skipped"; only "ok" explanations are scored'),
        ("error", pl.String(), 'why the attempt failed; "" when ok'),
        ("prompt_tokens", pl.Int64(), "LLM prompt tokens spent (0 for N2G)"),
        ("completion_tokens", pl.Int64(), "LLM completion tokens spent (0 for N2G)"),
        ("cost_usd", pl.Float64(), "LLM cost in US dollars (0 for N2G and cache hits)"),
        _RUN_ID,
        ("created_at", UTC_TIME, "when the row was written"),
        ("explain_key", pl.String(), "hash of the examples shown (sample_key) and of the explainer's identity "
                                     "(model, prompt version, settings)"),
    ]),
    _table("simulations", "scored window",
           "What a scorer predicted on each score-set window; `scores` can be recomputed from these rows.",
           ("sae_id", "score_key", "latent", "explainer", "scorer", "ctx_id"), [
        _SAE_ID,
        _LATENT,
        _EXPLAINER,
        _SCORER,
        ("ctx_id", pl.Int64(), "the score example's context (`examples.ctx_id`)"),
        ("true_acts", pl.List(pl.Float32()), "the latent's activations on the window"),
        ("sim_acts", pl.List(pl.Float32()), "the simulated activations, aligned with true_acts"),
        ("score_key", pl.String(), "hash of the explanation scored (explain_key) and of the scorer's identity"),
        ("p_active", pl.List(pl.Float32()), "P(simulated level > threshold) per token, i.e. P(level >= 1) at the "
                                           "default 0.5, from the LLM's logprobs; null when the window had none"),
    ]),
    _table("score_failures", "latent a scorer could not score, per score key",
           "Why an ok explanation has no `scores` row under a score key: the scorer's LLM calls failed "
           "(`failed`) or there was nothing to score it on or no budget left (`skipped`). Written in the same "
           "commit as the chunk's scores; a rerun retries these latents, and a `scores` row under the same key "
           "supersedes the failure.",
           ("sae_id", "score_key", "latent", "explainer", "scorer"), [
        _SAE_ID,
        _LATENT,
        _EXPLAINER,
        _SCORER,
        ("score_key", pl.String(), "the score key of the job that tried (as in `scores`)"),
        ("status", pl.String(), '"failed" or "skipped"'),
        ("reason", pl.String(), "what went wrong, one line (API keys scrubbed)"),
        _RUN_ID,
        ("created_at", UTC_TIME, "when the row was written"),
    ]),
    _table("scores", "(latent, explainer, scorer, population) and run",
           "One score per explanation, scorer and population; the row of the most recently started run wins. "
           "A natural row is exact (pattern explanations matched on the corpus) or an inverse-probability-"
           "weighted estimate from the score set (`estimator`); where both exist, the exact one is the headline.",
           ("sae_id", "score_key", "latent", "explainer", "scorer", "population"), [
        _SAE_ID,
        _LATENT,
        _EXPLAINER,
        _SCORER,
        ("precision", pl.Float64(), "precision against `true_acts > 0` of, per window, `p_active > 0.5` where "
                                    "p_active is not null, else `sim_acts > threshold`"),
        ("recall", pl.Float64(), "recall of the same binarisation"),
        ("f1", pl.Float64(), "F1 of the same binarisation"),
        ("auroc", pl.Float64(), "AUROC of sim_acts for true_acts > 0; NaN for yes/no judges"),
        ("correlation", pl.Float64(), "Pearson correlation of sim_acts and true_acts; NaN for yes/no judges"),
        ("threshold", pl.Float64(), "a token of a window without p_active is predicted active when sim_acts > "
                                    "threshold; NaN for judges"),
        ("n_tokens", pl.Int64(), "tokens scored (contexts for detection and fuzzing)"),
        ("n_positive", pl.Int64(), "of which truly active"),
        _RUN_ID,
        ("balanced_accuracy", pl.Float64(), "balanced accuracy of detection and fuzzing; NaN for simulation"),
        ("score_key", pl.String(), "hash of the explanation scored (explain_key) and of the scorer's identity"),
        ("population", pl.String(), '"sampled" (the score set) or "natural" (every held-out token of the '
                                    'corpus; how it was computed: `estimator`)'),
        *[(name, pl.Float64(), f"{'lower' if name.endswith('_lo') else 'upper'} end of the 95% bootstrap interval "
           f"of {name[:-3]} (contexts resampled); NaN where not computed") for name in INTERVAL_COLUMNS],
        ("mode", pl.String(), 'what produced the prediction: "logprobs" (every window has p_active), "written" '
                              '(none has: the LLM\'s written levels), "mixed" (some have), "patterns" (N2G) or '
                              '"judge" (detection, fuzzing)'),
        ("estimator", pl.String(), '"sample" (sampled rows: the score set as it is), "ipw" (natural rows estimated '
                                   'from the score set with the examples\' weights, score/ipw.py; n_tokens and '
                                   'n_positive are then weighted estimates) or "exact" (natural rows of pattern '
                                   'explanations, score/natural.py)'),
        ("decile_recall", pl.List(pl.Float64()), "recall within each tenth of the active tokens by activation, "
                                                 "weakest first (score/deciles.py); null entries for an empty "
                                                 "tenth, null for judges"),
    ]),
    _table("sae_metrics", "SAE and evaluation setting",
           "Quality of an SAE (trained here or loaded), evaluated after the SAE stage (flows/stages/sae.py); "
           "metric definitions in docs/sae.md. A metric that does not apply is null, its reason in `notes`.",
           ("sae_id", "metrics_key"), [
        _SAE_ID,
        ("metrics_key", pl.String(), "hash of the evaluation settings and held-out split "
                                     "(flows/stages/sae_metrics.py::metrics_key)"),
        ("n_latents", pl.Int64(), "dictionary size"),
        ("k", pl.Int64(), "active latents per token"),
        ("tokens", pl.Int64(), "training tokens (null for a loaded SAE)"),
        ("fvu", pl.Float64(), "FVU on training tokens (last logging window; null for a loaded SAE)"),
        ("fvu_heldout", pl.Float64(), "FVU on held-out tokens the SAE never trained on (`heldout_rows`)"),
        ("l0", pl.Float64(), "mean active latents per held-out token"),
        ("dead_frac", pl.Float64(), "share of latents that never fire on the held-out tokens"),
        ("dead_frac_train", pl.Float64(), "share of latents silent over the last dead window of training"),
        ("heldout_tokens", pl.Int64(), "held-out tokens evaluated"),
        ("heldout_rows", pl.String(), "which activation rows were held out, `<first>-<end>` of the file"),
        ("fvu_above_one", pl.Boolean(), "true when fvu_heldout > 1: the SAE reconstructs worse than the mean"),
        ("delta_ce", pl.Float64(), "causal LM: CE with the reconstruction spliced in minus clean CE (nats/token)"),
        ("kl", pl.Float64(), "causal LM: KL(clean || spliced) of next-token distributions (nats/token)"),
        ("loss_recovered", pl.Float64(), "causal LM: (CE_zero - CE_spliced) / (CE_zero - CE_clean)"),
        ("embed_cosine", pl.Float64(), "encoder: mean cosine of clean and spliced sentence embeddings"),
        ("embed_cosine_zero", pl.Float64(), "encoder: the same with the layer zero-ablated"),
        ("embed_recovered", pl.Float64(), "encoder: (cos_spliced - cos_zero) / (1 - cos_zero)"),
        ("probe_ce", pl.Float64(), "mean over probe tasks of the best 1-D logistic-probe CE over latents (nats)"),
        ("probe_ce_residual", pl.Float64(), "the same over raw residual channels"),
        ("probe_tasks", pl.String(), "per task JSON {task: {ce, latent, ce_residual, channel, prior_ce, positives}}"),
        ("ablation_sparsity", pl.Float64(), "causal LM: mean (L1/L2)^2/(V*T) of logit changes over the next T tokens "
                                            "when one active latent is ablated; 1/(V*T) is the sparsest"),
        ("notes", pl.String(), "why metrics are null (encoder model, no activation file, ...); \"\" when none"),
        ("eval_s", pl.Float64(), "seconds the evaluation took"),
        ("created_at", UTC_TIME, "when the row was written"),
    ]),
    _table("sae_fits", "fitted scaling law of a sweep",
           "Fits over a sweep's grid of SAEs (flows/sweep.py, sae/scaling.py): the joint L(n, k) form of Gao et "
           "al. 2024 and the loss-vs-compute frontier.", ("grid_id", "fit"), [
        ("grid_id", pl.String(), "hash of the sweep: activations, grid of (n, k), training and eval settings"),
        ("fit", pl.String(), '"joint_nk" or "frontier"'),
        ("form", pl.String(), "the fitted formula, readable"),
        ("coefficients", pl.String(), "fitted coefficients as JSON {name: value}"),
        ("loss", pl.String(), 'the loss fitted: "fvu_heldout"'),
        ("n_points", pl.Int64(), "SAEs the fit used"),
        ("rmse_log", pl.Float64(), "root-mean-square residual of log(loss)"),
        ("sae_ids", pl.List(pl.String()), "the sweep's SAEs (`sae_metrics.sae_id`)"),
        ("metrics_key", pl.String(), "the evaluation setting of the metrics fitted (`sae_metrics.metrics_key`)"),
        ("plot", pl.String(), "path of the self-contained plotly HTML of the fit, relative to the store"),
        ("created_at", UTC_TIME, "when the row was written"),
    ]),
    _table("llm_calls", "LLM request attempt or cache hit",
           "The call log of every LLM client, appended after each chunk of latents.",
           ("run_id", "request_hash", "created_at"), [
        ("request_hash", pl.String(), "hash of the logical request (model, messages, parameters): the cache key"),
        ("model", pl.String(), "the model asked"),
        ("purpose", pl.String(), 'what the call was for ("explain", "simulate", "detection", ...)'),
        ("prompt_tokens", pl.Int64(), "prompt tokens the server reported"),
        ("completion_tokens", pl.Int64(), "completion tokens the server reported"),
        ("latency_s", pl.Float64(), "seconds from request to validated reply (0 for a cache hit)"),
        ("status", pl.String(), '"ok", "cached", "retry", "failed" or "invalid"'),
        ("error", pl.String(), 'what went wrong (API keys scrubbed); "" when ok'),
        ("created_at", UTC_TIME, "when the call ended"),
        _RUN_ID,
    ]),
]

SCHEMAS: dict[str, TableSchema] = {t.name: t for t in _TABLES}
"""Every table of the store, in the order the pipeline fills them."""


def table_schema(table: str) -> TableSchema:
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; tables are {', '.join(SCHEMAS)}")
    return SCHEMAS[table]


def conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with exactly the table's columns, in order, strictly cast to the declared dtypes.

    Raises ValueError naming the table and the columns when a column is missing or unknown, and naming
    the column and both dtypes when one cannot be cast, so a producer's mistake fails at the write that
    makes it instead of in a reader much later.
    """
    spec = table_schema(table)
    missing = [n for n in spec.names if n not in frame.columns]
    unknown = [n for n in frame.columns if n not in spec.names]
    if missing or unknown:
        raise ValueError(f"table {table!r}: frame does not match the schema (flows/store/schemas.py): "
                         f"missing columns {missing}, unknown columns {unknown}")
    conformed = pl.DataFrame([_cast(table, frame.get_column(c.name), c) for c in spec.columns])
    check_values(table, conformed)
    return conformed


def _cast(table: str, series: pl.Series, column: Column) -> pl.Series:
    if series.dtype == column.dtype:
        return series
    try:
        return series.cast(column.dtype, strict=True)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError, pl.exceptions.SchemaError) as exc:
        raise ValueError(f"table {table!r}: column {column.name!r} of dtype {series.dtype} cannot be cast "
                         f"to the declared dtype {column.dtype}: {exc}") from exc


def _code(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def markdown_tables() -> str:
    """The tables of the store as markdown: an overview, then every column of every table."""
    lines = ["| table | one row per | key columns |", "|---|---|---|"]
    lines += [f"| [`{t.name}`](#{t.name}) | {t.row} | {_code(t.key)} |" for t in SCHEMAS.values()]
    for t in SCHEMAS.values():
        lines += ["", f"### {t.name}", "", f"One row per {t.row}. {t.description}", "", f"Key: {_code(t.key)}.",
                  "", "| column | dtype | meaning |", "|---|---|---|"]
        lines += [f"| `{c.name}` | `{c.dtype}` | {c.description} |" for c in t.columns]
    return "\n".join(lines) + "\n"


def markdown_summary() -> str:
    """README.md's short table of tables: name, what a row is, key, and the column names."""
    lines = ["| table | one row per | key | columns |", "|---|---|---|---|"]
    lines += [f"| `{t.name}` | {t.row} | {', '.join(t.key)} | {', '.join(t.names)} |" for t in SCHEMAS.values()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the store's tables as markdown (docs/store.md).")
    parser.add_argument("--summary", action="store_true", help="print README.md's short table instead")
    args = parser.parse_args()
    # stdout is the product here (redirected into docs/store.md), not a log message.
    sys.stdout.write(markdown_summary() if args.summary else markdown_tables())


if __name__ == "__main__":
    main()
