"""comparison.html: every model side by side, self-contained (images as data URIs, a little
inline JavaScript so clicking a confusion-matrix cell shows its photos); opens offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .html import CSS, _e, _table, cam_gallery, confusion_table as _confusion_table, data_uri, suspects_section, \
    thumbnail_uri

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


def _out_of_fold(o: dict[str, Any], alpha: float) -> list[str]:
    n = o["test_photos"]
    return [
        f"<h3>Out of fold: all {n} photos</h3>",
        "<p class='muted'>Each photo is predicted by the model of the fold that held it out, so every photo "
        "counts once; confusion matrices are summed over the folds and McNemar's test pairs the models photo "
        "by photo.</p>",
        _table(["model", "accuracy", "95% CI", "right"],
               [[m, f"{r['accuracy']:.1%}", f"{r['ci95'][0]:.1%}–{r['ci95'][1]:.1%}", f"{r['correct']}/{n}"]
                for m, r in o["models"].items()]),
        _table(["pair", "only first right", "only second right", "p", "test", f"significant (α = {alpha})"],
               [[f"{t['a']} vs {t['b']}", t["only_a_correct"], t["only_b_correct"], f"{t['p_value']:.3g}", t["method"],
                 "yes" if t["significant"] else "no"] for t in o["mcnemar"]]),
        "<div>" + "".join(_confusion_table(name, r["confusion_matrix"], o["class_names"])
                          for name, r in o["models"].items()) + "</div>",
    ]


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
    rows, classes = result["models"], result["class_names"]
    table = _table(
        ["model", "test accuracy", "95% CI", "test loss", "macro-F1", "parameters", "size on disk", "training time",
         "inference"],
        [[r["model"] + (f" ({r['backbone']})" if r.get("backbone") else ""), f"{r['test_accuracy']:.1%}",
          f"{r['test_accuracy_ci95'][0]:.1%}–{r['test_accuracy_ci95'][1]:.1%}", f"{r['test_loss']:.4f}",
          f"{r['macro_f1']:.3f}", f"{r['parameters']:,}", f"{r['size_bytes'] / 1e6:.1f} MB", f"{r['train_seconds']:.0f} s",
          f"{r['inference_ms_per_photo']:.1f} ms/photo ({r['inference_precision']})"
          if r["inference_ms_per_photo"] is not None else "—"] for r in rows])
    tests = "".join(
        f"<tr><td>{_e(p['a'])} vs {_e(p['b'])}</td><td>{p['only_a_correct']}</td><td>{p['only_b_correct']}</td>"
        f"<td>{p['p_value']:.3g}</td><td>{_e(p['method'])}</td><td class='{'sig' if p['significant'] else ''}'>"
        f"{'yes' if p['significant'] else 'no'}</td></tr>" for p in result["mcnemar"])
    folds = result.get("folds")
    scope = (f"{folds['k']}-fold cross-validation, every model trained once per fold on the same folds. The first "
             f"two sections show fold 1 ({result['test_photos']} held-out test photos); the cross-validation "
             "section covers all folds" if folds else
             f"all trained and tested on the same split: {result['test_photos']} held-out test photos")
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>diycnn comparison</title>"
             f"<style>{CSS}{EXTRA_CSS}</style></head><body>",
             "<h1>diycnn comparison</h1>",
             f"<p class='muted'>{len(rows)} models on <code>{_e(result['data'])}</code>, {scope}; classes "
             f"{_e(', '.join(classes))}.</p>",
             "<h2>Side by side (test split" + (" of fold 1" if folds else "") + ")</h2>", table,
             f"<h2>Are the differences real? (McNemar's test, α = {result['alpha']})</h2>",
             "<p class='muted'>Each pair of models is compared on the same test photos: only the photos one got "
             "right and the other wrong count. A difference is called significant when p &lt; α.</p>",
             "<table><tr><th>pair</th><th>only first right</th><th>only second right</th><th>p</th><th>test</th>"
             f"<th>significant</th></tr>{tests}</table>"]
    if folds:
        parts.append(f"<h2>{folds['k']}-fold cross-validation (test accuracy)</h2>")
        parts.append(_table(["model", "mean", "std", "per fold"],
                            [[m, f"{s['mean']:.3f}", f"{s['std']:.3f}", ", ".join(f"{a:.3f}" for a in s["accuracies"])]
                             for m, s in folds["test_accuracy"].items()]))
        parts.append(_table(["pair", "mean difference", "p", "test", "significant"],
                            [[f"{t['a']} vs {t['b']}", f"{t['mean_difference']:+.3f}", f"{t['p_value']:.3g}",
                              t["method"], "yes" if t["significant"] else "no"] for t in folds["paired_tests"]]))
        if folds.get("out_of_fold"):
            parts += _out_of_fold(folds["out_of_fold"], result["alpha"])
            oof = folds["out_of_fold"]
            best = max(oof["models"], key=lambda m: oof["models"][m]["accuracy"])
            section = suspects_section((oof.get("suspect_labels") or {}).get(best), data_root)
            parts.append(section.replace("<h2>Suspect labels", f"<h2>Suspect labels by {_e(best)}", 1))
        parts.append("<p class='muted'>The sections below show fold 1 again.</p>")
    parts += ["<h2>Learning curves</h2>", f"<img class='plot' alt='learning curves of every model' src='{data_uri(curves)}'>",
              "<h2>Confusion matrices (test split)</h2>",
              "<p class='muted'>Click a cell to see its photos below.</p>",
              f"<img class='plot' alt='confusion matrices side by side' src='{data_uri(confusions)}'>",
              "<div>" + "".join(_confusion_table(r["model"], r["confusion_matrix"], classes, m)
                                for m, r in enumerate(rows)) + "</div>"]
    for m, r in enumerate(rows):
        parts.append(f"<h2>{_e(r['model'])}: photos</h2><p id='caption-{m}' class='muted'></p>"
                     f"<div class='gallery' id='gallery-{m}'></div>")
        parts.append(cam_gallery(cams.get(r["model"]) or [], f"Why {r['model']} decided"))
    data = {"classes": classes, "thumbs": _thumbs(rows, data_root),
            "models": [{"name": r["model"], "predictions": r["predictions"]} for r in rows]}
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    parts.append(f"<script type='application/json' id='cmp-data'>{payload}</script>")
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)
