"""Which serving bundle to load: a directory, or a registered MLflow model version.

``LADDER_BUNDLE`` (see serving/service.py) is either a directory holding ``manifest.json`` (default
``data/serving``, the last `dvc repro`) or an MLflow model URI:

- ``models:/<name>@<alias>`` — the version the alias points to now (e.g. ``@champion``);
- ``models:/<name>/<version>`` — one fixed version.

The promote stage registers ``ladder-gnolr`` with the whole bundle directory among the model's
artifacts (under ``bundle/``). :func:`resolve_bundle` downloads the version's artifacts from the
tracking server (``MLFLOW_TRACKING_URI``) and returns the shallowest directory in them that holds a
``manifest.json``. A missing model, alias or version raises :class:`BundleNotFoundError` saying so.

:class:`LiveBundle` holds the bundle being served and reloads it without downtime (one reference
swap; a failed reload keeps the old bundle).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from serving.bundle import Bundle, load_bundle

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))$")
MANIFEST = "manifest.json"
DEFAULT_BUNDLE = "data/serving"


class BundleNotFoundError(FileNotFoundError):
    """The bundle spec names nothing loadable; the message says what is missing and where."""


def is_registry_spec(spec: str) -> bool:
    return spec.startswith("models:/")


def find_manifest_dir(root: Path) -> Path:
    """The shallowest directory under ``root`` (itself included) that holds ``manifest.json``."""
    found = sorted(root.rglob(MANIFEST), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise BundleNotFoundError(f"no {MANIFEST} anywhere under {root}: not a serving bundle")
    return found[0].parent


def resolve_bundle(spec: str | os.PathLike | None = None, dst: str | Path | None = None) -> Path:
    """The local directory of the serving bundle named by ``spec`` (default ``data/serving``).

    A ``models:/`` spec is downloaded into ``dst`` (default: a fresh temporary directory, which the
    caller may delete once the bundle is loaded into memory).
    """
    spec = str(spec or DEFAULT_BUNDLE)
    if not is_registry_spec(spec):
        path = Path(spec)
        if not (path / MANIFEST).is_file():
            raise BundleNotFoundError(
                f"serving bundle directory {path} has no {MANIFEST}; run `dvc repro` or set "
                "LADDER_BUNDLE to a bundle directory or models:/<name>@<alias>"
            )
        return path
    match = MODELS_URI.match(spec)
    if match is None:
        raise BundleNotFoundError(
            f"bad model URI {spec!r}: expected models:/<name>@<alias> or models:/<name>/<version>"
        )
    import mlflow
    from mlflow.exceptions import MlflowException

    name, alias, version = match["name"], match["alias"], match["version"]
    client = mlflow.MlflowClient()
    try:
        if alias is not None:
            version = client.get_model_version_by_alias(name, alias).version
        else:
            client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias is not None else f"version {version!r}"
        raise BundleNotFoundError(
            f"registered model {name!r} has no {what} in the MLflow registry at "
            f"{mlflow.get_tracking_uri()} ({exc.error_code}): {exc.message}"
        ) from None
    target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="ladder-bundle-"))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version}", dst_path=str(target)
    )
    return find_manifest_dir(Path(local))


def load_spec(spec: str) -> Bundle:
    """Resolve and load ``spec``; a downloaded registry copy is deleted once it is in memory."""
    if not is_registry_spec(spec):
        return load_bundle(resolve_bundle(spec))
    download = tempfile.mkdtemp(prefix="ladder-bundle-")
    try:
        return load_bundle(resolve_bundle(spec, dst=download))
    finally:
        shutil.rmtree(download, ignore_errors=True)


class ReloadError(RuntimeError):
    """A reload that failed; the bundle that was serving keeps serving."""


class LiveBundle:
    """The bundle being served, replaced as one reference by :meth:`reload`.

    A request reads :attr:`current` once and uses that object throughout, so in-flight requests
    finish on the bundle they started with while new ones get the new bundle as soon as it is
    loaded. Reloads are serialised by a lock; a failed one changes nothing.
    """

    def __init__(self, spec: str | None = None) -> None:
        self.spec = str(spec or DEFAULT_BUNDLE)
        self.current: Bundle = load_spec(self.spec)
        self._lock = threading.Lock()

    def reload(self) -> tuple[Bundle, Bundle]:
        """Load :attr:`spec` again and swap it in; returns ``(old, new)``."""
        with self._lock:
            old = self.current
            try:
                new = load_spec(self.spec)
            except Exception as exc:  # any failure leaves the serving bundle as it was
                raise ReloadError(
                    f"reload of {self.spec} failed, still serving {old.model_version}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self.current = new
            return old, new
