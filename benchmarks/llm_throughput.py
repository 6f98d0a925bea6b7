"""LLM-path throughput against the local fake server (tests/fixtures/llm_server.py): latents/min vs the ideal.

Every request to the fake server takes `--latency` seconds (default 200 ms). With `--concurrency` C
requests in flight and a stage that needs k requests per latent, the ideal is C / (k * latency)
latents per second; the whole chain (explain, then each scorer) needs the sum of the k's. The script
reports, per stage: wall time, latents/min achieved and ideal, LLM calls and prompt tokens per latent.
The simulator sends `--windows-per-call` score windows per request (default: its config default, 10).

    python benchmarks/llm_throughput.py --latents 128 --concurrency 32 --latency 0.2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake server and planted records live with the tests

from fixtures.llm import make_client, planted_records  # noqa: E402

from explain.explainers.llm import LLMExplainer  # noqa: E402
from score.judges.detection import DetectionScorer  # noqa: E402
from score.judges.fuzzing import FuzzingScorer  # noqa: E402
from score.simulation import SimulationScorer  # noqa: E402
from score.simulators.llm import LLMSimulator, LLMSimulatorConfig  # noqa: E402

log = logging.getLogger("llm_throughput")


@contextlib.contextmanager
def fake_server(latency_s: float) -> Iterator[str]:
    """tests/fixtures/llm_server.py in a child process (its own GIL, like a real remote server); yields base_url."""
    server = ROOT / "tests" / "fixtures" / "llm_server.py"
    process = subprocess.Popen([sys.executable, str(server), "--latency", str(latency_s)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def _stage(name: str, calls_rows: list[dict], n_latents: int, wall_s: float, cpu_s: float, concurrency: int,
           latency_s: float) -> dict:
    rows = [r for r in calls_rows if r["purpose"] == name and r["status"] != "cached"]
    calls_per_latent = len(rows) / n_latents
    ideal = 60.0 * concurrency / (calls_per_latent * latency_s) if calls_per_latent else float("inf")
    return {"stage": name, "wall_s": wall_s, "latents_per_min": 60.0 * n_latents / wall_s,
            "client_cpu_ms_per_call": 1000.0 * cpu_s / max(1, len(rows)),
            "ideal_latents_per_min": ideal, "calls_per_latent": calls_per_latent,
            "prompt_tokens_per_latent": sum(r["prompt_tokens"] for r in rows) / n_latents}


def run(n_latents: int, concurrency: int, latency_s: float, n_score: int, n_quiet: int, length: int,
        windows_per_call: int | None = None) -> list[dict]:
    records = planted_records(n_latents, n_explain=20, n_score=n_score, n_quiet=n_quiet, length=length)
    by_latent = {r.latent: r for r in records}
    sim_config = LLMSimulatorConfig() if windows_per_call is None else LLMSimulatorConfig(
        windows_per_call=windows_per_call)
    results: list[dict] = []
    with fake_server(latency_s) as base_url:
        client, recorder = make_client(base_url, max_concurrency=concurrency, timeout_s=30.0)
        start, cpu = time.perf_counter(), time.process_time()
        explanations = LLMExplainer(client).explain_many(records)
        stages = [("explain", time.perf_counter() - start, time.process_time() - cpu)]
        scorers = [SimulationScorer(LLMSimulator(client, sim_config)), DetectionScorer(client), FuzzingScorer(client)]
        for scorer in scorers:
            name = scorer.name
            start, cpu = time.perf_counter(), time.process_time()
            outcomes = scorer.score_many(explanations, by_latent)
            stages.append((name, time.perf_counter() - start, time.process_time() - cpu))
            assert all(o.status == "ok" for o in outcomes), name
        for name, wall, cpu_s in stages:
            results.append(_stage(name, recorder.rows, n_latents, wall, cpu_s, concurrency, latency_s))
        total_wall = sum(w for _, w, _ in stages)
        total_calls = len([r for r in recorder.rows if r["status"] != "cached"]) / n_latents
        results.append({"stage": "all", "wall_s": total_wall, "latents_per_min": 60.0 * n_latents / total_wall,
                        "client_cpu_ms_per_call": 1000.0 * sum(c for _, _, c in stages) / (total_calls * n_latents),
                        "ideal_latents_per_min": 60.0 * concurrency / (total_calls * latency_s),
                        "calls_per_latent": total_calls,
                        "prompt_tokens_per_latent": sum(r["prompt_tokens"] for r in recorder.rows) / n_latents})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2, help="fake server latency per request (s)")
    parser.add_argument("--score-activating", type=int, default=10, help="activating score windows per latent")
    parser.add_argument("--score-random", type=int, default=10, help="non-activating score windows per latent")
    parser.add_argument("--window", type=int, default=32, help="tokens per window")
    parser.add_argument("--windows-per-call", type=int, default=None,
                        help="score windows per simulation request (default: LLMSimulatorConfig's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    load = os.getloadavg()
    results = run(args.latents, args.concurrency, args.latency, args.score_activating, args.score_random,
                  args.window, args.windows_per_call)
    log.info("load average before: %s", " ".join(f"{x:.1f}" for x in load))
    log.info("| stage | wall s | latents/min | ideal latents/min | efficiency | calls/latent | prompt tok/latent "
             "| client CPU ms/call |")
    log.info("|---|---|---|---|---|---|---|---|")
    for r in results:
        log.info("| %s | %.1f | %.0f | %.0f | %.0f%% | %.1f | %.0f | %.1f |", r["stage"], r["wall_s"],
                 r["latents_per_min"], r["ideal_latents_per_min"],
                 100 * r["latents_per_min"] / r["ideal_latents_per_min"], r["calls_per_latent"],
                 r["prompt_tokens_per_latent"], r["client_cpu_ms_per_call"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
