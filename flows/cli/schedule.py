"""`latent-atlas serve` and `latent-atlas deploy`: the pipeline on a cron schedule (flows/schedule.py).

Both take every flag of `run`, plus `--name`, `--cron` (and `--timezone`); `deploy` also `--pool`. User
mistakes (a bad cron, no server) are ValueErrors with a one-line message, raised before anything
starts, in the order: flags, cron, run config, server setting, then the server itself, so a bad cron
never contacts a server. flows/cli/main.py turns them into one line on stderr and exit 2, as for `run`.
"""

from __future__ import annotations

import argparse

from flows.cli.flags import add_run_flags, run_config

COMMANDS = ("serve", "deploy")


def _schedule_flags(parser: argparse.ArgumentParser, pool: bool) -> None:
    group = parser.add_argument_group("schedule")
    group.add_argument("--name", required=True, help="deployment name (the deployment is latent-atlas-pipeline/NAME)")
    group.add_argument("--cron", required=True, help="when to run, a cron expression in quotes: '0 3 * * *' is "
                                                     "03:00 every day")
    group.add_argument("--timezone", default="UTC", help="IANA timezone of --cron (default: UTC)")
    if pool:
        group.add_argument("--pool", required=True, help="process work pool whose worker runs it "
                                                         "(prefect work-pool create POOL --type process)")


def add_schedule_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` and `deploy` (every run flag, plus the schedule's) to the `latent-atlas` subparsers."""
    serve = subparsers.add_parser(
        "serve", help="serve the pipeline on a cron schedule from this process (needs `prefect server start`)",
        description="Register deployment latent-atlas-pipeline/NAME with a cron schedule on the Prefect server "
                    "named by PREFECT_API_URL and run its flow runs in this process until Ctrl-C (the "
                    "schedule stays active). Takes every flag of `run`.")
    _schedule_flags(serve, pool=False)
    add_run_flags(serve)
    deploy = subparsers.add_parser(
        "deploy", help="register the pipeline on a process work pool with a cron schedule (for prefect worker)",
        description="Register deployment latent-atlas-pipeline/NAME with a cron schedule on process work pool "
                    "POOL of the Prefect server named by PREFECT_API_URL; `prefect worker start --pool POOL` "
                    "on this machine runs it. No Docker: the code is this project directory. Takes every flag "
                    "of `run`.")
    _schedule_flags(deploy, pool=True)
    add_run_flags(deploy)


def schedule_command(args: argparse.Namespace) -> int:
    """Run `serve` or `deploy` from parsed flags; 0 when serving stopped or the deployment exists.

    Raises ValueError (one-line message) for a bad cron, a dry run, no PREFECT_API_URL, an unreachable
    server or a missing pool; pydantic's ValidationError and the preflight errors for bad run flags.
    """
    from flows import schedule
    from flows.cli.preflight import check_run_config

    spec = schedule.parse_cron(args.cron, args.timezone)
    cfg = run_config(args)
    schedule.check_schedulable(cfg)
    check_run_config(cfg)
    url = schedule.api_url()
    schedule.check_server(url)
    if args.command == "serve":
        schedule.serve_pipeline(cfg, args.name, spec)
        return 0
    schedule.check_process_pool(args.pool)
    schedule.deploy_pipeline(cfg, args.name, args.pool, spec)
    return 0
