"""`latent-atlas train-sae`: train a TopK SAE from an activation file and save it (SAELens layout)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from flows.cli.flags import add_model_flags, config_from_args

log = logging.getLogger(__name__)

SAE_SKIP = ("d_in",)
TRAIN_SKIP = ("betas", "bf16_autocast", "progress", "batch_size")


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    from sae.config import SAEConfig, TrainConfig

    parser.add_argument("--activations", required=True,
                        help="activation file [tokens, d_in]: .npy (memory-mapped), .safetensors or Parquet")
    parser.add_argument("--out", required=True, help="directory to save the SAE in (SAELens v6 layout)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=4096,
                        help="tokens per optimiser step (default: 4096)")
    add_model_flags(parser, SAEConfig, skip=SAE_SKIP)
    add_model_flags(parser, TrainConfig, skip=TRAIN_SKIP)


def train_sae_command(args: argparse.Namespace) -> int:
    from flows.stages.sae import INIT_SAMPLE_TOKENS, sample_rows
    from sae.config import SAEConfig, TrainConfig
    from sae.data.activation_files import open_activations, shuffled_batches
    from sae.formats import save_sae
    from sae.train import train_sae

    acts = open_activations(args.activations)
    sae_cfg = config_from_args(SAEConfig, args, d_in=int(acts.shape[1]))
    train_cfg = config_from_args(TrainConfig, args, batch_size=args.batch_size)
    batches = shuffled_batches(acts, args.batch_size, train_cfg.tokens, seed=train_cfg.seed)
    result = train_sae(sae_cfg, train_cfg, batches, sample_rows(acts, INIT_SAMPLE_TOKENS, seed=train_cfg.seed))
    out = Path(args.out)
    save_sae(result.sae, out, metadata={"activations": str(Path(args.activations).resolve())},
             training_stats=dict(result.stats))
    stats = ", ".join(f"{k} {v:.4g}" for k, v in result.stats.items() if isinstance(v, int | float))
    sys.stdout.write(f"saved SAE to {out.resolve()}\n{stats}\n")
    return 0
