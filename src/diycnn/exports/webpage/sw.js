// Keeps every file of the page, so it opens again with no network once it has loaded once.
const CACHE = "diycnn-page-v2";
const FILES = ["./", "index.html", "style.css", "predict.js", "page.js", "predict.json", "model.json", "weights.bin",
  "labels.txt", "metadata.json", "tf/tf-core.min.js", "tf/tf-backend-cpu.min.js", "tf/tf-backend-wasm.min.js",
  "tf/tf-layers.min.js", "tf/tfjs-backend-wasm.wasm", "tf/tfjs-backend-wasm-simd.wasm",
  "tf/tfjs-backend-wasm-threaded-simd.wasm"];
self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (event) => { event.waitUntil(self.clients.claim()); });
self.addEventListener("fetch", (event) => {  // the network first (a new export replaces the files), the cache offline
  if (event.request.method !== "GET") return;
  event.respondWith(fetch(event.request).then((response) => {
    if (response.ok) { const copy = response.clone(); caches.open(CACHE).then((cache) => cache.put(event.request, copy)); }
    return response;
  }).catch(() => caches.match(event.request, { ignoreSearch: true })));
});
