"""Stage `promote`: register each family's model and move its ``champion`` alias when gates pass.

For each family (gnolr, relmf, plove): gather the candidate's metrics (``<split>/<metric>[/<level>]``
names, from the DVC metrics files), register a new version of ``<promote.model_prefix><family>``
(gnolr: a pyfunc whose artifact ``bundle/`` is the whole serving bundle data/serving, so the
service can serve ``models:/ladder-gnolr@champion``: the current version of data/serving, one flat
bundle directory; relmf, plove: the training run's pyfunc), tag it
with those metrics, and run the gates of models/promotion.py against the current champion's tags.
The alias moves only if every gate passes. Each family gets an MLflow run (stage=promote,
model=<family>, tags decision/registered_model/model_version/champion_version) with the gated
values as metrics and decision.json; data/metrics/promote.json collects all decisions.

A candidate that already is the champion (same bundle content for gnolr, same training run's
model otherwise: e.g. an experiment that changed only another family's parameters) registers
nothing. A refused gate is not a failure (exit 0) unless ``promote.fail_on_refusal: true``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from evaluation.promotion import FAMILIES, Bound, Decision, PromoteConfig, decide
from models.pyfunc import GNOLRPairs, log_pair_model
from pipelines.outputs import file_digest, write_json
from pipelines.params import Params, load_params
from pipelines.tracking import (
    METRIC_NAME,
    log_dataset,
    metric_name,
    pipeline_run_id,
    plove_run_metrics,
    split_metrics,
    start_run,
    tracking_uri,
)
from serving.bundle import bundle_dir

MODELS = Path("data/models")
SERVING = Path("data/serving")
EVALUATE = Path("data/metrics/evaluate.json")
INDEX = Path("data/metrics/index.json")
PLOVE = Path("data/metrics/plove.json")
OUT = Path("data/metrics/promote.json")


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def candidate_metrics(family: str) -> dict[str, float]:
    """The family's metrics in the run-record scheme, from the DVC metrics files."""
    evaluated = _json(EVALUATE).get(family, {})
    out = split_metrics("test", evaluated)
    if family == "gnolr":
        out |= split_metrics("test", _json(INDEX))
    elif family == "relmf":
        info = _json(MODELS / "relmf/info.json")
        out |= split_metrics(
            "test", {k.removeprefix("test/"): v for k, v in info.items() if k.startswith("test/")}
        )
    elif family == "plove" and PLOVE.exists():
        out |= plove_run_metrics(_json(PLOVE))
    return out


def served_bundle() -> Path:
    """The directory of the bundle the service serves now: the current version of data/serving."""
    return bundle_dir(SERVING)


def bounds(family: str, params: Params) -> tuple[list[Bound], dict[str, float]]:
    """The fixed-limit gates of a family and the values they read (from other stages)."""
    cfg = params.promote
    recall = metric_name("test", f"recall_at_{params.index.recall_k}")
    metric = "test/plove_ece_relative"
    ece = Bound("plove_ece", metric, cfg.plove_max_relative_ece, "<=")
    overall = _json(PLOVE).get("test", {}).get("calibrated", {}).get("all", {})
    extra = {metric: overall["ece_relative"]} if "ece_relative" in overall else {}
    if family == "gnolr":
        gates = [Bound("index_recall", recall, cfg.index_recall_floor, ">=")]
        if (served_bundle() / "plove").exists():
            gates.append(ece)
        return gates, extra
    if family == "plove":
        return [ece], extra
    return [], {}


def champion_metrics(client: MlflowClient, name: str, alias: str):
    """The champion version of ``name`` and its metric tags, or (None, None)."""
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, None
    metrics = {}
    for key, value in version.tags.items():
        if METRIC_NAME.match(key):
            try:
                metrics[key] = float(value)
            except ValueError:
                continue
    return version, metrics


def register(family: str, name: str, info: dict) -> str:
    """Register the family's model under ``name`` in the active run; returns the new version."""
    if family == "gnolr":
        manifest = _json(served_bundle() / "manifest.json")
        levels = manifest["levels"]
        meta = _json(Path("data/features/meta.json"))
        with tempfile.TemporaryDirectory() as tmp:
            # MLflow names a directory artifact after its source: stage the bundle as bundle/.
            bundle = Path(tmp) / "bundle"
            shutil.copytree(served_bundle(), bundle)
            model = log_pair_model(
                "gnolr_bundle",
                GNOLRPairs(levels),
                {"bundle": str(bundle)},
                [f"p_{level}" for level in levels],
                meta.get("n_users", 1),
                meta.get("n_items", 1),
                registered_model_name=name,
            )
        return str(model.registered_model_version)
    return str(mlflow.register_model(info["model_uri"], name).version)


def candidate_id(family: str, info: dict) -> str:
    """What identifies the candidate model: the serving bundle's content digest for gnolr, the
    training run's logged model for the others."""
    if family == "gnolr":
        served = served_bundle()
        return "bundle:" + file_digest(*sorted(p for p in served.rglob("*") if p.is_file()))
    return info["model_uri"]


def promote_family(family: str, params: Params, client: MlflowClient) -> dict:
    """Register, gate, maybe move the alias; log the run; return the decision record."""
    cfg: PromoteConfig = params.promote
    name = f"{cfg.model_prefix}{family}"
    info = _json(MODELS / family / "info.json")
    if family != "gnolr" and "model_uri" not in info:
        why = info.get("skipped") or f"{MODELS / family}/info.json has no model_uri"
        return {"family": family, "skipped": why}
    if family == "gnolr" and not (served_bundle() / "manifest.json").exists():
        return {"family": family, "skipped": f"no serving bundle in {SERVING}"}
    candidate = candidate_metrics(family)
    gates, extra = bounds(family, params)
    candidate |= extra
    champion, champ_metrics = champion_metrics(client, name, cfg.alias)
    before = str(champion.version) if champion else None
    cid = candidate_id(family, info)
    if champion is not None and champion.tags.get("candidate") == cid:
        return {
            "family": family,
            "decision": "unchanged",
            "registered_model": name,
            "version": before,
            "champion_before": before,
            "champion_after": before,
            "unchanged": f"{name}@{cfg.alias} v{before} already is this model ({cid})",
        }
    gate = cfg.gate(family, params.contract.levels[-1])
    decision: Decision = decide(family, gate, candidate, champ_metrics, gates)
    with start_run(params, "promote", f"promote-{family}", model=family) as run:
        if family == "gnolr":
            log_dataset(
                served_bundle(), "serving-bundle", ["manifest.json", "embeddings.npz"], "promote"
            )
        version = register(family, name, info)
        tags = {k: f"{v:.10g}" for k, v in candidate.items()}
        tags |= {
            "candidate": cid,
            "pipeline_run": pipeline_run_id()[0],
            "train_run": info.get("run_id", ""),
            "promote_run": run.info.run_id,
            "decision": "promoted" if decision.passed else "refused",
            "reasons": "; ".join(decision.reasons)[:4000],
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        if decision.passed:
            client.set_registered_model_alias(name, cfg.alias, version)
        record = {
            **decision.to_dict(),
            "decision": tags["decision"],
            "registered_model": name,
            "version": version,
            "alias": cfg.alias,
            "champion_before": before,
            "champion_after": version if decision.passed else before,
            "run_id": run.info.run_id,
        }
        gated = {c.metric: c.value for c in decision.checks if c.value is not None}
        if champ_metrics and gate.metric in champ_metrics:
            split, metric, *level = gate.metric.split("/")
            gated[metric_name(split, f"champion_{metric}", level[0] if level else None)] = (
                champ_metrics[gate.metric]
            )
        mlflow.log_metrics({k: v for k, v in gated.items() if METRIC_NAME.match(k)})
        mlflow.set_tags(
            {
                "decision": record["decision"],
                "registered_model": name,
                "model_version": version,
                "champion_version": str(record["champion_after"] or ""),
            }
        )
        mlflow.log_dict(record, "decision.json")
    return record


def summary_line(record: dict, alias: str) -> str:
    family = record["family"]
    if "skipped" in record:
        return f"promote: {family} skipped ({record['skipped']})"
    if "unchanged" in record:
        return f"promote: {family} unchanged, nothing registered: {record['unchanged']}"
    name, version = record["registered_model"], record["version"]
    if record["passed"]:
        head = f"promote: {name} v{version} → @{alias}"
    else:
        stays = record["champion_before"]
        head = f"promote: {name} v{version} registered, REFUSED as @{alias} " + (
            f"(stays v{stays})" if stays else "(no champion)"
        )
        return f"{head}: {'; '.join(c['reason'] for c in record['checks'] if not c['passed'])}"
    return f"{head} ({'; '.join(c['reason'] for c in record['checks'])})"


NEXT_STEPS = """next:
  make ui            MLflow UI ({uri}): experiment '{experiment}', runs of this repro have
                     tag pipeline_run = '{pipeline_run}'; registry: Models → {prefix}*
  make serve         serve data/serving; LADDER_BUNDLE=models:/{prefix}gnolr@{alias} make serve
                     serves the registered champion
  dvc exp show       parameters and metrics of this workspace and of experiments
  dvc plots show     DVC plots (relmf_propensity, plove_reliability, …) → dvc_plots/index.html"""


def main() -> None:
    params = load_params()
    cfg = params.promote
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    records = {family: promote_family(family, params, client) for family in FAMILIES}
    write_json(OUT, records)
    for record in records.values():
        print(summary_line(record, cfg.alias))
    print(f"promote: decisions → {OUT} and MLflow runs tagged stage=promote")
    print(
        NEXT_STEPS.format(
            uri=tracking_uri(),
            experiment=params.mlflow.experiment,
            pipeline_run=pipeline_run_id()[0],
            prefix=cfg.model_prefix,
            alias=cfg.alias,
        )
    )
    refused = [f for f, r in records.items() if r.get("passed") is False]
    if refused and cfg.fail_on_refusal:
        sys.exit(
            f"promote failed: {', '.join(refused)} refused and promote.fail_on_refusal is true"
        )


if __name__ == "__main__":
    main()
