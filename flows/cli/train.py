"""`latent-atlas train-sae`: train a TopK SAE from an activation file and save it (SAELens layout).

The SAE and training flags are run's (the `sae` and `train` groups of RunConfig, with run's defaults),
as are `--device` and `--seed`, so `train-sae` on a store's activation file with a run's flags trains
the SAE that run trains. Such a file (`<store>/cache/activations/<activations_id>.npy`) is named after
its dataset, model and layer; the SAE records them from the store's SAEs and runs (cfg.json metadata).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from flows.cli.flags import add_run_flags, run_config
from flows.store import Store

log = logging.getLogger(__name__)

TRAIN_SAE_FIELDS = ("sae", "train", "sae_eval", "device", "seed")
"""The RunConfig fields train-sae takes flags for (the rest shape no SAE trained from a file)."""
LINEAGE_KEYS = ("model", "model_fingerprint", "layer", "dataset_id")
"""What an SAE trained in a run records in its cfg.json metadata (flows/stages/sae.py)."""


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """--activations and --out, then run's SAE, training, device and seed flags."""
    parser.add_argument("--activations", required=True,
                        help="activation file [tokens, d_in]: .npy (memory-mapped), .safetensors or Parquet")
    parser.add_argument("--out", required=True, help="directory to save the SAE in (SAELens v6 layout)")
    add_run_flags(parser, only=TRAIN_SAE_FIELDS)


def train_sae_command(args: argparse.Namespace) -> int:
    """Train on the file's first rows with run's settings (the last `--train-heldout-frac` are held out and
    evaluated), checkpointing beside --out, and save the SAE with what the file was computed from."""
    from flows.stages.data import resolve_device
    from flows.stages.sae import INIT_SAMPLE_TOKENS, sample_rows
    from sae.checkpoint import remove_checkpoint
    from sae.config import SAEConfig
    from sae.data.activation_files import check_finite, open_activations, shuffled_batches
    from sae.evaluate import heldout_metrics
    from sae.formats import save_sae
    from sae.train import train_sae

    cfg = run_config(args)
    path, out = Path(args.activations), Path(args.out)
    acts = open_activations(path)
    check_finite(acts, path)
    lineage = activation_lineage(path)
    cut = training_cut(cfg, path, len(acts), lineage)
    train_rows = acts[:cut]
    sae_cfg = SAEConfig(d_in=int(acts.shape[1]), **cfg.sae.model_dump())
    train_cfg = cfg.train.model_copy(update={"device": resolve_device(cfg.device)})
    checkpoint = out.parent / f".{out.name}.checkpoint.pt"

    def batches(done: int):
        return shuffled_batches(train_rows, train_cfg.batch_size, train_cfg.tokens, seed=cfg.seed, start=done)

    result = train_sae(sae_cfg, train_cfg, batches, sample_rows(train_rows, INIT_SAMPLE_TOKENS, seed=cfg.seed),
                       checkpoint=checkpoint)
    stats = dict(result.stats)
    if cut < len(acts):
        end = min(len(acts), cut + cfg.sae_eval.max_tokens)
        held = heldout_metrics(result.sae, acts[cut:end])
        # "start-end", as sae_metrics.heldout_rows
        stats.update(fvu_heldout=held["fvu_heldout"], dead_frac_heldout=held["dead_frac"], heldout_rows=f"{cut}-{end}")
    save_sae(result.sae, out, metadata={"activations": str(path.resolve()), **lineage}, training_stats=stats)
    remove_checkpoint(checkpoint)
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, int | float) else f"{k} {v}" for k, v in stats.items())
    source = f" (model {lineage['model']}, layer {lineage['layer']})" if lineage else ""
    warning = ("\nWARNING: held-out FVU > 1: the SAE reconstructs worse than the mean"
               if stats.get("fvu_heldout", 0) > 1 else "")
    sys.stdout.write(f"saved SAE to {out.resolve()}{source}\n{shown}{warning}\n")
    return 0


def training_cut(cfg, path: Path, n_rows: int, lineage: dict) -> int:
    """Rows [0, cut) train: for a store's file the run's split (its last whole contexts held out, as
    flows/stages/sae.py::training_rows), else the last `train.heldout_frac` of the rows."""
    from flows.stages.sae import heldout_contexts

    n_ctx = 0
    if lineage.get("dataset_id") and Store(path.resolve().parents[2]).has("contexts"):
        import polars as pl

        contexts = Store(path.resolve().parents[2]).scan("contexts")
        n_ctx = contexts.filter(pl.col("dataset_id") == lineage["dataset_id"]).select(pl.len()).collect().item()
    if n_ctx and n_rows % n_ctx == 0:
        return (n_ctx - heldout_contexts(cfg, n_ctx)) * (n_rows // n_ctx)
    return n_rows - int(n_rows * cfg.train.heldout_frac) if n_rows > 1 else n_rows


def activation_lineage(path: Path) -> dict:
    """Model, model fingerprint, layer and dataset of a store's activation file, from the store's records
    of them (its SAEs' metadata, its runs' inputs); {} for a file outside a store or one it has no record of."""
    from flows.store.ids import activations_id

    path = path.resolve()
    if path.suffix != ".npy" or path.parent.name != "activations" or path.parent.parent.name != "cache":
        return {}
    store = Store(path.parents[2])
    for record in _lineage_records(store):
        try:
            ds, layer, fp = str(record["dataset_id"]), int(record["layer"]), str(record["model_fingerprint"])
        except (KeyError, TypeError, ValueError):
            continue
        # activations_id: "<dataset>-<model type>-L<layer>-<weights hash>"; the model type is the file's own
        model_type = path.stem.removeprefix(f"{ds}-").rpartition(f"-L{layer}-")[0]
        if model_type and activations_id(ds, model_type, fp, layer) == path.stem:
            return {key: record[key] for key in LINEAGE_KEYS if key in record}
    log.info("%s: no record of this activation file in its store; the SAE records no model or layer", path)
    return {}


def _lineage_records(store: Store) -> list[dict]:
    """Every (model, model_fingerprint, layer, dataset_id) record of a store: SAE metadata, then run inputs."""
    records = []
    for cfg_file in sorted(store.root.glob("saes/*/cfg.json")):
        try:
            records.append(json.loads(cfg_file.read_text()).get("metadata") or {})
        except (OSError, ValueError):
            continue
    if store.has("runs"):
        for inputs in store.scan("runs").select("inputs").collect().get_column("inputs").drop_nulls():
            records.append(json.loads(inputs or "{}"))
    return [r for r in records if isinstance(r, dict) and r.get("layer") is not None]
