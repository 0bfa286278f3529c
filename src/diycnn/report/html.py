"""A self-contained report.html (images embedded as data URIs; opens offline), rendered from the
Jinja2 templates in report/templates/ with autoescaping on: class names, file names and anything
else from a user's folder are text in the page, never markup (tests feed hostile names)."""

from __future__ import annotations

import base64
import functools
import io
import re
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from ..data.images import ImageError, load_rgb
from ..io import plain
from ..records import Metrics, RunInfo

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.big{font-size:1.3em}.muted{color:#666}.gallery{display:flex;flex-wrap:wrap;gap:10px}
.gallery figure{margin:0;width:170px;font-size:.8em;overflow-wrap:break-word}.gallery img{width:160px;height:160px;object-fit:cover;border:2px solid #c33}
img.plot{max-width:100%}.gallery img.ok{border-color:#3a3}code{background:#f4f4f4;padding:0 .2em}
.cm{display:inline-block;vertical-align:top;margin:0 1.5em 1em 0}.cm td.cell{cursor:pointer;min-width:2.2em;text-align:center}
.cm td.cell:hover{outline:2px solid #36c}.cm td.diag{background:#e8f1fb}.cm td.off{background:#fbe9e9}
.cm td.zero{color:#bbb}.sel{outline:3px solid #36c!important}
"""

# The run report's confusion matrix: a click on a cell shows the embedded photos of that cell.
RUN_SCRIPT = """
const cells = document.querySelectorAll('td.cell'), figs = document.querySelectorAll('#errors figure');
const caption = document.getElementById('errors-caption');
cells.forEach(c => c.addEventListener('click', () => {
  cells.forEach(x => x.classList.remove('sel')); c.classList.add('sel');
  let shown = 0;
  figs.forEach(f => { const on = f.dataset.t === c.dataset.t && f.dataset.p === c.dataset.p; f.hidden = !on; shown += on; });
  caption.textContent = c.title + ': ' + c.textContent + ' test photo(s)' + (c.dataset.t === c.dataset.p
    ? ', classified right (only wrong ones are embedded here).' : ', ' + shown + ' shown below.') + ' Click again to show all.';
  if (c.dataset.all) { figs.forEach(f => { f.hidden = false; }); caption.textContent = ''; c.classList.remove('sel'); }
  cells.forEach(x => { if (x !== c) delete x.dataset.all; });
  if (c.dataset.all) delete c.dataset.all; else c.dataset.all = '1';
}));
"""


def path_html(path: str) -> Markup:
    """A file path as HTML that wraps after / _ - . rather than in the middle of a word."""
    return Markup(re.sub(r"([/_.\\-])", r"\1<wbr>", str(escape(path))))


@functools.lru_cache(maxsize=1)
def templates() -> Environment:
    """The reports' templates: autoescaped, and a missing value is an error rather than empty text."""
    env = Environment(loader=PackageLoader("diycnn.report", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = format  # {{ x|fmt(".1%") }}
    env.filters["wbr"] = path_html
    env.globals["zip"] = zip
    return env


def render(template: str, data_root: Path, **context: Any) -> str:
    """A report page; `thumb(path)` in the templates embeds a photo of `data_root` as a thumbnail."""
    thumb: Callable[[str], str | None] = lambda path: thumbnail_uri(data_root / path)  # noqa: E731
    return templates().get_template(template).render(thumb=thumb, **context)


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def thumbnail_uri(path: str | Path, size: int = 160) -> str | None:
    """A small JPEG of a photo as a data URI, or None if it cannot be read any more."""
    try:
        im = load_rgb(path)
    except ImageError:
        return None
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return data_uri(buf.getvalue(), "image/jpeg")


def setting_used(key: str, value: Any, info: RunInfo) -> str:
    """A training setting as used: 'auto' resolved (device, precision), None in words."""
    if key in ("device", "precision") and value == "auto":
        return f"{info.device if key == 'device' else info.precision} (auto)"
    if value is None:
        return {"patience": "off (no early stopping)", "augment": "none"}.get(key, "off")
    return plain(value)


def render_report(info: RunInfo, metrics: Metrics, curves: bytes, confusion: bytes,
                  data_root: Path, max_errors: int = 24, cams: list[dict[str, Any]] | None = None,
                  reliability: bytes | None = None) -> str:
    """The run report: headline figures, curves, confusion matrix, calibration, per-class scores,
    misclassified test photos, data problems and settings (templates/run.html)."""
    problems = metrics.skipped + metrics.duplicates
    return render(
        "run.html", data_root, css=Markup(CSS), script=Markup(RUN_SCRIPT), name=info.name or "run", info=info,
        metrics=metrics, curves=data_uri(curves), confusion=data_uri(confusion), max_errors=max_errors,
        reliability=data_uri(reliability) if reliability else None,
        cams=cams or [], index={c: i for i, c in enumerate(metrics.class_names)},
        per_class=[[c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", v["support"]]
                   for c, v in metrics.per_class.items()],
        per_split=[[c] + [metrics.counts_by_class[s][c] for s in ("train", "val", "test")]
                   for c in metrics.class_names],
        problems=[[p["path"], p["reason"]] for p in problems[:200]],
        settings=[[k, setting_used(k, v, info)] for k, v in info.training.items()])
