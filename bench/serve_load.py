"""Load on the promoted model's HTTP service: 2,000 single requests from 32 concurrent clients, then batches.

To run: python -m bench.serve_load   (the registry's nsmc-sentiment/current, or --model DIR)
        python -m bench.serve_load --smoke   (a tiny model trained and promoted on the test fixture, 100 requests)

Traffic goes to 127.0.0.1 only; every loop is bounded in count and in time, and the server it
starts is stopped at the end. Targets on 2 CPUs: p50 <= 10 ms, p99 <= 50 ms, >= 300 requests/s,
0 errors.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import FIXTURE_DATA, SMOKE_MODEL, BenchParser, bench_job, project_path, write_result
from caviar.experiment.layout import registry_root
from model.config import DataConfig
from model.data import load_splits

HOST = "127.0.0.1"
DEADLINE_S = 180  # the whole load phase stops by itself after this, finished or not


def review_texts(n: int, smoke: bool = False) -> list[str]:

    fixture = Path(__file__).parents[1] / "tests" / "fixtures" / "nsmc"
    data_dir = str(fixture) if smoke else os.environ.get("NSMC_DIR") or str(fixture)
    texts = load_splits(DataConfig(dir=data_dir, test_limit=max(n, 100))).test.document.tolist()
    return random.Random(0).choices(texts, k=n)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


async def hammer(url: str, payloads: list[dict], concurrency: int, deadline: float) -> tuple[list[float], int, float]:
    """Send every payload once from `concurrency` clients; returns latencies (s), errors, wall seconds."""
    latencies, errors = [], 0
    queue = iter(payloads)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:

        async def worker() -> None:
            nonlocal errors
            for payload in queue:
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=payload)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def stats(latencies: list[float], errors: int, wall: float, sent: int) -> dict:
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "planned": sent,
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests_per_s": len(latencies) / wall,
        "wall_s": wall,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(model: Path, threads: int | None) -> tuple[subprocess.Popen, str]:
    """`caviar serve` on a free loopback port, once /health answers (up to 60 s for the model to load)."""
    port = free_port()
    command = [sys.executable, "-c", "from caviar.cli.main import main; main()", "serve", "--model", str(model)]
    command += ["--host", HOST, "--port", str(port)] + (["--threads", str(threads)] if threads else [])
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://{HOST}:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit(f"serve_load: the server did not come up: {server.stderr.read().decode()[-500:]}")


def measure(base: str, server_pid: int, args) -> tuple[dict, dict, dict, dict]:
    """Single requests from many clients, the same from one client, then batches; and the model card."""
    texts = review_texts(max(args.requests, args.batch_requests * args.batch_size), args.smoke)
    deadline = time.monotonic() + DEADLINE_S
    asyncio.run(hammer(f"{base}/predict", [{"text": t} for t in texts[:100]], args.clients, deadline))  # warm-up
    singles = [{"text": t} for t in texts[: args.requests]]
    server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
    single = stats(*asyncio.run(hammer(f"{base}/predict", singles, args.clients, deadline)), len(singles))
    # who spends the CPU: on 2 cores the load generator competes with the server it measures
    single["server_cpu_ms_per_request"] = 1000 * (cpu_seconds(server_pid) - server_cpu) / single["requests"]
    single["client_cpu_ms_per_request"] = 1000 * (time.process_time() - client_cpu) / single["requests"]
    alone = [{"text": t} for t in texts[:200]]
    unloaded = stats(*asyncio.run(hammer(f"{base}/predict", alone, 1, deadline)), len(alone))
    size = args.batch_size
    batches = [{"texts": texts[i * size : (i + 1) * size]} for i in range(args.batch_requests)]
    batch = stats(*asyncio.run(hammer(f"{base}/predict/batch", batches, 8, deadline)), len(batches))
    batch["texts_per_s"] = batch["requests_per_s"] * size
    return single, unloaded, batch, httpx.get(f"{base}/model", timeout=5).json()


def smoke_model(folder: Path) -> Path:
    """--smoke's model: a tiny one trained on the fixture reviews (`caviar train`) and promoted into a
    registry of its own, so the service loads what it loads in use."""
    # lazy: torch and the trainer, for --smoke only (a load run only sends requests)
    from caviar.registry.promote import promote
    from caviar.tuning.stages.single_run import run_single

    job = bench_job({"name": "smoke", "data": FIXTURE_DATA, "model": SMOKE_MODEL, "train": {"epochs": 1}}, folder)
    run_single(job, folder / "run", load_splits(job.data), progress=False)
    promote(folder / "run", "smoke", force=True, root=folder / "registry")
    return folder / "registry" / "smoke" / "current"


def main() -> None:
    parser = BenchParser(__doc__)
    parser.add_argument("--model", type=Path, default=registry_root() / "nsmc-sentiment" / "current")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--batch-requests", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="server torch threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.model, args.requests, args.clients, args.batch_requests = smoke_model(Path(tmp)), 100, 4, 10
        run(args)


def run(args) -> None:
    if not args.model.exists():
        sys.exit(f"serve_load: {args.model} does not exist; promote a model first (caviar promote results/<exp>)")

    server, base = start_server(args.model, args.threads)
    try:
        single, unloaded, batch, card = measure(base, server.pid, args)
    finally:
        server.terminate()
        server.wait(timeout=30)

    met = {
        "p50_ms": single["p50_ms"] <= 10,
        "p99_ms": single["p99_ms"] <= 50,
        "requests_per_s": single["requests_per_s"] >= 300,
        "errors": single["errors"] == 0 and batch["errors"] == 0 and single["requests"] == args.requests,
    }
    write_result(
        "serve_load",
        {
            "model": project_path(args.model),
            "model_config": card.get("config", {}).get("model"),
            "clients": args.clients,
            "single": single,
            "one_client": unloaded,
            "batch": {**batch, "batch_size": args.batch_size, "clients": 8},
            "targets": {"p50_ms": "<= 10", "p99_ms": "<= 50", "requests_per_s": ">= 300", "errors": "0"},
            "met": met,
        },
        args.smoke,
    )


if __name__ == "__main__":
    main()
