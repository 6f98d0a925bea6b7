"""`latent-atlas export neuronpedia --store DIR --out DIR`: explanations in Neuronpedia's upload format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.store import Store, default_store_root


def add_export_command(sub: argparse._SubParsersAction) -> None:
    """Register `export` with its one format, `neuronpedia`."""
    cmd = sub.add_parser("export", help="export explanations and scores for other tools (neuronpedia)",
                         description="Export a store's explanations and scores in another tool's format.")
    formats = cmd.add_subparsers(dest="format", required=True)
    npd = formats.add_parser("neuronpedia", help="one JSON record per explanation, Neuronpedia's upload format",
                             description="Write <out>/<sae_id>.jsonl per SAE: modelId, layer (source), index, "
                                         "description, authorName, explanationModelName, typeName, scores.")
    npd.add_argument("--store", default=None, help="store directory (default: $LATENT_ATLAS_STORE or ./atlas-store)")
    npd.add_argument("--out", required=True, help="directory to write the .jsonl files into")
    npd.add_argument("--source", default=None,
                     help='Neuronpedia source id of the SAE (default "<layer>-res-latent-atlas")')
    npd.add_argument("--model-id", default=None, help="Neuronpedia model id (default: the model name, lower case)")
    npd.add_argument("--author", default="latent-atlas", help="authorName of every record")


def export_command(args: argparse.Namespace) -> int:
    from flows.cli.preflight import require_store
    from flows.reports.neuronpedia import export_neuronpedia

    store = args.store or str(default_store_root())
    require_store(store)
    if not any(Path(store).glob("saes/*/cfg.json")):
        raise FileNotFoundError(f"--store {store}: no SAE in this store (`latent-atlas run` makes one)")
    paths = export_neuronpedia(Store(store), Path(args.out), args.source, args.author, args.model_id)
    for path in paths:
        sys.stdout.write(f"{path}\n")
    return 0
