"""Issue 31, item 7: a running service follows the registry's `current`. A promotion or a rollback is
loaded beside the old version, checked and swapped in under load with no failed request; a version
that fails its check is never swapped in."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from caviar.registry.promote import promote
from caviar.registry.store import add_version, locked, read_card, rollback, set_current
from caviar.serving.app import MODEL_HEADER, create_app
from tests.code.serving.test_app import served
from tests.conftest import variant_of

pytestmark = pytest.mark.slow
CLIENTS = 16


@pytest.fixture
def registry(experiment, tmp_path):
    root = tmp_path / "registry"
    promote(experiment, "nsmc", root=root)
    return root


def wait_for(condition, timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.02)


def test_a_version_that_fails_its_check_is_not_swapped_in(registry, experiment, tmp_path):
    model_dir, lines = registry / "nsmc", []
    with TestClient(create_app(model_dir / "current", follow_every_s=0.05, log=lines.append)) as client:
        with locked(model_dir):  # v2 made by hand, then damaged before `current` names it
            add_version(model_dir, next((experiment).glob("*/checkpoint_*")), read_card(model_dir / "v1"))
        with open(model_dir / "v2" / "model.safetensors", "ab") as f:
            f.write(b"\0")
        set_current(model_dir, "v2")
        wait_for(lambda: lines, what="the follower's line about v2")
        assert lines == [
            f"not swapping to nsmc/v2: {model_dir / 'v2'}: model.safetensors fails its sha256 check; "
            "the model is corrupt; nsmc/v1 keeps serving"
        ], lines
        assert client.get("/health").json()["version"] == "v1"
        assert client.post("/predict", json={"text": "재미있다"}).headers[MODEL_HEADER] == "nsmc/v1"
        time.sleep(0.3)
        assert len(lines) == 1, "a refused version is not retried until `current` moves on"

        promote(variant_of(experiment, tmp_path / "variant"), "nsmc", force=True, root=registry)  # v3, sound
        wait_for(lambda: client.get("/health").json()["version"] == "v3", what="v3 to be swapped in")
        assert lines[-1].startswith("now serving nsmc/v3 (was nsmc/v1)")
        assert client.get("/model").json()["version"] == "v3"
        assert client.post("/predict/batch", json={"texts": ["재미있다"]}).headers[MODEL_HEADER] == "nsmc/v3"


class Load:
    """16 clients posting /predict in a loop (bounded in count and by `stop`), and a prober sampling
    /health every 20 ms; each answer is (sent, answered, status, the version that answered)."""

    def __init__(self, port: int, model: str = "nsmc"):
        self.model = model
        self.url, self.stop, self.answers, self.health = f"http://127.0.0.1:{port}", threading.Event(), [], []
        self.threads = [threading.Thread(target=self.client) for _ in range(CLIENTS)]
        self.threads.append(threading.Thread(target=self.prober))

    def client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            for _ in range(5000):
                if self.stop.is_set():
                    return
                sent = time.monotonic()
                try:
                    got = http.post("/predict", json={"text": "배우들 연기가 너무 좋았다"})
                    self.answers.append((sent, time.monotonic(), got.status_code, got.headers.get(MODEL_HEADER)))
                except httpx.HTTPError as err:
                    self.answers.append((sent, time.monotonic(), type(err).__name__, None))

    def prober(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                self.health.append((time.monotonic(), f"{self.model}/" + http.get("/health").json()["version"]))
                time.sleep(0.02)

    def now_serving(self) -> str | None:
        return self.health[-1][1] if self.health else None

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in self.threads)

    def named_then(self, sent: float, answered: float) -> set[str | None]:
        """The versions /health named just before the request, while it was in flight, and next after."""
        before = [v for t, v in self.health if t <= sent][-1:]
        during = [v for t, v in self.health if sent < t <= answered]
        after = next((v for t, v in self.health if t > answered), None)
        return {*before, *during, after}


def test_a_promotion_and_a_rollback_under_16_clients_fail_no_request(registry, experiment, tmp_path):
    """Every answer comes from the version /health named while it was in flight, or the one just
    before: health is sampled every 20 ms, and the sample after an answer counts as 'that moment'."""
    variant = variant_of(experiment, tmp_path / "variant")
    app = create_app(registry / "nsmc" / "current", follow_every_s=0.1, log=lambda _: None)
    with served(app) as port, Load(port) as load:
        wait_for(lambda: len(load.answers) >= 50, what="load")
        promote(variant, "nsmc", force=True, root=registry)
        wait_for(lambda: load.now_serving() == "nsmc/v2", what="the promotion to reach the service")
        on_v2 = len(load.answers)
        wait_for(lambda: len(load.answers) >= on_v2 + 50, what="load on v2")
        assert rollback(registry / "nsmc") == "v1"
        wait_for(lambda: load.now_serving() == "nsmc/v1" and len(load.answers) >= on_v2 + 100, what="rollback")
        time.sleep(0.3)
    failed = [a for a in load.answers if a[2] != 200]
    assert not failed, failed[:5]
    assert {a[3] for a in load.answers} == {"nsmc/v1", "nsmc/v2"}
    for sent, answered, _, version in load.answers:
        assert version in load.named_then(sent, answered), (version, sent, answered)


def test_the_follower_takes_current_only_to_a_sibling_version_as_start_up_does(registry, tmp_path):
    """Issue 47, items 4 and 9: `current` swapped (by rename, as a hostile hand would) to a folder
    outside the registry, to a sibling version spelt `./v1`, or to a `v2` that is itself a link out:
    the running service keeps serving v1, says why once for each, and never loads the target."""
    import os
    import shutil

    model_dir, lines = registry / "nsmc", []
    outside = shutil.copytree(model_dir / "v1", tmp_path / "OUTSIDE")  # a sound model: only its place is wrong

    def point_current_at(target: str) -> None:
        os.symlink(target, model_dir / ".t")
        os.replace(model_dir / ".t", model_dir / "current")

    with TestClient(create_app(model_dir / "current", follow_every_s=0.02, log=lines.append)) as client:
        os.symlink(outside, model_dir / "v2")
        for target, why in [
            (str(outside), "not at a version beside it"),
            ("./v1", "not at a version beside it"),
            ("v2", "is a link to"),
        ]:
            point_current_at(target)
            wait_for(lambda why=why: any(why in line for line in lines[-1:]), what=f"the refusal of {target}")
            time.sleep(0.2)  # ten more ticks: the same target is not tried again
            assert sum(target in line for line in lines) == 1, lines
            assert client.get("/health").json()["version"] == "v1"
            assert client.post("/predict", json={"text": "재미있다"}).headers[MODEL_HEADER] == "nsmc/v1"
    assert not any("now serving" in line for line in lines), lines
