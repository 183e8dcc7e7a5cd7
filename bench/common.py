"""Shared by the benchmark scripts: machine facts, peak memory, and writing each run's JSON.

A run writes results/bench/<name>.json; only with --record does it write the tracked
bench/results/<name>.json, so a user's run never changes a committed figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

from caviar.cli.main import user_errors
from caviar.experiment.layout import bench_dir
from caviar.job.schema import JobSpec
from caviar.ops.allocator import loaded_allocator
from caviar.tuning.search.ray_session import start_ray
from model.files import write_json_atomically

RESULTS = Path(__file__).parent / "results"  # the tracked record, written with --record
PROJECT = Path(__file__).resolve().parents[1]
JOBS = PROJECT / "tune_jobs"  # the shipped jobs, found from any working folder
# --smoke: the test fixture's reviews and a model small enough for seconds; the script runs, nothing more
FIXTURE_DATA = {"dir": str(PROJECT / "tests" / "fixtures" / "nsmc"), "val_fraction": 0.2}
SMOKE_MODEL = {"vocab_size": 300, "layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "max_len": 32}
_record = False  # set by BenchParser.parse_args


def smoke_sections(sections: dict, smoke: bool) -> dict:
    """A benchmark's job sections, with --smoke's fixture reviews and tiny model laid over them."""
    if not smoke:
        return sections
    return {**sections, "data": dict(FIXTURE_DATA), "model": {**sections.get("model", {}), **SMOKE_MODEL}}


def smoke_sets() -> list[str]:
    """--smoke as `--set` assignments, for the scripts that load a shipped job (batches of 16 for
    stage 0, so the fixture's reviews make several)."""
    sets = [f"data.{k}={v}" for k, v in FIXTURE_DATA.items()] + [f"model.{k}={v}" for k, v in SMOKE_MODEL.items()]
    return [*sets, "pretrain.batch_size=16"]


class BenchParser(argparse.ArgumentParser):
    """Every benchmark's parser: its docstring's first line, --record and --smoke."""

    def __init__(self, doc: str):
        super().__init__(description=doc.splitlines()[0])
        self.add_argument(
            "--record", action="store_true", help="write the tracked bench/results/<name>.json (default results/bench/)"
        )
        self.add_argument(
            "--smoke",
            action="store_true",
            help="seconds, on the fixture reviews and a tiny model (the test suite's form): checks the script runs",
        )

    def parse_args(self, *args, **kwargs):
        global _record
        parsed = super().parse_args(*args, **kwargs)
        _record = parsed.record
        return parsed


def project_path(path: Path | str) -> str:
    """A path as benchmark JSON records it: relative to the project, never this machine's layout."""
    return os.path.relpath(Path(path).resolve(), PROJECT)


def peak_rss_gb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_gb() -> float:
    """Resident memory of this process now (GiB), from /proc/self/statm's page count."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def cpu_model() -> str | None:
    """The CPU's name, so a figure can be traced to the hardware that produced it (sessions move between machines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "allocator": loaded_allocator(),  # glibc's malloc or jemalloc (caviar.ops.allocator): it moves speed
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def model_shape(model) -> dict:
    """The figures that size a model, for a result's record."""
    return {k: getattr(model, k) for k in ("layers", "hidden", "heads", "intermediate", "vocab_size")}


def write_result(name: str, figures: dict, smoke: bool = False) -> Path:
    """The figures as <name>.json (a --smoke run's as <name>_smoke.json, never the tracked record)."""
    if smoke:
        name += "_smoke"
    folder = RESULTS if _record and not smoke else bench_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    write_json_atomically(path, {"machine": machine(), **figures})
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    print(f"wrote {path}")
    return path


def bench_job(overrides: dict, storage: Path):
    """A JobSpec for a benchmark: the default model with the given sections laid over it."""
    return JobSpec.model_validate({"storage": str(storage), **overrides})


def timed_ray_start() -> float:
    """Seconds for ray.init() of a local cluster, as `caviar tune` starts it."""
    started = time.perf_counter()
    start_ray(None)
    return time.perf_counter() - started


def run_main(main, name: str) -> None:
    """Run a benchmark's main: a user's mistake (UserError) is one line on stderr and exit 2, through
    the CLI's own handler, never a traceback."""
    with user_errors(name):
        main()
