"""Where everything caviar writes lives: the results root, and every file and folder of an experiment.

Each name is spelled here once. The results root is a job's `storage` (default `results`, relative to
the working folder); runs of `caviar train`, `lr-find` and `pretrain` go beside the experiments in it.
The registry is the user's, not a project's: ~/.local/share/caviar/registry unless CAVIAR_REGISTRY
moves it. `Storage` is one type for a local folder
and a URI Ray's storage_path takes (s3://, gs://), so no code wraps a URI in Path (which folds
"s3://" into "s3:/") and asks "is it remote?" anywhere else.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from caviar.job.resolved_keys import RECORD_NAME
from model.errors import UserError
from model.settings import settings

RESULTS = "results"  # the default storage, relative to the working folder

# an experiment folder (caviar tune)
JOB_FILE = RECORD_NAME  # caviar_job.json: the resolved job, written before the first trial starts
OUTCOME_FILE = "caviar_tune.json"  # the end of `caviar tune` (experiment/outcome.py)
DRIVER_FILE = "caviar_driver.json"  # the driver's host and pid: running or interrupted (experiment/listing.py)
ROUNDS_FILE = "caviar_rounds.json"  # coarse-to-fine lineage: each round's space, recorded before it runs
FUSE_PILOT_FILE = "fuse_pilot.json"  # `fuse: auto`: the pilot's figures and the K it chose
PRETRAIN_FILE = "caviar_pretrain.json"  # stage 0: the pretrained folder the trials fine-tune, and its key
MLFLOW_FILE = "caviar_mlflow.json"  # the MLflow runs an experiment was logged to (experiment/mlflow_tracking.py)
BUDGET_FILE = "caviar_budget.json"  # the trials the job's time budget cut
MEMBERS_DIR = "members"  # a fused trial's members, each in <trial>/members/<member id>/ like a trial
MEMBER_FILE = "member.json"  # a member's group, place, configuration and status
GROUP_STATE = "fused_group.pt"  # a fused trial's checkpoint: the stack, its optimizer, every member's state
GROUP_STEP = "fused_group.json"  # beside it, the group's step: read on resume without torch.load
RAY_TUNER_STATE = "tuner.pkl"  # Ray's pickled Tuner: what `caviar resume` restores first
LEADERBOARD_CSV, LEADERBOARD_MD, REPORT_FILE = "leaderboard.csv", "leaderboard.md", "report.json"
PLOTS = (
    "learning_curves.png",
    "optimization_history.png",
    "params_vs_metric.png",
    "parallel_coordinates.png",
    "param_importance.png",
)
RESEED_DIR, RESEED_FILE = "reseed", "reseed.json"  # seed re-runs: <experiment>/reseed/config-<rank>/
ROUND = re.compile(r"round-([1-9][0-9]*)")
# a `caviar train` run folder
TRAIN_RESULT = "result.json"  # the run's summary; its presence is what `caviar promote` knows a run by
TRAIN_CHECKPOINT = "checkpoint"
# a `caviar lr-find` folder, and lr-find inside an experiment
LR_FIND_JSON, LR_FIND_PLOT = "lr_find.json", "lr_find.png"
# a `caviar pretrain` folder
PRETRAIN_CARD = "pretrain.json"  # written last: a folder without one is unfinished
PRETRAIN_PLOT = "mlm_loss.png"
# the roots beside the experiments
TRAIN_DIR, LR_FIND_DIR, PRETRAIN_DIR, REGISTRY_DIR, BENCH_DIR = "train", "lr_find", "pretrain", "registry", "bench"


@dataclass(frozen=True)
class Storage:
    root: str  # an absolute local path, or a URI

    @classmethod
    def of(cls, storage: str) -> Storage:
        return cls(storage.rstrip("/") if "://" in storage else str(Path(storage).expanduser().resolve()))

    @property
    def is_remote(self) -> bool:
        return "://" in self.root

    def uri(self, experiment: str) -> str:
        """The experiment's location as Ray and the user see it."""
        return f"{self.root}/{experiment}"

    def local(self, experiment: str) -> Path:
        """The experiment's folder on this machine; remote storage has none."""
        if self.is_remote:
            raise UserError(f"{self.uri(experiment)} is remote: copy it to a local folder first")
        return Path(self.root) / experiment

    def check_reachable(self) -> None:
        """Reach remote storage before the first trial, not in a trial's first checkpoint."""
        # lazy: object_store loads torch (~1.8 s), and every command reads this module
        from caviar.experiment.object_store import check_reachable

        check_reachable(self.root)

    @property
    def local_root(self) -> Path:
        """Where this machine keeps what is not an experiment (train runs, lr-find, stage 0): the
        storage folder, or `results` beside a remote storage."""
        return Path(RESULTS if self.is_remote else self.root)


def timestamped(name: str) -> str:
    """<name>-<YYYYmmdd-HHMMSS>: the default name of every run, experiment and lr-find folder."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def train_run_dir(storage: str, name: str) -> Path:
    return Storage.of(storage).local_root / TRAIN_DIR / timestamped(name)


def lr_find_dir(storage: str, name: str) -> Path:
    return Storage.of(storage).local_root / LR_FIND_DIR / timestamped(name)


def pretrain_root(storage: str) -> Path:
    """<storage>/pretrain: beside the experiments, so every node of a cluster with shared storage sees it."""
    return Storage.of(storage).local_root / PRETRAIN_DIR


def registry_root() -> Path:
    """CAVIAR_REGISTRY, else a folder of the user's (as Hugging Face keeps its cache): the same
    registry from any working folder, absolute so that every command can say where it is."""
    chosen = settings()
    return (chosen.registry or chosen.data_home / "caviar" / REGISTRY_DIR).resolve()


def legacy_registry() -> Path | None:
    """`results/registry` in the working folder, where caviar before 0.2 kept the registry, when it
    holds models and is not the registry in use: the commands that use the registry name it."""
    old = Path(RESULTS, REGISTRY_DIR).resolve()
    if settings().registry is not None or old == registry_root() or not old.is_dir():
        return None
    return old if any(p.is_dir() and not p.name.startswith(".") for p in old.iterdir()) else None


def bench_dir() -> Path:
    """Where a benchmark writes its JSON unless --record asks for bench/results/."""
    return Path(RESULTS) / BENCH_DIR


def round_dir(experiment_dir: Path, r: int) -> Path:
    return Path(experiment_dir) / f"round-{r}"


def round_of(folder: Path) -> int | None:
    """r for a round-<r> folder, else None."""
    match = ROUND.fullmatch(Path(folder).name)
    return int(match.group(1)) if match else None


def round_dirs(experiment_dir: Path) -> list[Path]:
    """round-1, round-2, ... of a coarse-to-fine experiment, in order (none for a one-round job)."""
    found = [p for p in Path(experiment_dir).glob("round-*") if p.is_dir() and round_of(p) is not None]
    return sorted(found, key=round_of)


def reseed_dir(experiment_dir: Path) -> Path:
    return Path(experiment_dir) / RESEED_DIR
