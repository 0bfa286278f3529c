"""A self-contained report.html (images embedded as data URIs; opens offline)."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Any

from ..data.images import ImageError, load_rgb

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


def path_html(path: str) -> str:
    """A file path as HTML that wraps after / _ - . rather than in the middle of a word."""
    return re.sub(r"([/_.\\-])", r"\1<wbr>", _e(path))


def confusion_table(name: str, matrix: list[list[int]], classes: list[str], m: int | None = None) -> str:
    """A confusion matrix as an HTML table; with model index `m`, its cells are clickable (show photos)."""
    head = "".join(f"<th title='predicted {_e(c)}'>{_e(c[:10])}</th>" for c in classes)
    body = []
    for t, counts in enumerate(matrix):
        cells = "".join(
            f"<td class='{'cell ' if m is not None else ''}{'diag' if t == p else 'off'}{' zero' if v == 0 else ''}'"
            + (f" data-m='{m}' data-t='{t}' data-p='{p}' title='true {_e(classes[t])}, predicted {_e(classes[p])}'"
               if m is not None else "") + f">{v}</td>"
            for p, v in enumerate(counts))
        body.append(f"<tr><th title='true {_e(classes[t])}'>{_e(classes[t][:14])}</th>{cells}</tr>")
    return (f"<div class='cm'><b>{_e(name)}</b><table><tr><th>true \\ predicted</th>{head}</tr>"
            + "".join(body) + "</table></div>")


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


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def setting_used(key: str, value: Any, info: dict[str, Any]) -> str:
    """A training setting as used: 'auto' resolved (device, precision), None in words."""
    if key in ("device", "precision") and value == "auto":
        return f"{info.get(key, 'auto')} (auto)"
    if value is None:
        return {"patience": "off (no early stopping)", "augment": "none"}.get(key, "off")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def _backbone_note(info: dict[str, Any]) -> str:
    model = info["model"]
    if not model.get("backbone"):
        return ""
    note = f" on backbone <b>{_e(model['backbone'])}</b> (weights: {_e(model.get('weights_source'))})"
    if model["name"] == "tm":
        note += (" — diycnn's re-creation of Teachable Machine's training recipe (Teachable Machine itself was not "
                 "run" + ("; it uses MobileNetV2 α=0.35" if model["backbone"] != "mobilenetv2_035" else "") + ")")
    return note


def cam_gallery(samples: list[dict[str, Any]], title: str) -> str:
    """Grad-CAM overlays with captions (samples from `explain.cam_samples`)."""
    if not samples:
        return ""
    figures = [f"<figure><img class='{'ok' if s['predicted'] == s['true'] else ''}' alt='Grad-CAM of {_e(s['path'])}' "
               f"src='{s['uri']}'><figcaption>{_e(s['path'])}<br>true <b>{_e(s['true'])}</b>, predicted "
               f"<b>{_e(s['predicted'])}</b> ({s['probability']:.0%})</figcaption></figure>" for s in samples]
    return (f"<h2>{_e(title)}</h2><p class='muted'>Grad-CAM: red areas raised the predicted class's score most. "
            "Red frames: wrong predictions; green: right ones.</p><div class='gallery'>" + "".join(figures) + "</div>")


def _figure(data_root: Path, path: str, caption: str, ok: bool = False) -> str:
    """A photo thumbnail with a caption (`caption` is HTML the caller escaped)."""
    uri = thumbnail_uri(data_root / path)
    img = (f"<img class='{'ok' if ok else ''}' alt='{_e(path)}' src='{uri}'>" if uri
           else "<p>(photo no longer readable)</p>")
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


def near_duplicates_section(near: dict[str, Any] | None, data_root: Path, max_pairs: int = 12) -> str:
    """Near-identical photos: copies left out of evaluation, likely label conflicts, groups kept together."""
    if not near or not near.get("checked"):
        return ("<h2>Near-duplicates</h2><p class='muted'>Not checked (turned off): copies of training photos "
                "that are not byte-identical may be among the evaluation photos.</p>") if near is not None else ""
    left, conflicts, within = near.get("left_out", []), near.get("label_conflicts", []), near.get("within_class", [])
    t = near.get("thresholds", {})
    parts = [f"<h2>Near-duplicates ({len(left)} left out of evaluation, {len(conflicts)} likely label conflicts, "
             f"{len(within)} pairs kept together)</h2>",
             "<p class='muted'>Photos that look like one shot resized, re-encoded, slightly cropped, blurred or "
             f"recoloured (perceptual hash within {_e(t.get('max_hash_distance'))} of 64 bits and thumbnail "
             f"correlation at least {_e(t.get('min_correlation'))}). Within a class they stay on one side of the "
             "split; a copy of a photo in an earlier split is left out of its own split.</p>"]
    if left:
        parts.append("<h3>Left out of evaluation: copies of photos in an earlier split</h3><div class='gallery'>")
        for item in left[:max_pairs]:
            parts.append(_figure(data_root, item["path"], f"{_e(item['path'])} ({_e(item['split'])}, left out)"))
            parts.append(_figure(data_root, item["copy_of"], f"≈ {_e(item['copy_of'])} ({_e(item['copy_split'])}), "
                                                             f"correlation {item['score']:.3f}", ok=True))
        parts.append("</div>")
        if len(left) > max_pairs:
            parts.append(f"<p class='muted'>{len(left) - max_pairs} more in metrics.json.</p>")
    if conflicts:
        parts.append("<h3>Likely label conflicts: the same shot in two classes</h3><div class='gallery'>")
        for item in conflicts[:max_pairs]:
            for path, cls in zip((item["a"], item["b"]), item.get("classes", ("", ""))):
                parts.append(_figure(data_root, path, f"{_e(path)}<br>class <b>{_e(cls)}</b>"))
        parts.append("</div><p class='muted'>Both are kept; move or delete the one filed under the wrong class.</p>")
    return "".join(parts)


def suspects_section(suspects: dict[str, Any] | None, data_root: Path, max_items: int = 24) -> str:
    """Photos whose given class the out-of-fold predictions find least likely."""
    if not suspects:
        return ""
    if not suspects.get("checked"):
        return f"<h2>Suspect labels</h2><p class='muted'>Not checked: {_e(suspects.get('why', ''))}.</p>"
    items = suspects.get("items", [])
    parts = [f"<h2>Suspect labels ({suspects.get('count', len(items))} of {suspects.get('photos')} photos)</h2>",
             "<p class='muted'>Photos whose folder (label) the model finds unlikely, each predicted by a classifier "
             f"that did not see it ({_e(suspects.get('how', ''))}; confident learning). Look at each: move it to "
             "the right class folder, delete it, or keep it if the label is right (e.g. in the web app).</p>"]
    if not items:
        parts.append("<p>None: every photo's label agrees with the out-of-fold predictions.</p>")
        return "".join(parts)
    parts.append("<div class='gallery'>")
    for item in items[:max_items]:
        parts.append(_figure(data_root, item["path"],
                             f"{_e(item['path'])}<br>filed as <b>{_e(item['label'])}</b> ({item['p_label']:.0%}), "
                             f"looks like <b>{_e(item['suggested'])}</b> ({item['p_suggested']:.0%})"))
    parts.append("</div>")
    if len(items) > max_items:
        parts.append(f"<p class='muted'>{len(items) - max_items} more in metrics.json.</p>")
    return "".join(parts)


def cross_validation_note(cv: dict[str, Any] | None, test_photos: int) -> str:
    """The K-fold estimate over all photos, next to the test figure it backs up (or replaces)."""
    if not cv or not cv.get("checked"):
        return ""
    lo, hi = cv["accuracy_ci95"]
    folds = ", ".join(f"{a:.0%}" for a in cv["fold_accuracies"])
    small = (f" With only {test_photos} test photos, this is the figure to trust." if test_photos < 30 else "")
    return (f"<p class='big' id='cross-validation'>Cross-validated accuracy <b>{cv['accuracy']:.1%}</b> "
            f"(95% CI {lo:.1%}–{hi:.1%}, {cv['correct']}/{cv['photos']} photos), loss <b>{cv['loss']:.4f}</b>: "
            f"{cv['folds']}-fold cross-validation on all {cv['photos']} photos, each predicted by the same recipe "
            f"trained without it (folds: {folds}).{small}</p>")


def render_report(info: dict[str, Any], metrics: dict[str, Any], curves: bytes, confusion: bytes,
                  data_root: Path, max_errors: int = 24, cams: list[dict[str, Any]] | None = None) -> str:
    """The run report: headline figures, curves, confusion matrix, per-class scores,
    misclassified test photos, data problems and settings."""
    name = info.get("name", "run")
    ci = metrics["test_accuracy_ci95"]
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>diycnn report: {_e(name)}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>diycnn report: {_e(name)}</h1>",
             f"<p class='muted'>diycnn trained recipe <b>{_e(info['model']['name'])}</b>{_backbone_note(info)}, "
             f"on the photos in <code>{_e(info.get('data', ''))}</code>; created {_e(info.get('created', ''))}</p>",
             f"<p class='big'>Test accuracy <b>{metrics['test_accuracy']:.1%}</b> "
             f"(95% CI {ci[0]:.1%}–{ci[1]:.1%}, {metrics['test_correct']}/{metrics['counts']['test']} photos), "
             f"test loss <b>{metrics['test_loss']:.4f}</b>, macro-F1 {metrics['test_macro_f1']:.3f}.</p>",
             cross_validation_note(metrics.get("cross_validation"), metrics["counts"]["test"]),
             f"<p>Trained {metrics['epochs_run']} epoch(s) in {metrics['train_seconds']:.0f} s "
             f"({metrics['train_images_per_second']:.1f} images/s, {_e(metrics['device'])}, {_e(metrics['precision'])})"
             + (f"; early stopping kept epoch {metrics['best_epoch']}" if metrics.get("best_epoch") else "") + ".</p>",
             "<h2>Learning curves</h2>",
             f"<img class='plot' alt='accuracy and loss curves' src='{data_uri(curves)}'>",
             (f"<p id='overfitting'><b>{_e(metrics['overfitting']['message'])}</b></p>"
              if metrics.get("overfitting") else ""),
             "<h2>Confusion matrix (test split)</h2>",
             f"<img class='plot' alt='confusion matrix' src='{data_uri(confusion)}'>",
             "<p class='muted'>Click a cell to see its photos.</p>",
             confusion_table(info["model"]["name"], metrics["confusion_matrix"], metrics["class_names"], 0),
             "<h2>Per-class scores (test split)</h2>",
             _table(["class", "precision", "recall", "F1", "support"],
                    [[c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", v["support"]]
                     for c, v in metrics["per_class"].items()]),
             "<h2>Photos per split</h2>",
             _table(["class", "train", "val", "test"],
                    [[c] + [metrics["counts_by_class"][s][c] for s in ("train", "val", "test")]
                     for c in metrics["class_names"]])]
    errors = metrics.get("misclassified", [])
    parts.append(f"<h2 id='misclassified'>Misclassified test photos ({len(errors)})</h2><p id='errors-caption' class='muted'></p>")
    index = {c: i for i, c in enumerate(metrics["class_names"])}
    if errors:
        figures = []
        for err in errors[:max_errors]:
            uri = thumbnail_uri(data_root / err["path"])
            img = f"<img alt='{_e(err['path'])}' src='{uri}'>" if uri else "<p>(photo no longer readable)</p>"
            figures.append(f"<figure data-t='{index.get(err['true'], -1)}' data-p='{index.get(err['predicted'], -1)}'>"
                           f"{img}<figcaption>{path_html(err['path'])}<br>true <b>{_e(err['true'])}</b>, "
                           f"predicted <b>{_e(err['predicted'])}</b> ({err['probability']:.0%})</figcaption></figure>")
        parts.append("<div class='gallery' id='errors'>" + "".join(figures) + "</div>")
        if len(errors) > max_errors:
            parts.append(f"<p class='muted'>{len(errors) - max_errors} more in metrics.json.</p>")
    else:
        parts.append("<p>None: every test photo was classified correctly.</p>")
    parts.append(cam_gallery(cams or [], "Why it decided (test photos)"))
    problems = metrics.get("skipped", []) + metrics.get("duplicates", [])
    parts.append(f"<h2>Data problems ({len(metrics.get('skipped', []))} skipped, "
                 f"{len(metrics.get('duplicates', []))} duplicate{'' if len(metrics.get('duplicates', [])) == 1 else 's'} "
                 "left out)</h2>")
    if problems:
        parts.append(_table(["file", "reason"], [[p["path"], p["reason"]] for p in problems[:200]]))
    parts.append(suspects_section(metrics.get("suspect_labels"), data_root))
    parts.append(near_duplicates_section(metrics.get("near_duplicates"), data_root))
    for note in metrics.get("notes", []):
        parts.append(f"<p class='muted'>Note: {_e(note)}</p>")
    parts.append("<h2>Settings</h2>")
    parts.append(_table(["setting", "value used"], [[k, setting_used(k, v, info)]
                                                    for k, v in info.get("training", {}).items()]))
    parts.append(f"<p class='muted'>diycnn {_e(info['versions'].get('diycnn'))}, torch {_e(info['versions'].get('torch'))}</p>")
    parts.append(f"<script>{RUN_SCRIPT}</script></body></html>")
    return "\n".join(parts)
