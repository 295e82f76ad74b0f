"""`python -m experiments.tune`: one Optuna study per model and protocol, chosen on validation only.

    python -m experiments.tune --protocol ms-recommenders --models als ease bpr gnolr
    python -m experiments.tune --protocol simulator --models gnolr --apply   # the pipeline's GNOLR

Each trial fits the model on the protocol's tuning part with the trial's settings and scores it on
the validation part (iterative models early-stop there and record the epoch count); nothing is
ever scored on test or against the simulator's truth. Every study starts from the model's
defaults (trial 0, :mod:`experiments.candidates`), then samples ``tune.trials`` trials in all
(params.yaml; TPE or random, seeded), or until ``tune.timeout_minutes``. Studies live in
``tune.storage`` (sqlite), so a rerun resumes them.

Tracking: one MLflow parent run per study (tags ``stage=tune``, ``model``, ``protocol``), each trial
a nested run with its settings, its validation score and its epochs.

Output: ``tuned/<protocol>.yaml`` gets the best trial of each tuned model — settings, epochs,
validation score, trials run — which ``experiments.compare`` fits. With ``--apply`` (graded
protocols: the pipeline's data) the chosen GNOLR settings are written into the ``gnolr`` section of
params.yaml, comments kept, so the next ``dvc repro`` trains and serves them.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import mlflow
import optuna
import torch
import yaml
from ruamel.yaml import YAML

from experiments.candidates import (
    TOPN,
    Candidate,
    graded_config,
    graded_defaults,
    graded_gnolr_space,
    load_tuned,
    tuned_path,
)
from experiments.protocols import PROTOCOLS, Graded, MSRecommenders, Stage
from models.gnolr.recommender import GNOLRRecommender
from pipelines.outputs import atomic_file
from pipelines.params import Params, load_params
from pipelines.tracking import start_run


def _sampler(params: Params) -> optuna.samplers.BaseSampler:
    t = params.tune
    if t.sampler == "random":
        return optuna.samplers.RandomSampler(seed=t.seed)
    return optuna.samplers.TPESampler(seed=t.seed)


def _score(model, candidate: Candidate, stage: Stage) -> tuple[float, int | None]:
    if candidate.iterative:
        return float(model.fit_info["best_valid"]), int(model.fit_info["epochs"])
    values = stage.validation(model)
    return float(values[stage.validation.monitor.removeprefix("valid/")]), None


def run_study(
    protocol: str, name: str, candidate: Candidate, stage: Stage, params: Params, trials: int
) -> dict:
    """Run (or resume) the study of ``name``; returns the tuned entry of its best trial."""
    storage = Path(params.tune.storage)
    storage.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=f"{protocol}-{name}",
        storage=f"sqlite:///{storage}",
        load_if_exists=True,
        direction="maximize",
        sampler=_sampler(params),
    )
    if not study.trials and candidate.defaults:
        start = {k: v for k, v in candidate.defaults.items() if not isinstance(v, list | dict)}
        study.enqueue_trial(start, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        settings = candidate.space(trial)
        with mlflow.start_run(run_name=f"{name}-trial{trial.number}", nested=True):
            mlflow.set_tags({"stage": "tune", "model": name, "protocol": protocol})
            mlflow.log_params({f"tune.{k}": v for k, v in settings.items()})
            start = time.perf_counter()
            model = candidate.build(settings, stage).fit(stage.train, stage.valid, stage.validation)
            value, epochs = _score(model, candidate, stage)
            seconds = time.perf_counter() - start
            mlflow.log_metrics({stage.validation.monitor: value, "train/seconds": seconds})
            if epochs is not None:
                mlflow.log_metric("train/epochs", epochs)
        trial.set_user_attr("settings", settings)
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("seconds", seconds)
        print(f"tune: {name} trial {trial.number}: {value:.4f} ({seconds:.0f} s) {settings}")
        return value

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    timeout = None if params.tune.timeout_minutes is None else 60 * params.tune.timeout_minutes
    with start_run(params, "tune", f"tune-{protocol}-{name}", model=name):
        mlflow.set_tags({"protocol": protocol, "study": study.study_name})
        if trials > len(done):
            study.optimize(objective, n_trials=trials - len(done), timeout=timeout)
        best = study.best_trial
        mlflow.log_metric(f"best/{stage.validation.monitor}", best.value)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "settings": best.user_attrs["settings"],
        "epochs": best.user_attrs["epochs"],
        "valid": best.value,
        "monitor": stage.validation.monitor,
        "trials": len(complete),
        "best_trial": best.number,
        "study": study.study_name,
        "sampler": params.tune.sampler,
        "seconds": sum(t.user_attrs.get("seconds", 0.0) for t in complete),
    }


def write_tuned(path: Path, protocol: str, entries: dict[str, dict]) -> None:
    """Merge the tuned entries into ``path`` (other models' entries are kept)."""
    models = {**load_tuned(str(path)), **entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Settings chosen on validation by `python -m experiments.tune --protocol {protocol}`;\n"
        "# read by `python -m experiments.compare` (and, with --apply, written into params.yaml).\n"
    )
    body = yaml.safe_dump({"protocol": protocol, "models": models}, sort_keys=False)
    with atomic_file(path) as tmp:
        tmp.write_text(header + body)


def _null(representer, _data):
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def apply_to_params(settings: dict, path: Path = Path("params.yaml")) -> None:
    """Write ``settings`` into the ``gnolr`` section of params.yaml, keeping its comments, its
    ``null`` values and every other line as they were; a key the section lacks goes in before
    its last key (which holds the blank line that ends the section)."""
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.representer.add_representer(type(None), _null)
    data = rt.load(path.read_text())
    section = data["gnolr"]
    for key, value in settings.items():
        if key in section:
            section[key] = value
        else:
            section.insert(len(section) - 1, key, value)
    out = io.StringIO()
    rt.dump(data, out)
    with atomic_file(path) as tmp:
        tmp.write_text(out.getvalue())
        load_params(tmp)  # the result must still validate before it replaces params.yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=PROTOCOLS, default="ms-recommenders")
    parser.add_argument("--models", nargs="+", help="default: every tunable model of the protocol")
    parser.add_argument("--trials", type=int, help="override tune.trials")
    parser.add_argument("--source", default="movielens-100k", help="graded-temporal's source")
    parser.add_argument("--validation", choices=["auc", "ndcg"], help="graded selection metric")
    parser.add_argument("--apply", action="store_true", help="write GNOLR's choice to params.yaml")
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = load_params()
    trials = args.trials or params.tune.trials
    if args.protocol == "ms-recommenders":
        protocol = MSRecommenders(params.source.cache_dir)
        candidates = {n: c for n, c in TOPN.items() if c.space is not None}
    else:
        p = params.model_copy(deep=True)
        p.source.kind = "synthetic" if args.protocol == "simulator" else args.source
        validation = args.validation or ("auc" if args.protocol == "simulator" else "ndcg")
        protocol = Graded(p, validation=validation)

        def build(settings: dict, stage: Stage) -> GNOLRRecommender:
            return GNOLRRecommender(
                graded_config(p.gnolr, "gnolr", settings),
                stage.levels,
                user_features=stage.user_features,
                item_features=stage.item_features,
            )

        candidates = {"gnolr": Candidate(build, graded_gnolr_space, True, graded_defaults(p.gnolr))}
    names = args.models or list(candidates)
    stage = protocol.tuning()
    entries = {}
    for name in names:
        entries[name] = run_study(args.protocol, name, candidates[name], stage, params, trials)
        print(f"tune: {name} best {entries[name]['valid']:.4f} {entries[name]['settings']}")
    path = Path(tuned_path(args.protocol))
    write_tuned(path, args.protocol, entries)
    print(f"tune: → {path}")
    if args.apply:
        if "gnolr" not in entries or args.protocol == "ms-recommenders":
            raise SystemExit("--apply writes a graded protocol's GNOLR choice into params.yaml")
        apply_to_params(entries["gnolr"]["settings"])
        print("tune: params.yaml gnolr section updated; `dvc repro` trains and serves it")


if __name__ == "__main__":
    main()
