"""``write_report``: one directory a person can open or mail: index.html, report.md, PNGs.

The HTML and the Markdown carry the same facts (spec, state counts, best trial, top-N table,
figures); ``report.json`` carries them for machines, including the heatmap's cell matrix.
Nothing links outside the directory, so it can be zipped and read offline.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studyhall.errors import SpecError
from studyhall.reports import _render
from studyhall.reports._background import Background
from studyhall.reports.heatmap import DEFAULT_BINS, HeatmapGrid, heatmap_grid, plot_heatmap
from studyhall.reports.plots import (
    Plot,
    import_fanova,
    importance_ranking,
    plot_history,
    plot_importances,
    plot_intermediate,
    plot_parallel,
    plot_pareto,
    rank_importances,
)
from studyhall.reports.records import trial_record
from studyhall.studies.results import SPEC_ATTR, StudyHandle

__all__ = ["Report", "build_report", "parse_heatmap", "write_report"]

_logger = logging.getLogger(__name__)


@dataclass
class Report:
    """Everything a report shows, gathered once and rendered to HTML, Markdown and JSON."""

    name: str
    storage: str
    directions: tuple[str, ...]
    spec: dict[str, Any] | None
    spec_note: str
    counts: dict[str, int]
    best: list[dict[str, Any]]
    top: list[dict[str, Any]]
    params: list[str]
    plots: list[Plot] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    heatmap: HeatmapGrid | None = None

    def to_json(self) -> dict[str, Any]:
        grid = self.heatmap
        return {
            "study": self.name,
            "storage": self.storage,
            "directions": list(self.directions),
            "spec": self.spec,
            "state_counts": self.counts,
            "best": self.best,
            "top": self.top,
            "importances": self.importances,
            "plots": [{"key": p.key, "title": p.title, "file": p.file.name if p.file else None,
                       "note": p.note} for p in self.plots],
            "heatmap": None if grid is None else {
                "x": grid.x.param, "y": grid.y.param,
                "x_labels": list(grid.x.labels), "y_labels": list(grid.y.labels),
                "means": [[None if v != v else float(v) for v in row] for row in grid.means],
                "counts": grid.counts.tolist(),
            },
        }


def parse_heatmap(text: str | Sequence[str] | None) -> tuple[str, str] | None:
    """``"batch_size,dropout"`` (or a pair) -> ``("batch_size", "dropout")``.

    Raises:
        SpecError: not exactly two non-empty names.
    """
    if text is None:
        return None
    raw = text.split(",") if isinstance(text, str) else [str(p) for p in text]
    parts = [p.strip() for p in raw]
    if len(parts) != 2 or not all(parts):
        raise SpecError(f"`heatmap` must name two parameters as PARAM_A,PARAM_B; got {text!r}.")
    return parts[0], parts[1]


def _spec(handle: StudyHandle) -> tuple[dict[str, Any] | None, str]:
    try:
        spec = handle.spec
    except SpecError as exc:
        return handle.study.user_attrs.get(SPEC_ATTR), f"the stored spec does not validate: {exc}"
    if spec is None:
        return None, "this study was not created by studyhall: it has no stored spec"
    return spec.to_dict(), ""


def _param_order(handle: StudyHandle, spec: dict[str, Any] | None) -> list[str]:
    seen = sorted({p for t in handle.trials() for p in t.params})
    first = [p for p in (spec or {}).get("space", {}) if p in seen]
    return first + [p for p in seen if p not in first]


def build_report(handle: StudyHandle, *, top: int = 10) -> Report:
    """Gather a study's spec, counts, best and top trials (no figures)."""
    if top < 1:
        raise SpecError(f"`top` must be a positive integer; got {top!r}.")
    spec, note = _spec(handle)
    multi = len(handle.directions) > 1
    if multi:
        best = [trial_record(t, intermediate=False)
                for t in sorted(handle.best_trials, key=lambda t: t.number)]
    else:
        b = handle.best_trial
        best = [trial_record(b, intermediate=False)] if b is not None else []
    return Report(
        name=handle.name,
        storage=handle.url.masked,
        directions=handle.directions,
        spec=spec,
        spec_note=note,
        counts=handle.state_counts(),
        best=best,
        top=[trial_record(t, intermediate=False) for t in handle.top_trials(top)],
        params=_param_order(handle, spec),
    )


def write_report(
    handle: StudyHandle,
    out_dir: str | Path | None = None,
    *,
    heatmap: str | Sequence[str] | None = None,
    top: int = 10,
    bins: int = DEFAULT_BINS,
) -> Path:
    """Write a study's report into ``out_dir`` (default ``report-<study>/``); return index.html.

    Args:
        handle: the study, from ``open_study``.
        out_dir: created if missing; files of an earlier report there are replaced.
        heatmap: two parameters, ``"batch_size,dropout"``; default: the two most important.
        top: rows in the top-trials table.
        bins: cells per continuous heatmap parameter.

    Raises:
        SpecError: a heatmap parameter the study does not have, or ``top`` < 1.

    Example:
        >>> write_report(open_study("beale-tpe"), heatmap="x,y", top=5)  # doctest: +SKIP
        PosixPath('report-beale-tpe/index.html')
    """
    pair = parse_heatmap(heatmap)
    # fANOVA (4-5 s whatever the study's size) runs in a child process, which imports
    # scikit-learn while this one loads the trials and ranks while this one draws.
    with Background(rank_importances, warm=import_fanova) as job:
        report = build_report(handle, top=top)
        # Bad heatmap names fail here, before any file is written.
        grid = heatmap_grid(handle, *pair, bins=bins) if pair else None
        ranking = importance_ranking(handle)
        if not ranking.why:
            job.submit(ranking.trials, ranking.directions)
        out = Path(out_dir if out_dir is not None else f"report-{handle.name}")
        out.mkdir(parents=True, exist_ok=True)
        _logger.info("writing the report of %s to %s", handle.name, out)
        history = plot_history(handle, out / "history.png")
        later = [plot_parallel(handle, out / "parallel.png", report.params),
                 plot_intermediate(handle, out / "intermediate.png")]
        if len(handle.directions) > 1:
            later.append(plot_pareto(handle, out / "pareto.png"))
        imp_plot, report.importances = plot_importances(handle, out / "importances.png",
                                                        ranking, job)
    report.plots += [history, imp_plot]
    if grid is None and len(report.params) >= 2:
        ranked = list(report.importances) or report.params
        grid = heatmap_grid(handle, ranked[0], ranked[1], bins=bins)
    title = "Mean objective heatmap"
    if grid is not None and grid.counts.any():
        file = plot_heatmap(grid, out / "heatmap.png", direction=handle.directions[0])
        report.plots.append(Plot("heatmap", f"{title}: {grid.y.param} × {grid.x.param}", file))
        report.heatmap = grid
    else:
        why = "no complete trial yet" if grid is not None else "needs two parameters"
        report.plots.append(Plot("heatmap", title, note=why))
    report.plots += later
    for plot in report.plots:  # a figure skipped now must not leave an old PNG behind
        stale = out / f"{plot.key}.png"
        if plot.file is None and stale.exists():
            stale.unlink()

    (out / "index.html").write_text(_render.html(report), encoding="utf-8")
    (out / "report.md").write_text(_render.markdown(report), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n",
                                     encoding="utf-8")
    _logger.info("report of %s written to %s", handle.name, out)
    return out / "index.html"
