"""The closed loop: simulated users meet the running service, the logged traffic retrains the model.

Run it: ``python -m experiments.closed_loop --rounds 3 --users 300 --exploration 0.5`` (``make
loop``): prints the round-by-round table and writes results/closed_loop.md and .json.

One loop (:func:`closed_loop`):

1. A scratch workspace (a copy of the pipeline code, ``dvc.yaml`` and ``params.yaml`` with a small
   synthetic world, in a temporary directory: the repository itself is never touched) runs
   ``dvc repro index``: the model of round 0 learns from the simulator's own logging policy.
2. ``bentoml serve serving.service:Recommender`` serves that bundle on a free loopback port with
   ``LADDER_FEEDBACK_LOG`` set to the workspace's log directory.
3. Each round, U simulated users request a slate (``POST /recommend`` with ``exploration``); their
   clicks, carts, purchases and loves are drawn from the simulator's ground truth
   (:func:`features.sources.synthetic.draw_funnel`) at the served positions and posted to
   ``POST /feedback``. The round's ground-truth quality is recorded (:func:`ground_truth_quality`).
4. Between rounds ``params.yaml: source.feedback_log`` points ingest at the log, ``dvc repro`` retrains
   on the simulator's history plus every logged round, and ``POST /reload`` swaps in the new bundle.

Timestamps: logged events carry the server's clock, after every simulated event, so a temporal split
would put all served traffic in the test set and never train on it. The workspace therefore uses
``features.split.method: stratified_random`` (each user's positives and negatives split at random),
so logged traffic trains in the next round like the history does; ``logged_train_rows`` in the
results counts the training rows whose time is after the loop started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import yaml

from evaluation.metrics import graded_ndcg
from features.feedback_log import Clock, utc_now
from features.sources.synthetic import SyntheticConfig, World, draw_funnel, parse_index, user_id

ROOT = Path(__file__).resolve().parents[1]
CODE = ("features", "models", "evaluation", "serving", "reporting", "pipelines")
FEEDBACK_EVENTS = ("click", "cart", "purchase", "love")
NDCG_K = 10

# A world small enough that one `dvc repro index` takes a minute or two on two cores.
DEMO_PARAMS: dict = {
    "source": {
        "kind": "synthetic",
        "synthetic": {
            "n_users": 300,
            "n_items": 200,
            "n_impressions": 80_000,
            "bad_row_fraction": 0.0,
            "seed": 1,
        },
    },
    "features": {"split": {"method": "stratified_random"}},
    "gnolr": {
        "embedding_dim": 32,
        "hidden": [32],
        "dim": 16,
        "max_epochs": 5,
        "batch_size": 1024,
        "lr": 0.003,
    },
    "index": {"recall_queries": 50},
    "relmf": {"max_epochs": 3},
    "plove": {"max_epochs": 3},
}


class HttpClient(Protocol):
    """What the loop needs of an HTTP client: httpx.Client and starlette's TestClient qualify."""

    def post(self, url: str, *, json: object = None): ...


# --------------------------------------------------------------------------- ground truth


def ground_truth_quality(
    world: World, users: np.ndarray, slates: np.ndarray, k: int = NDCG_K
) -> dict[str, float]:
    """True quality of served slates (``slates`` (U, K) simulator item indices, -1 = empty slot).

    ``gt_p_click/gt_p_purchase/gt_p_love``: mean true P(click), P(purchase), P(love) at the top
    position (:meth:`World.true_probabilities`) over served items. ``gt_ndcg_at_k``: graded NDCG@k
    with gain = the user's true P(purchase), DCG = Σ_p g(i_p)/log2(p+2) over served positions, divided
    by the DCG of the best k items of the whole catalogue (a yardstick that does not move between
    rounds as the model's seen-item sets grow).
    """
    users = np.asarray(users, dtype=np.int64)
    slates = np.asarray(slates, dtype=np.int64)
    filled = slates >= 0
    rows = np.repeat(users, slates.shape[1]).reshape(slates.shape)
    truth = world.true_probabilities(world.affinities(rows[filled], slates[filled]))
    gains = np.zeros(slates.shape)
    gains[filled] = truth["purchase"]
    catalogue = world.true_probabilities(world.affinity_matrix(users))["purchase"]
    return {
        "gt_p_click": float(truth["click"].mean()),
        "gt_p_purchase": float(truth["purchase"].mean()),
        "gt_p_love": float(truth["love"].mean()),
        f"gt_ndcg_at_{k}": graded_ndcg(gains, catalogue, k),
    }


def slate_feedback(
    user: str, slate_id: str | None, items: list[dict], drawn: dict[str, np.ndarray], ts: str
) -> list[dict]:
    """Feedback events of one served slate: one event per drawn response, tied to the slate."""
    events = []
    for n, item in enumerate(items):
        for name in FEEDBACK_EVENTS:
            if drawn[name][n]:
                event = {"user_id": user, "item_id": item["item_id"], "event": name, "ts": ts}
                event["position"] = item.get("position", n)
                if slate_id is not None:
                    event["slate_id"] = slate_id
                events.append(event)
    return events


# --------------------------------------------------------------------------- one round


@dataclass
class RoundStats:
    """What one round served and how good it truly was."""

    round: int
    model_version: str
    users: int
    impressions: int
    clicks: int
    carts: int
    purchases: int
    loves: int
    mean_propensity: float
    fallback_users: int
    gt_p_click: float
    gt_p_purchase: float
    gt_p_love: float
    gt_ndcg_at_10: float
    exploration: float
    seconds_serving: float
    seconds_retrain: float | None = None
    logged_train_rows: int | None = None  # training rows of the model that served this round
    extra: dict = field(default_factory=dict)

    @property
    def ctr(self) -> float:
        return self.clicks / max(self.impressions, 1)

    @property
    def purchase_rate(self) -> float:
        return self.purchases / max(self.impressions, 1)

    @property
    def love_rate(self) -> float:
        return self.loves / max(self.impressions, 1)

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "ctr": self.ctr,
            "purchase_rate": self.purchase_rate,
            "love_rate": self.love_rate,
        }


def _post(client: HttpClient, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    if response.status_code != 200:
        raise RuntimeError(f"POST {path} → {response.status_code}: {response.text[:500]}")
    return response.json()


def serve_round(
    client: HttpClient,
    world: World,
    users: np.ndarray,
    rng: np.random.Generator,
    round_no: int = 0,
    k: int = 10,
    exploration: float = 0.0,
    exclude_seen: bool = False,
    clock: Clock = utc_now,
) -> RoundStats:
    """Each simulator user in ``users`` requests a slate, responds by the ground truth, posts it back.

    The posted events are timed by ``clock`` (the real UTC clock; the server's must agree with it
    within its ``LADDER_MAX_CLOCK_SKEW_S``).
    """
    start = time.perf_counter()
    slates = np.full((len(users), k), -1, dtype=np.int64)
    totals = dict.fromkeys(FEEDBACK_EVENTS, 0)
    propensities: list[float] = []
    versions: set[str] = set()
    fallback = 0
    for row, user in enumerate(np.asarray(users, dtype=np.int64)):
        uid = str(user_id(np.array([user]))[0])
        body = {"user_id": uid, "k": k, "exclude_seen": exclude_seen, "exploration": exploration}
        if exploration > 0:
            body["seed"] = int(rng.integers(2**62))  # reproducible slate sampling
        served = _post(client, "/recommend", body)
        versions.add(served["model_version"])
        fallback += served.get("fallback") is not None
        items = served["items"]
        if not items:
            continue
        idx = parse_index([it["item_id"] for it in items])
        slates[row, : len(idx)] = idx
        position = np.array([it.get("position", n) for n, it in enumerate(items)])
        propensities += [float(it.get("propensity", 1.0)) for it in items]
        drawn = draw_funnel(world, np.full(len(idx), user), idx, position, rng)
        for name in FEEDBACK_EVENTS:
            totals[name] += int(drawn[name].sum())
        events = slate_feedback(
            uid,
            served.get("slate_id"),
            items,
            drawn,
            clock().isoformat(timespec="microseconds"),
        )
        if events:
            accepted = _post(client, "/feedback", {"events": events})
            if accepted.get("accepted") != len(events):
                raise RuntimeError(f"/feedback accepted {accepted} of {len(events)} events")
    quality = ground_truth_quality(world, users, slates)
    return RoundStats(
        round=round_no,
        model_version=",".join(sorted(versions)),
        users=len(users),
        impressions=int((slates >= 0).sum()),
        clicks=totals["click"],
        carts=totals["cart"],
        purchases=totals["purchase"],
        loves=totals["love"],
        mean_propensity=float(np.mean(propensities)) if propensities else float("nan"),
        fallback_users=fallback,
        gt_p_click=quality["gt_p_click"],
        gt_p_purchase=quality["gt_p_purchase"],
        gt_p_love=quality["gt_p_love"],
        gt_ndcg_at_10=quality["gt_ndcg_at_10"],
        exploration=exploration,
        seconds_serving=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- workspace and server


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merge(base[key], value) if nested else value
    return out


class Workspace:
    """A scratch DVC repository with a copy of the pipeline code; the lead's repository stays as is."""

    def __init__(self, path: Path, overrides: dict, source: Path = ROOT) -> None:
        self.path = Path(path).resolve()
        self.feedback_log = self.path / "feedback"
        self.overrides = overrides
        self.path.mkdir(parents=True, exist_ok=True)
        for name in CODE:
            shutil.copytree(
                source / name, self.path / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        shutil.copy(source / "dvc.yaml", self.path / "dvc.yaml")
        self._base = yaml.safe_load((source / "params.yaml").read_text())
        self.write_params(with_feedback=False)
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{self.path / 'mlflow.db'}",
            "PYTHONPATH": str(self.path),
            "DVC_NO_ANALYTICS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "BENTOML_DO_NOT_TRACK": "true",
        }
        self.env.pop("DVC_ROOT", None)
        self._run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"])

    @property
    def bundle(self) -> Path:
        return self.path / "data/serving"

    @property
    def world_file(self) -> Path:
        return self.path / "data/ingest/world.npz"

    def write_params(self, with_feedback: bool) -> None:
        """params.yaml: the repository's, the demo overrides, and the feedback log once it exists."""
        source = {"feedback_log": str(self.feedback_log)} if with_feedback else {}
        params = _merge(self._base, _merge(self.overrides, {"source": source}))
        (self.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def _run(self, cmd: list[str]) -> str:
        out = subprocess.run(cmd, cwd=self.path, env=self.env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed in {self.path}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
            )
        return out.stdout + out.stderr

    def repro(self, target: str | None = "index", with_feedback: bool = False) -> float:
        """Run the pipeline (up to ``target``; None = every stage); returns the seconds it took.

        With ``with_feedback`` the ingest stage is forced: its DVC dependencies (code and params) do
        not include the log directory, whose content changes every round.
        """
        start = time.perf_counter()
        dvc = [sys.executable, "-m", "dvc", "repro"]
        if with_feedback:
            self.write_params(with_feedback=True)
            self._run([*dvc, "--single-item", "--force", "ingest"])
        self._run([*dvc, *([target] if target else [])])
        return time.perf_counter() - start

    def logged_train_rows(self, since: datetime) -> int:
        """Training rows of the current features whose impression time is at or after ``since``."""
        train = pl.read_parquet(self.path / "data/features/train.parquet", columns=["ts"])
        return int((train["ts"] >= since).sum())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BentoServer:
    """A real ``bentoml serve serving.service:Recommender`` on a free loopback port.

    ``start()`` returns its URL once ``/readyz`` answers 200; the server runs in its own process
    group, which ``stop()`` terminates. Its output goes to ``log_dir/bentoml-<port>.log`` (default:
    the system's temporary directory). Also a context manager. It is given ``LADDER_API_TOKEN``
    (the environment's, else a fresh random one): send ``auth_headers`` to ``/feedback`` and
    ``/reload``.
    """

    def __init__(
        self,
        bundle: Path,
        feedback_log: Path,
        cwd: Path,
        env: dict | None = None,
        log_dir: Path | None = None,
    ):
        self.cwd = Path(cwd)
        self.log_dir = Path(log_dir or tempfile.gettempdir())
        self.env = {
            **(env or os.environ),
            "LADDER_BUNDLE": str(bundle),
            "LADDER_FEEDBACK_LOG": str(feedback_log),
            "PYTHONPATH": str(cwd),
            "BENTOML_DO_NOT_TRACK": "true",
        }
        self.env.setdefault("LADDER_API_TOKEN", secrets.token_urlsafe(32))
        self.auth_headers = {"Authorization": f"Bearer {self.env['LADDER_API_TOKEN']}"}
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 180.0) -> str:
        port = free_port()
        self.log = self.log_dir / f"bentoml-{port}.log"
        cmd = [
            str(Path(sys.executable).parent / "bentoml"),
            *("serve", "serving.service:Recommender", "--host", "127.0.0.1", "--port", str(port)),
        ]
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.cwd,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(self.url, self.proc, timeout, self.log)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> BentoServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"bentoml serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"bentoml serve not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


# --------------------------------------------------------------------------- the loop


@dataclass
class LoopConfig:
    rounds: int = 3  # retrains; rounds 0..rounds are served
    users: int = 1000  # slates per round, one per simulated user (drawn with replacement if needed)
    exploration: float = 0.1  # softmax temperature of /recommend (0 = deterministic top-k)
    k: int = 10
    exclude_seen: bool = False  # the simulator's users do not tire of items: keep them eligible
    seed: int = 0
    target: str | None = "index"  # dvc repro target (None = every stage)
    restart: bool = False  # restart the server instead of POST /reload
    overrides: dict = field(default_factory=lambda: json.loads(json.dumps(DEMO_PARAMS)))


def _pick_users(n_users: int, count: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n_users, size=count, replace=count > n_users))


def closed_loop(
    cfg: LoopConfig, workdir: Path, echo=print, clock: Clock = utc_now
) -> tuple[list[RoundStats], dict]:
    """Run the loop in ``workdir`` (a scratch workspace is created there).

    ``clock`` times the posted feedback and the loop's start (``logged_train_rows`` counts training
    rows at or after it); the real clock by default, as the server runs on it.

    Returns one row per served round and the :func:`reference_quality` yardsticks. Every round
    serves the same panel of users (fresh feedback draws), so rounds differ only by the model.
    """
    import httpx

    SyntheticConfig.model_validate(cfg.overrides["source"]["synthetic"])  # fail fast on a typo
    ws = Workspace(workdir, cfg.overrides)
    echo(f"workspace {ws.path}: initial dvc repro (the simulator's logging policy's history)")
    retrain = ws.repro(cfg.target)
    world = World.load(ws.world_file)
    loop_start = clock()
    rng = np.random.default_rng(cfg.seed)
    users = _pick_users(world.n_users, cfg.users, rng)
    rows: list[RoundStats] = []
    with BentoServer(ws.bundle, ws.feedback_log, ws.path, ws.env, ws.path) as server:
        client = httpx.Client(base_url=server.url, timeout=300, headers=server.auth_headers)
        try:
            for round_no in range(cfg.rounds + 1):
                if round_no > 0:
                    retrain = ws.repro(cfg.target, with_feedback=True)
                    if cfg.restart:
                        client.close()
                        server.stop()
                        client = httpx.Client(
                            base_url=server.start(), timeout=300, headers=server.auth_headers
                        )
                    else:
                        _post(client, "/reload", {})
                stats = serve_round(
                    client,
                    world,
                    users,
                    rng,
                    round_no,
                    cfg.k,
                    cfg.exploration,
                    cfg.exclude_seen,
                    clock,
                )
                stats.seconds_retrain = retrain
                stats.logged_train_rows = ws.logged_train_rows(loop_start)
                rows.append(stats)
                echo(format_row(stats))
        finally:
            client.close()
    return rows, reference_quality(world, users, cfg.k, cfg.seed)


# --------------------------------------------------------------------------- reporting

COLUMNS = (
    ("round", "round", "{}"),
    ("model_version", "model_version", "{}"),
    ("served users", "users", "{}"),
    ("impressions", "impressions", "{}"),
    ("CTR", "ctr", "{:.4f}"),
    ("purchase rate", "purchase_rate", "{:.4f}"),
    ("love rate", "love_rate", "{:.4f}"),
    ("gt P(click)", "gt_p_click", "{:.4f}"),
    ("gt P(purchase)", "gt_p_purchase", "{:.4f}"),
    ("gt P(love)", "gt_p_love", "{:.4f}"),
    ("gt_ndcg@10", "gt_ndcg_at_10", "{:.4f}"),
    ("mean propensity", "mean_propensity", "{:.3f}"),
    ("logged rows in train", "logged_train_rows", "{}"),
)


def format_row(stats: RoundStats) -> str:
    d = stats.as_dict()
    return " | ".join(f"{head} {fmt.format(d[key])}" for head, key, fmt in COLUMNS)


def markdown_table(rows: list[RoundStats]) -> str:
    head = "| " + " | ".join(h for h, _, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = [
        "| " + " | ".join(fmt.format(r.as_dict()[key]) for _, key, fmt in COLUMNS) + " |"
        for r in rows
    ]
    return "\n".join([head, rule, *body])


def reference_quality(world: World, users: np.ndarray, k: int = 10, seed: int = 0) -> dict:
    """Yardsticks on the same users: the oracle (top-k by true P(purchase)) and uniform slates."""
    truth = world.true_probabilities(world.affinity_matrix(users))["purchase"]
    oracle = np.argsort(-truth, axis=1, kind="stable")[:, :k]
    rng = np.random.default_rng(seed)
    uniform = np.stack([rng.choice(world.n_items, k, replace=False) for _ in users])
    return {
        "oracle": ground_truth_quality(world, users, oracle),
        "uniform": ground_truth_quality(world, users, uniform),
    }


def write_results(
    rows: list[RoundStats], cfg: LoopConfig, out: Path, references: dict | None = None
) -> None:
    """``out``.md (the table and how it was made) and ``out``.json (every number)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in asdict(cfg).items()}
    payload = {"config": config, "rounds": [r.as_dict() for r in rows], "references": references}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    world = cfg.overrides["source"]["synthetic"]
    text = [
        "# Closed loop: the service's own traffic retrains the model",
        "",
        f"`python -m pipelines.closed_loop --rounds {cfg.rounds} --users {cfg.users} "
        f"--exploration {cfg.exploration}{' --exclude-seen' if cfg.exclude_seen else ''}` on a "
        f"simulated shop of {world['n_users']} users × {world['n_items']} items with "
        f"{world['n_impressions']:,} logged impressions of history (the simulator's popularity-"
        "biased logging policy). Round 0 is served by the model trained on that history; round r "
        "by the model retrained (`dvc repro index` in a scratch workspace, then `POST /reload`) on "
        "the history plus the logged traffic of rounds 0..r−1. Every round serves the same panel "
        f"of users ({cfg.users} slates of {cfg.k}, sampled from a softmax of temperature "
        f"{cfg.exploration} over the top candidates; seen items "
        f"{'excluded' if cfg.exclude_seen else 'kept: the simulated users never tire of items'}). "
        "Rates are realised per impression; `gt` columns are the simulator's true probabilities "
        "(top position) of the served items and the graded NDCG@10 of the served slates against "
        "each user's true P(purchase) over the whole catalogue. `logged rows in train`: training "
        "rows of the serving model that came from the loop's own traffic (the workspace splits "
        "with `features.split.method: stratified_random`, because the log's server-clock "
        "timestamps come after the whole simulated history and a temporal split would only "
        "ever test on them).",
        "",
        markdown_table(rows),
        "",
    ]
    if references:
        text += [
            "Yardsticks on the same panel of users (slates of the same size): "
            + "; ".join(
                f"{name}: gt P(click) {q['gt_p_click']:.4f}, gt P(purchase) "
                f"{q['gt_p_purchase']:.4f}, gt P(love) {q['gt_p_love']:.4f}, "
                f"gt_ndcg@10 {q['gt_ndcg_at_10']:.4f}"
                for name, q in references.items()
            )
            + ".",
            "",
        ]
    out.with_suffix(".md").write_text("\n".join(text))


def main(argv: list[str] | None = None) -> None:
    world = DEMO_PARAMS["source"]["synthetic"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="retrains (rounds 0..N are served)")
    parser.add_argument(
        "--users", type=int, default=1000, help="slates per round (one per simulated user)"
    )
    parser.add_argument(
        "--exploration", type=float, default=0.1, help="softmax temperature (0 = top-k)"
    )
    parser.add_argument(
        "--exclude-seen",
        action="store_true",
        help="drop each user's training positives (the simulator's users never tire of items)",
    )
    parser.add_argument("--k", type=int, default=10, help="slate size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-users", type=int, default=world["n_users"])
    parser.add_argument("--n-items", type=int, default=world["n_items"])
    parser.add_argument("--n-impressions", type=int, default=world["n_impressions"])
    parser.add_argument("--epochs", type=int, default=DEMO_PARAMS["gnolr"]["max_epochs"])
    parser.add_argument("--full", action="store_true", help="`dvc repro` every stage, not `index`")
    parser.add_argument("--restart", action="store_true", help="restart the server, not /reload")
    parser.add_argument("--workdir", type=Path, help="keep the scratch workspace here")
    parser.add_argument("--out", type=Path, default=Path("results/closed_loop"))
    args = parser.parse_args(argv)
    if args.rounds < 0 or args.users < 1 or args.exploration < 0:
        parser.error("--rounds must be ≥ 0, --users ≥ 1 and --exploration ≥ 0")

    overrides = json.loads(json.dumps(DEMO_PARAMS))
    overrides["source"]["synthetic"].update(
        n_users=args.n_users, n_items=args.n_items, n_impressions=args.n_impressions
    )
    overrides["gnolr"]["max_epochs"] = args.epochs
    cfg = LoopConfig(
        rounds=args.rounds,
        users=args.users,
        exploration=args.exploration,
        k=args.k,
        exclude_seen=args.exclude_seen,
        seed=args.seed,
        target=None if args.full else "index",
        restart=args.restart,
        overrides=overrides,
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ladder-loop-"))
    if args.workdir and workdir.exists() and any(workdir.iterdir()):
        parser.error(f"--workdir {workdir} must be empty or absent")
    try:
        rows, references = closed_loop(cfg, workdir / "repo" if args.workdir is None else workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    write_results(rows, cfg, args.out, references)
    print()
    print(markdown_table(rows))
    print(f"\n→ {args.out.with_suffix('.md')}, {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as exc:
        sys.exit(f"closed_loop failed: {exc}")
