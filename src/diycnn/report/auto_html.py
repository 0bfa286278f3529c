"""The report of an auto run (report.html at its top): the contest on one page — the model kept
and its figure to trust, every candidate's validation, cross-validated and test figures and time,
the selection test and its verdict, links to each candidate's own report — then the kept model's
curves, confusion matrix and suspect labels. Rendered from templates/auto.html (autoescaped)."""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from ..records import Metrics, RunInfo
from .html import CSS, data_uri, render


def _png(path: Path) -> str | None:
    return data_uri(path.read_bytes()) if path.is_file() else None


def render_auto_report(run_dir: Path, info: RunInfo, metrics: Metrics) -> str:
    auto = metrics.auto or {}
    rows = []
    for c in auto["candidates"]:
        report = run_dir / "candidates" / c["model"] / "report.html"
        rows.append({**c, "report": f"candidates/{c['model']}/report.html" if report.is_file() else None,
                     "kept": c["model"] == auto["winner"]})
    return render("auto.html", Path(info.data or "."), css=Markup(CSS), script=Markup(""), name=info.name,
                  info=info, metrics=metrics, auto=auto, rows=rows, curves=_png(run_dir / "curves.png"),
                  confusion=_png(run_dir / "confusion.png"), reliability=_png(run_dir / "reliability.png"))
