"""`make docs-check`: run every command of README.md, in order, on a fresh clone.

The README is the contract with a new user, so its snippets are executed as written:

- a ```` ```bash ```` block runs in ``bash -euo pipefail`` in the clone's root (one shell per block;
  ``.venv/bin`` first on ``PATH``, as the Makefile does);
- a ```` ```python ```` block runs with the clone's ``.venv/bin/python``;
- a line ending in ``&`` starts a background job (``make serve &``): it is started in its own session
  and killed, with everything it spawned, at ``kill-background`` or at the end;
- HTML comments carry the steps a person does by hand, so that they run too:
  ``<!-- docs-check: merge-into FILE -->`` deep-merges the next YAML block into FILE (editing
  params.yaml), ``<!-- docs-check: run CMD -->`` runs CMD, where CMD may also be one of
  ``wait-for-http URL`` (poll until it answers 200, up to 10 minutes) and ``kill-background``;
  ``<!-- docs-check: skip -->`` skips the next block.

Each step prints its wall time; the first failure stops the run with the step's output.

    python tests/docs_check.py [--repo .] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

FENCE = re.compile(r"^```(\w*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*docs-check:\s*(\S+)\s*(.*?)\s*-->\s*$")


@dataclass
class Step:
    kind: str  # bash | python | merge | run
    text: str
    line: int
    target: str = ""


def steps(readme: str) -> list[Step]:
    """The README's runnable steps, in order."""
    out: list[Step] = []
    lines = readme.splitlines()
    pending: tuple[str, str] | None = None
    i = 0
    while i < len(lines):
        directive = DIRECTIVE.match(lines[i])
        if directive:
            verb, arg = directive.groups()
            if verb == "run":
                out.append(Step("run", arg, i + 1))
            elif verb in ("merge-into", "skip"):
                pending = (verb, arg)
            else:
                raise ValueError(f"README.md:{i + 1}: unknown docs-check directive {verb!r}")
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence.group(1), i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        body = "\n".join(lines[start:end]) + "\n"
        if pending and pending[0] == "merge-into":
            out.append(Step("merge", body, start, pending[1]))
        elif pending is None and lang in ("bash", "python"):
            out.append(Step(lang, body, start))
        pending = None
        i = end + 1
    return out


def merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = merge(base[key], value) if nested else value
    return merged


class Runner:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {
            **os.environ,
            "PATH": f"{root / '.venv/bin'}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "BENTOML_DO_NOT_TRACK": "true",
            "DVC_NO_ANALYTICS": "1",
        }
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.env.pop("VIRTUAL_ENV", None)
        self.background: list[subprocess.Popen] = []

    def shell(self, script: str) -> None:
        foreground = []
        for line in script.splitlines():
            command = line.split("#", 1)[0].rstrip()
            if command.endswith("&") and not command.endswith("&&"):
                self.start(command[:-1].strip())
            else:
                foreground.append(line)
        text = "\n".join(foreground).strip()
        if text:
            self.check([shutil.which("bash") or "bash", "-euo", "pipefail", "-c", text])

    def start(self, command: str) -> None:
        log = open(self.root / f".docs-check-bg-{len(self.background)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.background.append(proc)
        print(f"    started in the background: {command} (pid {proc.pid})")

    def check(self, cmd: list[str], stdin: str | None = None) -> None:
        done = subprocess.run(
            cmd, cwd=self.root, env=self.env, input=stdin, text=True, capture_output=True
        )
        shown = (done.stdout + done.stderr).strip().splitlines()
        for line in shown[-8:]:
            print(f"    | {line[:160]}")
        if done.returncode != 0:
            raise SystemExit(
                f"failed with exit code {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )

    def wait_for_http(self, url: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if any(p.poll() is not None for p in self.background):
                raise SystemExit(f"a background job exited before {url} answered")
            time.sleep(2)
        raise SystemExit(f"{url} did not answer within {timeout:.0f} s")

    def kill_background(self) -> None:
        """Stop each background job and everything it spawned (BentoML workers leave the
        process group, so children are found through /proc)."""
        for proc in self.background:
            for pid in [*descendants(proc.pid), proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.background.clear()
        time.sleep(2)

    def run(self, step: Step) -> None:
        if step.kind == "bash":
            self.shell(step.text)
        elif step.kind == "python":
            self.check([str(self.root / ".venv/bin/python"), "-"], stdin=step.text)
        elif step.kind == "merge":
            path = self.root / step.target
            merged = merge(yaml.safe_load(path.read_text()), yaml.safe_load(step.text))
            path.write_text(yaml.safe_dump(merged, sort_keys=False))
        elif step.text.startswith("wait-for-http "):
            self.wait_for_http(step.text.split(maxsplit=1)[1])
        elif step.text == "kill-background":
            self.kill_background()
        else:
            self.shell(step.text)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("."), help="the repository to clone")
    parser.add_argument("--keep", action="store_true", help="keep the clone afterwards")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ladder-docs-check-"))
    clone = work / "ladder"
    subprocess.run(["git", "clone", "-q", str(args.repo.resolve()), str(clone)], check=True)
    todo = steps((clone / "README.md").read_text())
    runner = Runner(clone)
    print(f"docs-check: {len(todo)} steps of README.md in {clone}")
    try:
        for n, step in enumerate(todo, 1):
            head = step.text.strip().splitlines()[0] if step.text.strip() else step.kind
            print(f"[{n}/{len(todo)}] README.md:{step.line} {step.kind}: {head[:90]}", flush=True)
            start = time.perf_counter()
            runner.run(step)
            print(f"    ok in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        runner.kill_background()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("docs-check: every step of README.md ran")


if __name__ == "__main__":
    sys.exit(main())
