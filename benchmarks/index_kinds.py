"""FAISS index kinds: queries/s against recall@100 (vs exact search) on 100k and 1M items.

    .venv/bin/python benchmarks/index_kinds.py                      # 100k and 1M items
    .venv/bin/python benchmarks/index_kinds.py --items 100000       # ~2 minutes
    .venv/bin/python benchmarks/index_kinds.py --threads 2          # batched search on 2 threads

The item vectors and queries are those of the serving benchmark (benchmarks/serving_load.py): the
96-dim serving vectors of synthetic GNOLR embeddings from a 16-dim latent model, and the query
vectors of 500 of its 5000 users (``--data iid`` uses i.i.d. vectors on the sphere instead: no
structure, the worst case of every ANN index; slow to build at 1M). Indexes come from
``serving.index.build_index`` with the benchmark's settings (HNSW M = 32, efConstruction = 40;
IVF nlist = 1024; IVF-PQ with 8 or 32 sub-quantisers of 8 bits) and are cached under
``data/bench/indexes/`` with their build seconds, so a second run only searches.

Per index kind and search setting (efSearch for HNSW, nprobe for IVF):

- recall@100: |top-100 found ∩ exact top-100| / 100, averaged over the queries;
- single-query queries/s and median ms: one ``search`` call per query (how the service asks),
  one thread, within ``--single-seconds`` (at least 20 queries);
- batched queries/s: all queries in one ``search`` call on ``--threads`` OpenMP threads;
- index MB: the serialised index (≈ its memory).

HNSW searches max(efSearch, k) candidates: at k = 100 efSearch below 100 behaves as 100.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_load import (  # noqa: E402
    BENCH_DIR,
    GENERATOR_VERSION,
    RECALL_K,
    ROOT,
    cached_index,
    iid_embeddings,
    index_config,
    machine,
    synthetic_embeddings,
)

SETTINGS = {  # kind → (knob, values, build overrides)
    "flat": (None, [None], {}),
    "hnsw": ("efSearch", [100, 128, 256, 512], {}),
    "ivf": ("nprobe", [8, 16, 32, 64, 128], {}),
    "ivfpq m=8": ("nprobe", [16, 64], {"pq_m": 8}),
    "ivfpq m=32": ("nprobe", [16, 64], {"pq_m": 32}),
}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found_q ∩ truth_q| / k (−1 padding never matches)."""
    k = truth.shape[1]
    return float(
        np.mean([len(np.intersect1d(f[f >= 0], t)) / k for f, t in zip(found, truth, strict=True)])
    )


def single_query(index: faiss.Index, queries: np.ndarray, budget_s: float) -> tuple[float, float]:
    """(queries/s, median ms) of one-query ``search`` calls, within ``budget_s`` (≥ 20 queries)."""
    times = []
    begin = time.perf_counter()
    for n, q in enumerate(queries):
        t0 = time.perf_counter()
        index.search(q[None, :], RECALL_K)
        times.append(time.perf_counter() - t0)
        if n >= 19 and time.perf_counter() - begin > budget_s:
            break
    return len(times) / sum(times), 1e3 * float(np.median(times))


def index_mb(index: faiss.Index) -> float:
    return faiss.serialize_index(index).nbytes / 1e6


def bench_size(n_items: int, args: argparse.Namespace) -> list[dict]:
    make = synthetic_embeddings if args.data == "latent" else iid_embeddings
    emb = make(n_items, args.users, args.seed)
    vectors = emb.item_vectors()
    rng = np.random.default_rng([args.seed, 3])  # the serving bundle's recall queries
    queries = emb.user_vectors(rng.choice(args.users, size=args.queries, replace=False))
    data_key = f"{args.data}{GENERATOR_VERSION}-n{n_items}-s{args.seed}"
    rows = []
    truth = None
    for name in args.kinds:
        knob, values, build = SETTINGS[name]
        kind = name.split()[0]
        faiss.omp_set_num_threads(args.build_threads)
        index, _, facts = cached_index(vectors, data_key, index_config(kind, **build), args.seed)
        size = index_mb(index)
        for value in values:
            if knob == "efSearch":
                index.hnsw.efSearch = value
            elif knob == "nprobe":
                index.nprobe = value
            faiss.omp_set_num_threads(args.threads)
            t0 = time.perf_counter()
            _, found = index.search(queries, RECALL_K)
            batched_qps = len(queries) / (time.perf_counter() - t0)
            if truth is None:  # flat comes first: its answer is the exact one
                if kind != "flat":
                    exact = faiss.IndexFlatIP(vectors.shape[1])
                    exact.add(vectors)
                    _, truth = exact.search(queries, RECALL_K)
                else:
                    truth = found
            faiss.omp_set_num_threads(1)
            qps, median_ms = single_query(index, queries, args.single_seconds)
            row = {
                "n_items": n_items,
                "kind": name,
                "setting": "" if knob is None else f"{knob}={value}",
                "build_s": facts["build_s"],
                "build_cpu_s": facts.get("build_cpu_s"),
                "build_threads": facts["threads"],
                "index_mb": size,
                "recall_at_100": recall(found, truth),
                "single_qps": qps,
                "single_median_ms": median_ms,
                "batched_qps": batched_qps,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
        del index
    return rows


def table(rows: list[dict], threads: int) -> str:
    head = (
        "| items | index | setting | build s | index MB | recall@100 | single-query q/s "
        f"| single-query median ms | batched q/s ({threads} thr) |\n"
        "|---:|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    return head + "\n".join(
        f"| {r['n_items']:,} | {r['kind']} | {r['setting']} | {r['build_s']:.1f} "
        f"| {r['index_mb']:,.0f} | {r['recall_at_100']:.3f} | {r['single_qps']:,.0f} "
        f"| {r['single_median_ms']:.2f} | {r['batched_qps']:,.0f} |"
        for r in rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--data", default="latent", choices=["latent", "iid"])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--single-seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads, batched search")
    parser.add_argument(
        "--build-threads",
        type=int,
        default=faiss.omp_get_max_threads(),
        help="OpenMP threads for index builds (default: OMP_NUM_THREADS or all cores)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="suffix: results_index_kinds<_tag>.txt/.json")
    args = parser.parse_args()
    if "flat" in args.kinds:  # flat first: it gives the exact answers
        args.kinds = ["flat", *(k for k in args.kinds if k != "flat")]

    info = {**machine(), "load_avg_start": os.getloadavg(), "argv": sys.argv[1:]}
    print(json.dumps(info))
    start = time.perf_counter()
    rows = [row for n in args.items for row in bench_size(n, args)]
    info["load_avg_end"] = os.getloadavg()
    info["wall_s"] = time.perf_counter() - start
    text = "\n".join(
        [
            f"# FAISS index kinds ({info['cpu']}, {info['cores']} cores), faiss {info['faiss']}, "
            f"{args.data} data, {args.queries} queries, k = {RECALL_K}",
            f"# {' '.join(['index_kinds.py', *sys.argv[1:]])}",
            f"# build s: wall seconds of the run that built each cached index under "
            f"{BENCH_DIR.relative_to(ROOT)}/indexes (its threads and CPU s are in the .json; "
            f"new builds here use {args.build_threads} threads), load average "
            f"{info['load_avg_start'][0]:.2f} at start, {info['load_avg_end'][0]:.2f} at end, "
            f"{info['wall_s']:.0f} s",
            "",
            table(rows, args.threads),
        ]
    )
    print("\n" + text)
    out = ROOT / "benchmarks" / f"results_index_kinds{'_' + args.tag if args.tag else ''}"
    out.with_suffix(".txt").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    print(f"\nwrote {out.with_suffix('.txt')} and .json")


if __name__ == "__main__":
    main()
