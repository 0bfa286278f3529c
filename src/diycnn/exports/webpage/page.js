// The page: loads predict.json and the TF.js model, then classifies webcam frames and chosen photos with
// predict.js. Every name shown comes from predict.json and is placed as text, never as HTML.
(function () {
  "use strict";
  const core = window.diycnnPredict;
  const $ = (id) => document.getElementById(id);
  let page = null, net = null, busy = false, stream = null;

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    node.append(...children);
    return node;
  }

  // Class bars (top class marked) and the "none of these" verdict, into `box`; data-* keep the numbers.
  function show(box, result) {
    const names = page.class_names, p = result.probabilities;
    const top = p.indexOf(Math.max(...p));
    box.textContent = "";
    box.dataset.probabilities = JSON.stringify(p);
    box.dataset.unknownScore = result.unknown_score === null ? "" : String(result.unknown_score);
    box.dataset.label = result.unknown ? "unknown" : names[top];
    const verdict = result.unknown
      ? el("p", { className: "verdict unknown", textContent: `None of these (distance ${result.unknown_score.toFixed(3)} > ${page.unknown.threshold.toFixed(3)})` })
      : el("p", { className: "verdict", textContent: `${names[top]} ${(100 * p[top]).toFixed(1)}%` });
    box.append(verdict);
    names.forEach((name, i) => {
      const bar = el("span");
      bar.style.width = `${(100 * p[i]).toFixed(1)}%`;
      box.append(el("div", { className: i === top ? "row top" : "row" }, el("span", { textContent: name }),
        el("div", { className: "bar" }, bar), el("span", { textContent: `${(100 * p[i]).toFixed(1)}%` })));
    });
  }

  function pixelsOf(source, width, height) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(source, 0, 0);
    return ctx.getImageData(0, 0, width, height).data;
  }

  async function classify(source, width, height) {
    const x = core.input(pixelsOf(source, width, height), width, height, page, 4);
    return (await core.predict(tf, net, [x], page))[0];
  }

  async function addPhoto(file) {
    const item = el("li", { className: "result" });
    item.dataset.file = file.name;
    const box = el("div", { className: "prediction" }, el("p", { textContent: `${file.name}: working…` }));
    const thumb = el("img", { alt: file.name, src: URL.createObjectURL(file) });
    item.append(thumb, box);
    $("results").prepend(item);
    try {
      // the photo's own pixels: EXIF orientation applied (as the run does), no colour-profile conversion
      const bitmap = await createImageBitmap(file, { imageOrientation: "from-image", colorSpaceConversion: "none",
        premultiplyAlpha: "none" });
      show(box, await classify(bitmap, bitmap.width, bitmap.height));
      bitmap.close();
      box.prepend(el("p", { textContent: file.name }));
    } catch (err) {
      box.textContent = "";
      box.append(el("p", { className: "error", textContent: `${file.name}: cannot read this photo (${err.message || err}).` }));
    }
    item.dataset.done = "1";
  }

  async function photos(files) {
    for (const file of files) await addPhoto(file);
  }

  async function live() {
    const video = $("video");
    if (!stream) return;
    if (!busy && video.readyState >= 2 && video.videoWidth) {
      busy = true;
      try {
        show($("live"), await classify(video, video.videoWidth, video.videoHeight));
        $("live").dataset.frames = String(Number($("live").dataset.frames || 0) + 1);
      } finally { busy = false; }
    }
    requestAnimationFrame(live);
  }

  async function camera() {
    const video = $("video"), button = $("camera");
    if (stream) {
      stream.getTracks().forEach((t) => t.stop());
      stream = null;
      video.hidden = true;
      button.textContent = "Start the webcam";
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (err) {
      $("live").textContent = `No webcam: ${err.message || err} (a webcam needs https or localhost).`;
      return;
    }
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    button.textContent = "Stop the webcam";
    requestAnimationFrame(live);
  }

  async function start() {
    try {
      page = await (await fetch("predict.json")).json();
      tf.wasm.setWasmPaths(new URL("tf/", location.href).href);
      const wasm = await tf.setBackend("wasm").catch(() => false);
      if (!wasm) await tf.setBackend("cpu");
      net = core.withFeatures(tf, await tf.loadLayersModel("model.json"));
      document.title = `${page.run}: diycnn classifier`;
      $("title").textContent = page.run;
      const acc = page.test_accuracy === null ? "" : `, test accuracy ${(100 * page.test_accuracy).toFixed(1)}%`;
      $("about").textContent = `Classes: ${page.class_names.join(", ")}${acc}.` +
        (page.unknown ? " It says \"none of these\" when a photo is far from every class." : "");
      $("status").textContent = `Ready (TensorFlow.js ${tf.version_core}, ${tf.getBackend()} backend).`;
      document.body.dataset.ready = "1";
      $("camera").disabled = false;
      $("upload").disabled = false;
      if ("serviceWorker" in navigator && window.isSecureContext) navigator.serviceWorker.register("sw.js").catch(() => {});
    } catch (err) {
      $("status").textContent = `The model could not be loaded: ${err.message || err}. Serve this folder over HTTP ` +
        "(python -m http.server), not from file://.";
      $("status").className = "error";
    }
  }

  $("camera").addEventListener("click", camera);
  $("upload").addEventListener("change", (e) => photos([...e.target.files]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    photos([...e.dataTransfer.files].filter((f) => f.type.startsWith("image/")));
  });
  start();
})();
