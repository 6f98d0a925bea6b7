"""`latent-atlas` command line: flags are generated from the pydantic configs and their docstrings.

Commands: run (the whole pipeline); encode, sample, explain, score, report (one stage each, with run's
flags: flows/cli/stages.py); train-sae (flows/cli/train.py); status (flows/cli/status.py); serve and
deploy (the pipeline on a schedule: flows/cli/schedule.py). docs/cli.md describes each.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError
from safetensors import SafetensorError

from flows.cli.flags import add_run_flags, add_verbose_flag, flag_name, run_config
from flows.cli.schedule import COMMANDS as SCHEDULE_COMMANDS
from flows.cli.schedule import add_schedule_commands, schedule_command
from flows.config import GROUPS
from flows.store import Store, default_store_root

log = logging.getLogger("latent_atlas")

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
                                               SafetensorError)
"""Exceptions that mean a user mistake (one line on stderr, exit 2). A KeyError is a bug: it propagates.
SafetensorError: a corrupt weights file that got past preflight (an SAE's header is checked up front)."""
_ASSIGNED = re.compile(r"\b([a-z][a-z0-9_]*)=")


def validation_message(exc: ValidationError) -> str:
    """The first error of a config as one line naming its flag: a field's error names the field's flag; a
    check across a group's fields (`k=200 exceeds n_latents=100`) names each field's flag in the message."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not str(p).isdigit()]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if loc and loc[-1] not in GROUPS:
        return f"{flag_name('.'.join(loc[-2:]))}: {msg}"
    from flows.config import RunConfig

    group = loc[-1] if loc else ""
    model = RunConfig.model_fields[group].annotation if group else RunConfig
    fields = getattr(model, "model_fields", {})

    def flag(match: re.Match) -> str:
        name = match.group(1)
        return flag_name(f"{group}.{name}" if group else name) + " " if name in fields else match.group(0)

    named = _ASSIGNED.sub(flag, msg)
    return named if named != msg else f"{group or 'run'} settings: {msg}"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (exit 2); the usage block is what --help is for."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `latent-atlas` parser: every command takes `-v/--verbose`, before or after its name."""
    from flows.cli.stages import add_stage_commands
    from flows.cli.train import add_train_flags

    parser = OneLineParser(prog="latent-atlas", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train or load an SAE, explain and score its latents, write reports",
                         description="Corpus -> activations -> SAE -> latent cache -> examples -> "
                                     "explanations -> scores -> reports, resumable; defaults run offline.")
    add_verbose_flag(run)
    add_run_flags(run)
    add_stage_commands(sub)
    train = sub.add_parser("train-sae", help="train a TopK SAE from an activation file (.npy/.safetensors/Parquet)",
                           description="Train a TopK SAE on an activation file with run's SAE and training "
                                       "settings; a store's activation file gives the SAE its model and layer.")
    add_verbose_flag(train)
    add_train_flags(train)
    status = sub.add_parser("status", help="what a store holds: runs, explanations, scores, failures, LLM spend",
                            description="Print a store's runs, explained and scored latents, failures by reason "
                                        "and LLM spend; read-only.")
    add_verbose_flag(status)
    status.add_argument("--store", default=None, help="store directory (default: $LATENT_ATLAS_STORE or ./atlas-store)")
    add_schedule_commands(sub)
    from flows.cli.dashboard import add_dashboard_command
    from flows.cli.export import add_export_command

    add_dashboard_command(sub)
    add_export_command(sub)
    from flows.cli.sweep import add_sweep_command

    add_verbose_flag(add_sweep_command(sub))
    for command in sub.choices.values():
        if "--verbose" not in command._option_string_actions:
            add_verbose_flag(command)
    return parser


def _run(args: argparse.Namespace) -> int:
    from flows.cli.preflight import check_run_config
    from flows.reports.summary import summary_text

    cfg = run_config(args)
    check_run_config(cfg)
    if cfg.dry_run:
        from flows.pipeline import dry_run_flow

        sys.stdout.write(dry_run_flow(cfg) + "\n")
        return 0
    from flows.pipeline import pipeline

    summary = pipeline(cfg)
    out = Store(cfg.store)
    text = summary_text(out, summary["sae_id"], summary["score_keys"], summary["stats_key"], summary["explain_keys"])
    sys.stdout.write(
        f"\nSAE {summary['sae_id']}  ({summary['wall_s']} s)\n{text}\n\n"
        f"dashboard: {Path(summary['report']).resolve()}\n"
        f"tables:    {out.root.resolve()}/<table>/*.parquet\n"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from flows.cli.preflight import require_store
    from flows.cli.status import store_status

    store = Store(args.store or default_store_root())
    require_store(store.root)
    sys.stdout.write(store_status(store) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "openai"):  # one line per HTTP request to the Prefect API otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from flows.cli.stages import STAGES, stage_command
    from flows.cli.sweep import sweep_command
    from flows.cli.train import train_sae_command

    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run, "train-sae": train_sae_command, "sweep": sweep_command, "status": _status,
        **dict.fromkeys(STAGES, stage_command),
        **dict.fromkeys(SCHEDULE_COMMANDS, schedule_command)}
    from flows.cli.dashboard import dashboard_command
    from flows.cli.export import export_command

    commands.update({"dashboard": dashboard_command, "export": export_command})
    try:
        return commands[args.command](args)
    except ValidationError as exc:
        sys.stderr.write(f"latent-atlas: error: {validation_message(exc)}\n")
    except USER_ERRORS as exc:
        if os.environ.get("LATENT_ATLAS_DEBUG"):
            raise
        sys.stderr.write(f"latent-atlas: error: {exc}\n")
    except KeyboardInterrupt:
        sys.stderr.write("latent-atlas: interrupted; finished parts are kept, rerun to resume\n")
        # The run is recorded and its parts are safe; a second Ctrl-C (or a late SIGINT) during shutdown,
        # while Prefect stops its temporary server, would otherwise kill the process with -SIGINT, not 130.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return 130
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
