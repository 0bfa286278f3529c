// Runs a diycnn TensorFlow.js export in TensorFlow.js (Node.js) on float32 inputs: the WebAssembly backend
// where it is installed (about 10x the CPU backend's speed; its binary ships inside the npm package), else CPU.
// node check.cjs EXPORT_DIR INPUT.bin '[N,H,W,3]' OUTPUT.json   (NODE_PATH: the TF.js node_modules)
// Writes {"probabilities": [...flat N x classes...], "version": "<tfjs-layers version>", "backend": "wasm"|"cpu"}.
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs-core");
require("@tensorflow/tfjs-backend-cpu");
let wasm = true;
try { require("@tensorflow/tfjs-backend-wasm"); } catch (err) { wasm = false; }
const tfl = require("@tensorflow/tfjs-layers");

async function main() {
  const [dir, input, shapeJson, output] = process.argv.slice(2);
  if (!(wasm && await tf.setBackend("wasm"))) await tf.setBackend("cpu");
  const model = JSON.parse(fs.readFileSync(path.join(dir, "model.json"), "utf8"));
  const manifest = model.weightsManifest[0];
  const chunks = manifest.paths.map((p) => fs.readFileSync(path.join(dir, p)));
  const all = Buffer.concat(chunks);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const handler = tf.io.fromMemory({ modelTopology: model.modelTopology, weightSpecs: manifest.weights, weightData });
  const net = await tfl.loadLayersModel(handler);
  const raw = fs.readFileSync(input);
  const values = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const shape = JSON.parse(shapeJson);
  const out = [];
  const per = shape.slice(1).reduce((a, b) => a * b, 1);
  for (let i = 0; i < shape[0]; i += 8) {  // small batches: bounded memory in the CPU backend
    const n = Math.min(8, shape[0] - i);
    const x = tf.tensor(values.subarray(i * per, (i + n) * per), [n, ...shape.slice(1)], "float32");
    const y = net.predict(x);
    out.push(...(await y.data()));
    tf.dispose([x, y]);
  }
  fs.writeFileSync(output, JSON.stringify({ probabilities: out, version: tfl.version_layers, backend: tf.getBackend() }));
}

main().catch((err) => { console.error(err && err.stack ? err.stack : String(err)); process.exit(1); });
