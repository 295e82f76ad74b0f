"""Serving benchmark: POST /recommend through a real `bentoml serve` on loopback, beside in-process calls.

    .venv/bin/python benchmarks/serving_load.py                    # 100k and 1M items, c = 1 8 32
    .venv/bin/python benchmarks/serving_load.py --items 100000 --seconds 5       # a quick run
    .venv/bin/python benchmarks/serving_load.py --workers 2 --no-access-log      # service settings

For each catalogue size the script

1. builds (once; cached under ``data/bench/``) a synthetic serving bundle in the format of
   serving/bundle.py: ``--users`` users and N items whose GNOLR sub-embeddings (T = 3 levels,
   d = 32, nested scoring, so 96-dimensional serving vectors) come from a low-rank latent model
   (see :func:`synthetic_embeddings`), seen items and a popularity order drawn from a Zipf law, and
   a FAISS index from ``serving.index.build_index``. ``--index auto`` follows the pipeline
   (exact up to ``auto_exact_max_items`` = 50k, HNSW above). For HNSW / IVF the smallest efSearch /
   nprobe of a ladder whose recall@100 against exact search (``serving.index.recall_and_qps``, 500
   users' queries) reaches ``--recall-floor`` is written to the manifest;
2. times the same retrieval in-process: ``serving.recommend.recommend(bundle, user, 10)`` on the
   loaded bundle for the same users (median per call, calls/s on one thread), and the same plus
   the fsync'd feedback-log append of the slate's impressions, which is what the service adds;
3. starts ``bentoml serve serving.service:Recommender`` on a free 127.0.0.1 port with
   ``LADDER_BUNDLE`` = that bundle and ``LADDER_FEEDBACK_LOG`` = a fresh directory under
   ``data/bench/`` (same disk as the repo), waits for ``/readyz`` and, per concurrency level,
   drives ``POST /recommend {user_id, k: 10}`` from an asyncio/aiohttp closed-loop generator
   (c connections, each sending its next request when the previous answer arrived) for
   ``--warmup`` seconds (discarded) and then ``--seconds`` seconds.

Reported per level: requests/s (completed requests / wall time of the measured window), p50/p95/p99
of the client-side latency (send → whole body read), errors (non-200 or transport errors), CPU
milliseconds per request of the server's process tree and of the load generator, and the overhead
ratio = service p50 / in-process median. The load generator runs on the same 2 cores as the server:
its CPU is taken from the server's budget, so the requests/s are a lower bound of what a remote
client would see. The server process group is always killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from features.contract import Col
from features.feedback_log import FeedbackLog  # noqa: E402
from features.seen import SeenItems  # noqa: E402
from models.gnolr.network import GNOLREmbeddings  # noqa: E402
from serving.bundle import load_bundle, write_bundle  # noqa: E402
from serving.index import IndexConfig, build_index, choose_kind, recall_and_qps  # noqa: E402
from serving.recommend import impression_records, recommend  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "data" / "bench"
GENERATOR_VERSION = 1  # bump when synthetic_embeddings changes: invalidates the caches
LEVELS = ["click", "cart", "purchase"]
HEADS, SUB_DIM, LATENT_DIM, N_CLUSTERS = 3, 32, 16, 256
GAMMA, THRESHOLDS = [1.0, 1.0, 1.0], [3.0, 4.5, 5.5]
# Index build settings of the benchmark (params.yaml's defaults except efConstruction = 40, not 200:
# a 1M-item HNSW graph then builds in a few minutes on 2 cores; the ladder below restores recall).
BENCH_INDEX = {"hnsw_m": 32, "hnsw_ef_construction": 40, "ivf_nlist": 1024, "pq_m": 8}
EF_LADDER = (100, 128, 192, 256, 384, 512, 768, 1024)  # FAISS searches max(efSearch, k)
NPROBE_LADDER = (8, 16, 32, 64, 128, 256)
RECALL_K, RECALL_QUERIES = 100, 500


# ----------------------------------------------------------------------------- synthetic data


def _latent_sub_embeddings(
    n: int, proj: np.ndarray, centers: np.ndarray, rng: np.random.Generator, chunk: int = 200_000
) -> np.ndarray:
    """(n, H, d) unit sub-embeddings e^h = normalise(P_h z + 0.35·ε), z = centre + 0.8·η."""
    out = np.empty((n, HEADS, SUB_DIM), dtype=np.float32)
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        z = centers[rng.integers(0, len(centers), m)] + 0.8 * rng.standard_normal(
            (m, LATENT_DIM), dtype=np.float32
        )
        for h in range(HEADS):
            v = z @ proj[h].T + 0.35 * rng.standard_normal((m, SUB_DIM), dtype=np.float32)
            out[lo : lo + m, h] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def synthetic_embeddings(n_items: int, n_users: int, seed: int = 0) -> GNOLREmbeddings:
    """GNOLR embeddings with the structure of trained ones: a 16-dim latent space, 256 clusters.

    User and item latents z ~ c_j + 0.8·N(0, I_16) around one of 256 shared centres c_j ~ N(0, I_16);
    each of the H = 3 heads maps z to 32 dims by its own Gaussian projection P_h and adds noise
    0.35·N(0, I_32) before L2 normalisation. Serving vectors are the 96-dim concatenations
    (nested scoring), so an inner product is a sum of three cosines. I.i.d. Gaussian vectors (no
    structure) are the ANN worst case; ``benchmarks/index_kinds.py --data iid`` measures them.
    The items depend only on (n_items, seed), the users only on (n_users, seed).
    """
    base = np.random.default_rng([seed, GENERATOR_VERSION])
    proj = base.standard_normal((HEADS, SUB_DIM, LATENT_DIM), dtype=np.float32) / np.sqrt(
        LATENT_DIM
    )
    centers = base.standard_normal((N_CLUSTERS, LATENT_DIM), dtype=np.float32)
    items = _latent_sub_embeddings(
        n_items, proj, centers, np.random.default_rng([seed, 1, n_items])
    )
    users = _latent_sub_embeddings(
        n_users, proj, centers, np.random.default_rng([seed, 2, n_users])
    )
    return GNOLREmbeddings(users, items, np.array(GAMMA), np.array(THRESHOLDS), "nested")


def iid_embeddings(n_items: int, n_users: int, seed: int = 0) -> GNOLREmbeddings:
    """Unit sub-embeddings drawn i.i.d. uniformly on the sphere: no structure for an ANN to use."""

    def draw(n: int, rng: np.random.Generator) -> np.ndarray:
        v = rng.standard_normal((n, HEADS, SUB_DIM), dtype=np.float32)
        return v / np.linalg.norm(v, axis=2, keepdims=True)

    items = draw(n_items, np.random.default_rng([seed, 11, n_items]))
    users = draw(n_users, np.random.default_rng([seed, 12, n_users]))
    return GNOLREmbeddings(users, items, np.array(GAMMA), np.array(THRESHOLDS), "nested")


# ----------------------------------------------------------------------------- indexes


def index_config(kind: str, **overrides) -> IndexConfig:
    """The benchmark's :class:`IndexConfig` for ``kind`` (auto = the pipeline's size rule)."""
    return IndexConfig(kind=kind, **{**BENCH_INDEX, **overrides})


def cached_index(
    vectors: np.ndarray, data_key: str, cfg: IndexConfig, seed: int = 0
) -> tuple[faiss.Index, str, dict]:
    """(index, kind, build facts): ``build_index`` once, then read from ``data/bench/indexes``.

    The cache key is the data key and the build-relevant fields of ``cfg``; the facts (``build_s``
    wall seconds, ``build_cpu_s``, OpenMP ``threads``) are those of the run that built it.
    """
    kind = choose_kind(len(vectors), cfg)
    fields = {
        "flat": (),
        "hnsw": ("hnsw_m", "hnsw_ef_construction"),
        "ivf": ("ivf_nlist",),
        "ivfpq": ("ivf_nlist", "pq_m"),
    }[kind]
    tag = "-".join([data_key, kind, *(f"{f}{getattr(cfg, f)}" for f in fields)])
    path = BENCH_DIR / "indexes" / f"{tag}.faiss"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        return faiss.read_index(str(path)), kind, json.loads(meta_path.read_text())
    start, cpu = time.perf_counter(), time.process_time()
    index, kind = build_index(vectors, cfg.model_copy(update={"kind": kind}), seed=seed)
    meta = {
        "build_s": time.perf_counter() - start,
        "build_cpu_s": time.process_time() - cpu,
        "threads": faiss.omp_get_max_threads(),
    }
    if kind != "flat":  # an exact index is rebuilt in no time; don't store 400 MB for it
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(path.with_suffix(".tmp")))
        os.replace(path.with_suffix(".tmp"), path)
        meta_path.write_text(json.dumps(meta))
    return index, kind, meta


def tune_search(
    index: faiss.Index, kind: str, vectors: np.ndarray, queries: np.ndarray, floor: float
) -> tuple[dict, dict]:
    """The smallest efSearch (HNSW) / nprobe (IVF) of the ladder reaching recall@100 ≥ ``floor``.

    Returns (manifest fields, quality = {recall, qps, knob, value, tried}); exact search needs no
    knob. Falls back to the largest rung when none reaches the floor (the report says so).
    """
    if kind == "flat":
        return {}, {**recall_and_qps(index, vectors, queries, RECALL_K), "knob": None}
    knob, ladder = ("ef_search", EF_LADDER) if kind == "hnsw" else ("nprobe", NPROBE_LADDER)
    if knob == "nprobe":
        ladder = tuple(p for p in ladder if p <= index.nlist)
    tried = []
    for value in ladder:
        if knob == "ef_search":
            index.hnsw.efSearch = value
        else:
            index.nprobe = value
        quality = recall_and_qps(index, vectors, queries, RECALL_K)
        tried.append({"value": value, **quality})
        if quality["recall"] >= floor:
            break
    return {knob: value}, {**quality, "knob": knob, "value": value, "tried": tried}


# ----------------------------------------------------------------------------- the bundle


def build_bundle(
    n_items: int, n_users: int, index_kind: str, floor: float, seed: int = 0
) -> tuple[Path, dict]:
    """A serving bundle of ``n_items`` synthetic items under ``data/bench/``; (path, bench facts).

    Reused when ``bench.json`` in it records the same settings. Written to a temporary sibling and
    renamed, so an interrupted build leaves no half bundle.
    """
    spec = {
        "generator": GENERATOR_VERSION,
        "n_items": n_items,
        "n_users": n_users,
        "index": index_kind,
        "recall_floor": floor,
        "seed": seed,
        "ef_ladder": list(EF_LADDER),
        "nprobe_ladder": list(NPROBE_LADDER),
        **BENCH_INDEX,
    }
    out = BENCH_DIR / f"serving-{n_items}-{index_kind}-u{n_users}-s{seed}"
    facts_path = out / "bench.json"
    if facts_path.exists():
        facts = json.loads(facts_path.read_text())
        if facts.get("spec") == spec:
            return out, facts
    print(f"building a {n_items:,}-item bundle in {out} (once) ...", flush=True)
    start = time.perf_counter()
    emb = synthetic_embeddings(n_items, n_users, seed)
    vectors = emb.item_vectors()
    cfg = index_config(index_kind)
    index, kind, build = cached_index(vectors, f"latent{GENERATOR_VERSION}-n{n_items}-s{seed}", cfg)
    rng = np.random.default_rng([seed, 3])
    sample = rng.choice(n_users, size=min(RECALL_QUERIES, n_users), replace=False)
    knobs, quality = tune_search(index, kind, vectors, emb.user_vectors(sample), floor)

    # popularity: Zipf weights over a random order; seen items: ~Poisson(8) draws per user
    order = rng.permutation(n_items)
    weight = np.empty(n_items)
    weight[order] = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    weight /= weight.sum()
    n_seen = np.minimum(rng.poisson(8, n_users), 60)
    seen_items = rng.choice(n_items, size=int(n_seen.sum()), p=weight)
    seen = SeenItems.from_pairs(np.repeat(np.arange(n_users), n_seen), seen_items, n_users)
    popularity = np.bincount(seen_items, minlength=n_items) + weight  # ties broken by the law

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    users = pl.DataFrame({Col.USER: [f"u{i}" for i in range(n_users)]}).with_row_index(Col.USER_IDX)
    items = pl.DataFrame({Col.ITEM: [f"i{i}" for i in range(n_items)]}).with_row_index(Col.ITEM_IDX)
    manifest = {
        "model_version": f"bench-{n_items}-{kind}",
        "mlflow_run_id": None,
        "dataset_digest": None,
        "levels": LEVELS,
        "reactions": ["love"],
        "index_kind": kind,
        **knobs,
    }
    popular = np.argsort(-popularity, kind="stable")
    write_bundle(tmp, emb, index, users, items, seen, popular, manifest)
    facts = {
        "spec": spec,
        "kind": kind,
        "dim": int(vectors.shape[1]),
        "index_build_s": build["build_s"],
        "index_build_cpu_s": build.get("build_cpu_s"),
        "build_threads": build["threads"],
        f"recall_at_{RECALL_K}": quality["recall"],
        "index_qps_single": quality["qps"],
        "search": {k: v for k, v in quality.items() if k not in ("recall", "qps")},
        "bundle_build_s": time.perf_counter() - start,
    }
    (tmp / "bench.json").write_text(json.dumps(facts, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(
        f"  {kind}: index built in {build['build_s']:.0f} s, recall@{RECALL_K} {quality['recall']:.3f}"
        f"{'' if not knobs else f' at {knobs}'}, bundle in {facts['bundle_build_s']:.0f} s",
        flush=True,
    )
    return out, facts


# ----------------------------------------------------------------------------- in-process


def user_ids(n_users: int, n: int, seed: int = 0) -> list[str]:
    """``n`` known user ids in a fixed random order (the same ones for both measurements)."""
    rng = np.random.default_rng([seed, 4])
    return [f"u{i}" for i in rng.integers(0, n_users, n)]


def in_process(bundle_dir: Path, users: list[str], seconds: float, log_dir: Path) -> dict:
    """Median ms and calls/s of ``recommend(bundle, user, 10)`` in this process, one thread.

    Measured twice: the retrieval alone, and retrieval + the fsync'd append of the slate's
    impressions to a ``FeedbackLog`` in ``log_dir`` (what the service adds to every request).
    """

    faiss.omp_set_num_threads(1)
    start = time.perf_counter()
    bundle = load_bundle(bundle_dir)
    load_s = time.perf_counter() - start
    log = FeedbackLog(log_dir)

    def timed(bundle, with_log: bool) -> dict:
        for uid in users[:50]:  # warm-up
            recommend(bundle, uid, 10)
        times = []
        begin = time.perf_counter()
        for n, uid in enumerate(users):
            t0 = time.perf_counter()
            result = recommend(bundle, uid, 10)
            if with_log:
                log.append(impression_records(result))
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - begin > seconds and n >= 100:
                break
        total = time.perf_counter() - begin
        return {
            "calls": len(times),
            "median_ms": 1e3 * float(np.median(times)),
            "p99_ms": 1e3 * float(np.percentile(times, 99)),
            "calls_per_s": len(times) / total,
        }

    out = {"bundle_load_s": load_s, "retrieval": timed(bundle, False)}
    if log is not None:
        out["retrieval+log"] = timed(bundle, True)
    del bundle
    gc.collect()
    return out


def fsync_cost(directory: Path, n: int = 300) -> dict:
    """Median / p99 ms of a 2 kB O_APPEND write + fsync in ``directory`` (the log's disk)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    times = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 2047 + b"\n")
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return {
        "median_ms": 1e3 * float(np.median(times)),
        "p99_ms": 1e3 * float(np.percentile(times, 99)),
    }


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_overrides(workers: int | None, threads: int | None, access_log: bool) -> dict:
    """BentoML config overrides (``BENTOML_CONFIG_OVERRIDES``) for the Recommender service."""
    svc: dict = {}
    if workers is not None:
        svc["workers"] = workers
    if threads is not None:
        svc["threads"] = threads
    if not access_log:
        svc["logging"] = {"access": {"enabled": False}}
    return {"services": {"Recommender": svc}} if svc else {}


@contextlib.contextmanager
def bentoml_server(
    bundle_dir: Path,
    feedback_dir: Path,
    log_path: Path,
    overrides: dict,
    extra_env: dict[str, str],
    start_timeout: float,
    target: str = "serving.service:Recommender",
    cwd: Path = ROOT,
    cpus: set[int] | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A `bentoml serve` in its own process group on 127.0.0.1; yields (base URL, process).

    ``cpus``: the CPU cores the server (and every worker it starts) may run on; default all.

    Waits until ``/readyz`` answers 200 (or fails with the server log's tail); the whole process
    group is terminated (SIGTERM, then SIGKILL after 15 s) when the block exits, whatever happens.
    """
    port = free_port()
    env = {
        **os.environ,
        "LADDER_BUNDLE": str(bundle_dir),
        "LADDER_FEEDBACK_LOG": str(feedback_dir),
        "BENTOML_DO_NOT_TRACK": "true",
        **extra_env,
    }
    if overrides:
        env["BENTOML_CONFIG_OVERRIDES"] = json.dumps(overrides)
    bentoml_bin = Path(sys.executable).with_name("bentoml")
    cmd = [str(bentoml_bin), "serve", target]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"bentoml serve exited with {proc.returncode}:\n{_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"no /readyz after {start_timeout:.0f} s:\n{_tail(log_path)}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/readyz", timeout=2) as r,
            ):
                if r.status == 200:
                    break
            time.sleep(0.5)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, even after a clean exit
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        log.close()


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_bytes()[-n:].decode(errors="replace")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and all its descendants."""
    import psutil

    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
    return total


# ----------------------------------------------------------------------------- load generator


@dataclass
class LevelResult:
    concurrency: int
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    server_cpu_ms_per_req: float = float("nan")
    client_cpu_ms_per_req: float = float("nan")


def request_cap(seconds: float) -> int:
    """A hard bound on the requests of a closed loop of ``seconds``, far above any reachable rate."""
    return 20_000 * max(1, int(seconds))


async def drive(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    seconds: float,
    max_requests: int,
    server_timings: list[str] | None = None,
) -> tuple[list[float], dict[str, int], float]:
    """Closed loop: ``concurrency`` workers POST until the deadline; (latencies s, errors, wall s).

    With ``server_timings``, each successful response's ``Server-Timing`` header is appended to it
    (in the order of the latencies)."""
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(max_requests))
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            for n in counter:  # bounded: at most max_requests over all workers
                if time.perf_counter() >= deadline:
                    return
                t0 = time.perf_counter()
                try:
                    async with session.post(
                        url, data=bodies[n % len(bodies)], headers=headers
                    ) as r:
                        await r.read()
                        if r.status != 200:
                            errors[f"http {r.status}"] = errors.get(f"http {r.status}", 0) + 1
                            continue
                        timing = r.headers.get("server-timing", "")
                except (TimeoutError, aiohttp.ClientError) as exc:
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if server_timings is not None:
                    server_timings.append(timing)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


def run_level(
    url: str, server_pid: int, users: list[str], concurrency: int, warmup: float, seconds: float
) -> LevelResult:
    """Warm up, then measure one concurrency level against ``url`` (/recommend)."""
    bodies = [json.dumps({Col.USER: u, "k": 10}).encode() for u in users]
    endpoint = f"{url}/recommend"
    cap = request_cap(seconds + warmup)
    if warmup > 0:
        asyncio.run(drive(endpoint, bodies, concurrency, warmup, cap))
    cpu0, client0 = tree_cpu_seconds(server_pid), time.process_time()
    latencies, errors, wall = asyncio.run(drive(endpoint, bodies, concurrency, seconds, cap))
    cpu1, client1 = tree_cpu_seconds(server_pid), time.process_time()
    n_err = sum(errors.values())
    done = len(latencies) + n_err
    res = LevelResult(concurrency, len(latencies), n_err, errors, wall, done / wall)
    if latencies:
        ms = 1e3 * np.asarray(latencies)
        res.p50_ms, res.p95_ms, res.p99_ms = (float(x) for x in np.percentile(ms, [50, 95, 99]))
        res.max_ms = float(ms.max())
    if done:
        res.server_cpu_ms_per_req = 1e3 * (cpu1 - cpu0) / done
        res.client_cpu_ms_per_req = 1e3 * (client1 - client0) / done
    return res


def check_response(url: str, user: str) -> dict:
    """One request, checked: 10 items and a model version, else the benchmark stops."""
    req = urllib.request.Request(
        f"{url}/recommend",
        data=json.dumps({Col.USER: user, "k": 10}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.loads(r.read())
    if len(body.get("items", [])) != 10 or not body.get("model_version"):
        raise RuntimeError(f"unexpected /recommend answer: {str(body)[:500]}")
    return body


def count_log_lines(directory: Path) -> tuple[int, int]:
    """(lines, bytes) of every file in the feedback log directory."""
    lines = size = 0
    for path in directory.glob("*"):
        if path.is_file():
            data = path.read_bytes()
            lines += data.count(b"\n")
            size += len(data)
    return lines, size


# ----------------------------------------------------------------------------- report


def fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:,.{digits}f}"


def table(runs: list[dict]) -> str:
    head = (
        "| items | index | recall@100 | where | concurrency | req/s | p50 ms | p95 ms | p99 ms "
        "| errors | server CPU ms/req | client CPU ms/req | p50 / in-process |\n"
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for run in runs:
        b, ip = run["bundle"], run["in_process"]
        idx = b["kind"] + "".join(f" {k}={v}" for k, v in run["manifest_knobs"].items())
        pre = f"| {run['n_items']:,} | {idx} | {b[f'recall_at_{RECALL_K}']:.3f} "
        base = ip["retrieval"]["median_ms"]
        for name in ("retrieval", "retrieval+log"):
            if (m := ip.get(name)) is not None:
                rows.append(
                    f"{pre}| in-process {name} | 1 | {fmt(m['calls_per_s'], 0)} "
                    f"| {fmt(m['median_ms'], 2)} | | {fmt(m['p99_ms'], 2)} | 0 | | | |"
                )
        for lv in run["levels"]:
            rows.append(
                f"{pre}| bentoml serve | {lv['concurrency']} | {fmt(lv['rps'], 0)} "
                f"| {fmt(lv['p50_ms'], 2)} | {fmt(lv['p95_ms'], 2)} | {fmt(lv['p99_ms'], 2)} "
                f"| {lv['errors']} | {fmt(lv['server_cpu_ms_per_req'], 2)} "
                f"| {fmt(lv['client_cpu_ms_per_req'], 2)} | {fmt(lv['p50_ms'] / base, 1)}× |"
            )
    return head + "\n".join(rows)


def targets(runs: list[dict]) -> list[str]:
    """The issue's targets, checked at concurrency 32."""
    lines = []
    for run in runs:
        lv = next((x for x in run["levels"] if x["concurrency"] == 32), None)
        if lv is None:
            continue
        recall = run["bundle"][f"recall_at_{RECALL_K}"]
        if run["n_items"] == 100_000:
            ok = lv["rps"] >= 800 and lv["p99_ms"] <= 25 and lv["errors"] == 0
            lines.append(
                f"target 100k items, c=32: ≥ 800 req/s and p99 ≤ 25 ms → {'MET' if ok else 'NOT MET'}"
                f" ({lv['rps']:,.0f} req/s, p99 {lv['p99_ms']:.1f} ms, {lv['errors']} errors)"
            )
        if run["n_items"] == 1_000_000:
            ok = lv["p99_ms"] <= 25 and recall >= 0.95 and lv["errors"] == 0
            lines.append(
                f"target 1M items, c=32: p99 ≤ 25 ms at recall@100 ≥ 0.95 → "
                f"{'MET' if ok else 'NOT MET'} (p99 {lv['p99_ms']:.1f} ms, recall {recall:.3f}, "
                f"{lv['rps']:,.0f} req/s, {lv['errors']} errors)"
            )
    return lines


def machine() -> dict:
    import aiohttp
    import bentoml

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "bentoml": bentoml.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "aiohttp": aiohttp.__version__,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="discarded seconds per level")
    parser.add_argument("--in-process-seconds", type=float, default=5.0)
    parser.add_argument("--index", default="auto", choices=["auto", "flat", "hnsw", "ivf", "ivfpq"])
    parser.add_argument("--recall-floor", type=float, default=0.95)
    parser.add_argument("--workers", type=int, help="BentoML workers (default: the service's)")
    parser.add_argument("--threads", type=int, help="BentoML threads per worker")
    parser.add_argument("--no-access-log", action="store_true", help="turn BentoML's off")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="server env"
    )
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--tag", default="cpu", help="results_serving_<tag>.txt/.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    overrides = service_overrides(args.workers, args.threads, not args.no_access_log)
    extra_env = dict(kv.split("=", 1) for kv in args.server_env)
    info = {
        **machine(),
        "load_avg_start": os.getloadavg(),
        "argv": sys.argv[1:],
        "bentoml_overrides": overrides,
        "server_env": extra_env,
    }
    print(json.dumps(info))
    runs = []
    for n_items in args.items:
        bundle_dir, facts = build_bundle(
            n_items, args.users, args.index, args.recall_floor, args.seed
        )
        manifest = json.loads((bundle_dir / "manifest.json").read_text())
        knobs = {k: manifest[k] for k in ("ef_search", "nprobe") if k in manifest}
        users = user_ids(args.users, 20_000, args.seed)
        scratch = BENCH_DIR / f"run-{os.getpid()}-{n_items}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            local = in_process(bundle_dir, users, args.in_process_seconds, scratch / "log-inproc")
            local["fsync"] = fsync_cost(scratch)
            print(f"{n_items:,} items in-process: {json.dumps(local)}", flush=True)
            levels = []
            with bentoml_server(
                bundle_dir,
                scratch / "feedback",
                scratch / "server.log",
                overrides,
                extra_env,
                args.start_timeout,
            ) as (url, proc):
                check_response(url, users[0])
                for c in args.concurrency:
                    lv = run_level(url, proc.pid, users, c, args.warmup, args.seconds)
                    print(f"  c={c}: {json.dumps(asdict(lv))}", flush=True)
                    levels.append(asdict(lv))
            log_lines, log_bytes = count_log_lines(scratch / "feedback")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        runs.append(
            {
                "n_items": n_items,
                "bundle_dir": str(bundle_dir.relative_to(ROOT)),
                "bundle": facts,
                "manifest_knobs": knobs,
                "in_process": local,
                "levels": levels,
                "feedback_log": {"lines": log_lines, "bytes": log_bytes},
            }
        )
    info["load_avg_end"] = os.getloadavg()
    text = "\n".join(
        [
            f"# serving benchmark ({info['cpu']}, {info['cores']} cores; load generator on the "
            f"same cores), bentoml {info['bentoml']}, faiss {info['faiss']}",
            f"# {' '.join(['serving_load.py', *sys.argv[1:]])}",
            f"# BentoML overrides {json.dumps(overrides)}, server env {json.dumps(extra_env)}, "
            f"load average {info['load_avg_start'][0]:.2f} at start, "
            f"{info['load_avg_end'][0]:.2f} at end",
            "",
            table(runs),
            "",
            *targets(runs),
            *(
                f"{r['n_items']:,} items: index built in {r['bundle']['index_build_s']:.0f} s "
                f"({r['bundle']['build_threads']} threads), fsync of a 2 kB append "
                f"{r['in_process']['fsync']['median_ms']:.2f} ms median / "
                f"{r['in_process']['fsync']['p99_ms']:.2f} ms p99, feedback log "
                f"{r['feedback_log']['lines']:,} lines written by the server"
                for r in runs
            ),
        ]
    )
    print("\n" + text)
    out = ROOT / "benchmarks" / f"results_serving_{args.tag}"
    out.with_suffix(".txt").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "runs": runs}, indent=2))
    print(f"\nwrote {out.with_suffix('.txt')} and .json")


if __name__ == "__main__":
    main()
