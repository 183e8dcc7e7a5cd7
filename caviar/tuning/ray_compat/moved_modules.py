"""Ray's pickles of an experiment made before caviar's tuning modules moved into packages still load.

Ray pickles the Tuner (tuner.pkl) with caviar's callbacks and live view in it, by module path, and
unpickles it on `caviar resume`. Those modules moved (tuning/ into stages/, search/, members/; the
disk checks to ops/), so each old path is an alias of the module that replaced it. Upstream: none
filed (pickles name modules by design). Canary: test_ray_compat unpickles a tuner.pkl that names
the old paths.
"""

from __future__ import annotations

import importlib
import sys

MOVED = {
    "caviar.tuning.disk_guard": "caviar.ops.disk_guard",
    "caviar.tuning.disk_room": "caviar.ops.disk_room",
    "caviar.tuning.live_lines": "caviar.tuning.search.live_lines",
    "caviar.tuning.trial": "caviar.tuning.search.trial",
    "caviar.tuning.tuner": "caviar.tuning.search.tuner",
    "caviar.tuning.schedulers": "caviar.tuning.search.schedulers",
    "caviar.tuning.search_space": "caviar.tuning.search.search_space",
    "caviar.tuning.fused_trial": "caviar.tuning.members.fused_trial",
    "caviar.tuning.fused_search": "caviar.tuning.members.fused_search",
    "caviar.tuning.member_rungs": "caviar.tuning.members.member_rungs",
}


def alias_moved_modules() -> None:
    """Each old module path names its new module (imported on first use), before anything unpickles."""
    for old, new in MOVED.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)
