"""`make mutate`'s report: mutmut's results per module and function, as markdown.

    python tests/mutation_report.py > reports/mutation.md

Reads ``mutmut results --all true`` (run after ``mutmut run``; configuration in pyproject.toml,
``[tool.mutmut]``). The score is killed / all mutants: a mutant no selected test reaches ("no
tests") counts as surviving, since nothing would notice it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*(?P<name>\S+)__mutmut_\d+: (?P<status>.+)$")


def parse(text: str) -> dict[str, Counter]:
    """{mangled function name: Counter of statuses}."""
    out: dict[str, Counter] = defaultdict(Counter)
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out[m["name"]][m["status"].strip()] += 1
    return out


def module_of(name: str) -> str:
    return name.split(".x")[0] if ".x" in name else name.rsplit(".", 1)[0]


def report(results: dict[str, Counter]) -> str:
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
    for module, c in sorted(modules.items()):
        m = sum(c.values())
        lines.append(
            f"| `{module}` | {m} | {c['killed']} | {c['survived']} | {c['no tests']} | "
            f"{c['timeout']} | {c['not checked']} | {c['killed'] / m:.0%} |"
        )
    lines.append(
        f"| **all** | {n} | {total['killed']} | {total['survived']} | {total['no tests']} | "
        f"{total['timeout']} | {total['not checked']} | **{total['killed'] / max(n, 1):.0%}** |"
    )
    lines += ["", "Functions with surviving or unreached mutants:", ""]
    for name, c in sorted(results.items()):
        missed = c["survived"] + c["no tests"]
        if missed:
            short = name.replace("xǁ", "").replace("ǁ", ".")
            lines.append(f"- `{short}`: {missed} of {sum(c.values())}")
    return "\n".join(lines) + "\n"


def main() -> None:
    mutmut = Path(sys.executable).with_name("mutmut")
    text = subprocess.run(
        [str(mutmut), "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    sys.stdout.write(report(parse(text)))


if __name__ == "__main__":
    main()
