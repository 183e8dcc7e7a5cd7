"""The promotion gate (issue 31, item 3): a model does not beat itself, a clearly better one is
promoted, and the test file is never opened to decide, checked by the file accesses themselves."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from caviar.registry import store as registry
from caviar.registry.gate import GateResult
from model.config import DataConfig
from model.data import load_splits
from tests.conftest import TINY, tiny_job_yaml

pytestmark = pytest.mark.slow
_watching: list[list[str]] = []  # while a list is here, the audit hook adds each test-file open to it


def _audit(event: str, args: tuple) -> None:
    if _watching and event == "open" and str(args[0]).endswith("ratings_test.txt"):
        _watching[-1].append(str(args[0]))


sys.addaudithook(_audit)  # an audit hook stays for the process: it records only while watching


def opens_of_the_test_file(run) -> tuple[object, list[str]]:
    _watching.append([])
    try:
        return run(), _watching[-1]
    finally:
        _watching.pop()


def constant_copy(run_dir, folder):
    """The same run, its classifier made to say 부정 whatever it reads: a clearly weaker model."""
    shutil.copytree(run_dir, folder)
    weights = folder / "checkpoint" / "model.safetensors"
    tensors = load_file(weights)
    for key in [k for k in tensors if k.startswith("classifier")]:
        tensors[key] = torch.zeros_like(tensors[key])
        if key.endswith("bias"):
            tensors[key][0] = 5.0
    save_file(tensors, weights, metadata={"format": "pt"})
    return folder


def test_the_gate_decides_on_the_gate_reviews_alone(cli, registry_dir, tmp_path):
    # 56 gate reviews of the 240; 8 epochs make a model near 85% there, against the weak one's 45%
    job = tiny_job_yaml(tmp_path / "job.yaml", data={**TINY["data"], "gate": 0.2}, train={**TINY["train"], "epochs": 8})
    strong = tmp_path / "strong"
    assert cli("train", job, "--out", strong).returncode == 0
    weak = constant_copy(strong, tmp_path / "weak")

    first, opened = opens_of_the_test_file(lambda: cli("promote", weak, "--name", "nsmc", "--json"))
    assert first.returncode == 0, first.stderr
    assert "the first version, gate accuracy 0.4464 on 56 reviews" in first.stderr  # --json: lines on stderr
    assert opened, "the test file is read to report, once the decision is made"

    better = cli("promote", strong, "--name", "nsmc", "--json")
    assert better.returncode == 0, better.stderr
    gate = json.loads(better.stdout.strip().splitlines()[-1])["gate"]
    assert gate["against"] == "v1" and gate["passed"] and gate["interval"][0] > 0 and gate["reviews"] == 56
    card = registry.read_card(registry_dir / "nsmc" / "v2")
    assert card["gate"]["gain"] == gate["gain"] and set(card["roles"]) == {"val", "gate", "test"}
    assert GateResult.from_card(card["gate"]).as_card() == card["gate"]  # the typed record reads the card back

    itself = constant_copy(strong, tmp_path / "itself")  # then undo the damage: strong's weights, but
    shutil.copy(strong / "checkpoint" / "model.safetensors", itself / "checkpoint" / "model.safetensors")
    nudged = load_file(itself / "checkpoint" / "model.safetensors")  # other bytes, the same answers
    key = next(k for k in sorted(nudged) if k.endswith("bias"))
    nudged[key] = nudged[key] + 1e-7
    save_file(nudged, itself / "checkpoint" / "model.safetensors", metadata={"format": "pt"})
    refused, opened = opens_of_the_test_file(lambda: cli("promote", itself, "--name", "nsmc"))
    assert refused.returncode == 1
    assert "not promoted: +0.00 points [+0.00, +0.00] on 56 gate reviews against v2; --force" in refused.stderr
    assert opened == [], "the gate must decide without opening the test file"
    assert registry.current_version(registry_dir / "nsmc") == "v2"

    forced = cli("promote", itself, "--name", "nsmc", "--force")
    assert forced.returncode == 0 and "below the gate but forced" in forced.stdout, forced.stderr
    assert registry.current_version(registry_dir / "nsmc") == "v3"

    # v3 as if trained on other data: said so, and both are still scored on the candidate's gate reviews
    card_file = registry_dir / "nsmc" / "v3" / registry.CARD
    card_file.write_text(json.dumps({**json.loads(card_file.read_text()), "data_fingerprint": "other"}))
    nudged[key] = nudged[key] + 1e-7
    save_file(nudged, itself / "checkpoint" / "model.safetensors", metadata={"format": "pt"})
    other = cli("promote", itself, "--name", "nsmc")
    assert other.returncode == 1
    assert other.stderr.strip().endswith(
        "not promoted: +0.00 points [+0.00, +0.00] on 56 gate reviews against v3; "
        "v3 was trained on other data; --force promotes anyway"
    ), other.stderr


def test_a_version_split_otherwise_shares_no_gate_review_and_too_few_decide_nothing(cli, registry_dir, tmp_path):
    """Issue 47, item 2: the version in service was trained with other split settings (gate, validation
    share, seed, limit). The candidate is scored only on the gate reviews that version never trained
    on or chose by, the card says how many were dropped, and fewer than promote.min_gate_reviews
    (500 by default) refuse the promotion unless --force."""
    served_data = {**TINY["data"], "gate": 0.1, "val_fraction": 0.3, "seed": 7, "limit": 150}
    served_job = tiny_job_yaml(tmp_path / "served.yaml", data=served_data, train={**TINY["train"], "epochs": 1})
    assert cli("train", served_job, "--out", tmp_path / "served").returncode == 0
    assert cli("promote", tmp_path / "served", "--name", "nsmc").returncode == 0

    data = {**TINY["data"], "gate": 0.2}
    job = tiny_job_yaml(tmp_path / "job.yaml", data=data, train={**TINY["train"], "epochs": 1}, promote={})
    assert cli("train", job, "--out", tmp_path / "candidate").returncode == 0
    refused = cli("promote", tmp_path / "candidate", "--name", "nsmc")
    assert refused.returncode == 1 and registry.current_version(registry_dir / "nsmc") == "v1"
    assert "gate reviews against v1 (promote.min_gate_reviews 500): " in refused.stderr
    assert "of the candidate's 56 were trained on or chosen by before; raise data.gate; --force" in refused.stderr

    forced = cli("promote", tmp_path / "candidate", "--name", "nsmc", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    card = registry.read_card(registry_dir / "nsmc" / "v2")
    gate = card["gate"]
    assert gate["passed"] is False and gate["min_reviews"] == 500 and gate["split"] == 2 and gate["drawn"] == 56
    served = load_splits(DataConfig.model_validate(registry.read_card(registry_dir / "nsmc" / "v1")["config"]["data"]))
    seen = set(served.train.document) | set(served.val.document)
    mine = load_splits(DataConfig.model_validate(card["config"]["data"])).gate
    assert gate["seen_before"] == int(mine.document.isin(seen).sum()) > 0
    assert gate["reviews"] == gate["drawn"] - gate["seen_before"] >= len(served.gate)
