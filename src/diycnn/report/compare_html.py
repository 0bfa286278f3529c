"""comparison.html: every model side by side, self-contained (images as data URIs, a little
inline JavaScript so clicking a confusion-matrix cell shows its photos); opens offline. Rendered
from templates/comparison.html (autoescaped)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markupsafe import Markup

from .html import CSS, data_uri, render, thumbnail_uri

MAX_THUMBS = 300  # test photos embedded as thumbnails (every misclassified photo first)

EXTRA_CSS = """
.sig{font-weight:bold;color:#a00}.pill{display:inline-block;padding:0 .4em;border-radius:.6em;background:#eee}
"""

SCRIPT = """
const D = JSON.parse(document.getElementById('cmp-data').textContent);
function fig(p) {
  const uri = D.thumbs[p.path];
  const ok = p.predicted === p.true;
  const img = uri ? `<img class="${ok ? 'ok' : ''}" alt="${esc(p.path)}" src="${uri}">`
                  : '<p class="muted">(no thumbnail embedded)</p>';
  const prob = p.probability === null ? '' : ` (${Math.round(100 * p.probability)}%)`;
  return `<figure>${img}<figcaption>${esc(p.path).replace(/([\\/_.-])/g, '$1<wbr>')}<br>true <b>${esc(p.true)}</b>, predicted ` +
         `<b>${esc(p.predicted)}</b>${prob}</figcaption></figure>`;
}
function esc(s) { return String(s).replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'})[c]); }
function show(m, t, p) {
  const model = D.models[m];
  const photos = model.predictions.filter(x => x.true === D.classes[t] && x.predicted === D.classes[p]);
  const box = document.getElementById('gallery-' + m);
  document.getElementById('caption-' + m).textContent =
    `${photos.length} test photo(s): true ${D.classes[t]}, predicted ${D.classes[p]}`;
  box.innerHTML = photos.map(fig).join('') || '<p>None.</p>';
  document.querySelectorAll(`td.cell[data-m="${m}"]`).forEach(c => c.classList.remove('sel'));
  document.querySelector(`td.cell[data-m="${m}"][data-t="${t}"][data-p="${p}"]`).classList.add('sel');
}
function errors(m) {
  const model = D.models[m];
  const photos = model.predictions.filter(x => x.true !== x.predicted);
  document.getElementById('caption-' + m).textContent = `${photos.length} misclassified test photo(s)`;
  document.getElementById('gallery-' + m).innerHTML = photos.map(fig).join('') || '<p>None: every test photo was right.</p>';
}
document.querySelectorAll('td.cell').forEach(c => c.addEventListener('click',
  () => show(+c.dataset.m, +c.dataset.t, +c.dataset.p)));
D.models.forEach((_, m) => errors(m));
"""


def _thumbs(rows: list[dict[str, Any]], data_root: Path) -> dict[str, str]:
    wrong = {p["path"] for r in rows for p in r["predictions"] if p["predicted"] != p["true"]}
    order = sorted(wrong) + [p["path"] for p in rows[0]["predictions"] if p["path"] not in wrong]
    out = {}
    for path in order[:MAX_THUMBS]:
        uri = thumbnail_uri(data_root / path, 120)
        if uri:
            out[path] = uri
    return out


def render_comparison(result: dict[str, Any], curves: bytes, confusions: bytes, cams: dict[str, list],
                      data_root: Path) -> str:
    """comparison.html (templates/comparison.html): the side-by-side table, McNemar's tests, folds and
    out-of-fold figures, curves, clickable confusion matrices, photo galleries and Grad-CAM."""
    rows, folds = result["models"], result.get("folds")
    side_by_side = [
        [r["model"] + (f" ({r['backbone']})" if r.get("backbone") else ""), f"{r['test_accuracy']:.1%}",
         f"{r['test_accuracy_ci95'][0]:.1%}–{r['test_accuracy_ci95'][1]:.1%}" if r["test_accuracy_ci95"] else "—",
         f"{r['test_loss']:.4f}",
         f"{r['macro_f1']:.3f}", f"{r['parameters']:,}", f"{r['size_bytes'] / 1e6:.1f} MB", f"{r['train_seconds']:.0f} s",
         f"{r['inference_ms_per_photo']:.1f} ms/photo ({r['inference_precision']})"
         if r["inference_ms_per_photo"] is not None else "—"] for r in rows]
    extra: dict[str, Any] = {"fold_rows": [], "fold_tests": [], "oof_rows": [], "oof_tests": [], "oof_best": None}
    if folds:
        extra["fold_rows"] = [[m, f"{s['mean']:.3f}", f"{s['std']:.3f}", ", ".join(f"{a:.3f}" for a in s["accuracies"])]
                              for m, s in folds["test_accuracy"].items()]
        extra["fold_tests"] = [[f"{t['a']} vs {t['b']}", f"{t['mean_difference']:+.3f}", f"{t['p_value']:.3g}",
                                t["method"], "yes" if t["significant"] else "no"] for t in folds["paired_tests"]]
        o = folds.get("out_of_fold")
        if o:
            n = o["test_photos"]
            extra["oof_rows"] = [[m, f"{r['accuracy']:.1%}", f"{r['ci95'][0]:.1%}–{r['ci95'][1]:.1%}",
                                  f"{r['correct']}/{n}"] for m, r in o["models"].items()]
            extra["oof_tests"] = [[f"{t['a']} vs {t['b']}", t["only_a_correct"], t["only_b_correct"],
                                   f"{t['p_value']:.3g}", t["method"], "yes" if t["significant"] else "no"]
                                  for t in o["mcnemar"]]
            extra["oof_best"] = max(o["models"], key=lambda m: o["models"][m]["accuracy"])
    data = {"classes": result["class_names"], "thumbs": _thumbs(rows, data_root),
            "models": [{"name": r["model"], "predictions": r["predictions"]} for r in rows]}
    # JSON inside <script>: '<' as \u003c (with '>' and '&'), so no name can close the script or open an HTML
    # comment ('<!--' in a script block swallows the page's code, by the HTML spec)
    payload = Markup(json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
                     .replace("&", "\\u0026"))
    return render("comparison.html", data_root, css=Markup(CSS + EXTRA_CSS), script=Markup(SCRIPT), result=result,
                  side_by_side=side_by_side, curves=data_uri(curves), confusions=data_uri(confusions), cams=cams,
                  payload=payload, **extra)
