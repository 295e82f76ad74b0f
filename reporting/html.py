"""HTML for the report: one self-contained page (inline CSS, plots as data: URIs, no scripts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 16px 24px; color: #222; font-size: 14px; line-height: 1.4; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h3 { font-size: 15px; margin: 12px 0 2px; }
h2 { font-size: 19px; border-bottom: 2px solid #4c72b0; padding-bottom: 3px; margin-top: 28px; }
code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; font-size: 12.5px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 12.5px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #eef2f8; }
td.l, th.l { text-align: left; }
dl.meta { display: grid; grid-template-columns: 190px 1fr; gap: 2px 12px; margin: 8px 0; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; }
img.plot { max-width: 100%; height: auto; display: block; margin: 8px 0; }
p.source { color: #555; font-size: 12.5px; margin: 2px 0; }
p.missing { background: #fff4e5; border-left: 4px solid #f0a030; padding: 8px 12px; }
.wide { overflow-x: auto; }
.row { display: flex; gap: 20px; align-items: flex-start; }
.row img.plot { max-width: 70%; }
"""


def code(text: object) -> str:
    return f"<code>{escape(str(text))}</code>"


def fmt(value: object, digits: int = 4) -> str:
    """Numbers to ``digits`` decimals (scientific below 1e-3, one decimal from 100 on),
    everything else escaped."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else escape(str(value))
    if isinstance(value, int | float):
        v = float(value)
        if v != v:
            return "—"
        if v != 0 and abs(v) < 10.0**-3:
            return f"{v:.3e}"
        if abs(v) >= 100:  # counts and rates like queries/s: a decimal is enough
            return f"{v:,.1f}" if abs(v) < 1e5 else f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return escape(str(value))


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    groups: Sequence[tuple[str, int]] = (),
    left: int = 1,
) -> str:
    """A table; the first ``left`` columns left-aligned; ``groups`` adds a (title, span) header row.

    Cells that are already HTML must be passed as :class:`Raw`.
    """

    def cell(tag: str, i: int, content: str, span: int = 1) -> str:
        cls = ' class="l"' if i < left else ""
        colspan = f' colspan="{span}"' if span > 1 else ""
        return f"<{tag}{cls}{colspan}>{content}</{tag}>"

    out = ['<div class="wide"><table>']
    if groups:
        out.append("<tr>" + "".join(cell("th", 0, escape(t), s) for t, s in groups) + "</tr>")
    out.append("<tr>" + "".join(cell("th", i, escape(h)) for i, h in enumerate(header)) + "</tr>")
    for row in rows:
        cells = (v.html if isinstance(v, Raw) else fmt(v) for v in row)
        out.append("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(cells)) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


@dataclass(frozen=True)
class Raw:
    """HTML that goes into a table cell as is."""

    html: str


@dataclass
class Section:
    """One part of the report: a plot with its numbers, or a note of what is missing."""

    key: str
    title: str
    intro: str = ""  # HTML
    image: str | None = None  # base64 PNG
    body: str = ""  # HTML below the plot
    sources: list[str] = field(default_factory=list)  # HTML, one line each
    missing: str | None = None  # HTML: "Not tracked yet: run …"
    rows: list[dict] = field(default_factory=list)  # the plotted numbers, for a DVC plot CSV
    beside: bool = False  # the body to the right of the plot (a narrow table)

    def html(self) -> str:
        parts = [f'<section id="{escape(self.key)}"><h2>{escape(self.title)}</h2>']
        if self.intro:
            parts.append(f"<p>{self.intro}</p>")
        if self.missing:
            parts.append(f'<p class="missing">{self.missing}</p>')
        image = ""
        if self.image:
            alt = escape(self.title)
            image = f'<img class="plot" alt="{alt}" src="data:image/png;base64,{self.image}">'
        if self.beside and image:
            parts.append(f'<div class="row">{image}<div>{self.body}</div></div>')
        else:
            parts += [image, self.body]
        parts.extend(f'<p class="source">Source: {s}</p>' for s in self.sources)
        parts.append("</section>")
        return "\n".join(p for p in parts if p)


def page(
    title: str, meta: Sequence[tuple[str, str]], runs_table: str, sections: list[Section]
) -> str:
    """The whole document; ``meta`` holds (label, HTML) pairs for the header."""
    items = "\n".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in meta)
    contents = " · ".join(f'<a href="#{escape(s.key)}">{escape(s.title)}</a>' for s in sections)
    body = "\n".join(s.html() for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<dl class="meta">
{items}
</dl>
<h3 id="runs">Runs used</h3>
{runs_table}
<p>Contents: {contents}</p>
{body}
</body></html>
"""
