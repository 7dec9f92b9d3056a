"""Render a ``Report`` as HTML and as Markdown: the same sections, in the same order."""

from __future__ import annotations

import html as _html
import math
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from studyhall.reports.report import Report

__all__ = ["html", "markdown"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; }
figure { margin: 1rem 0 2rem; } img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #666; font-style: italic; }
"""


def fmt(value: Any) -> str:
    """A value as a table shows it: floats to 6 significant digits, dicts as k=v."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return str(value)


def _value_header(report: Report) -> list[str]:
    if len(report.directions) == 1:
        return [f"value ({report.directions[0]})"]
    return [f"objective {i} ({d})" for i, d in enumerate(report.directions)]


def _rows(report: Report, records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["rank", "trial", *_value_header(report), *report.params, "seconds"]
    rows = []
    for rank, r in enumerate(records, 1):
        values = r["values"] or [None] * len(report.directions)
        rows.append([str(rank), str(r["number"]), *(fmt(v) for v in values),
                     *(fmt(r["params"].get(p)) for p in report.params), fmt(r["duration_s"])])
    return header, rows


def _spec_text(report: Report) -> str:
    return yaml.safe_dump(report.spec, sort_keys=False).rstrip() if report.spec else ""


def _best_title(report: Report) -> str:
    return "Pareto front" if len(report.directions) > 1 else "Best trial"


def _top_title(report: Report) -> str:
    by = " (by objective 0)" if len(report.directions) > 1 else ""
    return f"Top {len(report.top) or ''} trials{by}".replace("  ", " ")


def _best_attrs(report: Report) -> str:
    """The single best trial's user attributes (seed, best epoch, ...), one line."""
    if len(report.best) != 1 or not report.best[0]["user_attrs"]:
        return ""
    return "user attributes: " + fmt(report.best[0]["user_attrs"])


def _heatmap_rows(report: Report) -> tuple[list[str], list[list[str]]] | None:
    grid = report.heatmap
    if grid is None:
        return None
    header = [f"{grid.y.param} \\ {grid.x.param}", *grid.x.labels]
    rows = [[grid.y.labels[i], *(f"{fmt(float(m))} (n={c})" if c else "-"
                                 for m, c in zip(grid.means[i], grid.counts[i], strict=True))]
            for i in range(len(grid.y.labels))]
    return header, rows[::-1]  # highest row first, as in the figure


# ----------------------------------------------------------------------------------------- HTML

def _e(value: Any) -> str:
    return _html.escape(str(value), quote=True)


def _table(header: list[str], rows: list[list[str]], attrs: str = "",
           row_attrs: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        extra = f" {row_attrs[i]}" if row_attrs else ""
        cells = "".join(f"<td>{_e(c)}</td>" for c in row)
        body.append(f"<tr{extra}>{cells}</tr>")
    return f"<table{(' ' + attrs) if attrs else ''}><thead><tr>{head}</tr></thead>" \
           f"<tbody>{''.join(body)}</tbody></table>"


def html(report: Report) -> str:
    """The report as one HTML page; figures are the PNGs beside it."""
    plural = "s" if len(report.directions) > 1 else ""
    counts = [[str(n) for n in report.counts.values()]]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>studyhall report: {_e(report.name)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Study {_e(report.name)}</h1>",
             f"<p>storage {_e(report.storage)}; direction{plural} "
             f"{_e(', '.join(report.directions))}</p>",
             "<h2>State counts</h2>",
             _table(list(report.counts), counts, 'id="state-counts"')]
    parts.append(f"<h2>{_best_title(report)}</h2>")
    if report.best:
        header, rows = _rows(report, report.best)
        parts.append(_table(header[1:], [r[1:] for r in rows], 'id="best"'))
        if _best_attrs(report):
            parts.append(f'<p id="best-attrs">{_e(_best_attrs(report))}</p>')
    else:
        parts.append('<p class="note">no complete trial yet</p>')
    parts.append(f"<h2>{_top_title(report)}</h2>")
    if report.top:
        header, rows = _rows(report, report.top)
        attrs = [f'data-trial="{r["number"]}"' for r in report.top]
        parts.append(_table(header, rows, 'id="top-trials"', attrs))
    else:
        parts.append('<p class="note">no complete trial yet</p>')
    parts.append("<h2>Figures</h2>")
    for plot in report.plots:
        parts.append(f'<figure id="plot-{plot.key}">'
                     f"<figcaption><h3>{_e(plot.title)}</h3></figcaption>")
        if plot.file is not None:
            parts.append(f'<img src="{_e(plot.file.name)}" alt="{_e(plot.title)}">')
        else:
            parts.append(f'<p class="note">skipped: {_e(plot.note)}</p>')
        parts.append("</figure>")
    cells = _heatmap_rows(report)
    if cells is not None:
        parts.append("<h3>Heatmap cells (mean of complete trials)</h3>")
        parts.append(_table(*cells, 'id="heatmap-cells"'))
    parts.append("<h2>Spec</h2>")
    if report.spec_note:
        parts.append(f'<p class="note">{_e(report.spec_note)}</p>')
    if report.spec:
        parts.append(f'<pre id="spec">{_e(_spec_text(report))}</pre>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------- Markdown

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: Report) -> str:
    """The report as Markdown, with the same sections as the HTML page."""
    out = [f"# Study {report.name}", "",
           f"storage {report.storage}; direction{'s' if len(report.directions) > 1 else ''} "
           f"{', '.join(report.directions)}", "",
           "## State counts", "",
           _md_table(list(report.counts), [[str(n) for n in report.counts.values()]]), "",
           f"## {_best_title(report)}", ""]
    if report.best:
        header, rows = _rows(report, report.best)
        out += [_md_table(header[1:], [r[1:] for r in rows]), ""]
        if _best_attrs(report):
            out += [_best_attrs(report), ""]
    else:
        out += ["_no complete trial yet_", ""]
    out += [f"## {_top_title(report)}", ""]
    if report.top:
        out += [_md_table(*_rows(report, report.top)), ""]
    else:
        out += ["_no complete trial yet_", ""]
    out += ["## Figures", ""]
    for plot in report.plots:
        out += [f"### {plot.title}", ""]
        shown = f"![{plot.title}]({plot.file.name})" if plot.file else f"_skipped: {plot.note}_"
        out += [shown, ""]
    cells = _heatmap_rows(report)
    if cells is not None:
        out += ["### Heatmap cells (mean of complete trials)", "", _md_table(*cells), ""]
    out += ["## Spec", ""]
    if report.spec_note:
        out += [f"_{report.spec_note}_", ""]
    if report.spec:
        out += ["```yaml", _spec_text(report), "```", ""]
    return "\n".join(out)
