// The standalone FEATVIZ page (lightning_featviz/dashboard/standalone.py): the tab's requests answered from the
// routes' answers the page carries (gzip-compressed JSON in base64, in <script id="featviz-data">), as
// window.featvizLocal, which index.js asks instead of the plugin's routes. The inspector's answers, one per sample
// and epoch, are made here from each epoch's (N, k) neighbour rows and distances (and the label-issue layer's
// trajectories and their words), as the plugin's inspect route does.
let data = null; // the answers, once unpacked
const bytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
function half(bits) { // an IEEE 754 half-precision number from its 16 bits
  const sign = bits >> 15 ? -1 : 1, exponent = (bits >> 10) & 31, fraction = bits & 1023;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}
const ARRAYS = { '<u2': Uint16Array, '<i4': Int32Array };
const decoded = ([type, text]) => (type === '<f2' ? Float32Array.from(new Uint16Array(bytes(text).buffer), half)
  : new ARRAYS[type](bytes(text).buffer));
const loaded = (async () => {
  const packed = new Blob([bytes(document.getElementById('featviz-data').textContent.trim())]);
  data = JSON.parse(await new Response(packed.stream().pipeThrough(new DecompressionStream('gzip'))).text());
  for (const epoch of Object.values(data.inspect)) {
    for (const layer of epoch.layers) {
      for (const key of ['neighbours', 'distances', 'purity']) layer[key] = decoded(layer[key]);
    }
    const trajectory = epoch.trajectory;
    if (trajectory) {
      trajectory.probability = decoded(trajectory.probability);
      if (trajectory.words) trajectory.words = [decoded(trajectory.words[0]), trajectory.words[1]];
    }
  }
})();
const round = (value) => (Number.isNaN(value) ? null : Math.round(value * 1000) / 1000);
function inspect(params) {
  const epoch = data.inspect[params.epoch], row = Number(params.row), k = data.k;
  if (!epoch || !(row >= 0 && row < epoch.predictions.length)) return undefined;
  const rowOf = (array) => Array.from(array.subarray(row * k, (row + 1) * k));
  return { epoch: Number(params.epoch), row, prediction: epoch.predictions[row], reference: epoch.reference,
    layers: epoch.layers.map((layer) => ({ name: layer.name, neighbours: rowOf(layer.neighbours),
      distances: rowOf(layer.distances).map(round), purity: round(layer.purity[row]) })),
    trajectory: epoch.trajectory ? trajectoryOf(epoch.trajectory, row, epoch.predictions.length) : null };
}
// Sample `row`'s label probability per kept epoch ((E, N) row-major) and its words ('' stored: none).
function trajectoryOf(trajectory, row, count) {
  const [codes, phrases] = trajectory.words || [null, null];
  return { layer: trajectory.layer, epochs: trajectory.epochs,
    probability: trajectory.epochs.map((_, e) => round(trajectory.probability[e * count + row])),
    words: codes ? phrases[codes[row]] || null : null };
}
window.featvizLocal = {
  async answer(path, params) {
    await loaded;
    const found = {
      runs: () => data.runs, run: () => data.run, samples: () => data.samples[params.key],
      layer: () => data.layers[params.layer], wrong: () => data.wrong[`${params.epoch}/${params.layer}`],
      inspect: () => inspect(params),
    }[path]?.();
    if (found === undefined) throw new Error(`This page holds no answer to ${path} ${JSON.stringify(params)}.`);
    return found;
  },
  atlas: (key, page) => data.atlas[`${key}/${page}`],
};
