"""`latent-atlas dashboard --store DIR [--port P] [--host H]`: serve a store's dashboard live."""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.store import default_store_root


def add_dashboard_command(sub: argparse._SubParsersAction) -> None:
    """Register `dashboard`."""
    cmd = sub.add_parser("dashboard", help="serve the dashboard and latent pages of a store (live, local)",
                         description="Serve a store's dashboard and latent pages over HTTP; every request reads "
                                     "the store again, so a new run shows on reload. Binds 127.0.0.1 by default.")
    cmd.add_argument("--store", default=None, help="store directory (default: $LATENT_ATLAS_STORE or ./atlas-store)")
    cmd.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    cmd.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")


def dashboard_command(args: argparse.Namespace) -> int:
    from flows.cli.preflight import require_store
    from flows.dashboard.server import serve

    store = args.store or str(default_store_root())
    require_store(store)
    if not any((Path(store) / name).is_dir() for name in ("runs", "saes", "latent_stats")):
        raise FileNotFoundError(f"--store {store}: holds no latent-atlas store (no runs/, saes/ or latent_stats/)")
    serve(store, args.host, args.port)
    return 0
