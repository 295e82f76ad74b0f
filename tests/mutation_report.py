"""`make mutate`'s report: mutmut's results per module and function, as markdown.

    python tests/mutation_report.py [--note TEXT] > reports/mutation.md

Reads ``mutmut results --all true`` (run after ``mutmut run``; configuration in pyproject.toml,
``[tool.mutmut]``). The score is killed / all mutants: a mutant no selected test reaches ("no
tests") counts as surviving, since nothing would notice it. Survivors listed in ``EQUIVALENT``
(no behaviour can tell them from the original) still count as surviving in the score; the
report lists them with their reason, and every other survivor by name. ``--note`` adds a
paragraph saying how the cache was filled (which runs, on what machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*(?P<name>\S+)__mutmut_\d+: (?P<status>.+)$")
MUTANT = re.compile(r"^\s*(?P<mutant>\S+__mutmut_\d+): (?P<status>.+)$")

# Surviving mutants that no behaviour can tell apart from the original, with the reason.
_PAV_Y = "`y` is read element by element through `float(value)`, whatever its dtype"
_PAV_W = "weights are read through `float(weight)`; `w <= 0` is the same test for any dtype"
_STRICT = "`zip(strict=True)` guards lengths already checked equal by `y.shape != w.shape`"
_LABELS = (
    "labels of 0 and 1 only meet float64 arrays afterwards (`p − y`, `y·log p`, `1 − y`, "
    "`bincount` weights, `mean`), so their own dtype (int, bool, float32) never shows"
)
_INTERP = "`np.interp` converts its first argument to float64 itself"
EQUIVALENT: dict[str, str] = {
    "models.gnolr.loss.x_ips_level_loss__mutmut_14": "`arange(1, T + 2)` adds a threshold "
    "column T + 1 that is never read (only `reached[:, c]` for c < T is used)",
    "models.gnolr.loss.x_ips_level_loss__mutmut_16": "`propensity.to(None)` keeps θ's dtype, "
    "but `models.relmf.loss.weights` casts θ to the labels' dtype before using it",
    "models.gnolr.loss.x_listwise_loss__mutmut_6": "the accumulator takes level 2's dtype "
    "instead of level 1's: all levels' vectors come from one network with one dtype",
    "models.gnolr.loss.x_listwise_loss__mutmut_26": "`continue` → `break` on a level no row "
    "reached: `level ≥ c` only shrinks as c grows, so no later level has rows either",
    "evaluation.estimators.xǁInverseProbabilityWeightingǁ_weighted__mutmut_42": "`open_zero=None` "
    "is falsy, the same as `False`",
    "models.relmf.loss.x_pointwise__mutmut_3": "without `.to(pred.dtype)`, `w * δ1` "
    "still promotes w to the prediction's dtype, and the float32 → float64 cast is exact",
    "models.plove.calibration.x_log_loss__mutmut_16": _LABELS,
    "models.plove.calibration.x_log_loss__mutmut_18": _LABELS,
    "models.plove.calibration.x__check__mutmut_8": _LABELS,
    "models.plove.calibration.x__check__mutmut_10": _LABELS,
    "models.plove.calibration.x_pool_adjacent_violators__mutmut_3": _PAV_Y,
    "models.plove.calibration.x_pool_adjacent_violators__mutmut_5": _PAV_Y,
    "models.plove.calibration.x_pool_adjacent_violators__mutmut_12": _PAV_W,
    "models.plove.calibration.x_pool_adjacent_violators__mutmut_14": _PAV_W,
    "models.plove.calibration.x_pool_adjacent_violators__mutmut_32": _STRICT,
    "models.plove.calibration.x_pool_adjacent_violators__mutmut_35": _STRICT,
    "models.plove.calibration.x_pool_adjacent_violators__mutmut_36": _STRICT,
    "models.plove.calibration.x_pool_adjacent_violators__mutmut_48": "pooling two adjacent "
    "blocks with equal means (`>=` for `>`) leaves every fitted value unchanged",
    "models.plove.calibration.xǁIsotonicCalibratorǁfit__mutmut_16": "`astype(None)` is "
    "`astype(float64)` in numpy",
    "models.plove.calibration.xǁTemperatureScalingǁfit__mutmut_34": "`β_new < 0` for "
    "`β_new ≤ 0`: differs only when a Newton step lands exactly on 0.0",
    "models.plove.calibration.xǁTemperatureScalingǁfit__mutmut_41": "`≤ tol` for `< tol`: "
    "differs only when the change equals the tolerance exactly",
    "models.plove.calibration.xǁTemperatureScalingǁfit__mutmut_42": "a stricter stopping "
    "rule for |β| > 1 (tol / |β| for tol·|β|): Newton has converged quadratically by then, so "
    "the extra step moves β by about the square of the last change (~1e-20), below float64 "
    "resolution",
    "models.plove.calibration.xǁIsotonicCalibratorǁpredict__mutmut_13": _INTERP,
    "models.plove.calibration.xǁIsotonicCalibratorǁpredict__mutmut_15": _INTERP,
}


def parse(text: str) -> dict[str, Counter]:
    """{mangled function name: Counter of statuses}."""
    out: dict[str, Counter] = defaultdict(Counter)
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out[m["name"]][m["status"].strip()] += 1
    return out


def survivors(text: str) -> list[str]:
    """Names of the mutants mutmut reports as survived or not reached ("no tests")."""
    out = []
    for line in text.splitlines():
        m = MUTANT.match(line)
        if m and m["status"].strip() in ("survived", "no tests"):
            out.append(m["mutant"])
    return out


def module_of(name: str) -> str:
    return name.split(".x")[0] if ".x" in name else name.rsplit(".", 1)[0]


def report(results: dict[str, Counter], left: list[str] = (), note: str = "") -> str:
    modules: dict[str, Counter] = defaultdict(Counter)
    for name, counts in results.items():
        modules[module_of(name)].update(counts)
    total = sum(modules.values(), Counter())
    n = sum(total.values())
    lines = [
        "# Mutation testing",
        "",
        "`make mutate` (mutmut; `[tool.mutmut]` in pyproject.toml): every mutant of the core modules",
        'against their fast unit tests. Score = killed / all ("no tests": no selected test runs the',
        'mutated function, so it counts as surviving; "not checked": the run was stopped first).',
        "",
        "| module | mutants | killed | survived | no tests | timeout | not checked | score |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if note:
        lines[6:6] = [note, ""]
    for module, c in sorted(modules.items()):
        m = sum(c.values())
        lines.append(
            f"| `{module}` | {m} | {c['killed']} | {c['survived']} | {c['no tests']} | "
            f"{c['timeout']} | {c['not checked']} | {c['killed'] / m:.1%} |"
        )
    lines.append(
        f"| **all** | {n} | {total['killed']} | {total['survived']} | {total['no tests']} | "
        f"{total['timeout']} | {total['not checked']} | **{total['killed'] / max(n, 1):.1%}** |"
    )
    lines += ["", "Functions with surviving or unreached mutants:", ""]
    for name, c in sorted(results.items()):
        missed = c["survived"] + c["no tests"]
        if missed:
            short = name.replace("xǁ", "").replace("ǁ", ".")
            lines.append(f"- `{short}`: {missed} of {sum(c.values())}")
    equivalent = [m for m in left if m in EQUIVALENT]
    other = [m for m in left if m not in EQUIVALENT]
    lines += ["", f"## Equivalent survivors ({len(equivalent)})", ""]
    lines += [f"- `{short_name(m)}`: {EQUIVALENT[m]}" for m in equivalent]
    lines += ["", f"## Other survivors ({len(other)}): not yet killed", ""]
    lines += [f"- `{short_name(m)}`" for m in other]
    return "\n".join(lines) + "\n"


def short_name(mutant: str) -> str:
    return mutant.replace("xǁ", "").replace("ǁ", ".")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--note", default="", help="how the results were produced")
    args = parser.parse_args()
    mutmut = Path(sys.executable).with_name("mutmut")
    text = subprocess.run(
        [str(mutmut), "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    version = subprocess.run(
        [str(mutmut), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    note = f"Report written {stamp} from mutmut's cache ({version or 'mutmut'}). {args.note}"
    sys.stdout.write(report(parse(text), survivors(text), note.strip()))


if __name__ == "__main__":
    main()
