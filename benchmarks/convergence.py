"""Convergence at equal steps: ours vs SAELens's TopK trainer on planted dictionaries.

Data: `tests/fixtures/planted_dictionary.py` (n unit atoms in d_in 64, 8 active per token, Exp(1)
magnitudes), the same seeded stream for every trainer. After `tokens` tokens at each batch size we report
the mean max cosine of the atoms with the decoder rows (1 = dictionary recovered) and the FVU on fresh
held-out tokens. Trainers, all with no input normalisation (SAELens's TopK default) and AuxK on:
- ours-default: `sae.train.train_sae` with TrainConfig's defaults (peak lr
  LR_BASE / sqrt(n / 2^14) / sqrt(d_in / 384), the decoder at DECODER_LR_SCALE times it, no warm-up,
  linear decay over the last 20%);
- ours-gao: ours at Gao et al.'s lr 2e-4 / sqrt(n / 2^14) for every weight, constant (the first build's
  default);
- saelens: `TopKTrainingSAE` + Adam at ours-default's peak lr, constant (its trainer's default schedule),
  grad-norm clipping 1.0 as its SAETrainer, dead mask after the same window as ours.

    PYTHONPATH=.:tests nice -n 5 python benchmarks/convergence.py --sizes 512 2048 --batches 1024 4096
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import torch
from fixtures.planted_dictionary import PlantedDictionary

from sae.config import SAEConfig, TrainConfig
from sae.metrics import FVUAccumulator
from sae.train import dead_window, train_sae

D_IN, ACTIVE = 64, 8
TRAINERS = ("ours-default", "ours-gao", "saelens")


def ours(data: PlantedDictionary, n: int, batch: int, tokens: int, lr: float | None, defaults: bool):
    cfg = SAEConfig(d_in=D_IN, n_latents=n, k=ACTIVE, normalize_activations="none")
    extra = {} if defaults else {"warmup_frac": 0.0, "decay_frac": 0.0, "decoder_lr_scale": 1.0}
    train = TrainConfig(tokens=tokens, batch_size=batch, lr=lr, progress=False, log_every=10**9, **extra)
    sae = train_sae(cfg, train, data.batches(batch), data.sample(16_384)).sae
    return sae.W_dec.detach(), lambda x: sae(x).x_hat


def saelens(data: PlantedDictionary, n: int, batch: int, tokens: int, lr: float):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=n, k=ACTIVE, dtype="float32", device="cpu"))
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    window = dead_window(SAEConfig(d_in=D_IN, n_latents=n, k=ACTIVE, dead_tokens=1_000_000),
                         TrainConfig(tokens=tokens))
    since_fired = torch.zeros(n)
    stream = data.batches(batch)
    for step in range(-(-tokens // batch)):
        x = next(stream)
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={},
                                                       dead_neuron_mask=since_fired > window, n_training_steps=step,
                                                       is_logging_step=False))
        with torch.no_grad():
            fired = out.feature_acts.bool().any(0)
            since_fired.add_(batch)[fired] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        return sae.W_dec.detach().clone(), lambda x: sae.decode(sae.encode(x))


def evaluate(data: PlantedDictionary, W_dec: torch.Tensor, reconstruct) -> tuple[float, float]:
    acc = FVUAccumulator()
    with torch.no_grad():
        for _ in range(4):
            x = data.sample(4096)
            acc.add(x, reconstruct(x))
    return data.mean_max_cosine(W_dec), acc.value()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--tokens", type=int, default=600_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS,
                        help="which rows to (re)measure; saelens needs sae-lens installed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f}; tokens {args.tokens}; d_in {D_IN}, {ACTIVE} active")
    print("| n | batch | steps | trainer | lr | mean max cos | held-out FVU | s |\n|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        peak = TrainConfig().resolved_lr(n, D_IN)
        gao = 2e-4 / (n / 2**14) ** 0.5  # Gao et al. give no d_in term
        for batch in args.batches:
            steps = -(-args.tokens // batch)
            for name in args.trainers:
                data = PlantedDictionary(D_IN, n, ACTIVE, seed=0)
                start = time.perf_counter()
                if name == "saelens":
                    trained = saelens(data, n, batch, args.tokens, peak)
                else:
                    trained = ours(data, n, batch, args.tokens, None if name == "ours-default" else gao,
                                   name == "ours-default")
                cos, fvu = evaluate(data, *trained)
                lr = gao if name == "ours-gao" else peak
                print(f"| {n} | {batch} | {steps} | {name} | {lr:.2e} | {cos:.3f} | {fvu:.3f} | "
                      f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
