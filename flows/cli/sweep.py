"""`latent-atlas sweep`: a grid of SAEs (n latents x k), each trained and evaluated, then the scaling fits.

From an activation file (`--activations PATH`) or from a model and corpus like `run` (no --activations:
the run's data flags). Training, evaluation, device and seed flags are run's; --n-latents and --k take
comma-separated lists. Prints one line per SAE, the fitted coefficients and the plot's path.
"""

from __future__ import annotations

import argparse
import json
import sys

from flows.cli.flags import add_run_flags, run_config

SWEEP_FIELDS = ("store", "data", "train", "sae_eval", "device", "seed")
"""RunConfig fields sweep takes flags for (the grid replaces the sae group's n_latents and k)."""


def int_list(text: str) -> list[int]:
    """`512,1024` -> [512, 1024] (argparse type; ValueError for anything else)."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def add_sweep_command(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("sweep", help="train and evaluate a grid of SAEs (n x k) and fit L(n, k)",
                            description="Train a grid of TopK SAEs as Prefect tasks, evaluate each into "
                                        "sae_metrics, fit the joint L(n, k) and the compute frontier into "
                                        "sae_fits and write the plot.")
    parser.add_argument("--activations", default=None,
                        help="activation file [tokens, d_in] (default: the run's model and corpus)")
    parser.add_argument("--n-latents", dest="grid_n", type=int_list, required=True,
                        help="dictionary sizes, e.g. 512,1024")
    parser.add_argument("--k", dest="grid_k", type=int_list, required=True, help="active latents, e.g. 8,16,32")
    add_run_flags(parser, only=SWEEP_FIELDS)
    return parser


def sweep_command(args: argparse.Namespace) -> int:
    from flows.sweep import sweep_flow

    cfg = run_config(argparse.Namespace(**{k: v for k, v in vars(args).items() if not k.startswith("grid_")}))
    result = sweep_flow(cfg, args.grid_n, args.grid_k, args.activations)
    lines = [f"sweep {result['grid_id']}: {len(result['saes'])} SAEs"]
    lines += [f"  n {r['n_latents']:>6} k {r['k']:>3}  fvu_heldout {r['fvu_heldout']:.4f}  dead {r['dead_frac']:.3f}"
              f"  {r['sae_id']}" for r in result["saes"] if r["fvu_heldout"] is not None]
    lines += [f"{name}: {json.dumps(fit['coefficients'])} (rmse log {fit['rmse_log']:.3f})"
              for name, fit in result["fits"].items()]
    lines.append(f"plot: {result['plot'] or '(plotly not installed)'}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
