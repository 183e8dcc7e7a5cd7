"""What a job with `fuse: K` may ask for: its members are drawn before any trial runs (tuning/members/fusion.py)
and stopped by caviar's own rung table (tuning/members/member_rungs.py), so some settings cannot apply."""

from __future__ import annotations

FUSE_HELP = (
    "configurations trained as one stacked model per trial (1 to 64; 1: one per trial; auto: a pilot picks "
    "the fastest K that fits a trial's memory share); members may differ only in optimizer, schedule, "
    "dropout and init-seed values, and ASHA or median stopping stops each member on its own"
)


def fuse_value(value):
    """`fuse`: a whole number from 1 to 64, or "auto"; anything else is one line naming what it got."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise ValueError("takes a whole number of configurations from 1 to 64, or auto")  # (got ...) is added
    return value


def fusion_problem(job) -> str | None:
    """The first thing in the job that fused trials cannot do, as the end of a one-line error."""
    if job.search == "optuna":
        return (
            "needs search: random or grid (the groups are drawn before any trial runs; optuna proposes "
            "one trial at a time)"
        )
    if problem := job.scheduler.members_problem():  # each scheduler kind says for itself (job/schema.py)
        return problem
    if job.rounds > 1 or job.model.pretrained or job.stages.pretrain or job.stages.lr_find:
        return "runs a plain search: no rounds, pretrained encoder or lr-find yet"
    return None
