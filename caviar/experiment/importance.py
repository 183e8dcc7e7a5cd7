"""Which hyperparameters mattered: Optuna's fANOVA evaluator over an experiment's trials.

fANOVA fits a random forest from the sampled values to each trial's best metric and splits the
metric's variance between the parameters. With few trials that forest is guesswork, so the result
carries how many trials it rests on and a warning under TRUST_FROM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from caviar.job.distributions import Distribution

TRUST_FROM = 20  # trials; below this the ranking is a hint, not a finding
SEED = 0  # the forest's seed: the same experiment gives the same figure every time


@dataclass
class Importance:
    metric: str
    trials: int  # trials that reported the metric, each taken at its best evaluation
    stopped_early: int  # of those, how many the scheduler stopped (their best is an early one)
    by_param: dict[str, float] = field(default_factory=dict)  # share of the variance, summing to 1
    note: str | None = None  # why it is missing, or why not to trust it

    def as_json(self) -> dict:
        return {
            "method": "fANOVA (optuna)",
            "metric": self.metric,
            "trials": self.trials,
            "stopped_early": self.stopped_early,
            "by_param": self.by_param,
            "note": self.note,
        }

    def describe(self) -> str:
        if not self.by_param:
            return f"parameter importance: {self.note}"
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in self.by_param.items())
        return f"parameter importance (fANOVA over {self.trials} trials): {ranked}" + (
            f"; {self.note}" if self.note else ""
        )


def fanova(space: dict[str, Distribution], rows: list[dict], metric: str, mode: str) -> Importance:
    """rows: one per trial that reported, {"params": {...}, "value": best metric, "stopped_early": bool}."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its "A new study created" line per call
    distributions = {key: _optuna_distribution(dist) for key, dist in space.items()}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    stopped = 0
    for row in rows:
        params = {k: row["params"].get(k) for k in distributions}
        if not _fits(params, distributions) or not math.isfinite(row["value"]):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=row["value"]))
        stopped += bool(row["stopped_early"])
    result = Importance(metric=metric, trials=len(study.trials), stopped_early=stopped)
    varied = [k for k in distributions if len({repr(t.params[k]) for t in study.trials}) > 1]
    if len(study.trials) < 2 or not varied:
        result.note = f"not computed: {len(study.trials)} trials over {len(varied)} varied parameters"
        return result
    if len({t.value for t in study.trials}) == 1:  # fANOVA divides by the variance: there is none
        result.note = f"not computed: every trial has the same {metric}"
        return result
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=SEED)
    result.by_param = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied)
    if len(study.trials) < TRUST_FROM:
        result.note = f"only {len(study.trials)} trials: a hint, not a ranking (trust it from {TRUST_FROM})"
    return result


def _optuna_distribution(dist: Distribution):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dist.kind in ("choice", "grid"):
        return CategoricalDistribution([v if isinstance(v, bool | int | float | str) else repr(v) for v in dist.args])
    if dist.kind == "randint":
        return IntDistribution(int(dist.args[0]), int(dist.args[1]))
    return FloatDistribution(float(dist.args[0]), float(dist.args[1]), log=dist.kind == "loguniform")


def _fits(params: dict, distributions: dict) -> bool:
    """A trial of an earlier space (or a hand-edited record) whose value lies outside is left out."""
    from optuna.distributions import CategoricalDistribution

    for key, value in params.items():
        dist = distributions[key]
        if isinstance(dist, CategoricalDistribution):
            if value not in dist.choices:
                return False
        elif not isinstance(value, int | float) or isinstance(value, bool) or not dist.low <= value <= dist.high:
            return False
    return True
