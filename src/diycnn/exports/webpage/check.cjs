// Runs a diycnn TF.js export's own prediction code (predict.js, predict.json) under Node.js, on whole decoded
// photos: its resizing, scaling, TensorFlow.js model and "none of these" score, as a page runs them.
// node check.cjs EXPORT_DIR PHOTOS.bin SIZES.json OUTPUT.json [prepared]   (NODE_PATH: the TF.js node_modules)
// PHOTOS.bin: the photos' RGB bytes one after the other; SIZES.json: [[height, width], ...]. With "prepared",
// the photos are already the model's input size (e.g. aligned faces from predict.py --save-inputs): no resizing.
// Writes {"results": [{probabilities, unknown_score, unknown}], "inputs": [[...uint8 the model saw...]], backend}.
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs-core");
require("@tensorflow/tfjs-backend-cpu");
let wasm = true;
try { require("@tensorflow/tfjs-backend-wasm"); } catch (err) { wasm = false; }
const tfl = require("@tensorflow/tfjs-layers");
tf.layers = tfl.layers;
tf.model = tfl.model;
const core = require(path.join(process.argv[2], "predict.js"));

async function main() {
  const [dir, photos, sizesFile, output, mode] = process.argv.slice(2);
  const prepared = mode === "prepared";
  if (!(wasm && await tf.setBackend("wasm"))) await tf.setBackend("cpu");
  const page = JSON.parse(fs.readFileSync(path.join(dir, "predict.json"), "utf8"));
  const model = JSON.parse(fs.readFileSync(path.join(dir, "model.json"), "utf8"));
  const manifest = model.weightsManifest[0];
  const all = Buffer.concat(manifest.paths.map((p) => fs.readFileSync(path.join(dir, p))));
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const loaded = await tfl.loadLayersModel(
    tf.io.fromMemory({ modelTopology: model.modelTopology, weightSpecs: manifest.weights, weightData }));
  const net = page.unknown ? core.withFeatures(tf, loaded) : loaded;
  const raw = fs.readFileSync(photos), sizes = JSON.parse(fs.readFileSync(sizesFile, "utf8"));
  const results = [], inputs = [];
  let offset = 0, batch = [];
  const flush = async () => { if (batch.length) results.push(...await core.predict(tf, net, batch, page)); batch = []; };
  for (const [h, w] of sizes) {
    const rgb = new Uint8Array(raw.buffer, raw.byteOffset + offset, h * w * 3);
    offset += h * w * 3;
    if (prepared) {
      batch.push(core.normalise(rgb, page.preprocessing));
    } else {
      inputs.push(Array.from(core.prepare(rgb, w, h, page.preprocessing).pixels));
      batch.push(core.input(rgb, w, h, page, 3));
    }
    if (batch.length === 8) await flush();
  }
  await flush();
  fs.writeFileSync(output, JSON.stringify({ results, inputs, backend: tf.getBackend(), version: tfl.version_layers }));
}

main().catch((err) => { console.error(err && err.stack ? err.stack : String(err)); process.exit(1); });
