"""Latent cache scaling: tokens/s and peak RSS of encode + stats + sample at 1x and 10x corpus size.

Each corpus size runs in its own subprocess so its peak RSS (ru_maxrss) is clean. The Nx corpus is
the pydoc corpus N times, each repetition's token stream rotated by a different offset so contexts
are not byte-identical copies. Encoding uses the embedded MiniLM (layer 3) and a random-init TopK
SAE from `sae` (or a random linear TopK encoder when `sae` is unavailable).

    python benchmarks/cache_scaling.py --scales 1 10
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explain.latents.cache import LatentStatsAccumulator, sparse_activation_frame  # noqa: E402
from explain.sampling.examples import SamplingConfig, sample_examples  # noqa: E402

log = logging.getLogger("cache_scaling")

Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_encoder(d_in: int, n_latents: int, k: int) -> Encoder:
    """x [N, d_in] -> (values [N, k], indices [N, k]) from a random-init TopK SAE."""
    torch.manual_seed(0)
    try:
        from sae.config import SAEConfig
        from sae.model import TopKSAE

        sae = TopKSAE(SAEConfig(d_in=d_in, n_latents=n_latents, k=k)).eval()
        log.info("encoder: random-init sae.model.TopKSAE")
        return sae.encode
    except ImportError:
        w_enc = torch.randn(d_in, n_latents) / d_in**0.5
        log.info("encoder: random linear TopK (sae unavailable)")

        def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            values, indices = (x @ w_enc).topk(k, dim=-1)
            return values.relu(), indices

        return encode


def repeated_contexts(base: list[list[int]], scale: int, ctx_len: int) -> Iterator[list[list[int]]]:
    """`scale` repetitions of the base token stream, each rotated, cut into ctx_len contexts."""
    stream = [t for ctx in base for t in ctx]
    for rep in range(scale):
        shift = (rep * 17) % max(len(stream), 1)
        rotated = stream[shift:] + stream[:shift]
        yield [rotated[i:i + ctx_len] for i in range(0, len(rotated) - ctx_len + 1, ctx_len)]


def activation_batches(subject, contexts: list[list[int]], ids: range,
                       args: argparse.Namespace) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(ctx_ids [B], acts [B, T, d], valid [B, T]) from the chosen source.

    minilm: residual stream after block `layer`; embeddings: MiniLM's embedding output (hidden
    state 0: word + position embeddings, LayerNorm), real token-dependent activations at a fraction
    of the cost, so the benchmark measures the cache rather than the subject model.
    """
    if args.source == "minilm":
        yield from subject.iter_activation_batches(contexts, args.layer, args.batch, ctx_ids=list(ids),
                                                   progress=False)
        return
    from sae.data.subject import pad_contexts

    embeddings = subject.model.embeddings
    for lo in range(0, len(contexts), args.batch):
        token_ids, lengths = pad_contexts(contexts[lo:lo + args.batch], subject.pad_id)
        with torch.no_grad():
            acts = embeddings(input_ids=token_ids)
        valid = torch.arange(token_ids.shape[1])[None, :] < lengths[:, None]
        yield torch.tensor(list(ids[lo:lo + args.batch])), acts, valid


def encode_corpus(scale: int, args: argparse.Namespace, parts: Path) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Stream the corpus through model + SAE; write latent_acts parts; return (contexts, stats, n_tokens)."""
    from sae.data.corpus import load_texts, tokenize_contexts
    from sae.data.subject import load_subject_model

    subject = load_subject_model(None)
    base = tokenize_contexts(load_texts(None), subject.tokenizer, ctx_len=args.ctx_len)
    encode = make_encoder(subject.d_model, args.n_latents, args.k)
    acc = LatentStatsAccumulator(args.n_latents)
    parts.mkdir(parents=True, exist_ok=True)
    context_frames, n_tokens, next_id, part = [], 0, 0, 0
    for contexts in repeated_contexts(base, scale, args.ctx_len):
        ids = range(next_id, next_id + len(contexts))
        context_frames.append(pl.DataFrame({
            "ctx_id": list(ids), "token_ids": contexts,
            "tokens": [subject.tokenizer.convert_ids_to_tokens(c) for c in contexts]}))
        for ctx_ids, acts, valid in activation_batches(subject, contexts, ids, args):
            b, t, d = acts.shape
            with torch.no_grad():
                values, indices = encode(acts.reshape(b * t, d))
            frame = sparse_activation_frame(ctx_ids, values.view(b, t, -1), indices.view(b, t, -1), valid)
            acc.update(frame)
            frame.write_parquet(parts / f"part-{part:06d}.parquet")
            part += 1
            n_tokens += int(valid.sum())
        next_id += len(contexts)
        log.info("repetition done: %d tokens so far, peak RSS %.0f MiB", n_tokens, peak_rss_mib())
    return pl.concat(context_frames), acc.finalize("bench", n_tokens), n_tokens


def run_worker(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="cache-scaling-") as tmp:
        parts = Path(args.keep or tmp)
        parts.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        contexts, stats, n_tokens = encode_corpus(args.worker_scale, args, parts / "latent_acts")
        t1 = time.perf_counter()
        rss_encode = peak_rss_mib()
        if args.keep:
            contexts.write_parquet(parts / "contexts.parquet")
            stats.write_parquet(parts / "latent_stats.parquet")
        nonzeros = pl.scan_parquet(str(parts / "latent_acts" / "*.parquet"))
        examples = sample_examples(nonzeros, contexts, stats, SamplingConfig(), "bench")
        t2 = time.perf_counter()
        n_nonzero = nonzeros.select(pl.len()).collect().item()
    return {
        "scale": args.worker_scale, "source": args.source, "tokens": n_tokens, "contexts": contexts.height,
        "nonzeros": n_nonzero,
        "ok_latents": stats.filter(pl.col("status") == "ok").height, "examples": examples.height,
        "encode_stats_s": round(t1 - t0, 1), "sample_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1),
        "tokens_per_s": round(n_tokens / (t2 - t0)), "encode_tokens_per_s": round(n_tokens / (t1 - t0)),
        "peak_rss_after_encode_mib": round(rss_encode), "peak_rss_mib": round(peak_rss_mib()),
    }


def run_parent(args: argparse.Namespace) -> None:
    results = []
    for scale in args.scales:
        cmd = [sys.executable, __file__, "--worker-scale", str(scale), "--n-latents", str(args.n_latents),
               "--k", str(args.k), "--layer", str(args.layer), "--batch", str(args.batch),
               "--ctx-len", str(args.ctx_len), "--threads", str(args.threads), "--source", args.source]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        log.info("scale %dx: %s", scale, results[-1])
    base = results[0]
    for res in results[1:]:
        ratio = res["peak_rss_mib"] / base["peak_rss_mib"]
        log.info("peak RSS %dx / %dx = %.2f (acceptance <= 1.5); tokens/s %d vs %d", res["scale"],
                 base["scale"], ratio, res["tokens_per_s"], base["tokens_per_s"])
    sys.stdout.write(json.dumps(results, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10], help="corpus multiples to run")
    parser.add_argument("--worker-scale", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n-latents", type=int, default=4096, help="SAE latents")
    parser.add_argument("--k", type=int, default=32, help="active latents per token")
    parser.add_argument("--layer", type=int, default=3, help="subject model block")
    parser.add_argument("--batch", type=int, default=64, help="contexts per encode batch")
    parser.add_argument("--ctx-len", type=int, default=64, help="tokens per context")
    parser.add_argument("--source", choices=["minilm", "embeddings"], default="embeddings",
                        help="activation source: MiniLM block `layer`, or its (cheap) embedding output")
    parser.add_argument("--keep", default=None, help="keep the cache (parts, contexts, stats) in this folder")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.worker_scale is None:
        run_parent(args)
    else:
        sys.stdout.write(json.dumps(run_worker(args)) + "\n")


if __name__ == "__main__":
    main()
