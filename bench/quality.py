"""The quality target: NSMC test accuracy of the promoted model, pretrained on NSMC's own train text.

To run: NSMC_DIR=../shared/data/nsmc python -m bench.quality                 (both routes, side by side)
        NSMC_DIR=../shared/data/nsmc python -m bench.quality --no-compare    (the pretrained route only)
        NSMC_DIR=../shared/data/nsmc python -m bench.quality --experiment results/<done>   (skip tuning)
        NSMC_DIR=../shared/data/nsmc python -m bench.quality --experiment results/<done> \
            --compare-experiment results/<from-scratch done>                      (score both, tune neither)
        NSMC_DIR=../shared/data/nsmc python -m bench.quality --experiment results/<done> \
            --compare-record bench/results/quality.json       (from-scratch figures as an earlier run measured them)

The route (tune_jobs/nsmc_pretrained.yaml): masked-LM pretraining on the train split's reviews,
an ASHA search over fine-tuning settings, promotion (validation chooses), then one pass over the
whole test file. Target: >= 88.0% test accuracy in <= 2 h on 2 CPUs, with no outside weights and
no text beyond NSMC's train split. The comparison: the from-scratch job (nsmc_best.yaml), run after
it in the same process with its Tuner's time budget set to the pretrained route's wall time. Its
8 trials alone end in ~47 min, so it may draw up to FILL_FACTOR times as many: the clock, not the
trial count, ends its search, and both routes spend the same wall time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from bench.common import BenchParser, project_path, run_main, write_result
from caviar.experiment.layout import OUTCOME_FILE, PRETRAIN_CARD, PRETRAIN_FILE
from caviar.experiment.record import load_job_of, load_trials
from caviar.job.loading import load_job
from caviar.ops.allocator import run_on_jemalloc
from caviar.registry.promote import promote
from caviar.tuning.pipeline import reseed_experiment, tune_job
from model.data import TEST_FILE, locate_nsmc, read_reviews
from model.errors import UserError
from model.evaluate import evaluate_checkpoint
from model.files import read_json_object
from model.predict import Predictor

TARGET = 0.88
WALL_LIMIT_S = 7200
FILL_FACTOR = 8  # the comparison's trial count, as a multiple of its job's; its time budget binds first


def main() -> None:
    run_on_jemalloc()  # the route as the `caviar` command runs it
    parser = BenchParser(__doc__)
    parser.add_argument("--job", type=Path, default=Path("tune_jobs/nsmc_pretrained.yaml"))
    parser.add_argument("--compare-job", type=Path, default=Path("tune_jobs/nsmc_best.yaml"))
    parser.add_argument("--experiment", type=Path, default=None, help="a finished experiment: skip tuning")
    compare = parser.add_mutually_exclusive_group()
    compare.add_argument("--no-compare", action="store_true", help="skip the from-scratch route")
    compare.add_argument(
        "--compare-experiment",
        type=Path,
        default=None,
        help="a finished from-scratch experiment: score it, do not rerun",
    )
    compare.add_argument(
        "--compare-record",
        type=Path,
        default=None,
        help="an earlier quality JSON: report its from-scratch route as measured, run nothing",
    )
    parser.add_argument("--reseed", type=int, default=None, help="seed re-runs before promotion")
    args = parser.parse_args()

    recorded = recorded_scratch_route(args.compare_record) if args.compare_record else None  # read before record()
    main_route = route(args.job, args.experiment, args.reseed)
    record(main_route, None)  # kept even if the comparison is cut short
    if args.no_compare:
        return
    scratch = recorded or route(args.compare_job, args.compare_experiment, args.reseed, budget_s=main_route["wall_s"])
    budget = scratch["time_budget_s"]  # None: a finished run, scored, that had no budget
    if budget is None or abs(budget - main_route["wall_s"]) > 0.05 * main_route["wall_s"]:
        had = "no time budget" if budget is None else f"{budget:.0f} s"
        print(f"note: the from-scratch search had {had}, this route took {main_route['wall_s']:.0f} s")
    record(main_route, scratch)


def recorded_scratch_route(path: Path) -> dict:
    """The from-scratch side of an earlier quality run, as it was measured. Rerunning a route that has
    plateaued costs 2 h for a figure that would barely move; the copy says where it came from."""
    recorded = read_json_object(path)
    scratch = recorded.get("scratch_route")
    if not isinstance(scratch, dict):
        raise UserError(f"--compare-record {path}: holds no from-scratch route ('scratch_route' is empty)")
    return {**scratch, "reused_from": f"{project_path(path)}, measured {recorded.get('machine', {}).get('when', '?')}"}


def record(main_route: dict, scratch: dict | None) -> None:
    write_result(
        "quality",
        {
            "route": main_route,
            "scratch_route": scratch,
            "gain_test_accuracy": None if scratch is None else main_route["test_accuracy"] - scratch["test_accuracy"],
            "target": {"test_accuracy": f">= {TARGET}", "wall_s": f"<= {WALL_LIMIT_S}"},
            "met": {
                "test_accuracy": main_route["test_accuracy"] >= TARGET,
                "wall_s": main_route["wall_s"] <= WALL_LIMIT_S,
            },
        },
    )


def route(job_file: Path, experiment: Path | None, reseed: int | None, budget_s: float | None = None) -> dict:
    """Tune (unless given a finished experiment), promote, and score once on the whole test file."""
    started, tuned_here = time.perf_counter(), experiment is None
    if experiment is None:
        job = load_job(job_file)
        if job.model.pretrained:
            raise UserError(f"{job_file}: model.pretrained names outside weights; the target allows none")
        if budget_s is not None:
            job = job.model_copy(update={"time_budget_s": budget_s, "num_samples": job.num_samples * FILL_FACTOR})
        experiment = Path(tune_job(job).experiment_dir)
    if reseed:
        reseed_experiment(experiment, load_job_of(experiment).final.model_copy(update={"seeds": reseed}))
    with tempfile.TemporaryDirectory() as registry:
        ray.shutdown()
        done = promote(experiment, "quality", force=True, root=Path(registry)).as_json()
        job = load_job_of(experiment)
        full_test = read_reviews(locate_nsmc(job.data) / TEST_FILE)  # the whole file, whatever test_limit says
        metrics = evaluate_checkpoint(Path(done["path"]), full_test)
    wall = time.perf_counter() - started
    outcome = read_json_object(experiment / OUTCOME_FILE)
    if not tuned_here:
        wall += outcome["wall_s"]  # tuned earlier: count that run's wall time too
    stage0 = experiment / PRETRAIN_FILE
    pretrain = _pretrain_figures(read_json_object(stage0)) if stage0.is_file() else None
    if pretrain is not None and (pretrain["reused"] or not tuned_here):
        # pretrained by an earlier job, or outside the tuning run's own clock: it belongs to the route
        wall += pretrain["wall_s"]
    return {
        "job": job.name,
        "experiment": project_path(experiment),
        "pretrain": pretrain,
        "time_budget_s": job.time_budget_s,  # as the search ran, also when scored from a finished one
        "trials": len(outcome["trials"]),
        "search_wall_s": outcome["wall_s"],
        "stopped_early": outcome["stopped_early"],
        "cut_by_budget": outcome.get("cut_by_budget"),  # None: scored from a run before caviar recorded cuts
        "promoted": {k: done[k] for k in ("version", "val_accuracy", "reseed")},
        "test_examples": len(full_test),
        "test_accuracy": metrics.accuracy,
        "test_f1": metrics.f1,
        "wall_s": wall,  # pretraining, tuning, promotion and the test pass
        "ensemble_of_kept_trials": ensemble_of_kept(experiment, job.metric, job.mode, full_test),
    }


def _pretrain_figures(record: dict) -> dict:
    card = read_json_object(Path(record["folder"]) / PRETRAIN_CARD)
    keep = ("texts", "not_read", "steps", "mlm_loss", "examples_per_s", "wall_s", "settings")
    return {"folder": project_path(record["folder"]), "reused": record["reused"], **{k: card[k] for k in keep}}


def ensemble_of_kept(experiment: Path, metric: str, mode: str, reviews) -> dict:
    """Mean P(긍정) over the best checkpoints the job kept (its best K trials). Not the promoted
    model, and outside the timed run: a pointer to how far averaging alone would move the figure."""
    folders = [c for t in load_trials(experiment) if (c := t.best_checkpoint(metric, mode))]
    texts = reviews.document.tolist()
    probs = np.mean([Predictor.from_checkpoint(f).probabilities(texts) for f in folders], axis=0)
    return {"members": len(folders), "test_accuracy": float(((probs >= 0.5) == reviews.label.to_numpy()).mean())}


if __name__ == "__main__":
    run_main(main, "bench.quality")
