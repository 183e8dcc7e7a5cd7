"""What a job with `fuse: K` may ask for: its members are drawn before any trial runs (tuning/fusion.py)
and stopped by caviar's own rung table (tuning/member_rungs.py), so some settings cannot apply."""

from __future__ import annotations


def fusion_problem(job) -> str | None:
    """The first thing in the job that fused trials cannot do, as the end of a one-line error."""
    scheduler = job.scheduler
    problems = {
        "needs search: random or grid (the groups are drawn before any trial runs; optuna proposes "
        "one trial at a time)": job.search == "optuna",
        f"works with scheduler asha or fifo; {scheduler.type} acts on whole trials": scheduler.type
        not in ("asha", "fifo"),
        "runs a plain search: no rounds, pretrained encoder or lr-find yet": job.rounds > 1
        or bool(job.model.pretrained)
        or job.stages.pretrain
        or job.stages.lr_find,
        "counts evaluations with one ASHA bracket (scheduler.time_attr: training_iteration, brackets: 1)": (
            scheduler.type == "asha" and (scheduler.time_attr != "training_iteration" or scheduler.brackets != 1)
        ),
    }
    return next((problem for problem, found in problems.items() if found), None)
