// Runs face-api.js's own FaceRecognitionNet (from the npm package's dist/face-api.node.js) on
// TensorFlow.js' pure-JavaScript CPU backend, for the test that compares diycnn's port with it.
// face-api.node.js asks for '@tensorflow/tfjs-node' (native, not installable offline): that
// name is answered with '@tensorflow/tfjs' from the node_modules folder given.
// usage: node face_api_check.cjs NODE_MODULES FACE_API_JS MODEL_DIR INPUT.bin N OUTPUT.bin [landmarks]
// (with 'landmarks': FaceLandmark68Net on (N, 112, 112, 3) inputs, its raw (N, 136) output)
const Module = require('module');
const path = require('path');
const fs = require('fs');
const [mods, faceApiJs, modelDir, inputFile, n, outputFile, which] = process.argv.slice(2);
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === '@tensorflow/tfjs-node') return path.join(mods, '@tensorflow/tfjs/dist/tf.node.js');
  return resolve.call(this, request, ...rest);
};
(async () => {
  const faceapi = require(path.resolve(faceApiJs));
  const tf = faceapi.tf;
  await tf.setBackend('cpu');
  await tf.ready();
  const model = which === 'landmarks' ? 'face_landmark_68_model' : 'face_recognition_model';
  const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, `${model}-weights_manifest.json`)));
  const bin = fs.readFileSync(path.join(modelDir, `${model}.bin`));
  const weights = tf.io.decodeWeights(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength), manifest[0].weights);
  const net = which === 'landmarks' ? new faceapi.FaceLandmark68Net() : new faceapi.FaceRecognitionNet();
  net.loadFromWeightMap(weights);
  const size = which === 'landmarks' ? 112 : 150;
  const raw = fs.readFileSync(inputFile);
  const x = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4), [Number(n), size, size, 3]);
  const input = await faceapi.toNetInput(tf.unstack(x));
  const out = which === 'landmarks' ? net.runNet(input) : net.forwardInput(input);
  fs.writeFileSync(outputFile, Buffer.from(out.dataSync().buffer));
})().catch((e) => { console.error(e); process.exit(1); });
