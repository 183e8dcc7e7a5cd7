"""MLflow's model registry as caviar's registry (issue 51, item 2): CAVIAR_REGISTRY=mlflow:<URI>,
or --registry mlflow:<URI>, for promote, registry list/rollback, predict and serve.

A version is the checkpoint's serving files and card, logged as an MLflow pyfunc model; the card
rides along as the version's tags, the sha256 of every file among them. `@champion` names the
version in service; `@challenger` a candidate the gate refused. Predict and serve download a version
into the cache and check every file against its tags before it loads: the tags, kept by the server
apart from the artifacts, are the anchor a folder registry's card is.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from caviar.experiment.mlflow_tracking import client_for, experiment_id_for
from caviar.registry.store import CARD, read_card, serving_files
from model.config import check_safe_name
from model.errors import UserError, short
from model.files import file_sha256, write_json_atomically
from model.settings import settings

CHAMPION, CHALLENGER = "champion", "challenger"
SHA256_TAG = "caviar.sha256."  # + a file's name: that file's checksum
REGISTRY_EXPERIMENT = "caviar-registry"  # runs of promotions that no tracked trial's run holds
MODEL_PATH = "model"  # the pyfunc model's folder in its run's artifacts


def version_number(text: str) -> int:
    """A version as the user writes it: 3 or v3."""
    digits = str(text).removeprefix("v")
    if not digits.isdigit() or int(digits) < 1:
        raise UserError(f"version {str(text)[:40]!r}: expected a number such as 3 (or v3)")
    return int(digits)


class MlflowRegistry:
    """One registered model on one MLflow server."""

    def __init__(self, uri: str, name: str):
        self.uri, self.name = uri, check_safe_name(name, "model name")
        self.client = client_for(uri)  # the extra is installed and the server answers, or one line
        self.home = settings().cache / "mlflow-registry" / hashlib.sha256(uri.encode()).hexdigest()[:16]

    def label(self, version: int | str) -> str:
        return f"{self.name}/v{version}"

    def exists(self) -> bool:
        return bool(self.client.search_registered_models(filter_string=f"name = '{self.name}'"))

    def require(self) -> None:
        if not self.exists():
            raise UserError(f"{self.name}: no such registered model in MLflow at {self.uri}; promote one first")

    def versions(self) -> list:
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted(found, key=lambda v: int(v.version))

    def version(self, number: int):
        if not any(int(v.version) == number for v in self.versions()):
            have = ", ".join(f"v{v.version}" for v in self.versions()) or "none"
            raise UserError(f"{self.name}: no version v{number} in MLflow at {self.uri} (have {have})")
        return self.client.get_model_version(self.name, str(number))

    def alias(self, alias: str) -> int | None:
        """The version an alias names, None where it (or the model) names none."""
        from mlflow.exceptions import MlflowException  # lazy: MLflow is an optional extra

        try:
            return int(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def set_alias(self, alias: str, number: int) -> None:
        self.client.set_registered_model_alias(self.name, alias, str(number))

    def holding(self, weights_sha256: str) -> int | None:
        """The version whose weights are these: a checkpoint promoted twice makes no new version."""
        tag = SHA256_TAG + "model.safetensors"
        return next((int(v.version) for v in self.versions() if v.tags.get(tag) == weights_sha256), None)

    def _create_model(self) -> None:
        from mlflow.exceptions import MlflowException  # lazy: MLflow is an optional extra

        try:
            self.client.create_registered_model(self.name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":  # made by a promotion from elsewhere
                raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One promotion or rollback of this model at a time from this machine; from elsewhere, the
        promotion checks the champion did not move while its gate ran (MlflowPromotion)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.home / f"{self.name}.lock")):
            yield

    def register(self, checkpoint: Path, card: dict, run_id: str | None, tags: dict[str, str]) -> int:
        """Log the serving files and card as a pyfunc model into `run_id` (a new run in
        caviar-registry without one) and register it; returns the version number."""
        import mlflow.pyfunc  # lazy: MLflow is an optional extra

        from caviar.registry.pyfunc_model import ARTIFACT, SentimentModel  # lazy: it imports mlflow

        self._create_model()
        with tempfile.TemporaryDirectory(prefix="caviar-register-") as tmp:
            staged = Path(tmp) / ARTIFACT
            staged.mkdir()
            files = {}
            for src in serving_files(checkpoint):
                shutil.copy2(src, staged / src.name)
                files[src.name] = file_sha256(staged / src.name)
            write_json_atomically(staged / CARD, {**card, "files": files})
            saved = Path(tmp) / MODEL_PATH
            with _quiet_mlflow():
                mlflow.pyfunc.save_model(
                    saved, python_model=SentimentModel(), artifacts={ARTIFACT: str(staged)}, pip_requirements=["caviar"]
                )
            if run_id is None:
                experiment = experiment_id_for(self.client, REGISTRY_EXPERIMENT, self.uri)
                run_id = self.client.create_run(experiment, run_name=f"promote {card.get('trial_id')}").info.run_id
                self.client.set_terminated(run_id)
            self.client.log_artifacts(run_id, str(saved), MODEL_PATH)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{MODEL_PATH}"
        version_tags = {**tags, **{SHA256_TAG + name: digest for name, digest in files.items()}}
        with _quiet_mlflow():
            return int(self.client.create_model_version(self.name, source, run_id=run_id, tags=version_tags).version)

    def fetch(self, number: int) -> Path:
        """The version as a local folder (downloaded once into the cache), every file checked against
        the version's sha256 tags: a file altered on the server or in the cache is one line."""
        version = self.version(number)
        expected = {k.removeprefix(SHA256_TAG): v for k, v in version.tags.items() if k.startswith(SHA256_TAG)}
        if not expected:
            raise UserError(f"{self.label(number)}: holds no sha256 tags; it was not registered by caviar promote")
        folder = self.home / self.name / f"v{number}"
        if not (folder / CARD).is_file():
            self._download(version.source, folder)
        for name, digest in expected.items():
            path = folder / name
            if not path.is_file():
                raise UserError(f"{self.label(number)}: {name} is missing from its artifacts; the model is incomplete")
            if file_sha256(path) != digest:
                raise UserError(f"{self.label(number)}: {name} fails its sha256 check; the model is corrupt")
        card = read_card(folder)
        if card["files"] != expected:
            raise UserError(f"{self.label(number)}: its card lists other files than its tags; the model is corrupt")
        if card.get("version") != f"v{number}":  # the number MLflow gave, known only once registered
            write_json_atomically(folder / CARD, {**card, "name": self.name, "version": f"v{number}"})
        return folder

    def _download(self, source: str, folder: Path) -> None:
        import mlflow.artifacts  # lazy: MLflow is an optional extra

        from caviar.registry.pyfunc_model import ARTIFACT  # lazy: it imports mlflow

        tmp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=self.uri)
            found = next((p.parent for p in tmp.rglob(CARD) if p.parent.name == ARTIFACT), None)
            if found is None:
                raise UserError(f"{source}: holds no {ARTIFACT}/{CARD}; not a version caviar registered")
            shutil.rmtree(folder, ignore_errors=True)
            os.rename(found, folder)  # whole or not at all: a cut download is never taken for a version
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - MLflow's artifact stores raise their own kinds
            raise UserError(f"{source}: could not download it ({short(str(err), 160)})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's advice that does not apply here, kept off the user's terminal: type hints on predict
    (it takes a list or a DataFrame), the pickled model class (caviar's own, pickled by reference),
    and the wait for a version a local server makes at once."""
    loggers = [logging.getLogger(n) for n in ("mlflow.pyfunc", "mlflow.store.model_registry.abstract_store")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
