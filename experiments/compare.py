"""`python -m experiments.compare --protocol NAME`: every model through the library API, under one
named, published protocol, with intervals; a Markdown table to ``results/compare_<protocol>.md``.

    python -m experiments.compare --protocol ms-recommenders     # MovieLens-100K, MS Recommenders
    python -m experiments.compare --protocol graded-temporal     # MovieLens-100K graded, temporal
    python -m experiments.compare --protocol simulator --seeds 0 1 2
    python -m experiments.compare --protocol simulator --shop policy_popularity=2 policy_relevance=0.25

Protocols (experiments/protocols.py): ``ms-recommenders`` fits the settings of
``tuned/ms-recommenders.yaml`` (``experiments.tune``; defaults otherwise) on all of train and scores
test once, per ``--seeds`` refit seed; ``graded-temporal`` (source ``--source``, default
movielens-100k) and ``simulator`` (the synthetic shop of params.yaml, world and model seed per
``--seeds``) fit on train and early-stop on the validation window. Each model logs a nested
MLflow run under one parent run.

Intervals: 95 % bootstrap over users (``--bootstrap`` replicates), paired against ``--reference``
for differences (users resampled once for both models); over seeds (Student t) for the simulator.
A difference whose interval holds 0 is a tie.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mlflow
import numpy as np
import torch

from evaluation.bootstrap import Interval
from evaluation.selection import over_seeds, summarise, summarise_auc, verdict
from experiments.candidates import TOPN, Candidate, graded_candidates, load_tuned, tuned_path
from experiments.protocols import PROTOCOLS, Graded, MSRecommenders, Scores, Stage
from models.ensemble import Ensemble, choose_weights
from models.recommender import Recommender
from pipelines.outputs import atomic_file, write_json
from pipelines.params import Params, load_params
from pipelines.tracking import start_run

DEFAULT_MODELS = {
    "ms-recommenders": ["popularity", "bpr", "als", "ease", "gnolr", "gnolr_pointwise"],
    # gnolr = params.yaml's (per-head scales, per-level item bias); gnolr_capped = the paper's form
    "graded-temporal": ["popularity", "gnolr", "gnolr_capped", "naive_olr", "bce_per_level"],
    "simulator": ["popularity", "gnolr", "gnolr_capped", "naive_olr", "mt_bce"],
}
UNSEEDED = ("popularity", "ease")  # deterministic: no seed setting, one fit
REFERENCE = {"ms-recommenders": "als", "graded-temporal": "gnolr", "simulator": "gnolr"}


# --------------------------------------------------------------------------- fitting


def fit(candidate: Candidate, settings: dict, stage: Stage) -> Recommender:
    model = candidate.build(settings, stage)
    return model.fit(stage.train, stage.valid, stage.validation)


def ms_settings(
    name: str,
    candidate: Candidate,
    tuned: dict,
    protocol: MSRecommenders | None,
    inner: dict[str, Recommender] | None = None,
) -> dict:
    """Settings of the final refit: the tuned ones (or the defaults) with, for iterative models,
    the number of epochs chosen on validation (from the tuned file, or by one validated fit on the
    tuning part, whose validation score is then recorded as ``tuned[name]["valid"]`` and whose
    model, restored at the chosen epoch, is kept in ``inner[name]`` for the blend)."""
    entry = tuned.setdefault(name, {})
    settings = {**candidate.defaults, **entry.get("settings", {})}
    if candidate.iterative:
        epochs = entry.get("epochs")
        if epochs is None:
            chooser = fit(candidate, settings, protocol.tuning())
            epochs = chooser.fit_info["epochs"]
            entry.update(valid=float(chooser.fit_info["best_valid"]), epochs=int(epochs))
            if inner is not None:
                inner[name] = chooser
        settings["max_epochs"] = int(epochs)
    return settings


def run_ms(args, params: Params) -> dict:
    protocol = MSRecommenders(params.source.cache_dir)
    tuned = load_tuned(args.tuned or tuned_path(protocol.name))
    if args.blend and not set(args.blend) <= set(args.models):
        raise SystemExit(f"--blend {args.blend}: each must be among --models {args.models}")
    results, fitted, chosen, inner = {}, {}, {}, {}
    for name in args.models:
        candidate = TOPN[name]
        settings = chosen[name] = ms_settings(name, candidate, tuned, protocol, inner)
        per_seed = []
        for seed in args.seeds if candidate.iterative or name == "als" else args.seeds[:1]:
            seeded = {**settings, "seed": seed} if name not in UNSEEDED else settings
            start = time.perf_counter()
            model = fit(candidate, seeded, protocol.final())
            seconds = time.perf_counter() - start
            scores = protocol.score(model, protocol.final())
            per_seed.append((seed, scores, seconds, model))
            print(
                f"compare: {name} seed {seed}: test NDCG@10 "
                f"{np.nanmean(scores.per_user['ndcg_at_10']):.4f} ({seconds:.0f} s)",
                flush=True,
            )
        fitted[name] = [m for _, _, _, m in per_seed]
        results[name] = _ms_entry(per_seed, settings, tuned.get(name, {}))
    members = inner_members(args.blend or [], chosen, protocol, args.seeds, inner)
    for name in args.models:  # equal-weight ensembles of the refits over seeds: nothing to choose
        if len(fitted[name]) > 1:
            model = seed_ensemble(fitted[name], protocol.final().train)
            scores = protocol.score(model, protocol.final())
            valid = None  # the seed ensemble's own validation score, where its inner fits exist
            if name in members:
                tuning = protocol.tuning()
                metric = tuning.validation.monitor.removeprefix("valid/")
                valid = float(tuning.validation(members[name])[metric])
            results[f"{name}_x{len(fitted[name])}"] = _ms_entry(
                [(0, scores, 0.0, model)],
                {"components": f"{name} refits, seeds {args.seeds}"},
                {"valid": valid},
            )
    if args.blend:
        results["blend"] = ms_blend(
            args.blend, fitted, members, protocol, args.blend_step, tuple(args.blend_normalise)
        )
    return {"instances": {"0": results}, "facts": protocol.facts()}


def _ms_entry(per_seed: list, settings: dict, tuned: dict) -> dict:
    return {
        "scores": per_seed[0][1],
        "seconds": per_seed[0][2],
        "settings": settings,
        "valid": tuned.get("valid"),
        "trials": tuned.get("trials", 0),
        "by_seed": {
            str(s): {m: float(np.nanmean(v)) for m, v in sc.per_user.items()}
            for s, sc, _, _ in per_seed
        },
    }


def inner_members(
    names: list[str],
    chosen: dict,
    protocol: MSRecommenders,
    seeds: list[int],
    inner_fits: dict[str, Recommender] | None = None,
) -> dict[str, Recommender]:
    """Per name, the model fitted on the tuning part (``inner``) with its final settings ``chosen``
    (epochs included): the epoch-choosing fit when there was one, and for seeded models with
    several ``seeds`` the equal-weight z-score ensemble of one fit per seed (the seed ensemble the
    final refits form on all of train)."""
    tuning = protocol.tuning()
    out = {}
    for name in names:
        candidate = TOPN[name]
        seeded = len(seeds) > 1 and (candidate.iterative or name == "als")
        fits = []
        for seed in seeds if seeded else seeds[:1]:
            if inner_fits and name in inner_fits and seed == seeds[0]:
                fits.append(inner_fits[name])  # the epoch-choosing fit, seed as in chosen
                continue
            settings = {**chosen[name], "seed": seed} if name not in UNSEEDED else chosen[name]
            model = candidate.build(settings, tuning)
            fits.append(model.fit(tuning.train))  # epochs fixed: no validation needed
        out[name] = seed_ensemble(fits, tuning.train)
    return out


def seed_ensemble(models: list[Recommender], train) -> Recommender:
    """One model, or the equal-weight z-score ensemble of its refits over seeds."""
    return Ensemble(models).fit(train) if len(models) > 1 else models[0]


def ms_blend(
    names: list[str],
    fitted: dict,
    inner: dict[str, Recommender],
    protocol: MSRecommenders,
    step: float = 0.1,
    normalisations: tuple[str, ...] = ("z", "rank"),
) -> dict:
    """Blend of ``names``: the weights (simplex grid of ``step``) and the per-user normalisation
    (z-score or rank) chosen on validation with the members fitted on the tuning part
    (``inner``, seed ensembles where there are several seeds), then applied to the same members
    refitted on all of train. Test is scored once, after the choice."""
    tuning = protocol.tuning()
    metric = tuning.validation.monitor.removeprefix("valid/")
    best_w, best_v, how = choose_weights(
        [inner[n] for n in names], tuning.train, tuning.validation, metric, step, normalisations
    )
    train = protocol.final().train
    members = [seed_ensemble(fitted[n], train) for n in names]
    model = Ensemble(members, best_w, how).fit(train)
    scores = protocol.score(model, protocol.final())
    weights = dict(zip(names, [round(float(x), 3) for x in best_w], strict=True))
    seeds = {n: len(fitted[n]) for n in names}
    print(f"compare: blend {how} {weights}: valid {best_v:.4f}", flush=True)
    settings = {"normalise": how, "weights": weights, "seeds": seeds}
    return _ms_entry([(0, scores, 0.0, model)], settings, {"valid": best_v})


def run_graded(args, params: Params) -> dict:
    instances, facts = {}, {}
    seeds = args.seeds if args.protocol == "simulator" else args.seeds[:1]
    for seed in seeds:
        p = params.model_copy(deep=True)
        if args.protocol == "simulator":
            p.source.kind = "synthetic"
            p.source.synthetic.seed = seed
            for key, value in (kv.split("=", 1) for kv in args.shop):
                setattr(p.source.synthetic, key, type(getattr(p.source.synthetic, key))(value))
        else:
            p.source.kind = args.source
        p.gnolr.seed = seed
        if args.max_epochs:
            p.gnolr.max_epochs = args.max_epochs
        tuned = load_tuned(args.tuned or tuned_path(args.protocol))
        if "gnolr" in tuned:
            p.gnolr = p.gnolr.model_copy(update=tuned["gnolr"].get("settings", {}))
        protocol = Graded(p, validation=args.validation)
        facts[str(seed)] = protocol.facts()
        candidates = graded_candidates(p.gnolr)
        results = {}
        for name in args.models:
            start = time.perf_counter()
            settings = {"seed": seed} if name in ("bpr", "als") else {}
            model = fit(
                candidates[name], {**candidates[name].defaults, **settings}, protocol.final()
            )
            seconds = time.perf_counter() - start
            scores = protocol.score(model, protocol.final())
            results[name] = {
                "scores": scores,
                "seconds": seconds,
                "info": _jsonable(model.fit_info),
            }
            shown = {k: round(float(np.nanmean(v)), 4) for k, v in scores.per_user.items()}
            print(f"compare: seed {seed} {name} ({seconds:.0f} s) {shown}", flush=True)
        instances[str(seed)] = results
    return {"instances": instances, "facts": facts}


def _jsonable(info: dict) -> dict:
    return json.loads(json.dumps(info, default=lambda x: getattr(x, "tolist", lambda: str(x))()))


# --------------------------------------------------------------------------- summaries


def summaries(results: dict, reference: str, n_bootstrap: int) -> dict:
    """Per instance (seed) and model: every metric with its interval and paired difference."""
    out = {}
    for seed, models in results["instances"].items():
        ref: Scores | None = models.get(reference, {}).get("scores")
        out[seed] = {}
        for name, r in models.items():
            sc: Scores = r["scores"]
            row = {}
            for metric, values in sc.per_user.items():
                other = None if ref is None or name == reference else ref.per_user[metric]
                row[metric] = summarise(values, other, n_bootstrap, int(seed))
            for metric, rows in sc.rows.items():
                other = None if ref is None or name == reference else ref.rows[metric]
                row[metric] = summarise_auc(rows, other, max(200, n_bootstrap // 5), int(seed))
            out[seed][name] = row
    return out


def across_seeds(summary: dict, reference: str) -> dict:
    """Simulator: per model and metric, the mean over seeds and its t-interval, and the mean paired
    difference to the reference with its t-interval over seeds."""
    seeds = sorted(summary)
    out = {}
    for name in summary[seeds[0]]:
        out[name] = {}
        for metric in summary[seeds[0]][name]:
            vals = [summary[s][name][metric]["mean"] for s in seeds]
            cell = over_seeds(vals)
            if name != reference:
                diffs = [summary[s][name][metric]["diff"]["mean"] for s in seeds]
                d = over_seeds(diffs)
                cell["diff"] = d
                cell["verdict"] = verdict(Interval(d["mean"], d["lower"], d["upper"], 0.05, d["n"]))
                cell["per_seed_verdicts"] = [summary[s][name][metric]["verdict"] for s in seeds]
            out[name][metric] = cell
    return out


def _cell(c: dict, digits: int = 4) -> str:
    if not np.isfinite(c.get("lower", np.nan)):
        return f"{c['mean']:.{digits}f}"
    return f"{c['mean']:.{digits}f} [{c['lower']:.{digits}f}, {c['upper']:.{digits}f}]"


def _diff(c: dict) -> str:
    if "diff" not in c:
        return "–"
    d = c["diff"]
    sign = "+" if d["mean"] >= 0 else ""
    return f"{sign}{d['mean']:.4f} [{d['lower']:+.4f}, {d['upper']:+.4f}] {c['verdict']}"


def ms_table(results: dict, summary: dict, reference: str) -> str:
    lines = [
        "| model | valid NDCG@10 | test NDCG@10 [95 % CI] | − "
        + reference
        + " (paired) [95 % CI] | P@10 | R@10 | MAP@10 | test NDCG@10 by refit seed | refit s | settings |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    models = results["instances"]["0"]
    for name, r in models.items():
        s = summary["0"][name]
        valid = r.get("valid")
        by_seed = "/".join(f"{v['ndcg_at_10']:.4f}" for v in r["by_seed"].values())
        settings = json.dumps(
            {
                k: (round(v, 5) if isinstance(v, float) else v)
                for k, v in r["settings"].items()
                if k != "seed"
            }
        )
        lines.append(
            f"| {name} | {'–' if valid is None else f'{valid:.4f}'} | {_cell(s['ndcg_at_10'])} | "
            f"{_diff(s['ndcg_at_10'])} | {s['precision_at_10']['mean']:.4f} | "
            f"{s['recall_at_10']['mean']:.4f} | {s['map_at_10']['mean']:.4f} | {by_seed} | "
            f"{r['seconds']:.0f} | `{settings}` |"
        )
    return "\n".join(lines)


def graded_table(cells: dict, levels: list[str], reference: str, truth: bool) -> str:
    metrics = [f"ndcg_at_10/{n}" for n in levels] + [f"auc/{n}" for n in levels]
    if truth:
        metrics = [f"gt_ndcg_at_10/{n}" for n in levels] + metrics
    head = "| model | " + " | ".join(metrics) + " |"
    lines = [head, "|---|" + "---:|" * len(metrics)]
    for name, row in cells.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row[m]) for m in metrics) + " |")
    lines += [
        "",
        f"Paired differences to `{reference}` (95 % interval; tie = interval holds 0):",
        "",
    ]
    lines += [head, "|---|" + "---:|" * len(metrics)]
    for name, row in cells.items():
        if name != reference:
            lines.append(f"| {name} | " + " | ".join(_diff(row[m]) for m in metrics) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=PROTOCOLS, default="ms-recommenders")
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--source", default="movielens-100k", help="graded-temporal's source")
    parser.add_argument("--shop", nargs="*", default=[], help="simulator settings, key=value")
    parser.add_argument("--validation", choices=["auc", "ndcg"], help="graded early stopping")
    parser.add_argument("--tuned", help="tuned settings file (default tuned/<protocol>.yaml)")
    parser.add_argument("--reference", help="model the paired differences are taken against")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--blend",
        nargs="+",
        help="ms-recommenders: also a blend of these (weights, normalisation on valid; with "
        "several --seeds each seeded member is its seed ensemble)",
    )
    parser.add_argument("--blend-step", type=float, default=0.1, help="blend weight grid step")
    parser.add_argument(
        "--blend-normalise",
        nargs="+",
        choices=["z", "rank"],
        default=["z", "rank"],
        help="per-user normalisations the blend chooses among on validation",
    )
    parser.add_argument("--max-epochs", type=int, help="graded: override gnolr.max_epochs")
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.models = args.models or DEFAULT_MODELS[args.protocol]
    args.reference = args.reference or REFERENCE[args.protocol]
    if args.validation is None:
        args.validation = "auc" if args.protocol == "simulator" else "ndcg"
    params = load_params()
    stem = f"compare_{args.protocol}" + (f"_{args.tag}" if args.tag else "")
    with start_run(params, "compare", stem) as parent:
        mlflow.set_tags({"protocol": args.protocol, "seeds": str(args.seeds)})
        start = time.perf_counter()
        results = (
            run_ms(args, params) if args.protocol == "ms-recommenders" else run_graded(args, params)
        )
        summary = summaries(results, args.reference, args.bootstrap)
        for seed, models in summary.items():
            for name, row in models.items():
                with mlflow.start_run(run_name=f"{name}-seed{seed}", nested=True):
                    mlflow.set_tags({"stage": "compare", "model": name, "seed": seed})
                    mlflow.log_metrics(
                        {
                            f"test/{m.replace('@', '_at_')}": v["mean"]
                            for m, v in row.items()
                            if np.isfinite(v["mean"])
                        }
                    )
        command = "python -m experiments.compare --protocol " + args.protocol
        if args.models != DEFAULT_MODELS[args.protocol]:
            command += " --models " + " ".join(args.models)
        if args.protocol == "simulator":
            command += " --seeds " + " ".join(map(str, args.seeds))
            command += "".join(f" {kv}" for kv in (["--shop"] if args.shop else []) + args.shop)
        elif len(args.seeds) > 1:
            command += " --seeds " + " ".join(map(str, args.seeds))
        if args.tag:
            command += f" --tag {args.tag}"
        if args.blend:
            command += " --blend " + " ".join(args.blend)
            if args.blend_step != 0.1:
                command += f" --blend-step {args.blend_step:g}"
            if args.blend_normalise != ["z", "rank"]:
                command += " --blend-normalise " + " ".join(args.blend_normalise)
        minutes = (time.perf_counter() - start) / 60
        if args.protocol == "ms-recommenders":
            table = ms_table(results, summary, args.reference)
            payload = {"summary": summary, "facts": results["facts"]}
        else:
            levels = list(next(iter(results["instances"].values()))[args.models[0]]["scores"].rows)
            levels = [m.split("/", 1)[1] for m in levels]
            truth = args.protocol == "simulator"
            # over seeds when there are several, else the one seed's bootstrap over users
            several = truth and len(summary) > 1
            cells = (
                across_seeds(summary, args.reference) if several else next(iter(summary.values()))
            )
            table = graded_table(cells, levels, args.reference, truth)
            payload = {"summary": summary, "cells": cells, "facts": results["facts"]}
        header = (
            f"# `{args.protocol}`{(' — ' + ' '.join(args.shop)) if args.shop else ''}\n\n"
            f"Generated by `{command}` ({minutes:.0f} min, MLflow run {parent.info.run_id}); "
            f"protocol in experiments/protocols.py, intervals 95 % "
            f"({'over seeds ' + str(args.seeds) if len(results['instances']) > 1 else 'bootstrap over users'}"
            f", {args.bootstrap} replicates).\n\n"
        )
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"{stem}.md"
        with atomic_file(out) as tmp:
            tmp.write_text(header + table + "\n")
        info = {
            name: {k: v for k, v in r.items() if k != "scores"}
            for name, r in next(iter(results["instances"].values())).items()
        }
        write_json(args.out / f"{stem}.json", {**payload, "models": _jsonable(info)})
        mlflow.log_artifact(str(out))
    print(table)
    print(f"compare: table → {out}")


if __name__ == "__main__":
    main()
