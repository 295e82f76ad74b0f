"""Which serving bundle to load, and following it while serving.

``LADDER_BUNDLE`` (see serving/service.py) is either a directory or an MLflow model URI:

- a versioned root (default ``data/serving``, the last `dvc repro`): the version its ``CURRENT``
  pointer names (serving/bundle.py); or a plain bundle directory holding ``manifest.json``;
- ``models:/<name>@<alias>`` — the version the alias points to now (e.g. ``@champion``);
- ``models:/<name>/<version>`` — one fixed version.

The promote stage registers ``ladder-gnolr`` with the current bundle version among the model's
artifacts (under ``bundle/``). :func:`resolve_bundle` downloads a registered version's artifacts
from the tracking server (``MLFLOW_TRACKING_URI``) and returns the shallowest directory in them
that holds a ``manifest.json``. A missing model, alias or version raises
:class:`BundleNotFoundError` saying so.

:class:`BundleSource` names the version a spec points to *now* cheaply (the ``CURRENT`` pointer, a
plain bundle's ``model_version``, the registry version behind the alias) and loads exactly that
version. :class:`LiveBundle` holds the bundle being served, polls its source every
``poll_seconds`` in a background thread and swaps a new version in as one reference; a version
that fails to load is recorded and not retried by the poll until the source names another one, and
the old bundle keeps serving. Each worker process of the service has its own LiveBundle, so every
worker follows the source within one interval of a change.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path

from serving.bundle import VERSIONS, Bundle, bundle_dir, current_version, load_bundle

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))$")
MANIFEST = "manifest.json"
DEFAULT_BUNDLE = "data/serving"

log = logging.getLogger(__name__)


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


def _local_bundle(spec: str) -> Path:
    """The complete bundle directory a local spec names now (a root's current version)."""
    try:
        path = bundle_dir(spec)
    except FileNotFoundError as exc:
        raise BundleNotFoundError(str(exc)) from None
    if not (path / MANIFEST).is_file():
        raise BundleNotFoundError(
            f"serving bundle directory {path} has no {MANIFEST}; run `dvc repro` or set "
            "LADDER_BUNDLE to a bundle directory or models:/<name>@<alias>"
        )
    return path


def _registry_version(spec: str) -> tuple[str, str]:
    """(registered model name, version number) that a ``models:/`` spec names now."""
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
    return name, str(version)


def _download(name: str, version: str, dst: str | Path) -> Path:
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)
    )
    return find_manifest_dir(Path(local))


def resolve_bundle(spec: str | os.PathLike | None = None, dst: str | Path | None = None) -> Path:
    """The local directory of the serving bundle named by ``spec`` (default ``data/serving``).

    A ``models:/`` spec is downloaded into ``dst`` (default: a fresh temporary directory, which the
    caller may delete once the bundle is loaded into memory).
    """
    spec = str(spec or DEFAULT_BUNDLE)
    if not is_registry_spec(spec):
        return _local_bundle(spec)
    name, version = _registry_version(spec)
    target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="ladder-bundle-"))
    return _download(name, version, target)


class BundleSource:
    """Where the served bundle comes from: :meth:`version` says cheaply which version the spec
    names now, :meth:`load` loads exactly that version."""

    def __init__(self, spec: str | os.PathLike | None = None) -> None:
        self.spec = str(spec or DEFAULT_BUNDLE)

    def version(self) -> str:
        """``CURRENT``'s version name, a plain bundle's ``model_version``, or ``<name>/<number>``
        of the registry version (behind the alias)."""
        if is_registry_spec(self.spec):
            return "/".join(_registry_version(self.spec))
        try:
            pointed = current_version(self.spec)
        except FileNotFoundError as exc:
            raise BundleNotFoundError(str(exc)) from None
        if pointed is not None:
            return pointed
        try:
            return json.loads((_local_bundle(self.spec) / MANIFEST).read_text())["model_version"]
        except (ValueError, KeyError) as exc:
            raise BundleNotFoundError(f"{self.spec}/{MANIFEST} is unreadable: {exc!r}") from None

    def load(self, version: str) -> Bundle:
        """Load ``version`` (as :meth:`version` named it); a registry copy is deleted once loaded."""
        if not is_registry_spec(self.spec):
            root = Path(self.spec)
            if current_version(root) is not None:
                return load_bundle(root / VERSIONS / version)
            return load_bundle(_local_bundle(self.spec))
        name, number = version.split("/")
        download = tempfile.mkdtemp(prefix="ladder-bundle-")
        try:
            return load_bundle(_download(name, number, download))
        finally:
            shutil.rmtree(download, ignore_errors=True)


def load_spec(spec: str) -> Bundle:
    """Resolve and load what ``spec`` names now."""
    source = BundleSource(spec)
    return source.load(source.version())


class ReloadError(RuntimeError):
    """A reload that failed; the bundle that was serving keeps serving."""


class LiveBundle:
    """The bundle being served, replaced as one reference when its source names a new version.

    A request reads :attr:`current` once and uses that object throughout, so in-flight requests
    finish on the bundle they started with while new ones get the new bundle as soon as it is
    loaded. :meth:`check` (the poll, every ``poll_seconds`` > 0 in a daemon thread) loads a new
    version only when the source names one it has not loaded or seen fail; :meth:`reload` (the
    ``/reload`` endpoint) loads whatever the source names now, even the same version. Loads are
    serialised by a lock; a failed one changes nothing but :attr:`error`.
    """

    def __init__(self, spec: str | None = None, poll_seconds: float = 0.0) -> None:
        self.source = BundleSource(spec)
        self.spec = self.source.spec
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self.source_version = self.source.version()
        self.current: Bundle = self.source.load(self.source_version)
        self.loaded_at = time.time()
        self.checked_at = self.loaded_at
        self.failed_version: str | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if poll_seconds > 0:
            self._thread = threading.Thread(
                target=_poll,
                args=(weakref.ref(self), self._stop, poll_seconds),
                name="ladder-bundle-poll",
                daemon=True,
            )
            self._thread.start()

    def _load(self, version: str) -> Bundle:
        """Load ``version`` and swap it in (lock held); on failure record it and raise ReloadError."""
        old = self.current
        try:
            new = self.source.load(version)
        except Exception as exc:  # any failure leaves the serving bundle as it was
            self.failed_version = version
            self.error = (
                f"loading {self.spec} ({version}) failed, still serving {old.model_version}: "
                f"{type(exc).__name__}: {exc}"
            )
            raise ReloadError(self.error) from exc
        self.current, self.source_version = new, version
        self.loaded_at, self.failed_version, self.error = time.time(), None, None
        return new

    def check(self) -> bool:
        """Follow the source once: swap in the version it names now if it is new. True when a new
        bundle was swapped in; never raises (a failure is logged and kept in :attr:`error`)."""
        with self._lock:
            self.checked_at = time.time()
            try:
                version = self.source.version()
            except Exception as exc:  # the source is unreachable or empty right now: keep serving
                self.error = f"checking {self.spec} failed: {type(exc).__name__}: {exc}"
                return False
            if version in (self.source_version, self.failed_version):
                return False
            old = self.current.model_version
            try:
                new = self._load(version)
            except ReloadError as exc:
                log.warning("%s", exc)
                return False
            log.info("bundle %s: %s → %s", self.spec, old, new.model_version)
            return True

    def reload(self) -> tuple[Bundle, Bundle]:
        """Load what :attr:`spec` names now and swap it in; returns ``(old, new)``."""
        with self._lock:
            old = self.current
            self.checked_at = time.time()
            try:
                version = self.source.version()
            except Exception as exc:
                self.error = (
                    f"reload of {self.spec} failed, still serving {old.model_version}: "
                    f"{type(exc).__name__}: {exc}"
                )
                raise ReloadError(self.error) from exc
            return old, self._load(version)

    def status(self) -> dict:
        """What this process serves and how it follows the source."""
        return {
            "model_version": self.current.model_version,
            "source": self.spec,
            "source_version": self.source_version,
            "worker_pid": os.getpid(),
            "poll_seconds": self.poll_seconds,
            "loaded_at": self.loaded_at,
            "checked_at": self.checked_at,
            "error": self.error,
        }

    def stop(self) -> None:
        """Stop polling now (it also stops by itself once this object is garbage-collected)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _poll(ref: weakref.ref[LiveBundle], stop: threading.Event, seconds: float) -> None:
    """Check the source every ``seconds`` until stopped or until the LiveBundle is gone: the thread
    holds only a weak reference, so a discarded service instance (BentoML has no reliable shutdown
    hook for an instance that failed to start) never leaves a poller behind."""
    while not stop.wait(seconds):
        live = ref()
        if live is None:
            return
        live.check()
        del live
