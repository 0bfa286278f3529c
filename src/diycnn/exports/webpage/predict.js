// diycnn's TensorFlow.js exports (tfjs, tm, webpage): a photo's pixels -> the run's class probabilities and
// its "none of these" score, in TensorFlow.js. The same file runs in a page (window.diycnnPredict) and under
// Node.js (require), where diycnn checks it against the run at export time.
//
// The resizing is Pillow's, reproduced to the pixel (its two-pass convolution with 22-bit fixed-point
// weights, horizontal pass first; nearest neighbour by its affine rule), so the page feeds the model what
// the run fed it. predict.json (written by diycnn) holds the preprocessing, the class names, the class means
// and the threshold.
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.diycnnPredict = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const PRECISION_BITS = 22;  // Pillow's 8-bit resampling: 32 - 8 - 2
  const ONE = 2 ** PRECISION_BITS;
  const FILTERS = {  // Pillow's filters and their support
    bilinear: [1, (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; }],
    bicubic: [2, (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    }],
    lanczos: [3, (x) => {
      const sinc = (v) => { if (v === 0) return 1; v *= Math.PI; return Math.sin(v) / v; };
      return x > -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0;
    }],
  };

  // One axis' weights, as Pillow's precompute_coeffs + normalize_coeffs_8bpc make them.
  function coefficients(inSize, outSize, filter) {
    const [support0, fn] = FILTERS[filter];
    const scale = inSize / outSize;
    const filterscale = Math.max(scale, 1);
    const support = support0 * filterscale;
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2);
    const kk = new Float64Array(outSize * ksize);
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const ss = 1 / filterscale;
      let xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0;
      for (let x = 0; x < xmax; x++) {
        const w = fn((x + xmin - center + 0.5) * ss);
        kk[xx * ksize + x] = w;
        ww += w;
      }
      for (let x = 0; x < xmax; x++) if (ww !== 0) kk[xx * ksize + x] /= ww;
      bounds[xx * 2] = xmin;
      bounds[xx * 2 + 1] = xmax;
    }
    const fixed = new Float64Array(kk.length);  // integers, held exactly in doubles
    for (let i = 0; i < kk.length; i++) fixed[i] = kk[i] < 0 ? Math.trunc(-0.5 + kk[i] * ONE) : Math.trunc(0.5 + kk[i] * ONE);
    return { ksize, bounds, k: fixed };
  }

  function clip8(sum) {
    const v = Math.floor(sum / ONE);
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }

  function horizontal(src, w, rows, firstRow, outW, c) {
    const out = new Uint8Array(outW * rows * 3);
    for (let y = 0; y < rows; y++) {
      const row = (y + firstRow) * w * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = c.bounds[xx * 2], xmax = c.bounds[xx * 2 + 1], k = xx * c.ksize;
        for (let b = 0; b < 3; b++) {
          let ss = ONE / 2;
          for (let x = 0; x < xmax; x++) ss += src[row + (x + xmin) * 3 + b] * c.k[k + x];
          out[(y * outW + xx) * 3 + b] = clip8(ss);
        }
      }
    }
    return out;
  }

  function vertical(src, w, outH, shift, c) {
    const out = new Uint8Array(w * outH * 3);
    for (let yy = 0; yy < outH; yy++) {
      const ymin = c.bounds[yy * 2] - shift, ymax = c.bounds[yy * 2 + 1], k = yy * c.ksize;
      for (let xx = 0; xx < w; xx++) {
        for (let b = 0; b < 3; b++) {
          let ss = ONE / 2;
          for (let y = 0; y < ymax; y++) ss += src[((y + ymin) * w + xx) * 3 + b] * c.k[k + y];
          out[(yy * w + xx) * 3 + b] = clip8(ss);
        }
      }
    }
    return out;
  }

  // Pillow's NEAREST resize: its affine scaling, sampled at pixel centres with positions accumulated in
  // doubles (ImagingTransformAffine in its Geometry.c).
  function nearest(src, w, h, outW, outH) {
    const out = new Uint8Array(outW * outH * 3);
    const ax = w / outW, ay = h / outH, xin = new Int32Array(outW);
    let xo = ax * 0.5;
    for (let x = 0; x < outW; x++, xo += ax) xin[x] = xo < 0 ? -1 : Math.trunc(xo);
    let yo = ay * 0.5;
    for (let y = 0; y < outH; y++, yo += ay) {
      const yi = yo < 0 ? -1 : Math.trunc(yo);
      if (yi < 0 || yi >= h) continue;
      for (let x = 0; x < outW; x++) {
        if (xin[x] < 0 || xin[x] >= w) continue;
        for (let b = 0; b < 3; b++) out[(y * outW + x) * 3 + b] = src[(yi * w + xin[x]) * 3 + b];
      }
    }
    return out;
  }

  // Pillow's Image.resize((outW, outH), filter) of RGB pixels (Uint8 array, h x w x 3).
  function resize(src, w, h, outW, outH, filter) {
    if (outW === w && outH === h) return src.slice();
    if (filter === "nearest") return nearest(src, w, h, outW, outH);
    if (!(filter in FILTERS)) throw new Error(`interpolation '${filter}' is not supported by the page`);
    const cx = coefficients(w, outW, filter), cy = coefficients(h, outH, filter);
    let pixels = src, width = w, shift = 0;
    if (outW !== w) {
      const first = cy.bounds[0], last = cy.bounds[outH * 2 - 2] + cy.bounds[outH * 2 - 1];
      pixels = horizontal(src, w, last - first, first, outW, cx);
      width = outW;
      shift = first;
    }
    return outH !== h ? vertical(pixels, width, outH, shift, cy) : pixels;
  }

  function crop(src, w, left, top, cw, ch) {
    const out = new Uint8Array(cw * ch * 3);
    for (let y = 0; y < ch; y++) out.set(src.subarray(((y + top) * w + left) * 3, ((y + top) * w + left + cw) * 3), y * cw * 3);
    return out;
  }

  // RGBA (canvas ImageData) -> RGB, transparent pixels over the run's background as Pillow pastes them.
  function rgbOf(rgba, background) {
    const n = rgba.length / 4, out = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) {
      const a = rgba[i * 4 + 3];
      for (let b = 0; b < 3; b++) {
        if (a === 255) { out[i * 3 + b] = rgba[i * 4 + b]; continue; }
        const t = background[b] * (255 - a) + rgba[i * 4 + b] * a + 128;
        out[i * 3 + b] = ((t >> 8) + t) >> 8;
      }
    }
    return out;
  }

  // The run's resizing (data/images.py Preprocessing.resize_image): RGB (h x w x 3) -> the model's input size.
  function prepare(rgb, w, h, prep) {
    const [sh, sw] = prep.size;
    let pixels = rgb, width = w, height = h;
    if (prep.resize === "center-crop") {
      const side = Math.min(w, h);
      pixels = crop(rgb, w, Math.floor((w - side) / 2), Math.floor((h - side) / 2), side, side);
      width = height = side;
      pixels = resize(pixels, width, height, sw, sh, prep.interpolation);
      width = sw; height = sh;
    } else if (prep.resize === "shorter") {
      const short = Math.min(w, h), long = Math.max(w, h);
      const longNew = Math.max(Math.trunc(sh * long / short), sh);
      const [nw, nh] = w <= h ? [sh, longNew] : [longNew, sh];
      pixels = resize(pixels, w, h, nw, nh, prep.interpolation);
      width = nw; height = nh;
    } else {
      pixels = resize(pixels, w, h, sw, sh, prep.interpolation);
      width = sw; height = sh;
    }
    if (prep.crop) {
      const [ch, cw] = prep.crop;
      pixels = crop(pixels, width, Math.floor((width - cw) / 2), Math.floor((height - ch) / 2), cw, ch);
      width = cw; height = ch;
    }
    return { pixels, width, height };
  }

  // uint8 RGB -> float32 scaled and normalised as the run does (each step rounded to float32, as torch does).
  function normalise(pixels, prep) {
    const f = Math.fround, out = new Float32Array(pixels.length);
    const scale = f(prep.input_scale), mean = prep.mean.map(f), std = prep.std.map(f);
    for (let i = 0; i < pixels.length; i++) out[i] = f(f(f(pixels[i] * scale) - mean[i % 3]) / std[i % 3]);
    return out;
  }

  // The layers model with a second output: the input of its last Dense layer (the features the run's
  // "none of these" score reads).
  function withFeatures(tf, model) {
    const dense = [...model.layers].reverse().find((l) => l.getClassName() === "Dense");
    if (!dense) throw new Error("the model has no Dense layer to read features from");
    return tf.model({ inputs: model.inputs, outputs: [model.outputs[0], dense.input] });
  }

  // 1 - cosine similarity to the nearest class mean; given the unknown folder's mean (unit length),
  // minus `weight` times the cosine distance to it
  function unknownScore(features, dim, means, cohort, weight) {
    let norm = 0;
    for (let j = 0; j < dim; j++) norm += features[j] * features[j];
    norm = Math.max(Math.sqrt(norm), 1e-12);
    const cosine = (m) => {
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += features[j] * m[j];
      return dot / norm;
    };
    let best = -Infinity;
    for (const m of means) best = Math.max(best, cosine(m));
    return 1 - best - (cohort ? weight * (1 - cosine(cohort)) : 0);
  }

  // Probabilities (per class) and the unknown score (null without a detector) of prepared photos.
  async function predict(tf, net, batch, page) {
    const [h, w] = page.input_size, n = batch.length, per = h * w * 3;
    const flat = new Float32Array(n * per);
    batch.forEach((x, i) => flat.set(x, i * per));
    const x = tf.tensor(flat, [n, h, w, 3], "float32");
    const views = page.tta ? [x, tf.reverse(x, 2)] : [x];
    const classes = page.class_names.length, probs = new Float64Array(n * classes), scores = new Float64Array(n);
    const means = page.unknown ? page.unknown.class_means : null;
    for (const v of views) {
      const out = net.predict(v), [p, feats] = Array.isArray(out) ? out : [out, null];
      if (means && !feats) throw new Error("the model gives no features: wrap it with withFeatures(tf, model)");
      const pd = await p.data();
      for (let i = 0; i < n * classes; i++) probs[i] += pd[i] / views.length;
      if (means) {
        const fd = await feats.data(), dim = fd.length / n;
        const u = page.unknown;
        for (let i = 0; i < n; i++) {
          scores[i] += unknownScore(fd.subarray(i * dim, (i + 1) * dim), dim, means, u.cohort_mean, u.cohort_weight) / views.length;
        }
      }
      tf.dispose(Array.isArray(out) ? out : [out]);
    }
    tf.dispose(views);
    return Array.from({ length: n }, (_, i) => {
      const p = Array.from(probs.subarray(i * classes, (i + 1) * classes));
      const score = means ? scores[i] : null;
      return { probabilities: p, unknown_score: score, unknown: means ? score > page.unknown.threshold : false };
    });
  }

  // One photo's pixels (RGBA from a canvas, or RGB) -> the model's float32 input.
  function input(pixels, w, h, page, channels) {
    const rgb = channels === 4 ? rgbOf(pixels, page.preprocessing.background) : pixels;
    return normalise(prepare(rgb, w, h, page.preprocessing).pixels, page.preprocessing);
  }

  return { resize, prepare, normalise, rgbOf, withFeatures, unknownScore, predict, input };
});
