"""Where a section's numbers come from: the chosen runs, or a command's file in the workspace."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from html import escape
from pathlib import Path

from reporting.html import code
from reporting.runs import Found, RunGroup


@dataclass(frozen=True)
class Context:
    """What every section needs: the runs, the workspace root and a few params."""

    group: RunGroup
    root: Path
    levels: list[str]
    k: int
    recall_floor: float | None = None
    index_kinds: str = "benchmarks/results_index_kinds.json"  # relative to root


def run_source(found: Found, what: str) -> str:
    run = found.run
    text = (
        f"MLflow run {code(run.run_id)} ({escape(run.stage or '?')} · {escape(run.name)}), {what}"
    )
    if found.earlier:
        text += (
            f" — from an earlier pipeline run {code(run.pipeline_run or 'untagged')}:"
            " the stage was not re-run in this one"
        )
    return text


def file_source(path: str, writer: str) -> str:
    return (
        f"workspace file {code(path)}, written by {code(writer)}; no MLflow run logged it, "
        "so it shows the last time that command ran in this workspace"
    )


def not_tracked(command: str, what: str) -> str:
    return f"Not tracked yet: run {code(command)} ({what})."


def parse_csv(text: str) -> list[dict[str, float | str]]:
    """CSV rows with every numeric cell as float."""

    def value(cell: str) -> float | str:
        try:
            return float(cell)
        except ValueError:
            return cell

    return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def tracked_csv(
    ctx: Context, section: str, name: str, prefer_stage: str | None, fallback: str, writer: str
) -> tuple[list[dict], str] | None:
    """Rows of the artifact ``plots/<name>`` (newest run), else of the workspace ``fallback``."""
    hit = ctx.group.find_artifact(f"plots/{name}", prefer_stage)
    if hit is not None:
        found, text = hit
        ctx.group.note_use(found.run, section)
        return parse_csv(text), run_source(found, f"artifact {code('plots/' + name)}")
    path = ctx.root / fallback
    if path.exists():
        return parse_csv(path.read_text()), file_source(fallback, writer)
    return None
