"""Reading finished work back out: reports with figures, exports, the dashboard, shoot-outs.

Nothing here imports Keras or TensorFlow; matplotlib is imported only when a report is drawn.
"""

from __future__ import annotations

from studyhall.reports.compare import (
    CompareProgress,
    Comparison,
    RepeatRun,
    SamplerSummary,
    compare_samplers,
)
from studyhall.reports.dashboard import DashboardError, serve_dashboard
from studyhall.reports.heatmap import HeatmapGrid, heatmap_grid
from studyhall.reports.plots import Plot
from studyhall.reports.records import FORMATS, delete_study, export_trials, trial_records
from studyhall.reports.report import Report, build_report, parse_heatmap, write_report

__all__ = [
    "FORMATS",
    "CompareProgress",
    "Comparison",
    "DashboardError",
    "HeatmapGrid",
    "Plot",
    "RepeatRun",
    "Report",
    "SamplerSummary",
    "build_report",
    "compare_samplers",
    "delete_study",
    "export_trials",
    "heatmap_grid",
    "parse_heatmap",
    "serve_dashboard",
    "trial_records",
    "write_report",
]
