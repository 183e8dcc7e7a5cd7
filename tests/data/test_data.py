"""Data checks: NSMC parsing, bad rows, where the files come from, the split, the download."""

from __future__ import annotations

import http.server
import shutil
import threading
from functools import partial

import numpy as np
import pytest

from model import data as nsmc
from model.config import DataConfig
from model.errors import UserError
from tests.conftest import FIXTURE_NSMC, REAL_NSMC

GOOD = ["id\tdocument\tlabel"] + [f"{i}\t좋은 영화 {i}\t{i % 2}" for i in range(300)]


def write(tmp_path, lines, name="ratings_train.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_fixture_parses_with_labels_and_no_nulls():
    df = nsmc.read_reviews(FIXTURE_NSMC / "ratings_train.txt")
    assert list(df.columns) == ["id", "document", "label"]
    assert len(df) == 240
    assert set(df.label) == {0, 1}
    assert df.document.str.strip().str.len().min() > 0


def test_bad_rows_are_dropped_and_counted(tmp_path, caplog):
    lines = GOOD + ["900\t\t1", "901\t문장\t7"]  # 2 bad of 302 is under 1%
    df = nsmc.read_reviews(write(tmp_path, lines))
    assert len(df) == 300
    assert "dropped 2 bad rows of 302" in caplog.text


def test_too_many_bad_rows_fail_naming_file_and_line(tmp_path):
    lines = GOOD[:50] + ["x\tonly two"] + GOOD[50:]
    lines += [f"{i}\t\t0" for i in range(5)]
    with pytest.raises(UserError, match=r"ratings_train.txt: 6 of 306 rows are bad .* line 51"):
        nsmc.read_reviews(write(tmp_path, lines))


def test_wrong_header_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="expected the NSMC header"):
        nsmc.read_reviews(write(tmp_path, ["a,b,c", "1,x,0"]))


def test_split_is_stratified_seeded_and_disjoint():
    cfg = DataConfig(dir=str(FIXTURE_NSMC), val_fraction=0.25, seed=3)
    a, b = nsmc.load_splits(cfg), nsmc.load_splits(cfg)
    assert set(a.train.id).isdisjoint(a.val.id)
    assert set(a.gate.id).isdisjoint(set(a.train.id) | set(a.val.id))  # issue 31: the gate is neither
    assert (len(a.train), len(a.val), len(a.gate)) == (171, 57, 12)  # the hash's 12 of 240; 25% of the rest
    assert a.val.label.mean() == pytest.approx(0.5, abs=0.02) and a.split == 2
    assert list(a.val.id) == list(b.val.id) and list(a.gate.id) == list(b.gate.id)
    other = nsmc.load_splits(cfg.model_copy(update={"seed": 4}))
    assert list(other.val.id) != list(a.val.id) and list(other.gate.id) == list(a.gate.id)
    held, train_sha = nsmc.load_gate(cfg)  # what promotion reads: the same reviews, the train file alone
    assert list(held.reviews.id) == list(a.gate.id) and train_sha == a.train_fingerprint
    assert (held.drawn, held.seen_before) == (12, 0)
    no_gate = nsmc.load_splits(cfg.model_copy(update={"gate": 0.0}))
    assert len(no_gate.gate) == 0 and len(no_gate.train) == 180


def test_the_gate_holds_the_same_reviews_whatever_the_other_split_settings():
    """Issue 47, item 2: gate membership is the review's own (a salted hash), so a run with another
    validation share, seed or limit never trains on a gate review; a larger gate holds the smaller."""
    base = DataConfig(dir=str(FIXTURE_NSMC), gate=0.1)
    gate = set(nsmc.load_splits(base).gate.id)
    for change in ({"val_fraction": 0.4}, {"seed": 9}, {"limit": 60}, {"val_fraction": 0.05, "limit": 200}):
        splits = nsmc.load_splits(base.model_copy(update=change))
        assert set(splits.gate.id) == gate, change
        assert gate.isdisjoint(set(splits.train.id) | set(splits.val.id)), change
    assert set(nsmc.load_splits(base.model_copy(update={"gate": 0.05})).gate.id) < gate
    assert set(nsmc.load_splits(base.model_copy(update={"gate": 0.3})).gate.id) > gate


def test_an_experiment_recorded_before_split_versions_keeps_its_split():
    """A record with fingerprints and no split version predates version 2: its rows are split as
    they were (the seeded, stratified gate inside the limited subset)."""
    fresh = nsmc.load_splits(DataConfig(dir=str(FIXTURE_NSMC), val_fraction=0.25, seed=3))
    old = DataConfig(dir=str(FIXTURE_NSMC), val_fraction=0.25, seed=3, train_fingerprint=fresh.train_fingerprint)
    before = nsmc.load_splits(old)
    assert (len(before.train), len(before.val), len(before.gate)) == (168, 60, 12) and before.split == 1
    assert before.gate.label.mean() == pytest.approx(0.5) and set(before.gate.id) != set(fresh.gate.id)
    assert before.recorded()["split"] == 1 and fresh.recorded()["split"] == 2


def test_the_gate_drops_every_review_the_version_in_service_trained_on_or_chose_by():
    """Issue 47, item 2: two versions split differently are compared on the reviews both held out.
    The version in service was trained with other settings (a smaller gate, another validation
    share, seed and limit); a version from before split versions overlaps the candidate's gate, and
    those reviews are dropped."""
    candidate = DataConfig(dir=str(FIXTURE_NSMC), gate=0.2, val_fraction=0.2, seed=5)
    in_service = DataConfig(dir=str(FIXTURE_NSMC), gate=0.1, val_fraction=0.3, seed=1, limit=150)
    held, _ = nsmc.load_gate(candidate, [in_service])
    served = nsmc.load_splits(in_service)
    assert set(held.reviews.id).isdisjoint(set(served.train.id) | set(served.val.id))
    mine = set(nsmc.load_splits(candidate).gate.id)
    # what both held out: the candidate's gate less what the other saw; its limit left out the rest
    assert set(held.reviews.id) == mine - set(served.train.id) - set(served.val.id) >= set(served.gate.id)
    assert held.drawn == len(mine) and held.seen_before == held.drawn - len(held.reviews) > 0
    sha = served.train_fingerprint
    legacy = DataConfig(dir=str(FIXTURE_NSMC), gate=0.05, val_fraction=0.1, train_fingerprint=sha)
    seen = nsmc.load_splits(legacy)
    overlap = set(nsmc.load_splits(candidate).gate.id) & (set(seen.train.id) | set(seen.val.id))
    held, _ = nsmc.load_gate(candidate, [legacy])
    assert len(overlap) > 0 and held.seen_before == len(overlap)
    assert set(held.reviews.id).isdisjoint(set(seen.train.id) | set(seen.val.id))


def test_limit_takes_a_stratified_subset():
    splits = nsmc.load_splits(DataConfig(dir=str(FIXTURE_NSMC), limit=100, test_limit=40))
    assert len(splits.train) + len(splits.val) == 100 and len(splits.gate) == 12  # the gate is the file's
    assert len(splits.test) == 40
    assert np.mean(list(splits.train.label) + list(splits.val.label)) == pytest.approx(0.5, abs=0.02)


def test_fingerprint_follows_the_bytes(tmp_path):
    shutil.copytree(FIXTURE_NSMC, tmp_path / "copy")
    before = nsmc.load_splits(DataConfig(dir=str(tmp_path / "copy"))).fingerprint
    assert before == nsmc.load_splits(DataConfig(dir=str(FIXTURE_NSMC))).fingerprint
    with open(tmp_path / "copy" / "ratings_test.txt", "a", encoding="utf-8") as f:
        f.write("99999\t추가 리뷰\t1\n")
    assert nsmc.load_splits(DataConfig(dir=str(tmp_path / "copy"))).fingerprint != before


def test_location_order_dir_then_env_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NSMC_DIR", str(FIXTURE_NSMC))
    assert nsmc.locate_nsmc(DataConfig()) == FIXTURE_NSMC
    shutil.copytree(FIXTURE_NSMC, tmp_path / "mine")
    assert nsmc.locate_nsmc(DataConfig(dir=str(tmp_path / "mine"))) == tmp_path / "mine"
    monkeypatch.delenv("NSMC_DIR")
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    shutil.copytree(FIXTURE_NSMC, tmp_path / "cache" / "nsmc")
    assert nsmc.locate_nsmc(DataConfig()) == tmp_path / "cache" / "nsmc"


def test_a_folder_without_the_files_is_named(tmp_path):
    with pytest.raises(UserError, match=f"data.dir={tmp_path} does not hold ratings_train.txt"):
        nsmc.locate_nsmc(DataConfig(dir=str(tmp_path)))


def test_offline_without_files_says_how_to_point_at_them(tmp_path, monkeypatch):
    monkeypatch.delenv("NSMC_DIR", raising=False)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path))
    cfg = DataConfig(download_url="http://127.0.0.1:9/nsmc")  # port 9 (discard): nothing listens
    with pytest.raises(UserError, match="download from .* failed .*set data.dir in the job \\(or NSMC_DIR\\)"):
        nsmc.locate_nsmc(cfg)
    assert not list((tmp_path / "nsmc").iterdir()), "a failed download must leave no partial file"


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder; stopped in teardown."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.skipif(not (REAL_NSMC / "ratings_train.txt").is_file(), reason="needs the NSMC files (NSMC_DIR)")
def test_download_from_a_local_http_server(http_server, tmp_path, monkeypatch):
    served, url = http_server
    for name in ("ratings_train.txt", "ratings_test.txt"):
        shutil.copy(REAL_NSMC / name, served / name)
    monkeypatch.delenv("NSMC_DIR", raising=False)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    folder = nsmc.locate_nsmc(DataConfig(download_url=url))
    assert folder == tmp_path / "cache" / "nsmc"
    assert (folder / "ratings_train.txt").read_bytes() == (served / "ratings_train.txt").read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == ["ratings_test.txt", "ratings_train.txt"]


def test_download_with_wrong_row_count_is_refused(http_server, tmp_path, monkeypatch):
    served, url = http_server
    shutil.copytree(FIXTURE_NSMC, served, dirs_exist_ok=True)  # 240 rows, not 150,000
    monkeypatch.delenv("NSMC_DIR", raising=False)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="240 rows, expected 150000"):
        nsmc.locate_nsmc(DataConfig(download_url=url))
    assert not (tmp_path / "cache" / "nsmc" / "ratings_train.txt").exists()


def test_a_line_that_is_not_utf8_is_dropped_and_named(tmp_path, caplog):
    """Issue 9.21: one bad byte is a bad row (counted, line named), not a traceback."""
    path = write(tmp_path, GOOD)
    with open(path, "ab") as f:
        f.write(b"950\t\xff\xfe broken\t1\n")
    df = nsmc.read_reviews(path)
    assert len(df) == 300
    assert "dropped 1 bad rows of 301 (first: line 302, not UTF-8 (byte 0xff))" in caplog.text


def test_a_utf16_file_is_a_clear_error(tmp_path):
    path = tmp_path / "ratings_train.txt"
    path.write_text("\n".join(GOOD) + "\n", encoding="utf-16")
    with pytest.raises(UserError, match="the file is UTF-16; NSMC files are UTF-8"):
        nsmc.read_reviews(path)


def test_a_single_class_train_file_is_refused(tmp_path):
    """Issue 9.22: it would train silently to val_accuracy 1.0."""
    write(tmp_path, ["id\tdocument\tlabel"] + [f"{i}\t좋은 영화 {i}\t1" for i in range(300)])
    shutil.copy(FIXTURE_NSMC / "ratings_test.txt", tmp_path / "ratings_test.txt")
    with pytest.raises(UserError, match=r"the train split holds 0 부정, 253 긍정; a classifier needs both labels"):
        nsmc.load_splits(DataConfig(dir=str(tmp_path)))


def test_heavy_duplication_is_warned_with_counts(tmp_path, caplog):
    rows = [f"{i}\t좋은 영화 {i % 30}\t{i % 2}" for i in range(300)]  # every review 10 times
    write(tmp_path, ["id\tdocument\tlabel", *rows])
    shutil.copy(FIXTURE_NSMC / "ratings_test.txt", tmp_path / "ratings_test.txt")
    nsmc.load_splits(DataConfig(dir=str(tmp_path)))
    assert "216 of 243 train reviews (89%) repeat an earlier one" in caplog.text  # less gate (3 × 10) and val


def test_a_line_far_longer_than_a_review_is_a_bad_row(tmp_path, caplog):
    """Hardening 2, item 16: one 50 MB line took a minute and 6 GB; it is dropped and counted instead."""
    lines = GOOD + [f"999\t{'가' * 20_000}\t1"]
    df = nsmc.read_reviews(write(tmp_path, lines))
    assert len(df) == len(GOOD) - 1 and "20,006 characters (at most 10,000)" in caplog.text  # GOOD holds the header


def test_a_single_class_test_file_is_warned_about(tmp_path, caplog):
    """Hardening 2, item 15: test accuracy 1.0000 from a test file of one label says nothing."""
    shutil.copy(FIXTURE_NSMC / "ratings_train.txt", tmp_path / "ratings_train.txt")
    (tmp_path / "ratings_test.txt").write_text(
        "id\tdocument\tlabel\n" + "".join(f"{i}\t좋은 영화 {i}\t1\n" for i in range(20)), encoding="utf-8"
    )
    nsmc.load_splits(DataConfig(dir=str(tmp_path)))
    assert "the test reviews hold one label only (20 긍정)" in caplog.text
