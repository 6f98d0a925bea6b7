"""Training throughput of our TopK SAE vs the dense-matmul limit and SAELens, in one process.

For each dictionary size, on the same random [batch, d_in] data and config (fp32, no input
normalisation, no dead latents yet), it times:
- ours: one full `sae.train.training_step` (forward, sparse backward, decoder-gradient projection,
  fused Adam, decoder renormalisation, dead-latent counters);
- limit: the dense encoder matmul alone (x @ W_enc, 2*d_in*n FLOP per token, without even the bias),
  the one dense op a TopK SAE needs, so its tokens/s bounds any trainer from above;
- limit-inplace: the same matmul into a reused output (as ours does on CPU), the tighter bound;
- SAELens (when `sae_lens` imports): `TopKTrainingSAE.training_forward_pass` + backward + grad
  clipping + Adam, the same work as SAELens's own `SAETrainer._train_step`; with
  `use_sparse_activations` False (its default) and True.
Methods are interleaved round by round and the median step time is kept, so a noisy machine hits
all of them alike. Run (SAELens lives in its own venv, our code on PYTHONPATH):

    PYTHONPATH=/work/main /tmp/saelens-venv/bin/python benchmarks/train_throughput.py
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable

import torch

from sae.config import SAEConfig, TrainConfig
from sae.model import TopKSAE
from sae.train import make_optimizer, training_step

logger = logging.getLogger("train_throughput")
Step = Callable[[torch.Tensor], None]


def ours(d_in: int, n: int, k: int) -> Step:
    sae = TopKSAE(SAEConfig(d_in=d_in, n_latents=n, k=k, normalize_activations="none"))
    cfg = TrainConfig()
    optimizer = make_optimizer(sae, cfg)
    return lambda x: training_step(sae, optimizer, x, cfg)


def limit(d_in: int, n: int, k: int) -> Step:
    W_enc = torch.randn(d_in, n) / d_in**0.5
    return lambda x: torch.mm(x, W_enc)


def limit_inplace(d_in: int, n: int, k: int) -> Step:
    """The same matmul into one reused output, as ours does on CPU (TopKSAE.pre_workspace): no page faults
    for a fresh [batch, n] output each step, so a tighter bound than `limit`."""
    W_enc = torch.randn(d_in, n) / d_in**0.5
    out: list[torch.Tensor] = []

    def step(x: torch.Tensor) -> None:
        if not out:
            out.append(x.new_empty(x.shape[0], n))
        torch.mm(x, W_enc, out=out[0])

    return step


def saelens(d_in: int, n: int, k: int, sparse: bool) -> Step | None:
    try:
        from sae_lens.saes.sae import TrainStepInput
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    except ImportError:
        return None
    cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=n, k=k, dtype="float32", device="cpu",
                                use_sparse_activations=sparse)
    sae = TopKTrainingSAE(cfg)
    optimizer = torch.optim.Adam(sae.parameters(), lr=2e-4, betas=(0.9, 0.999))
    since_fired = torch.zeros(n)

    def step(x: torch.Tensor) -> None:
        out = sae.training_forward_pass(TrainStepInput(
            sae_in=x, coefficients={}, dead_neuron_mask=since_fired > 10_000, n_training_steps=0,
            is_logging_step=False))
        with torch.no_grad():  # SAETrainer's firing statistics
            fired = out.feature_acts.bool().float().sum(-2).bool()
            fired = fired.to_dense() if fired.is_sparse else fired
            since_fired.add_(1)[fired] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    return step


def measure(steps: dict[str, Step], batches: list[torch.Tensor], rounds: int, per_round: int) -> dict[str, float]:
    """Median seconds per step of each method; one warm-up step each, then interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for name, step in steps.items():
        if not name.startswith("saelens"):  # run() warmed SAELens up already
            step(batches[0])
    for r in range(rounds):
        for name, step in steps.items():
            for i in range(1 if name.startswith("saelens") else per_round):
                start = time.perf_counter()
                step(batches[(r + i) % len(batches)])
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def run(d_in: int, n: int, k: int, batch: int, rounds: int, per_round: int, with_saelens: bool) -> None:
    torch.manual_seed(0)
    batches = [torch.randn(batch, d_in) for _ in range(4)]
    steps: dict[str, Step] = {"ours": ours(d_in, n, k), "limit": limit(d_in, n, k),
                              "limit-inplace": limit_inplace(d_in, n, k)}
    for name, sparse in [("saelens", False), ("saelens-sparse", True)]:
        step = saelens(d_in, n, k, sparse) if with_saelens else None
        try:
            if step is not None:
                step(batches[0])  # warm-up; also shows whether this mode trains at all here
                steps[name] = step
        except Exception as error:  # report the failure and benchmark the rest
            print(f"  {name} step failed: {type(error).__name__}: {str(error)[:90]}")
    seconds = measure(steps, batches, rounds, per_round)
    tok_s = {name: batch / s for name, s in seconds.items()}
    print(f"\nd_in {d_in}, n_latents {n}, k {k}, batch {batch}, fp32, threads {torch.get_num_threads()}")
    for name, rate in tok_s.items():
        print(f"  {name:15s} {seconds[name] * 1e3:9.1f} ms/step {rate:10.0f} tokens/s")
    print(f"  ours / limit    {tok_s['ours'] / tok_s['limit']:.2f}")
    print(f"  ours / limit-inplace {tok_s['ours'] / tok_s['limit-inplace']:.2f}")
    for name in ("saelens", "saelens-sparse"):
        if name in tok_s:
            print(f"  ours / {name:9s}{tok_s['ours'] / tok_s[name]:.1f}x")
    if "saelens" not in tok_s:
        print("  (sae_lens not importable: no SAELens comparison)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384], help="n_latents to test")
    parser.add_argument("--d-in", type=int, default=384)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (SAELens: 1 step each)")
    parser.add_argument("--per-round", type=int, default=2, help="steps of ours/limit per round")
    parser.add_argument("--no-saelens", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for n in args.sizes:
        run(args.d_in, n, args.k, args.batch, args.rounds, args.per_round, not args.no_saelens)


if __name__ == "__main__":
    main()
