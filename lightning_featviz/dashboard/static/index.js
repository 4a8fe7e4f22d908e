// The FEATVIZ tab: what every layer learned, epoch by epoch. Plain ES module, no build step, nothing fetched
// from outside TensorBoard. TensorBoard loads it in an iframe whose <base> is this plugin's route prefix, so
// relative URLs ("run?run=...") reach lightning_featviz/dashboard/plugin.py.
//
// Timings for the benchmark and the tests live in window.featviz: `ready` (performance.timeOrigin-based
// milliseconds when the heatmap and the map were first drawn), `redraws` (milliseconds of canvas drawing per map)
// and `epochs` (milliseconds from a slider step to the animation frame that shows its map).

const PALETTE = [
  '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf',
  '#aec7e8', '#ffbb78', '#98df8a', '#ff9896', '#c5b0d5', '#c49c94', '#f7b6d2', '#c7c7c7', '#dbdb8d', '#9edae5',
];
const THUMB = 48; // px a thumbnail is shown at

const state = {
  runs: [], run: null, index: null, layer: null, epoch: null, colour: 'class', measure: 'purity',
  compare: '', layerData: {}, samples: {}, hover: -1, selection: [], playing: null, review: [],
};
const timings = { ready: null, redraws: [], epochs: [] };
window.featviz = timings;
// Where a sample's point is drawn in the main map (viewport pixels of this frame), for tests and screenshots.
timings.screenPosition = async (row) => {
  const canvas = document.getElementById('map'), data = await layerOf(state.run, state.layer);
  const map = data.byEpoch.get(state.epoch).map, [sx, sy] = project(data, canvas);
  const rect = canvas.getBoundingClientRect();
  return [rect.left + sx(map[2 * row]) * (rect.width / canvas.width),
    rect.top + sy(map[2 * row + 1]) * (rect.height / canvas.height)];
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'style') node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function getJSON(path, params) {
  const response = await fetch(`${path}?${new URLSearchParams(params)}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

const classColour = (c) => (c < PALETTE.length ? PALETTE[c] : `hsl(${(c * 137.5) % 360}, 65%, 50%)`);

function viridis(t) {
  // A short viridis-like ramp: dark purple (0) -> teal -> yellow (1).
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  if (t === null || Number.isNaN(t)) return 'rgb(220,220,220)';
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i, [a, b] = [stops[i], stops[i + 1]];
  return `rgb(${a.map((v, j) => Math.round(v + f * (b[j] - v))).join(',')})`;
}

// ------------------------------------------------------------------ data

async function samplesOf(run, key) {
  const id = `${run}\u0000${key}`;
  if (!state.samples[id]) {
    const described = await getJSON('samples', { run, key });
    described.rowOf = new Map(described.indices.map((index, row) => [index, row]));
    described.atlas = `atlas?${new URLSearchParams({ run, key })}`;
    state.samples[id] = described;
  }
  return state.samples[id];
}

// (2M,) x, y pairs centred and divided by their RMS radius (NaN pairs left out and kept): warm-started t-SNE maps
// keep their orientation but contract from epoch to epoch, so each epoch is shown at one size.
function normalised(coords) {
  let [n, mx, my, squares] = [0, 0, 0, 0];
  for (let i = 0; i < coords.length; i += 2) {
    if (Number.isNaN(coords[i]) || Number.isNaN(coords[i + 1])) continue;
    n += 1; mx += coords[i]; my += coords[i + 1];
  }
  if (!n) return coords;
  [mx, my] = [mx / n, my / n];
  for (let i = 0; i < coords.length; i += 2) {
    if (Number.isNaN(coords[i]) || Number.isNaN(coords[i + 1])) continue;
    squares += (coords[i] - mx) ** 2 + (coords[i + 1] - my) ** 2;
  }
  const radius = Math.sqrt(squares / n) || 1;
  return coords.map((v, i) => (v - (i % 2 ? my : mx)) / radius);
}

async function layerOf(run, layer) {
  const id = `${run}\u0000${layer}`;
  if (!state.layerData[id]) {
    const data = await getJSON('layer', { run, layer });
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (const epoch of data.epochs) {
      const m = epoch.maps[2];
      if (!m) continue;
      // map[2 * row], map[2 * row + 1]: a bank row's point; NaN for a row a subsample's map leaves out (the
      // canvas draws nothing at NaN, and no comparison picks it)
      const coords = normalised(Float32Array.from(m, (v) => (v === null ? NaN : v)));
      epoch.map = coords;
      if (epoch.rows) {
        epoch.map = new Float32Array(2 * epoch.predictions.length).fill(NaN);
        epoch.rows.forEach((row, j) => {
          epoch.map[2 * row] = coords[2 * j];
          epoch.map[2 * row + 1] = coords[2 * j + 1];
        });
      }
      for (let i = 0; i < coords.length; i += 2) {
        if (Number.isNaN(coords[i]) || Number.isNaN(coords[i + 1])) continue;
        x0 = Math.min(x0, coords[i]); x1 = Math.max(x1, coords[i]);
        y0 = Math.min(y0, coords[i + 1]); y1 = Math.max(y1, coords[i + 1]);
      }
      epoch.flaggedSet = new Map(epoch.flagged.map((row, j) => [row, epoch.cluster[j]]));
    }
    data.bounds = [x0, x1, y0, y1]; // shared by every epoch: aligned (and normalised) maps keep their place
    data.byEpoch = new Map(data.epochs.map((e) => [e.epoch, e]));
    state.layerData[id] = data;
  }
  return state.layerData[id];
}

function epochEntry(epoch = state.epoch) {
  return state.index.epochs.find((e) => e.epoch === epoch);
}

// ------------------------------------------------------------------ thumbnails

function thumb(samples, row, { size = THUMB, mark = '', caption = null } = {}) {
  const node = el('div', { class: `thumb ${mark}`, 'data-row': row, 'data-index': samples.indices[row] });
  if (samples.thumbnail) {
    const t = samples.thumbnail, scale = size / t, cols = samples.columns, tile = row % samples.tiles;
    const [r, c] = [Math.floor(tile / cols), tile % cols], page = Math.floor(row / samples.tiles);
    node.style.cssText = `width:${size}px;height:${size}px;background-image:url("${samples.atlas}&page=${page}");` +
      `background-size:${cols * t * scale}px auto;background-position:${-c * size}px ${-r * size}px`;
  } else {
    node.style.cssText = `width:${size}px;height:${size}px`;
    node.textContent = samples.indices[row];
  }
  node.title = `#${samples.indices[row]} · ${state.index.class_names[samples.labels[row]]}`;
  return caption === null ? node : el('figure', { class: 'captioned' }, node, el('figcaption', {}, caption));
}

// ------------------------------------------------------------------ heatmap

function drawHeatmap() {
  const box = document.getElementById('heatmap');
  const epochs = state.index.epochs, names = [];
  for (const e of epochs) for (const l of e.layers) if (!names.includes(l.name)) names.push(l.name);
  const table = el('table', { class: 'heatmap' });
  table.append(el('tr', {}, el('th', {}, `layer \\ epoch`), ...epochs.map((e) => el('th', {}, String(e.epoch)))));
  for (const name of names) {
    const row = el('tr', {}, el('th', { class: 'layer-name' }, name));
    for (const e of epochs) {
      const layer = e.layers.find((l) => l.name === name), value = layer ? layer[state.measure] : null;
      const selected = name === state.layer && e.epoch === state.epoch;
      const cell = el('td', {
        class: `cell${selected ? ' selected' : ''}`, 'data-layer': name, 'data-epoch': e.epoch,
        style: `background:${viridis(value)};color:${value !== null && value > 0.6 ? '#000' : '#fff'}`,
        onclick: () => select(name, e.epoch),
      }, value === null || value === undefined ? '–' : value.toFixed(2));
      cell.title = `${name}, epoch ${e.epoch}: ${state.measure} ${value === null ? 'undefined' : value.toFixed(3)}`;
      row.append(cell);
    }
    table.append(row);
  }
  box.replaceChildren(table);
}

// ------------------------------------------------------------------ map

function pointColour(epochData, samples, row, labelOf) {
  const label = labelOf(row), pred = epochData.predictions[row];
  switch (state.colour) {
    case 'prediction': return pred < 0 ? '#bbb' : classColour(pred);
    case 'correct': return pred < 0 ? '#bbb' : pred === label ? '#2ca02c' : '#d62728';
    case 'wrong': return epochData.flaggedSet.has(row) ? '#d62728' : '#d0d0d0';
    case 'purity': return viridis(epochData.purity[row]);
    default: return classColour(label);
  }
}

function project(data, canvas) {
  const [x0, x1, y0, y1] = data.bounds, pad = 12;
  const scale = Math.min((canvas.width - 2 * pad) / (x1 - x0 || 1), (canvas.height - 2 * pad) / (y1 - y0 || 1));
  const ox = (canvas.width - scale * (x1 - x0)) / 2, oy = (canvas.height - scale * (y1 - y0)) / 2;
  return [(x) => ox + (x - x0) * scale, (y) => canvas.height - (oy + (y - y0) * scale)];
}

function drawMapOn(canvas, data, samples, epoch, highlight) {
  const start = performance.now();
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const epochData = data && data.byEpoch.get(epoch);
  if (!epochData || !epochData.map) {
    ctx.fillStyle = '#666';
    ctx.font = '14px sans-serif';
    ctx.fillText(data ? `no map of this layer at epoch ${epoch}` : 'no such layer in this run', 20, 30);
    return performance.now() - start;
  }
  const [sx, sy] = project(data, canvas), map = epochData.map, labels = samples.labels;
  const labelOf = (row) => labels[row];
  const selected = new Set(state.selection);
  for (let row = 0; row < labels.length; row++) {
    ctx.fillStyle = pointColour(epochData, samples, row, labelOf);
    ctx.fillRect(sx(map[2 * row]) - 2.5, sy(map[2 * row + 1]) - 2.5, 5, 5);
  }
  ctx.lineWidth = 1.5;
  if (state.colour !== 'wrong') {
    ctx.strokeStyle = '#000';
    for (const row of epochData.flagged) { // wrong-cluster samples ringed, as in the static maps
      ctx.beginPath();
      ctx.arc(sx(map[2 * row]), sy(map[2 * row + 1]), 5, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }
  ctx.strokeStyle = '#ff00ff';
  for (const row of [...selected, highlight].filter((r) => r >= 0 && r < labels.length)) {
    ctx.strokeRect(sx(map[2 * row]) - 5, sy(map[2 * row + 1]) - 5, 10, 10);
  }
  return performance.now() - start;
}

async function drawMaps() {
  const data = await layerOf(state.run, state.layer);
  const epochData = data.byEpoch.get(state.epoch);
  const samples = await samplesOf(state.run, epochData ? epochData.samples : epochEntry().samples);
  const canvas = document.getElementById('map');
  const took = drawMapOn(canvas, data, samples, state.epoch, state.hover);
  timings.redraws.push(took);
  const mapped = epochData && epochData.map && epochData.rows ? ` · map of ${epochData.rows.length} of ` +
    `${epochData.predictions.length} samples (maps.samples)` : '';
  document.getElementById('map-title').textContent = `${state.run} · ${state.layer} · epoch ${state.epoch}${mapped}`;
  const other = document.getElementById('compare-box');
  if (state.compare) {
    other.hidden = false;
    document.getElementById('compare-title').textContent = `${state.compare} · ${state.layer} · epoch ${state.epoch}`;
    let otherData = null, otherSamples = samples;
    try {
      otherData = await layerOf(state.compare, state.layer);
      const e = otherData.byEpoch.get(state.epoch);
      if (e) otherSamples = await samplesOf(state.compare, e.samples);
    } catch (error) { otherData = null; }
    drawMapOn(document.getElementById('map-compare'), otherData, otherSamples, state.epoch, -1);
  } else other.hidden = true;
  drawLegend(samples);
}

function drawLegend(samples) {
  const legend = document.getElementById('legend'), names = state.index.class_names;
  const items = {
    class: names.map((n, c) => [classColour(c), n]), prediction: names.map((n, c) => [classColour(c), n]),
    correct: [['#2ca02c', 'prediction correct'], ['#d62728', 'wrong'], ['#bbb', 'unknown']],
    wrong: [['#d62728', 'in the wrong cluster'], ['#d0d0d0', 'not flagged']],
    purity: [[viridis(0), 'purity 0'], [viridis(0.5), '0.5'], [viridis(1), '1']],
  }[state.colour];
  legend.replaceChildren(...items.slice(0, 40).map(([colour, name]) =>
    el('span', { class: 'key' }, el('i', { style: `background:${colour}` }), name)));
  if (state.colour !== 'wrong') legend.append(el('span', { class: 'key' }, el('i', { class: 'ring' }), 'wrong cluster'));
}

async function nearestRow(event) {
  const canvas = document.getElementById('map'), data = await layerOf(state.run, state.layer);
  const epochData = data.byEpoch.get(state.epoch);
  if (!epochData || !epochData.map) return -1;
  const rect = canvas.getBoundingClientRect();
  const px = (event.clientX - rect.left) * (canvas.width / rect.width);
  const py = (event.clientY - rect.top) * (canvas.height / rect.height);
  const [sx, sy] = project(data, canvas), map = epochData.map;
  let best = -1, bestDistance = 8 * 8;
  for (let row = 0; row < map.length / 2; row++) {
    const d = (sx(map[2 * row]) - px) ** 2 + (sy(map[2 * row + 1]) - py) ** 2;
    if (d < bestDistance) [best, bestDistance] = [row, d];
  }
  return best;
}

function rowsInBox(data, canvas, box) {
  const epochData = data.byEpoch.get(state.epoch);
  if (!epochData || !epochData.map) return [];
  const [sx, sy] = project(data, canvas), map = epochData.map, rows = [];
  const [xa, xb] = [Math.min(box[0], box[2]), Math.max(box[0], box[2])];
  const [ya, yb] = [Math.min(box[1], box[3]), Math.max(box[1], box[3])];
  for (let row = 0; row < map.length / 2; row++) {
    const [x, y] = [sx(map[2 * row]), sy(map[2 * row + 1])];
    if (x >= xa && x <= xb && y >= ya && y <= yb) rows.push(row);
  }
  return rows;
}

async function showTooltip(event, row) {
  const tip = document.getElementById('tooltip');
  if (row < 0) { tip.hidden = true; return; }
  const data = await layerOf(state.run, state.layer), epochData = data.byEpoch.get(state.epoch);
  const samples = await samplesOf(state.run, epochData.samples), names = state.index.class_names;
  const pred = epochData.predictions[row], purity = epochData.purity[row];
  tip.replaceChildren(thumb(samples, row, { size: 64 }), el('div', {},
    el('b', {}, `#${samples.indices[row]}`), el('br'), `label: ${names[samples.labels[row]]}`, el('br'),
    `prediction: ${pred < 0 ? 'unknown' : names[pred]}`, el('br'),
    `purity: ${purity === null ? 'undefined' : purity.toFixed(2)}`,
    ...(epochData.flaggedSet.has(row) ? [el('br'), `among ${names[epochData.flaggedSet.get(row)]}`] : [])));
  const host = document.getElementById('map').parentElement.getBoundingClientRect();
  tip.style.left = `${event.clientX - host.left + 14}px`;
  tip.style.top = `${event.clientY - host.top + 14}px`;
  tip.hidden = false;
}

function attachMapEvents() {
  const canvas = document.getElementById('map');
  let dragFrom = null;
  canvas.addEventListener('mousedown', (event) => { dragFrom = [event.clientX, event.clientY]; });
  canvas.addEventListener('mousemove', async (event) => {
    const row = await nearestRow(event);
    showTooltip(event, row);
    if (dragFrom) {
      const band = document.getElementById('band'), host = canvas.parentElement.getBoundingClientRect();
      band.hidden = false;
      band.style.left = `${Math.min(dragFrom[0], event.clientX) - host.left}px`;
      band.style.top = `${Math.min(dragFrom[1], event.clientY) - host.top}px`;
      band.style.width = `${Math.abs(event.clientX - dragFrom[0])}px`;
      band.style.height = `${Math.abs(event.clientY - dragFrom[1])}px`;
    }
  });
  canvas.addEventListener('mouseleave', () => { document.getElementById('tooltip').hidden = true; });
  canvas.addEventListener('mouseup', async (event) => {
    const from = dragFrom;
    dragFrom = null;
    document.getElementById('band').hidden = true;
    if (!from) return;
    if (Math.abs(event.clientX - from[0]) + Math.abs(event.clientY - from[1]) < 5) {
      const row = await nearestRow(event);
      if (row >= 0) inspect(row);
      return;
    }
    const rect = canvas.getBoundingClientRect(), sx = canvas.width / rect.width, sy = canvas.height / rect.height;
    const box = [(from[0] - rect.left) * sx, (from[1] - rect.top) * sy,
      (event.clientX - rect.left) * sx, (event.clientY - rect.top) * sy];
    state.selection = rowsInBox(await layerOf(state.run, state.layer), canvas, box);
    await drawMaps();
    await showSelection();
  });
}

async function showSelection() {
  const data = await layerOf(state.run, state.layer), epochData = data.byEpoch.get(state.epoch);
  const samples = await samplesOf(state.run, epochData.samples);
  const list = document.getElementById('selection');
  list.replaceChildren(el('h3', {}, `${state.selection.length} selected`),
    el('div', { class: 'thumbs' }, ...state.selection.slice(0, 400).map((row) => {
      const node = thumb(samples, row, { size: 40 });
      node.addEventListener('click', () => inspect(row));
      return node;
    })));
}

// ------------------------------------------------------------------ inspector

async function inspect(row) {
  state.inspected = row;
  const box = document.getElementById('inspector');
  const found = await getJSON('inspect', { run: state.run, epoch: state.epoch, row });
  const entry = epochEntry(), names = state.index.class_names;
  const samples = await samplesOf(state.run, entry.samples), reference = await samplesOf(state.run, found.reference);
  const label = samples.labels[row];
  const head = el('div', { class: 'inspected' }, thumb(samples, row, { size: 72, mark: 'query' }),
    el('div', {}, el('b', {}, `#${samples.indices[row]}`), ` label ${names[label]}, prediction `,
      found.prediction < 0 ? 'unknown' : names[found.prediction], ` · epoch ${found.epoch}`,
      samples.paths ? el('div', { class: 'path' }, samples.paths[row]) : ''));
  const rows = found.layers.map((layer) => el('div', { class: 'layer-row', 'data-layer': layer.name },
    el('div', { class: 'layer-label' }, layer.name, el('br'),
      el('small', {}, `purity ${layer.purity === null ? '–' : layer.purity.toFixed(2)}`)),
    ...layer.neighbours.map((n, j) => {
      const same = reference.labels[n] === label;
      const node = thumb(reference, n, { mark: same ? 'same' : 'other', caption: names[reference.labels[n]] });
      node.title = `#${reference.indices[n]}, ${names[reference.labels[n]]} (${same ? 'same' : 'other'} class), ` +
        `distance ${layer.distances[j]}`;
      if (found.reference === entry.samples) node.addEventListener('click', () => inspect(n));
      return node;
    })));
  box.replaceChildren(head, ...rows);
  state.hover = row;
  await drawMaps();
}

async function search(text) {
  const entry = epochEntry(), samples = await samplesOf(state.run, entry.samples), query = text.trim();
  let row = /^\d+$/.test(query) ? samples.rowOf.get(Number(query)) : undefined;
  if (row === undefined && samples.paths) row = samples.paths.findIndex((p) => p.includes(query));
  const message = document.getElementById('search-message');
  if (row === undefined || row < 0) {
    message.textContent = `no kept sample has index or path ${JSON.stringify(query)}`;
    return;
  }
  message.textContent = '';
  await inspect(row);
}

// ------------------------------------------------------------------ wrong-cluster review

async function drawReview() {
  const box = document.getElementById('review');
  let found;
  try {
    found = await getJSON('wrong', { run: state.run, epoch: state.epoch, layer: state.layer });
  } catch (error) {
    box.replaceChildren(el('p', {}, String(error.message)));
    return;
  }
  const entry = epochEntry(), names = state.index.class_names;
  const samples = await samplesOf(state.run, entry.samples), reference = await samplesOf(state.run, found.reference);
  state.review = found.rows;
  const table = el('table', { class: 'review' }, el('tr', {}, el('th', {}, ''), el('th', {}, 'image'),
    el('th', {}, 'index'), el('th', {}, 'label → suggested'), el('th', {}, 'strength'), el('th', {}, 'why'),
    el('th', {}, 'neighbours')));
  for (const item of found.rows) {
    const check = el('input', { type: 'checkbox', class: 'pick', 'data-index': item.index });
    const image = thumb(samples, item.row);
    image.addEventListener('click', () => inspect(item.row));
    table.append(el('tr', { 'data-index': item.index }, el('td', {}, check), el('td', {}, image),
      el('td', {}, String(item.index)), el('td', {}, `${names[item.label]} → ${names[item.cluster]}`),
      el('td', {}, item.strength.toFixed(2)), el('td', { class: 'reason' }, item.reason),
      el('td', { class: 'thumbs' }, ...item.neighbours.map((n) =>
        thumb(reference, n, { size: 32, mark: reference.labels[n] === item.label ? 'same' : 'other' })))));
  }
  const heading = el('p', {}, `${found.rows.length} images of ${samples.indices.length} sit in another class's ` +
    `cluster at ${found.layer}, epoch ${found.epoch} (strongest first).`);
  box.replaceChildren(heading, found.rows.length ? table : el('p', {}, 'None flagged.'));
}

function csvField(value) {
  const text = value === null || value === undefined ? '' : String(value);
  return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function downloadSelection() {
  const picked = new Set([...document.querySelectorAll('#review .pick:checked')].map((c) => Number(c.dataset.index)));
  const names = state.index.class_names;
  const lines = [['index', 'path', 'label', 'suggested_class'].join(',')];
  for (const item of state.review.filter((r) => picked.has(r.index))) {
    lines.push([item.index, item.path, names[item.label], names[item.cluster]].map(csvField).join(','));
  }
  const blob = new Blob([lines.join('\n') + '\n'], { type: 'text/csv' });
  const link = el('a', { href: URL.createObjectURL(blob), download: `featviz_relabel_epoch${state.epoch}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
}

// ------------------------------------------------------------------ controls

async function select(layer, epoch) {
  state.layer = layer;
  state.epoch = epoch;
  state.selection = [];
  const epochs = state.index.epochs.map((e) => e.epoch);
  const slider = document.getElementById('epoch');
  slider.max = String(epochs.length - 1);
  slider.value = String(epochs.indexOf(epoch));
  document.getElementById('epoch-label').textContent = `epoch ${epoch}`;
  document.getElementById('layer').value = layer;
  drawHeatmap();
  await drawMaps();
  if (timings.ready === null) { // the heatmap and the first map are on screen
    timings.ready = performance.timeOrigin + performance.now();
    performance.mark('featviz-ready');
  }
  document.body.dataset.layer = layer;
  document.body.dataset.epoch = String(epoch);
  await drawReview();
  if (state.inspected !== undefined) await inspect(state.inspected);
}

async function setEpochPosition(position) {
  const epoch = state.index.epochs[position].epoch;
  state.epoch = epoch;
  document.getElementById('epoch-label').textContent = `epoch ${epoch}`;
  document.body.dataset.epoch = String(epoch);
  const start = performance.now();
  await drawMaps();
  await new Promise((done) => requestAnimationFrame(() => done())); // until the frame that shows it
  timings.epochs.push(performance.now() - start);
  drawHeatmap();
}

async function loadRun(run) {
  state.run = run;
  document.getElementById('run').value = run; // also when opened on a run named in the address (featvizRun)
  state.index = await getJSON('run', { run });
  state.inspected = undefined;
  const last = state.index.epochs[state.index.epochs.length - 1];
  const layers = last.layers.map((l) => l.name);
  const layer = layers.includes(state.layer) ? state.layer : layers[layers.length - 1];
  document.getElementById('layer').replaceChildren(...layers.map((name) => el('option', { value: name }, name)));
  document.getElementById('compare').replaceChildren(el('option', { value: '' }, 'compare with… (none)'),
    ...state.runs.filter((r) => r.run !== run).map((r) => el('option', { value: r.run }, r.run)));
  await select(layer, last.epoch);
}

function controls() {
  const runSelect = el('select', { id: 'run', onchange: (e) => loadRun(e.target.value) },
    ...state.runs.map((r) => el('option', { value: r.run }, r.run)));
  const play = el('button', { id: 'play', onclick: () => {
    if (state.playing) { clearInterval(state.playing); state.playing = null; play.textContent = '▶ play'; return; }
    play.textContent = '■ stop';
    state.playing = setInterval(() => {
      const slider = document.getElementById('epoch');
      slider.value = String((Number(slider.value) + 1) % (Number(slider.max) + 1));
      setEpochPosition(Number(slider.value));
    }, 800);
  } }, '▶ play');
  return el('div', { class: 'controls' },
    el('label', {}, 'run ', runSelect),
    el('label', {}, 'layer ', el('select', { id: 'layer', onchange: (e) => select(e.target.value, state.epoch) })),
    el('label', {}, 'colour by ', el('select', { id: 'colour', onchange: (e) => { state.colour = e.target.value; drawMaps(); } },
      ...[['class', 'class'], ['prediction', 'prediction'], ['correct', 'correct?'], ['wrong', 'wrong cluster'],
        ['purity', 'purity']].map(([v, t]) => el('option', { value: v }, t)))),
    el('input', { id: 'epoch', type: 'range', min: '0', max: '0', step: '1', value: '0',
      oninput: (e) => setEpochPosition(Number(e.target.value)) }),
    el('span', { id: 'epoch-label' }, ''), play,
    el('select', { id: 'compare', onchange: (e) => { state.compare = e.target.value; drawMaps(); } }),
    el('button', { id: 'refresh', title: 'read the epochs written since the tab opened', onclick: async () => {
      state.runs = await getJSON('runs', {});
      state.layerData = {};
      await loadRun(state.run);
    } }, '↻ new epochs'));
}

export async function render() {
  document.head.append(el('link', { rel: 'stylesheet', href: 'style.css' }));
  document.body.classList.add('featviz');
  state.runs = await getJSON('runs', {});
  if (!state.runs.length) {
    document.body.append(el('p', {}, 'No run under this log dir holds FEATVIZ data (featviz_dashboard/).'));
    return;
  }
  const section = (id, title, ...body) => el('section', { id: `${id}-section` }, el('h2', {}, title), ...body);
  const measure = el('select', { id: 'measure', onchange: (e) => { state.measure = e.target.value; drawHeatmap(); } },
    el('option', { value: 'purity' }, 'kNN purity'), el('option', { value: 'accuracy' }, 'kNN accuracy'));
  document.body.append(
    controls(),
    el('div', { class: 'top' },
      section('heatmap', 'Layer × epoch', measure, el('div', { id: 'heatmap' }),
        el('p', { class: 'hint' }, 'Click a cell to open that layer and epoch.')),
      section('map', 'Map', el('div', { id: 'map-title', class: 'title' }),
        el('div', { class: 'maps' },
          el('div', { class: 'canvas-box' }, el('canvas', { id: 'map', width: '560', height: '460' }),
            el('div', { id: 'tooltip', class: 'tooltip', hidden: '' }), el('div', { id: 'band', hidden: '' })),
          el('div', { id: 'compare-box', hidden: '' }, el('div', { id: 'compare-title', class: 'title' }),
            el('canvas', { id: 'map-compare', width: '560', height: '460' }))),
        el('div', { id: 'legend' }),
        el('p', { class: 'hint' }, 'Hover a point for its image; click it to inspect it; drag a box to select.'),
        el('div', { id: 'selection' }))),
    section('inspector', 'Image inspector',
      el('div', { class: 'search' }, el('input', { id: 'search', placeholder: 'dataset index or path',
        onkeydown: (e) => { if (e.key === 'Enter') search(e.target.value); } }),
      el('span', { id: 'search-message' })),
      el('div', { id: 'inspector' }, el('p', { class: 'hint' }, 'Click a point, a list entry or search.'))),
    section('review', 'Wrong-cluster review',
      el('div', {}, el('button', { id: 'select-all', onclick: () => {
        for (const box of document.querySelectorAll('#review .pick')) box.checked = true;
      } }, 'select all'), el('button', { id: 'download', onclick: downloadSelection }, 'download selection as CSV')),
      el('div', { id: 'review' })),
  );
  attachMapEvents();
  let wanted = null;
  try { wanted = new URLSearchParams(window.parent.location.search).get('featvizRun'); } catch (error) { /* */ }
  await loadRun(state.runs.some((r) => r.run === wanted) ? wanted : state.runs[0].run);
  document.body.dataset.ready = 'true';
}
