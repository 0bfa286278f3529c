"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const MAX_THUMBS = 60;
let project = null;
let stream = null;
let previewLoop = false;
let lastStatus = null;
let pollTimer = null;

async function api(method, url, body, isRaw) {
  const opts = { method, headers: { "X-Diycnn": "1" } };
  if (body !== undefined) {
    if (isRaw) { opts.body = body; } else { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  }
  const r = await fetch(url, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = {}; }
  if (!r.ok) throw new Error(data.error || (r.status + " " + r.statusText));
  return data;
}
const enc = encodeURIComponent;
function show(el, text, kind) { el.textContent = text || ""; el.className = "msg" + (kind ? " " + kind : ""); }

// A new, empty project opens as Teachable Machine's does: two classes ready to rename and fill
// (once per page load, so deleting them is respected until the page is opened again).
let offeredClasses = false;
async function refresh() {
  project = await api("GET", "/api/project");
  if (!offeredClasses && !project.classes.length && !project.runs.length) {
    offeredClasses = true;
    try {
      for (const name of ["Class 1", "Class 2"]) await api("POST", "/api/classes", { name });
      project = await api("GET", "/api/project");
    } catch (e) { /* a read-only project folder: the page still works, empty */ }
  }
  offeredClasses = true;
  $("#project-name").textContent = project.name;
  $("#project-root").textContent = project.root;
  renderClasses();
  renderRuns();
  renderTraining(project.training);
  if (!$("#recipe").options.length) {
    for (const r of project.recipes) $("#recipe").add(new Option(r, r));
    // the recipe chosen before a reload (else the one last trained, else auto, the first)
    const chosen = localStorage.getItem(recipeKey()) || (project.training || {}).model;
    if (chosen && project.recipes.includes(chosen)) $("#recipe").value = chosen;
    describeRecipe();
  }
  loadCheck();  // after the recipe list: the check decodes photos as the chosen recipe will
}

// The chosen recipe in one line, and its real defaults as the Advanced fields' placeholders.
function describeRecipe() {
  const guide = (project.recipe_guide || {})[$("#recipe").value] || {};
  $("#recipe-about").textContent = guide.about || "";
  for (const [id, key] of [["#epochs", "epochs"], ["#batch-size", "batch_size"], ["#lr", "lr"]])
    $(id).placeholder = guide[key] == null ? "recipe's choice" : String(guide[key]);
}
function recipeKey() { return "diycnn.recipe:" + ((project && project.root) || ""); }
$("#recipe").addEventListener("change", () => {
  try { localStorage.setItem(recipeKey(), $("#recipe").value); } catch (e) { /* private mode: not kept */ }
  describeRecipe(); loadCheck();
});

// What training would leave out, shown on each class before training (the same scan training does).
// With the chosen recipe, the photos are also decoded as it prepares them (face crops included).
async function loadCheck() {
  let check;
  const recipe = $("#recipe").value;
  try { check = await api("GET", "/api/check" + (recipe ? "?recipe=" + enc(recipe) : "")); } catch (e) { return; }
  for (const card of document.querySelectorAll(".class-card")) {
    const info = check.classes[card.dataset.name], box = $(".left-out", card);
    box.textContent = "";
    if (!info || !(info.left_out.length || (info.notes || []).length)) continue;
    const items = [...info.left_out.map(p => el("li", {}, el("b", {}, p.photo), " \u2014 " + p.reason)),
                   ...(info.notes || []).map(p => el("li", {}, el("b", {}, p.photo), " \u2014 used: " + p.reason))];
    const head = info.left_out.length ? `Training will leave out ${info.left_out.length} file(s); ` : "Nothing left out; ";
    box.append(el("details", {}, el("summary", {}, head + `${info.usable} photo(s) will be used` +
      ((info.notes || []).length ? `, ${info.notes.length} with a remark` : "")), el("ul", {}, ...items)));
  }
  $("#check-note").textContent = check.note || "";
}

function renderClasses() {
  const box = $("#classes");
  const open = new Set([...box.querySelectorAll(".class-card")].filter(c => !$(".cam", c).hidden).map(c => c.dataset.name));
  box.textContent = "";
  for (const cls of project.classes) {
    const card = $("#class-template").content.firstElementChild.cloneNode(true);
    card.dataset.name = cls.name;
    card.dataset.testid = "class-" + cls.name;
    const name = $(".class-name", card);
    name.value = cls.name;
    name.addEventListener("change", async () => {
      try { await api("PATCH", "/api/classes/" + enc(cls.name), { name: name.value }); await refresh(); }
      catch (e) { show($(".msg", card), e.message, "error"); name.value = cls.name; }
    });
    $(".count", card).textContent = cls.photos.length + (cls.photos.length === 1 ? " photo" : " photos");
    if (cls.warning) {  // a folder the app would not have named so: listed, and fixable by renaming
      const badge = el("span", { className: "badge", title: cls.warning, textContent: "odd name" });
      badge.dataset.testid = "class-warning";
      $(".count", card).after(badge);
    }
    $(".delete-class", card).addEventListener("click", async () => {
      if (!confirm(`Delete class "${cls.name}" and its ${cls.photos.length} photos from the project folder?`)) return;
      try { await api("DELETE", "/api/classes/" + enc(cls.name)); await refresh(); }
      catch (e) { show($(".msg", card), e.message, "error"); }
    });
    const input = $(".files", card);
    $(".upload", card).addEventListener("click", () => input.click());
    input.addEventListener("change", () => { uploadFiles(cls.name, [...input.files], card); input.value = ""; });
    card.addEventListener("dragover", e => { e.preventDefault(); card.classList.add("drag"); });
    card.addEventListener("dragleave", () => card.classList.remove("drag"));
    card.addEventListener("drop", e => {
      e.preventDefault(); card.classList.remove("drag");
      uploadFiles(cls.name, [...e.dataTransfer.files], card);
    });
    $(".webcam", card).addEventListener("click", () => toggleCam(card));
    setupHold(card, cls.name);
    const thumbs = $(".thumbs", card);
    for (const p of cls.photos.slice(-MAX_THUMBS).reverse()) {
      const t = document.createElement("div");
      t.className = "thumb";
      const img = document.createElement("img");
      img.loading = "lazy"; img.alt = p; img.title = p;
      img.src = `/api/classes/${enc(cls.name)}/photos/${enc(p)}?thumb=1`;
      const del = document.createElement("button");
      del.textContent = "\u00d7"; del.title = "Remove " + p;
      del.addEventListener("click", async () => {
        try { await api("DELETE", `/api/classes/${enc(cls.name)}/photos/${enc(p)}`); await refresh(); }
        catch (e) { show($(".msg", card), e.message, "error"); }
      });
      t.append(img, del);
      thumbs.append(t);
    }
    if (cls.photos.length > MAX_THUMBS) {
      const more = document.createElement("div");
      more.className = "hint"; more.textContent = `+${cls.photos.length - MAX_THUMBS} more`;
      thumbs.append(more);
    }
    box.append(card);
    if (open.has(cls.name)) toggleCam(card);
  }
}

async function uploadFiles(cls, files, card) {
  if (!files.length) return;
  const msg = $(".msg", card);
  show(msg, `Uploading ${files.length} photo(s)...`);
  let added = 0; const rejected = [];
  for (let i = 0; i < files.length; i += 16) {
    const form = new FormData();
    for (const f of files.slice(i, i + 16)) form.append("files", f, f.name || "photo.jpg");
    try {
      const r = await api("POST", `/api/classes/${enc(cls)}/photos`, form, true);
      added += r.added.length; rejected.push(...r.rejected);
    } catch (e) { rejected.push({ file: "upload", reason: e.message }); }
  }
  await refresh();
  const cardNow = document.querySelector(`.class-card[data-name="${CSS.escape(cls)}"]`) || card;
  show($(".msg", cardNow), `Added ${added} photo(s).` + (rejected.length ? "\nRefused:\n" + rejected.map(r => r.reason).join("\n") : ""),
       rejected.length ? "error" : "ok");
}

async function getStream() {
  if (!stream) stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  return stream;
}

async function toggleCam(card) {
  const cam = $(".cam", card);
  const video = $("video", cam), hold = $(".hold", cam);
  if (!cam.hidden) { cam.hidden = true; video.srcObject = null; return; }
  try {
    // "Hold to record" waits for the first frame: a hold before it would capture nothing. The video
    // only takes its height then, so the camera (and its record button) is scrolled into view again.
    const ready = () => { hold.disabled = false; cam.scrollIntoView({ block: "nearest", behavior: "smooth" }); };
    hold.disabled = true;
    video.addEventListener("loadeddata", ready, { once: true });
    video.srcObject = await getStream(); cam.hidden = false;
    cam.scrollIntoView({ block: "nearest", behavior: "smooth" });
    if (video.readyState >= 2) ready();
  }
  catch (e) { show($(".msg", card), "Webcam unavailable: " + e.message, "error"); }
}

function grab(video, maxSide) {
  const w = video.videoWidth, h = video.videoHeight;
  if (!w || !h) return Promise.resolve(null);
  const scale = Math.min(1, maxSide / Math.max(w, h));
  const c = document.createElement("canvas");
  c.width = Math.round(w * scale); c.height = Math.round(h * scale);
  c.getContext("2d").drawImage(video, 0, 0, c.width, c.height);
  return new Promise(resolve => c.toBlob(resolve, "image/jpeg", 0.9));
}

function setupHold(card, cls) {
  const btn = $(".hold", card);
  let timer = null, frames = [], n = 0;
  const stop = async () => {
    if (!timer) return;
    clearInterval(timer); timer = null; btn.classList.remove("recording"); btn.textContent = "Hold to record";
    const files = frames.map((b, i) => new File([b], `webcam-${Date.now()}-${i}.jpg`, { type: "image/jpeg" }));
    frames = [];
    await uploadFiles(cls, files, card);
  };
  btn.addEventListener("pointerdown", e => {
    e.preventDefault();
    const video = $("video", card);
    btn.classList.add("recording"); n = 0;
    const tick = async () => { const b = await grab(video, 480); if (b && timer) { frames.push(b); btn.textContent = `Recording... ${++n}`; } };
    timer = setInterval(tick, 160); tick();
  });
  btn.addEventListener("pointerup", stop);
  btn.addEventListener("pointerleave", stop);
}

$("#add-class-form").addEventListener("submit", async e => {
  e.preventDefault();
  const name = $("#new-class").value;
  try {
    const made = await api("POST", "/api/classes", { name }); $("#new-class").value = ""; show($("#class-msg"), ""); await refresh();
    const card = [...document.querySelectorAll(".class-card")].find(c => c.dataset.name === (made.name || name));
    if (card) card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }
  catch (err) { show($("#class-msg"), err.message, "error"); }
});

// ---- training -----------------------------------------------------------------------------
$("#train").addEventListener("click", async () => {
  const body = { model: $("#recipe").value, epochs: $("#epochs").value, batch_size: $("#batch-size").value, lr: $("#lr").value };
  try { renderTraining(await api("POST", "/api/train", body)); poll(); }
  catch (e) { show($("#train-msg"), e.message, "error"); }
});
$("#cancel").addEventListener("click", async () => {
  try { renderTraining(await api("POST", "/api/train/cancel")); } catch (e) { show($("#train-msg"), e.message, "error"); }
});

$("#resume").addEventListener("click", async () => {
  try { renderTraining(await api("POST", "/api/train/resume", { run: $("#resume").dataset.run })); poll(); }
  catch (e) { show($("#train-msg"), e.message, "error"); }
});

function poll() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(async () => {
    try {
      const s = await api("GET", "/api/train");
      renderTraining(s);
      if (s.status === "running") poll(); else await refresh();
    } catch (e) { poll(); }
  }, 700);
}

function renderTraining(s) {
  const running = s.status === "running";
  $("#train").disabled = running; $("#cancel").disabled = !running;
  const last = (s.history || []).at(-1);
  $("#train-stage").textContent = s.status === "idle" ? "" :
    `${s.model || ""}: ${s.stage || s.status}` + (s.epochs ? ` (epoch ${Math.min(s.epoch + (running ? 1 : 0), s.epochs)}/${s.epochs})` : "") +
    (last && last.val_loss !== undefined ? ` \u2014 val_loss ${fixed(last.val_loss, 4)} val_acc ${fixed(last.val_accuracy, 3)}` : "") +
    (running && s.loss !== undefined ? `, this epoch: loss ${s.loss.toFixed(4)} accuracy ${s.accuracy.toFixed(3)}` : "");
  const resume = $("#resume");
  resume.hidden = !(s.status === "cancelled" && s.resumable);
  resume.dataset.run = s.resumable || "";
  const p = $("#progress");
  if (s.epochs) { p.max = s.epochs; p.value = s.status === "done" ? s.epochs : s.epoch + (s.batches ? s.batch / s.batches : 0); }
  else { p.max = 1; p.value = s.status === "done" ? 1 : 0; }
  show($("#train-msg"), s.message || "", s.status === "failed" || s.status === "cancelled" ? "error" : s.status === "done" ? "ok" : "");
  renderAutoPlan(s.auto);
  const h = s.history || [];
  chart($("#acc-chart"), h.map(r => r.accuracy), h.map(r => r.val_accuracy), 0, 1, "accuracy");
  const losses = h.flatMap(r => [r.loss, r.val_loss]).filter(v => v !== undefined && isFinite(v));
  chart($("#loss-chart"), h.map(r => r.loss), h.map(r => r.val_loss), 0, Math.max(0.1, ...losses), "loss");
  if (running && lastStatus !== "running") poll();
  if (lastStatus === "running" && s.status !== "running") refresh().then(() => loadEvaluation());
  lastStatus = s.status;
}

// auto's plan and each candidate's result as it finishes; the kept model is marked.
function renderAutoPlan(auto) {
  const table = $("#auto-plan"); table.textContent = "";
  table.hidden = !(auto && auto.candidates && auto.candidates.length);
  if (table.hidden) return;
  const pct = v => (typeof v === "number" ? (100 * v).toFixed(1) + "%" : "");
  table.append(el("tr", {}, el("th", {}, "auto: candidate"), el("th", {}, "status"), el("th", {}, "val acc"),
    el("th", {}, "cross-val"), el("th", {}, "test acc")));
  for (const c of auto.candidates) {
    const row = el("tr", { className: c.model === auto.kept ? "kept" : "" },
      el("td", {}, c.model + (c.model === auto.kept ? " (kept)" : "")), el("td", {}, c.status),
      el("td", {}, pct(c.val_accuracy)), el("td", {}, pct(c.cv_accuracy)), el("td", {}, pct(c.test_accuracy)));
    row.dataset.model = c.model;
    table.append(row);
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svgNode(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// A line chart of train (a) and validation (b) values per epoch, with axes, ticks, epoch labels and
// hover read-outs (each epoch's column shows both values; its <title> is the browser's tooltip).
function niceStep(span, most) {
  const raw = span / most, mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map(m => m * mag).find(st => st >= raw);
}
function chart(svg, a, b, lo, hi, what) {
  const W = 320, H = 170, L = 38, R = 8, T = 8, B = 30, n = Math.max(a.length, b.length);
  const x = i => L + (W - L - R) * (n > 1 ? i / (n - 1) : 0.5), y = v => H - B - (H - T - B) * (v - lo) / (hi - lo || 1);
  const grid = { stroke: "#e8eaed", "vector-effect": "non-scaling-stroke" }, nodes = [];
  const yStep = niceStep(hi - lo, 4);
  for (let v = Math.ceil(lo / yStep) * yStep; v <= hi + 1e-9; v += yStep) {
    nodes.push(svgNode("line", { x1: L, y1: y(v), x2: W - R, y2: y(v), ...grid }),
      svgNode("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, +v.toFixed(3)));
  }
  const xStep = n > 1 ? Math.max(1, Math.ceil(niceStep(n, 6))) : 1;  // epochs 1, step, 2*step, ...
  const ticks = [0, ...Array.from({ length: Math.floor(n / xStep) }, (_, k) => (k + 1) * xStep - 1)].filter((v, k, all) => v > 0 || k === 0);
  for (const i of new Set(ticks))
    nodes.push(svgNode("line", { x1: x(i), y1: H - B, x2: x(i), y2: H - B + 4, stroke: "#9aa0a6" }),
      svgNode("text", { x: x(i), y: H - B + 14, "text-anchor": "middle" }, i + 1));
  nodes.push(svgNode("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#9aa0a6" }),
    svgNode("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#9aa0a6" }),
    svgNode("text", { x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle", class: "axis-title" }, "epoch"));
  for (const [vals, color] of [[a, "#1967d2"], [b, "#e37400"]]) {
    const pts = vals.map((v, i) => [v, i]).filter(([v]) => typeof v === "number" && isFinite(v));
    if (!pts.length) continue;
    nodes.push(svgNode("polyline", { fill: "none", stroke: color, "stroke-width": 2,
      points: pts.map(([v, i]) => x(i) + "," + y(v)).join(" ") }));
    for (const [v, i] of pts) nodes.push(svgNode("circle", { cx: x(i), cy: y(v), r: 2.5, fill: color }));
  }
  const readout = svgNode("text", { x: W - R, y: T + 9, "text-anchor": "end", class: "readout" }, "");
  const colW = n > 1 ? (W - L - R) / (n - 1) : W - L - R;
  for (let i = 0; i < n; i++) {
    const said = `epoch ${i + 1}: train ${what} ${fixed(a[i], 3)}, validation ${what} ${fixed(b[i], 3)}`;
    const col = svgNode("rect", { x: x(i) - colW / 2, y: T, width: colW, height: H - T - B, fill: "transparent", class: "hover" });
    col.append(svgNode("title", {}, said));
    col.addEventListener("mouseenter", () => { readout.textContent = said; });
    col.addEventListener("mouseleave", () => { readout.textContent = ""; });
    nodes.push(col);
  }
  nodes.push(readout);
  svg.replaceChildren(...nodes);
}

// ---- preview, evaluation, export ----------------------------------------------------------
function renderRuns() {
  const sel = $("#run-select"), keep = sel.value;
  sel.textContent = "";
  for (const r of [...project.runs].reverse())
    sel.add(new Option(`${r.name} (test acc ${r.test_accuracy === null ? "?" : r.test_accuracy.toFixed(3)})`, r.name));
  if ([...sel.options].some(o => o.value === keep)) sel.value = keep;
  renderFormats();
  if (project.runs.length && $("#evaluation").dataset.run !== sel.value) loadEvaluation();
}
$("#run-select").addEventListener("change", () => { renderFormats(); loadEvaluation(); });

// Only the formats the chosen run can be exported to, each named by what it is for (the labels come
// with the project, from the one list of export formats).
function renderFormats() {
  const run = project.runs.find(r => r.name === $("#run-select").value);
  const sel = $("#export-format"), keep = sel.value, formats = run ? run.export_formats : project.export_formats;
  sel.textContent = "";
  for (const f of formats) sel.add(new Option((project.export_labels || {})[f] || f, f));
  if (formats.includes(keep)) sel.value = keep;
  const model = run ? run.model || "this recipe" : "";
  $("#export-about").textContent = !run || formats.includes("keras") ? "" : formats.includes("tfjs") ?
    `Keras export rebuilds Keras-style layers: it is offered for seed-cnn, seed-cnn-plus and spec-file runs, not for ${model}.` :
    `Keras and TensorFlow.js exports are offered for Keras-style CNNs, EfficientNet-Lite and face runs, not for ${model}; ONNX also runs in browsers (onnxruntime-web).`;
}

// Every value from the server is placed with textContent: names and metadata in a run folder
// may come from anyone, and must stay text.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  node.append(...children.map(c => typeof c === "number" ? String(c) : c));
  return node;
}
const pct = v => typeof v === "number" ? (v * 100).toFixed(1) + "%" : "?";
const fixed = (v, d) => typeof v === "number" ? v.toFixed(d) : "?";

async function loadEvaluation() {
  const run = $("#run-select").value, box = $("#evaluation");
  if (!run) return;
  try {
    const ev = await api("GET", "/api/evaluation?run=" + enc(run));
    box.dataset.run = run;
    const n = ev.class_names;
    const acc = el("b", { textContent: pct(ev.test_accuracy) });
    acc.dataset.testid = "test-accuracy";
    const ci = ev.test_accuracy_ci95 ? ` (95% CI ${pct(ev.test_accuracy_ci95[0])}\u2013${pct(ev.test_accuracy_ci95[1])})` : "";
    const head = el("div", {}, `${ev.model || "model"}` + (ev.auto ? ` (auto picked ${ev.auto})` : "") + ": ", acc,
      `${ci} on ${ev.counts.test} held-out test photos, loss ${fixed(ev.test_loss, 4)}`);
    const cv = ev.cross_validation, cvBox = [];
    if (cv) {
      const cvAcc = el("b", { textContent: pct(cv.accuracy) });
      cvAcc.dataset.testid = "cv-accuracy";
      cvBox.push(el("div", { id: "cross-validation" }, "Cross-validated: ", cvAcc,
        ` (95% CI ${pct(cv.accuracy_ci95[0])}\u2013${pct(cv.accuracy_ci95[1])}), ${cv.folds}-fold on all ${cv.photos} photos, loss ${fixed(cv.loss, 4)}` +
        (ev.counts.test < 30 ? ` \u2014 with only ${ev.counts.test} test photos, trust this figure.` : "")));
    }
    const perClass = el("table", { id: "per-class" },
      el("tr", {}, el("th", {}, "class"), el("th", {}, "accuracy"), el("th", {}, "train"), el("th", {}, "val"), el("th", {}, "test photos")),
      ...n.map(c => el("tr", {}, el("th", {}, c), el("td", {}, pct(ev.per_class[c].accuracy)),
        el("td", {}, ev.per_class[c].train ?? "?"), el("td", {}, ev.per_class[c].val ?? "?"), el("td", {}, ev.per_class[c].support))));
    const lo = ev.left_out || {};
    if (lo.unreadable || lo.duplicates || lo.no_face)
      cvBox.push(el("p", { id: "left-out", className: "hint" }, `Not used: ${lo.unreadable} unreadable file(s), ` +
        `${lo.duplicates} exact duplicate(s)` + (lo.no_face ? `, ${lo.no_face} photo(s) without a face` : "") + " \u2014 listed in the full report."));
    const confusion = el("table", { id: "confusion" }, el("tr", {}, el("th"), ...n.map(c => el("th", {}, c))),
      ...ev.confusion_matrix.map((row, i) => el("tr", {}, el("th", {}, n[i]),
        ...row.map((v, j) => el("td", { className: i === j ? "diag" : "" }, v)))));
    const link = el("a", { id: "report-link", href: "/runs/" + enc(ev.run) + "/report.html", target: "_blank", rel: "noopener" },
      "Full report (curves, mistakes, Grad-CAM) \u2192");
    if (ev.overfitting) cvBox.push(el("p", { id: "overfitting", className: "hint" }, ev.overfitting));
    box.replaceChildren(head, ...cvBox, el("h3", { className: "small" }, "Accuracy per class"), perClass,
      el("h3", { className: "small" }, "Confusion matrix (rows: true, columns: predicted)"), confusion,
      ...dataChecks(ev), el("p", {}, link));
    box.className = "";
  } catch (e) { box.textContent = e.message; }
}

// Suspect labels (photos whose class the out-of-fold predictions find unlikely) with one-click
// fixes, and what near-duplicate detection left out. Moving or deleting asks first; a deleted
// photo goes to the project's .diycnn/trash folder.
function dataChecks(ev) {
  const out = [];
  if (ev.near_left_out || ev.label_conflicts) {
    out.push(el("p", { className: "hint" }, `Near-duplicates: ${ev.near_left_out} copies of training photos left out of the test, ` +
      `${ev.label_conflicts} likely label conflicts (the same shot in two classes) — see the full report.`));
  }
  if (!ev.suspects_checked) return out;
  const list = el("div", { id: "suspects" });
  out.push(el("h3", { className: "small" }, `Suspect labels (${ev.suspects.length})`), list);
  if (!ev.suspects.length) { list.append(el("p", { className: "hint" }, "None: every photo's class agrees with the out-of-fold predictions.")); return out; }
  list.append(el("p", { className: "hint" }, "These photos look like another class to a model that did not train on them. Check each one:"));
  for (const s of ev.suspects) {
    const msg = el("span", { className: "msg" });
    const img = el("img", { alt: s.photo, src: "/api/classes/" + enc(s.class) + "/photos/" + enc(s.photo) + "?thumb=1" });
    const move = el("button", { textContent: `Move to ${s.suggested}` });
    const del = el("button", { className: "danger", textContent: "Delete" });
    const row = el("div", { className: "suspect" }, img,
      el("div", {}, el("b", {}, s.photo), ` filed as ${s.class} (${pct(s.p_label)}), looks like ${s.suggested} (${pct(s.p_suggested)}) `,
        el("div", { className: "row" }, move, del), msg));
    row.dataset.testid = "suspect";
    const act = async (method, url, body, done) => {
      try { await api(method, url, body); row.replaceChildren(el("span", { className: "hint" }, done)); await refresh(); }
      catch (e) { show(msg, e.message, "error"); }
    };
    const base = "/api/classes/" + enc(s.class) + "/photos/" + enc(s.photo);
    move.addEventListener("click", () => {
      if (confirm(`Move "${s.photo}" from ${s.class} to ${s.suggested}?`))
        act("POST", base + "/move", { to: s.suggested }, `${s.photo} moved to ${s.suggested}; train again to use it.`);
    });
    del.addEventListener("click", () => {
      if (confirm(`Delete "${s.photo}" from ${s.class}? It goes to the project's .diycnn/trash folder.`))
        act("DELETE", base, undefined, `${s.photo} moved to the project's trash.`);
    });
    list.append(row);
  }
  return out;
}

function renderBars(r) {
  const box = $("#bars"); box.textContent = "";
  if (r.no_face) { box.append(el("p", { className: "no-face" }, "No face found: this model tells people apart by their faces.")); return; }
  if (r.unknown) box.append(el("p", { className: "no-face" },
    `None of these: far from every class (score ${r.unknown_score.toFixed(3)}, above ${r.unknown_threshold.toFixed(3)}).`));
  const top = r.label;  // the nearest class stays marked; the line above says it is none of them
  for (const [c, p] of Object.entries(r.probabilities)) {
    const row = document.createElement("div");
    row.className = "bar" + (c === top ? " top" : ""); row.dataset.cls = c;
    row.append(el("span", {}, c), el("div", { className: "track" }, el("div", { className: "fill" })), el("span", { className: "pct" }));
    $(".fill", row).style.width = (100 * p).toFixed(1) + "%";
    $(".pct", row).textContent = (100 * p).toFixed(0) + "%";
    box.append(row);
  }
}

// live: a webcam frame, whose answer is dropped if the webcam was turned off while it was on its way
async function predictBlob(blob, live = false) {
  const r = await api("POST", "/api/predict?run=" + enc($("#run-select").value), blob, true);
  if (live && !previewLoop) return r;
  renderBars(r); show($("#preview-msg"), "");
  return r;
}

$("#preview-file-btn").addEventListener("click", () => $("#preview-file").click());
$("#preview-file").addEventListener("change", async () => {
  const f = $("#preview-file").files[0]; if (!f) return;
  stopPreviewCam();
  const img = $("#preview-img"); img.src = URL.createObjectURL(f); img.style.display = "block";
  try { await predictBlob(f); } catch (e) { show($("#preview-msg"), e.message, "error"); }
  $("#preview-file").value = "";
});

function stopPreviewCam() {
  previewLoop = false; const v = $("#preview-video"); v.hidden = true; v.srcObject = null; $("#preview-cam-btn").classList.remove("active");
  $("#bars").textContent = "";  // the bars belonged to the last frame, which is gone
}
$("#preview-cam-btn").addEventListener("click", async () => {
  if (previewLoop) { stopPreviewCam(); return; }
  const v = $("#preview-video");
  try { v.srcObject = await getStream(); } catch (e) { show($("#preview-msg"), "Webcam unavailable: " + e.message, "error"); return; }
  v.hidden = false; $("#preview-img").style.display = "none"; previewLoop = true; $("#preview-cam-btn").classList.add("active");
  const step = async () => {
    if (!previewLoop) return;
    try { const b = await grab(v, 480); if (b) await predictBlob(b, true); }
    catch (e) { show($("#preview-msg"), e.message, "error"); }
    if (previewLoop) setTimeout(step, 150);
  };
  step();
});

// Code that loads the export, to copy and paste (as Teachable Machine's export dialog offers).
function renderSnippets(list) {
  const box = $("#snippets"); box.textContent = "";
  for (const sn of list) {
    const pre = el("pre", { className: "snippet", textContent: sn.code });
    pre.dataset.language = sn.language;
    const copy = el("button", { textContent: "Copy" });
    copy.addEventListener("click", async () => {
      try { await navigator.clipboard.writeText(sn.code); copy.textContent = "Copied"; }
      catch (e) { copy.textContent = "Select and copy"; }
    });
    box.append(el("div", { className: "row" }, el("b", {}, sn.language), copy), pre);
  }
}

$("#export").addEventListener("click", async () => {
  const fmt = $("#export-format").value, run = $("#run-select").value, msg = $("#export-msg");
  if (!run) { show(msg, "Train a model first.", "error"); return; }
  show(msg, `Exporting ${run} as ${fmt} (checked against the trained model)...`);
  $("#export").disabled = true;
  try {
    const r = await api("POST", `/api/export/${enc(fmt)}?run=${enc(run)}`);
    show(msg, `Ready: ${r.file} (${(r.bytes / 1e6).toFixed(1)} MB)`, "ok");
    renderSnippets(r.snippets || []);
    const a = document.createElement("a"); a.href = r.download; a.download = r.file; a.id = "export-download";
    document.body.append(a); a.click(); a.remove();
  } catch (e) { show(msg, e.message, "error"); }
  $("#export").disabled = false;
});

refresh().catch(e => show($("#class-msg"), e.message, "error"));
