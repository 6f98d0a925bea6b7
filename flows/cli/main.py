"""`latent-atlas` command line: flags are generated from the pydantic configs and their docstrings."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from flows.cli.flags import add_model_flags, config_from_args, flag_name
from flows.config import CLI_HIDDEN, GROUPS, RunConfig
from flows.store import Store, default_store_root

log = logging.getLogger("latent_atlas")

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)
"""Exceptions that mean a user mistake (one line on stderr, exit 2). A KeyError is a bug: it propagates."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latent-atlas", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train or load an SAE, explain and score its latents, write reports",
                         description="Corpus -> activations -> SAE -> latent cache -> examples -> "
                                     "explanations -> scores -> reports, resumable; defaults run offline.")
    add_model_flags(run, RunConfig, defaults=RunConfig(), hidden=CLI_HIDDEN)
    train = sub.add_parser("train-sae", help="train a TopK SAE from an activation file (.npy/.safetensors/Parquet)")
    from flows.cli.train import add_train_flags

    add_train_flags(train)
    report = sub.add_parser("report", help="rebuild the HTML reports and dashboard of a store")
    report.add_argument("--store", default=None, help="store directory (default: ./atlas-store)")
    report.add_argument("--sae-id", default=None, help="only this SAE (default: all)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from flows.reports.summary import format_summary, score_summary, unscored_summary

    store = args.store or str(default_store_root())
    cfg = config_from_args(RunConfig, args, defaults=RunConfig(), store=store)
    from flows.cli.preflight import check_run_config

    check_run_config(cfg)
    if cfg.dry_run:
        from flows.pipeline import dry_run_flow

        sys.stdout.write(dry_run_flow(cfg) + "\n")
        return 0
    from flows.pipeline import pipeline

    summary = pipeline(cfg)
    out = Store(cfg.store)
    sys.stdout.write(
        f"\nSAE {summary['sae_id']}  ({summary['wall_s']} s)\n"
        f"{format_summary(score_summary(out, summary['sae_id'], summary['score_keys']))}\n"
        f"{unscored_summary(out, summary['sae_id'], summary['stats_key'], summary['explain_keys'])}\n\n"
        f"dashboard: {Path(summary['report']).resolve()}\n"
        f"tables:    {out.root.resolve()}/<table>/*.parquet\n"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from flows.reports import write_reports

    path = write_reports(Store(args.store or default_store_root()), args.sae_id)
    sys.stdout.write(f"dashboard: {Path(path).resolve()}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "openai"):  # one line per HTTP request to the Prefect API otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    commands = {"run": _run, "report": _report}
    try:
        if args.command == "train-sae":
            from flows.cli.train import train_sae_command

            return train_sae_command(args)
        return commands[args.command](args)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if not str(p).isdigit()]
        where = flag_name(".".join(loc[-2:])) if loc and loc[-1] not in GROUPS else f"{loc[-1]} settings"
        sys.stderr.write(f"latent-atlas: error: {where}: {err['msg']}\n")
    except USER_ERRORS as exc:
        if os.environ.get("LATENT_ATLAS_DEBUG"):
            raise
        sys.stderr.write(f"latent-atlas: error: {exc}\n")
    except KeyboardInterrupt:
        sys.stderr.write("latent-atlas: interrupted; finished parts are kept, rerun to resume\n")
        return 130
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
