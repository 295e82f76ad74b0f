"""The tracked runs a report reads: one pipeline run's MLflow runs, looked up read-only.

Runs of one ``dvc repro`` share the tag ``pipeline_run``. A stage DVC did not re-run has no run in
the newest group; its latest earlier run still describes the workspace, so look-ups may fall back
to runs started before the group's last one, and say so. A store written before the tag existed
(no run carries it) is read as one group: the latest run of every stage.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

NDCG_PREFIX = "test/ndcg_at_"
# Stages of `python -m pipelines.compare` and the like: other protocols, never part of a repro.
# runs that are not results of a pipeline run: comparisons, and the reports themselves
OFF_PIPELINE_STAGES = frozenset({"compare", "report"})


class ReportError(RuntimeError):
    """The store cannot be read as asked (no such experiment or pipeline run)."""


@dataclass(frozen=True)
class TrackedRun:
    """The parts of an MLflow run the report shows."""

    run_id: str
    name: str
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, str]
    start_time: int  # ms since the epoch
    datasets: tuple[tuple[str, str], ...] = ()  # (name, digest) of the logged inputs

    @classmethod
    def from_mlflow(cls, run: Run) -> TrackedRun:
        inputs = run.inputs.dataset_inputs if run.inputs else []
        return cls(
            run_id=run.info.run_id,
            name=run.info.run_name or run.info.run_id[:8],
            tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            metrics=dict(run.data.metrics),
            params=dict(run.data.params),
            start_time=run.info.start_time or 0,
            datasets=tuple((d.dataset.name, d.dataset.digest) for d in inputs),
        )

    @property
    def stage(self) -> str:
        return self.tags.get("stage", "")

    @property
    def model(self) -> str:
        """The ``model`` tag; older runs only carry it as their run name."""
        return self.tags.get("model") or self.name

    @property
    def pipeline_run(self) -> str:
        return self.tags.get("pipeline_run", "")


@dataclass(frozen=True)
class Found:
    """A run that supplied a piece of the report; ``earlier`` if outside the chosen group."""

    run: TrackedRun
    earlier: bool


@dataclass
class RunGroup:
    """The chosen pipeline run's runs (newest first) and the earlier ones look-ups may fall back to."""

    pipeline_run: str | None  # None: legacy store without the tag
    members: list[TrackedRun]
    earlier: list[TrackedRun]
    client: MlflowClient
    experiment_id: str
    used: dict[str, list[str]] = field(default_factory=dict)  # run id → sections using it

    def note_use(self, run: TrackedRun, section: str) -> None:
        sections = self.used.setdefault(run.run_id, [])
        if section not in sections:
            sections.append(section)

    def _candidates(self, prefer_stage: str | None) -> Iterator[Found]:
        for runs, earlier in ((self.members, False), (self.earlier, True)):
            ordered = sorted(runs, key=lambda r: r.stage != prefer_stage)  # stable: newest first
            yield from (Found(r, earlier) for r in ordered)

    def find(
        self, predicate: Callable[[TrackedRun], bool], prefer_stage: str | None = None
    ) -> Found | None:
        """The newest run satisfying ``predicate``: in the group first, then earlier runs."""
        return next((f for f in self._candidates(prefer_stage) if predicate(f.run)), None)

    def find_artifact(self, path: str, prefer_stage: str | None = None) -> tuple[Found, str] | None:
        """The newest run that logged the artifact ``path`` (e.g. ``plots/x.csv``), and its text."""
        folder = path.rsplit("/", 1)[0] if "/" in path else ""
        for found in self._candidates(prefer_stage):
            listed = self.client.list_artifacts(found.run.run_id, folder or None)
            if any(a.path == path and not a.is_dir for a in listed):
                with tempfile.TemporaryDirectory() as tmp:
                    local = self.client.download_artifacts(found.run.run_id, path, tmp)
                    return found, Path(local).read_text()
        return None

    def model_runs(self) -> dict[str, TrackedRun]:
        """Per model, the group's newest run carrying ``test/ndcg_at_*`` metrics, by model name.

        An ``evaluate`` run wins over a training run, which wins over any other stage (``promote``
        repeats a gated metric or two, not the evaluation). A model the group has no such run of
        (DVC skipped its evaluation: only a downstream parameter changed) comes from the newest
        earlier run, as every other look-up does."""

        def rank(run: TrackedRun) -> int:
            return 0 if run.stage == "evaluate" else 1 if run.stage.startswith("train") else 2

        chosen: dict[str, TrackedRun] = {}
        ordered = sorted(self.members, key=rank) + sorted(self.earlier, key=rank)
        for run in ordered:  # stable: newest first within a rank, the group before earlier runs
            if run.model not in chosen and any(k.startswith(NDCG_PREFIX) for k in run.metrics):
                chosen[run.model] = run
        return dict(sorted(chosen.items()))


def _all_runs(client: MlflowClient, experiment_id: str) -> list[TrackedRun]:
    runs: list[TrackedRun] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string="attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        runs.extend(TrackedRun.from_mlflow(r) for r in page)
        token = page.token
        if not token:
            return runs


def load_group(tracking_uri: str, experiment: str, pipeline_run: str | None = None) -> RunGroup:
    """The runs of ``pipeline_run`` (default: the newest tagged one) in ``experiment``."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ReportError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    runs = [r for r in _all_runs(client, exp.experiment_id) if r.stage not in OFF_PIPELINE_STAGES]
    tagged = [r for r in runs if r.pipeline_run]
    if pipeline_run is None and tagged:
        pipeline_run = tagged[0].pipeline_run
    if pipeline_run is None:
        return RunGroup(None, [r for r in runs if r.stage], [], client, exp.experiment_id)
    members = [r for r in runs if r.pipeline_run == pipeline_run]
    if not members:
        known = list(dict.fromkeys(r.pipeline_run for r in tagged))[:10]
        raise ReportError(f"no finished run has pipeline_run={pipeline_run!r}; newest: {known}")
    last = members[0].start_time
    earlier = [
        r for r in runs if r.stage and r.pipeline_run != pipeline_run and r.start_time <= last
    ]
    return RunGroup(pipeline_run, members, earlier, client, exp.experiment_id)
