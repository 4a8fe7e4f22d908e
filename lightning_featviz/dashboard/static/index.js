// The FEATVIZ tab: what every layer learned, epoch by epoch. Plain ES module, no build step, nothing fetched
// from outside TensorBoard. TensorBoard loads it in an iframe whose <base> is this plugin's route prefix, so
// relative URLs ("run?run=...") reach lightning_featviz/dashboard/plugin.py. One file (over 300 lines): the plugin
// serves its static files by name, and a second module would need a route of its own.
//
// Never stale: every view derived from the run, layer and epoch on screen (map, review, inspector, selection,
// exports) is re-derived by show() whenever one of them changes (slider, play, heatmap, layer menu, run menu).
// Each change takes a ticket; an answer that arrives after a newer change is dropped, and the views of the previous
// epoch are cleared at once, so nothing on screen ever belongs to another epoch or layer. When every view belongs
// to the epoch shown, <body data-shown="run|layer|epoch"> says so.
//
// Timings for the benchmark and the tests live in window.featviz: `ready` (performance.timeOrigin-based
// milliseconds when the heatmap and the map were first drawn), `redraws` (milliseconds of canvas drawing per map)
// `epochs` (milliseconds from a slider step to the animation frame that starts its transition) and `transitions`
// (frames drawn between two epochs' maps, one entry per finished transition).

const PALETTE = [
  '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf',
  '#aec7e8', '#ffbb78', '#98df8a', '#ff9896', '#c5b0d5', '#c49c94', '#f7b6d2', '#c7c7c7', '#dbdb8d', '#9edae5',
];
// Selected and inspected points: a black square in a white halo. No class colour is black or white (classes past
// the palette are hsl(h, 65%, 50%)), and flagged samples are ringed with black circles, not squares.
const SELECTED = '#000000', HALO = '#ffffff';
const THUMB = 48; // px a thumbnail is shown at
const BORDER = 3; // px of a thumbnail's frame (same / other class); the image is clipped inside it
const TRANSITION_MS = 300; // how long points take to move from one epoch's map to the next
const MIN_FRAMES = 4; // frames a transition takes at least (the first draws where the points were)

const state = {
  runs: [], run: null, index: null, layer: null, epoch: null, colour: 'class', measure: 'purity',
  compare: '', layerData: {}, samples: {}, indexes: {}, playing: null,
  selection: [], // dataset indices of the box-selected samples (shown at every epoch that keeps them)
  inspected: null, // dataset index of the inspected sample
  review: null, // {run, layer, epoch, rows}: the wrong-cluster list on screen, null while it loads
  reviewOrder: 'rank', // the review's order: 'rank' (the callback's, its CSV's) or 'dynamics' (the dynamics score)
  ticket: 0, // bumped at every change of run, layer or epoch
  animation: null, // {from, to, epochData, start, t, coords}: the map's move between two epochs
};
const timings = { ready: null, redraws: [], epochs: [], transitions: [] };
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

// The standalone page (dashboard/standalone.py) carries the routes' answers itself, as window.featvizLocal:
// the same tab opened from one file, without a server.
const local = window.featvizLocal || null;

async function getJSON(path, params) {
  if (local) return local.answer(path, params);
  const response = await fetch(`${path}?${new URLSearchParams(params)}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

const classColour = (c) => (c < PALETTE.length ? PALETTE[c] : `hsl(${(c * 137.5) % 360}, 65%, 50%)`);
const fixed = (value, digits = 2) => (value === null || value === undefined ? '–' : value.toFixed(digits));

function viridis(t) {
  // A short viridis-like ramp: dark purple (0) -> teal -> yellow (1).
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  if (t === null || t === undefined || Number.isNaN(t)) return 'rgb(220,220,220)';
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i, [a, b] = [stops[i], stops[i + 1]];
  return `rgb(${a.map((v, j) => Math.round(v + f * (b[j] - v))).join(',')})`;
}

// ------------------------------------------------------------------ data

async function samplesOf(run, key) {
  const id = `${run}\u0000${key}`;
  if (!state.samples[id]) {
    const described = await getJSON('samples', { run, key });
    described.key = key;
    described.rowOf = new Map(described.indices.map((index, row) => [index, row]));
    described.atlas = (page) => (local ? local.atlas(key, page) : `atlas?${new URLSearchParams({ run, key, page })}`);
    state.samples[id] = described;
  }
  return state.samples[id];
}

async function indexOf(run) {
  if (!state.indexes[run]) state.indexes[run] = await getJSON('run', { run });
  return state.indexes[run];
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
      epoch.flaggedSet = new Map(epoch.flagged.map((row, j) => [row, epoch.cluster[j]]));
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
    }
    data.bounds = [x0, x1, y0, y1]; // shared by every epoch: aligned (and normalised) maps keep their place
    data.byEpoch = new Map(data.epochs.map((e) => [e.epoch, e]));
    state.layerData[id] = data;
  }
  return state.layerData[id];
}

function epochEntry(epoch = state.epoch, index = state.index) {
  return index.epochs.find((e) => e.epoch === epoch);
}

// The sample set of the epoch on screen (its rows are the rows of every per-sample array of that epoch).
async function shownSamples() {
  return samplesOf(state.run, epochEntry().samples);
}

// ------------------------------------------------------------------ thumbnails

function thumb(samples, row, { size = THUMB, mark = '', caption = null } = {}) {
  const node = el('div', { class: `thumb ${mark}`, 'data-row': row, 'data-index': samples.indices[row] });
  node.style.cssText = `width:${size}px;height:${size}px;border-width:${BORDER}px`;
  if (samples.thumbnail) {
    // The atlas scaled so that one tile fills the frame's inside; drawn and clipped there (content-box), so no
    // part of the next tile shows.
    const inner = size - 2 * BORDER, cols = samples.columns, tile = row % samples.tiles;
    const [r, c] = [Math.floor(tile / cols), tile % cols], page = Math.floor(row / samples.tiles);
    node.style.cssText += `;background-image:url("${samples.atlas(page)}");background-size:${cols * inner}px ` +
      `auto;background-position:${-c * inner}px ${-r * inner}px;background-origin:content-box;` +
      'background-clip:content-box';
  } else node.textContent = samples.indices[row];
  node.title = `#${samples.indices[row]} · ${state.index.class_names[samples.labels[row]]}`;
  return caption === null ? node : el('figure', { class: 'captioned' }, node, el('figcaption', {}, caption));
}

// ------------------------------------------------------------------ heatmap

function heatmapTable(index, run) {
  const epochs = index.epochs, names = [];
  for (const e of epochs) for (const l of e.layers) if (!names.includes(l.name)) names.push(l.name);
  const table = el('table', { class: 'heatmap', 'data-run': run });
  table.append(el('tr', {}, el('th', {}, `layer \\ epoch`), ...epochs.map((e) => el('th', {}, String(e.epoch)))));
  for (const name of names) {
    const row = el('tr', {}, el('th', { class: 'layer-name' }, name));
    for (const e of epochs) {
      const layer = e.layers.find((l) => l.name === name), value = layer ? layer[state.measure] : null;
      const selected = name === state.layer && e.epoch === state.epoch;
      const cell = el('td', {
        class: `cell${selected ? ' selected' : ''}`, 'data-layer': name, 'data-epoch': e.epoch,
        style: `background:${viridis(value)};color:${value !== null && value > 0.6 ? '#000' : '#fff'}`,
        onclick: () => { if (state.index.epochs.some((x) => x.epoch === e.epoch)) show(name, e.epoch); },
      }, fixed(value));
      cell.title = `${name}, epoch ${e.epoch}: ${state.measure} ${value === null ? 'undefined' : value.toFixed(3)}`;
      row.append(cell);
    }
    table.append(row);
  }
  return table;
}

function drawHeatmap() {
  document.getElementById('heatmap').replaceChildren(heatmapTable(state.index, state.run));
}

// ------------------------------------------------------------------ map

function pointColour(epochData, row, label) {
  const pred = epochData.predictions[row];
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

// The (2N,) points of an epoch as drawn now: during a transition, between the previous epoch's and this one's.
function drawnCoords(epochData) {
  const move = state.animation;
  if (!move || move.epochData !== epochData || move.t >= 1) return epochData.map;
  if (move.coords && move.coordsT === move.t) return move.coords;
  const e = move.t < 0.5 ? 4 * move.t ** 3 : 1 - (-2 * move.t + 2) ** 3 / 2; // ease in and out
  move.coords = move.to.map((to, i) => (Number.isNaN(move.from[i]) ? to : move.from[i] + e * (to - move.from[i])));
  move.coordsT = move.t;
  return move.coords;
}

// Which epochs of a layer have a map, in words ("maps at epochs 0, 2, 4"): the callback fits maps on its own
// cadence (maps.every_n_epochs), so the slider passes epochs without one.
function mapsAt(data) {
  const mapped = data.epochs.filter((e) => e.map).map((e) => e.epoch);
  if (!mapped.length) return 'no epoch has a map of this layer';
  return `${mapped.length === 1 ? 'a map at epoch' : 'maps at epochs'} ${mapped.join(', ')}`;
}

function drawMapOn(canvas, data, samples, epoch, marked) {
  const start = performance.now();
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const epochData = data && data.byEpoch.get(epoch);
  if (!epochData || !epochData.map) { // said in the middle: a page scrolled down to the inspector still shows it
    ctx.fillStyle = '#666';
    ctx.font = '15px sans-serif';
    ctx.textAlign = 'center';
    const lines = data ? [`no map of this layer at epoch ${epoch}`, mapsAt(data)] : ['no such layer in this run'];
    lines.forEach((line, i) => ctx.fillText(line, canvas.width / 2, canvas.height / 2 + 22 * i));
    ctx.textAlign = 'start';
    return performance.now() - start;
  }
  const [sx, sy] = project(data, canvas), map = drawnCoords(epochData), labels = samples.labels;
  const size = Math.max(3, Math.min(6, Math.round(1400 / Math.sqrt(labels.length) / 20))); // smaller as N grows
  for (let row = 0; row < labels.length; row++) {
    ctx.fillStyle = pointColour(epochData, row, labels[row]);
    ctx.fillRect(sx(map[2 * row]) - size / 2, sy(map[2 * row + 1]) - size / 2, size, size);
  }
  ctx.lineWidth = 1.5;
  if (state.colour !== 'wrong') {
    ctx.strokeStyle = '#000';
    for (const row of epochData.flagged) { // wrong-cluster samples ringed, as in the static maps
      ctx.beginPath();
      ctx.arc(sx(map[2 * row]), sy(map[2 * row + 1]), size, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }
  for (const row of marked.filter((r) => r >= 0 && r < labels.length)) {
    const [x, y] = [sx(map[2 * row]), sy(map[2 * row + 1])];
    ctx.lineWidth = 4; ctx.strokeStyle = HALO; ctx.strokeRect(x - 6, y - 6, 12, 12);
    ctx.lineWidth = 2; ctx.strokeStyle = SELECTED; ctx.strokeRect(x - 6, y - 6, 12, 12);
  }
  return performance.now() - start;
}

// Rows of `samples` marked on the map: the selection, and the inspected sample.
function markedRows(samples) {
  const rows = state.selection.map((index) => samples.rowOf.get(index));
  if (state.inspected !== null) rows.push(samples.rowOf.get(state.inspected));
  return rows.filter((row) => row !== undefined);
}

// Canvases as wide as their column, and as tall as fits beside the controls (both maps one size).
function sizeCanvases() {
  const column = document.getElementById('map-column');
  const width = Math.max(320, Math.floor(column.clientWidth) - 2); // less the canvas's 1-px border
  const height = Math.round(Math.max(300, Math.min(0.7 * width, window.innerHeight - 130)));
  for (const canvas of [document.getElementById('map'), document.getElementById('map-compare')]) {
    if (canvas.width !== width || canvas.height !== height) [canvas.width, canvas.height] = [width, height];
  }
}

async function drawMain() {
  const data = await layerOf(state.run, state.layer), samples = await shownSamples();
  timings.redraws.push(drawMapOn(document.getElementById('map'), data, samples, state.epoch, markedRows(samples)));
  return [data, samples];
}

// Move the points from `from` (2N,) to the epoch's map over TRANSITION_MS; resolves at the first frame.
function transition(from, epochData) {
  const move = { from, to: epochData.map, epochData, start: performance.now(), t: 0, frames: 0, step: 0 };
  state.animation = move;
  return new Promise((firstFrame) => {
    const frame = async (now) => {
      if (state.animation !== move) { firstFrame(); return; }
      // by the clock, but in no fewer than MIN_FRAMES steps: a busy browser's late frames still show the move
      move.step += 1;
      move.t = Math.min(1, Math.max(0, (now - move.start) / TRANSITION_MS), (move.step - 1) / MIN_FRAMES);
      await drawMain();
      firstFrame();
      if (move.t > 0 && move.t < 1) move.frames += 1;
      if (move.t < 1) requestAnimationFrame(frame);
      else {
        timings.transitions.push(move.frames);
        if (state.animation === move) state.animation = null;
      }
    };
    requestAnimationFrame(frame);
  });
}

async function drawMaps({ from = null } = {}) {
  const ticket = state.ticket;
  const data = await layerOf(state.run, state.layer), samples = await shownSamples();
  if (ticket !== state.ticket) return;
  sizeCanvases();
  const epochData = data.byEpoch.get(state.epoch), previous = from && data.byEpoch.get(from);
  if (previous && previous.map && epochData && epochData.map && previous.samples === epochData.samples) {
    await transition(drawnCoords(previous), epochData);
  } else {
    state.animation = null;
    await drawMain();
  }
  const mapped = epochData && epochData.map && epochData.rows ? ` · map of ${epochData.rows.length} of ` +
    `${epochData.predictions.length} samples (maps.samples)` : '';
  const none = epochData && !epochData.map ? ` · no map at this epoch (${mapsAt(data)})` : '';
  document.getElementById('map-title').textContent =
    `${state.run} · ${state.layer} · epoch ${state.epoch}${mapped}${none}`;
  drawLegend();
  await drawCompare(samples, ticket);
}

// The other run's map, heatmap and numbers, below this run's map (which never moves for it).
async function drawCompare(samples, ticket) {
  const box = document.getElementById('compare-box');
  if (!state.compare) { box.hidden = true; return; }
  const other = state.compare;
  let otherData = null, otherSamples = samples, otherIndex = null;
  try {
    otherIndex = await indexOf(other);
    otherData = await layerOf(other, state.layer);
    const e = otherData.byEpoch.get(state.epoch);
    if (e) otherSamples = await samplesOf(other, e.samples);
  } catch (error) { otherData = null; }
  if (ticket !== state.ticket || other !== state.compare) return;
  box.hidden = false;
  document.getElementById('compare-title').textContent = `${other} · ${state.layer} · epoch ${state.epoch}`;
  const numbers = (index) => {
    const entry = index && epochEntry(state.epoch, index);
    const layer = entry && entry.layers.find((l) => l.name === state.layer);
    return layer ? `kNN purity ${fixed(layer.purity)}, accuracy ${fixed(layer.accuracy)}` : 'not analysed';
  };
  document.getElementById('compare-numbers').textContent =
    `${other}: ${numbers(otherIndex)} · this run, ${state.run}: ${numbers(state.index)}`;
  drawMapOn(document.getElementById('map-compare'), otherData, otherSamples, state.epoch, []);
  document.getElementById('compare-heatmap').replaceChildren(...(otherIndex ? [heatmapTable(otherIndex, other)] : []));
}

function drawLegend() {
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
  legend.append(el('span', { class: 'key' }, el('i', { class: 'square' }), 'selected / inspected'));
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
  const samples = await shownSamples(), names = state.index.class_names;
  const pred = epochData.predictions[row], purity = epochData.purity[row];
  tip.replaceChildren(thumb(samples, row, { size: 64 }), el('div', {},
    el('b', {}, `#${samples.indices[row]}`), el('br'), `label: ${names[samples.labels[row]]}`, el('br'),
    `prediction: ${pred < 0 ? 'unknown' : names[pred]}`, el('br'),
    `purity: ${purity === null ? 'undefined' : purity.toFixed(2)}`,
    ...(epochData.flaggedSet.has(row) ? [el('br'), `among ${names[epochData.flaggedSet.get(row)]}`] : [])));
  const host = document.getElementById('map').parentElement.getBoundingClientRect();
  const left = Math.min(event.clientX - host.left + 14, host.width - 260);
  tip.style.left = `${Math.max(0, left)}px`;
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
      if (row >= 0) await inspectRow(row);
      return;
    }
    const rect = canvas.getBoundingClientRect(), sx = canvas.width / rect.width, sy = canvas.height / rect.height;
    const box = [(from[0] - rect.left) * sx, (from[1] - rect.top) * sy,
      (event.clientX - rect.left) * sx, (event.clientY - rect.top) * sy];
    const samples = await shownSamples();
    state.selection = rowsInBox(await layerOf(state.run, state.layer), canvas, box).map((r) => samples.indices[r]);
    await drawMain();
    await showSelection(state.ticket);
  });
  // The maps follow their column's width and the window's height.
  let [pending, seen] = [false, ''];
  const resized = () => {
    const size = `${document.getElementById('map-column').clientWidth}x${window.innerHeight}`;
    if (pending || !state.index || size === seen) return;
    [pending, seen] = [true, size];
    // during a move between epochs only the canvases resize: the move's next frame draws at the new size (a
    // redraw would cut the move short, jumping to its end)
    requestAnimationFrame(() => { pending = false; if (state.animation) sizeCanvases(); else drawMaps(); });
  };
  new ResizeObserver(resized).observe(document.getElementById('map-column'));
  window.addEventListener('resize', resized);
}

// The selected samples as the epoch on screen keeps them: their rows in its sample set.
async function showSelection(ticket) {
  const samples = await shownSamples();
  if (ticket !== state.ticket) return;
  const list = document.getElementById('selection');
  if (!state.selection.length) { list.replaceChildren(); return; }
  const rows = state.selection.map((index) => samples.rowOf.get(index)).filter((row) => row !== undefined);
  const missing = state.selection.length - rows.length;
  list.replaceChildren(el('h3', {}, `${rows.length} selected`),
    el('p', { class: 'hint' }, `epoch ${state.epoch}${missing ? `; ${missing} selected samples are not kept at ` +
      'this epoch' : ''} · `, el('a', { href: '#', onclick: (e) => { e.preventDefault(); clearSelection(); } },
      'clear')),
    el('div', { class: 'thumbs' }, ...rows.slice(0, 400).map((row) => {
      const node = thumb(samples, row, { size: 40 });
      node.addEventListener('click', () => inspectRow(row));
      return node;
    })));
}

async function clearSelection() {
  state.selection = [];
  await drawMain();
  await showSelection(state.ticket);
}

// ------------------------------------------------------------------ inspector

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

// A sample's probability of its given label at each kept epoch (the label-issue layer's training dynamics): a line
// with one point per epoch the sample was seen, the 0.5 line for scale.
function trajectoryChart(trajectory) {
  const [width, height, pad] = [240, 64, 6];
  const epochs = trajectory.epochs, seen = [];
  trajectory.probability.forEach((p, i) => { if (p !== null) seen.push([epochs[i], p]); });
  const first = epochs[0], last = epochs[epochs.length - 1], span = Math.max(1, last - first);
  const x = (e) => (pad + ((e - first) / span) * (width - 2 * pad)).toFixed(1);
  const y = (p) => (pad + (1 - p) * (height - 2 * pad)).toFixed(1);
  const colour = '#1f77b4';
  const chart = svg('svg', { class: 'trajectory', width, height, viewBox: `0 0 ${width} ${height}` },
    svg('rect', { x: pad, y: pad, width: width - 2 * pad, height: height - 2 * pad, fill: 'none', stroke: '#ddd' }),
    svg('line', { x1: pad, x2: width - pad, y1: y(0.5), y2: y(0.5), stroke: '#ddd', 'stroke-dasharray': '3 3' }),
    svg('polyline', { points: seen.map(([e, p]) => `${x(e)},${y(p)}`).join(' '), fill: 'none', stroke: colour,
      'stroke-width': 1.5 }),
    ...seen.map(([e, p]) => svg('circle', { class: 'trajectory-point', cx: x(e), cy: y(p), r: 2.5, fill: colour },
      svg('title', {}, `epoch ${e}: ${p.toFixed(3)}`))));
  const epochsText = first === last ? `epoch ${first}` : `epochs ${first}–${last}`;
  return el('div', { class: 'trajectory-box', 'data-layer': trajectory.layer },
    el('div', { class: 'layer-label' }, el('b', {}, 'label probability'), ` per epoch (${trajectory.layer}, ` +
      `${epochsText}; 0 to 1)`), chart,
    ...(trajectory.words ? [el('div', { class: 'trajectory-words' }, trajectory.words)] : []));
}

// The trajectory in words, shortened for a row of the review ("consistently predicted as 5 since epoch 3": "consistently
// 5 since epoch 3"); words of another form are kept whole.
function shortWords(words) {
  return words.replace(/^consistently predicted as (.+) since/, 'consistently $1 since')
    .replace(/^unstable: flips between (.+) and (.+)$/, 'flips $1 ↔ $2')
    .replace(/^learnt: predicted as its label since/, 'learnt since')
    .replace(/^predicted as (.+) since/, 'predicted $1 since');
}

async function inspectRow(row) {
  const samples = await shownSamples();
  state.inspected = samples.indices[row];
  await Promise.all([showInspector(state.ticket, true), drawMain()]);
}

// The inspected sample at the epoch on screen: its neighbours at every layer, the shown layer first in mind.
async function showInspector(ticket, reveal = false) {
  const box = document.getElementById('inspector');
  if (state.inspected === null) return;
  const samples = await shownSamples(), names = state.index.class_names, entry = epochEntry();
  if (ticket !== state.ticket) return;
  const row = samples.rowOf.get(state.inspected);
  if (row === undefined) {
    box.replaceChildren(el('p', { class: 'hint' }, `#${state.inspected} is not among epoch ${state.epoch}'s samples.`));
    return;
  }
  const found = await getJSON('inspect', { run: state.run, epoch: state.epoch, row });
  const reference = await samplesOf(state.run, found.reference);
  if (ticket !== state.ticket) return;
  const label = samples.labels[row];
  const head = el('div', { class: 'inspected', 'data-epoch': found.epoch, 'data-index': samples.indices[row] },
    thumb(samples, row, { size: 72, mark: 'query' }),
    el('div', {}, el('b', {}, `#${samples.indices[row]}`), ` label ${names[label]}, prediction `,
      found.prediction < 0 ? 'unknown' : names[found.prediction], el('br'), `epoch ${found.epoch}`,
      samples.paths ? el('div', { class: 'path' }, samples.paths[row]) : ''));
  const rows = found.layers.map((layer) => el('div', {
    class: `layer-row${layer.name === state.layer ? ' shown' : ''}`, 'data-layer': layer.name,
  }, el('div', { class: 'layer-label' }, el('b', {}, layer.name), ` · purity ${fixed(layer.purity)}`),
  el('div', { class: 'neighbours' }, ...layer.neighbours.map((n, j) => {
    const same = reference.labels[n] === label;
    const node = thumb(reference, n, { size: 36, mark: same ? 'same' : 'other', caption: names[reference.labels[n]] });
    node.title = `#${reference.indices[n]}, ${names[reference.labels[n]]} (${same ? 'same' : 'other'} class), ` +
      `distance ${layer.distances[j]}`;
    if (found.reference === entry.samples) node.addEventListener('click', () => inspectRow(n));
    return node;
  }))));
  box.replaceChildren(head, ...(found.trajectory ? [trajectoryChart(found.trajectory)] : []), ...rows);
  if (reveal) { // where the eye is: beside the map (a sticky panel); scrolled to where it is not in view
    const rect = box.getBoundingClientRect();
    if (rect.top < 0 || rect.top > window.innerHeight - 80) box.scrollIntoView({ block: 'nearest' });
  }
}

async function search(text) {
  const samples = await shownSamples(), query = text.trim();
  const message = document.getElementById('search-message');
  if (!query) { message.textContent = ''; return; } // an empty box: nothing asked (every path holds '')
  let row = /^\d+$/.test(query) ? samples.rowOf.get(Number(query)) : undefined;
  if (row === undefined && samples.paths) row = samples.paths.findIndex((p) => p.includes(query));
  if (row === undefined || row < 0) {
    message.textContent = `no kept sample has index or path ${JSON.stringify(query)}`;
    return;
  }
  message.textContent = '';
  await inspectRow(row);
}

// ------------------------------------------------------------------ wrong-cluster review

// The wrong-cluster list of the layer and epoch on screen, in the callback's order (its CSV's rank).
async function drawReview(ticket) {
  const box = document.getElementById('review');
  const [run, layer, epoch] = [state.run, state.layer, state.epoch];
  let found;
  try {
    found = await getJSON('wrong', { run, epoch, layer });
  } catch (error) {
    if (ticket === state.ticket) box.replaceChildren(el('p', {}, String(error.message)));
    return;
  }
  const samples = await shownSamples(), reference = await samplesOf(run, found.reference);
  if (ticket !== state.ticket) return;
  const names = state.index.class_names;
  // a new order of the same list keeps its ticks; another epoch's or layer's list starts with none
  const old = state.review, same = old && old.run === run && old.layer === layer && old.epoch === epoch;
  const boxes = same ? [...document.querySelectorAll('#review .pick:checked')] : [];
  const ticked = new Set(boxes.map((box) => Number(box.dataset.index)));
  state.review = { run, layer, epoch, k: state.index.k, rows: found.rows };
  const table = el('table', { class: 'review', 'data-layer': layer, 'data-epoch': epoch, 'data-order': state.reviewOrder },
    el('tr', {}, ...['', 'rank', 'image', 'index', 'label → suggested', 'model says', 'neighbours in cluster',
      'why', 'neighbours', 'dynamics score, trajectory'].map((h) => el('th', {}, h))));
  const ranked = found.rows.map((item, i) => [item, i + 1]);
  if (state.reviewOrder === 'dynamics') { // highest first; rows the history does not track last, in rank order
    ranked.sort(([a, i], [b, j]) => (b.dynamics ?? -1) - (a.dynamics ?? -1) || i - j);
  }
  ranked.forEach(([item, rank]) => {
    const check = el('input', { type: 'checkbox', class: 'pick', 'data-index': item.index });
    check.checked = ticked.has(item.index);
    const image = thumb(samples, item.row);
    image.addEventListener('click', () => inspectRow(item.row));
    table.append(el('tr', { 'data-index': item.index }, el('td', {}, check), el('td', {}, String(rank)),
      el('td', {}, image), el('td', {}, String(item.index)), el('td', {}, `${names[item.label]} → ${names[item.cluster]}`),
      el('td', {}, item.prediction < 0 ? 'unknown' : names[item.prediction]),
      el('td', {}, `${item.count} of ${state.index.k}`), el('td', { class: 'reason' }, item.reason),
      el('td', { class: 'thumbs' }, ...item.neighbours.map((n) =>
        thumb(reference, n, { size: 32, mark: reference.labels[n] === item.label ? 'same' : 'other' }))),
      el('td', { class: 'dynamics' }, fixed(item.dynamics, 3),
        ...(item.words ? [el('div', { class: 'dynamics-words', title: item.words }, shortWords(item.words))] : []))));
  });
  // the dynamics score is the label-issue layer's: at another layer the list keeps its rank, and says why
  const scored = found.rows.some((item) => item.dynamics !== null && item.dynamics !== undefined);
  const order = state.reviewOrder !== 'dynamics' ? 'strongest first'
    : scored ? 'highest dynamics score first' : 'strongest first: this layer has no dynamics score';
  const heading = el('p', { class: 'review-heading' }, `${found.rows.length} images of ${samples.indices.length} sit ` +
    `in another class's cluster at ${found.layer}, epoch ${found.epoch} (${order}).`);
  box.replaceChildren(heading, found.rows.length ? table : el('p', {}, 'None flagged.'));
  for (const button of document.querySelectorAll('#review-section button')) button.disabled = !found.rows.length;
}

function csvField(value) {
  const text = value === null || value === undefined ? '' : String(value);
  return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

// `<run>_<layer>_epoch<N>_<what>.csv`, with the characters a file name cannot hold replaced by _.
function exportName(review, what) {
  return `${review.run}_${review.layer}_epoch${review.epoch}_${what}.csv`.replace(/[^A-Za-z0-9._@=-]+/g, '_');
}

// The review's rows (all, or the ticked ones) as the callback's wrong-cluster CSV writes them (its columns, its
// rank), as the list on screen shows them.
function downloadReview(onlyTicked) {
  const review = state.review;
  if (!review) return; // the list is loading: nothing on screen to export
  const ticked = new Set([...document.querySelectorAll('#review .pick:checked')].map((c) => Number(c.dataset.index)));
  const names = state.index.class_names;
  const lines = [['rank', 'index', 'path', 'label', 'cluster', 'neighbours_in_cluster', 'k', 'share', 'prediction',
    'correct'].join(',')];
  review.rows.forEach((item, i) => {
    if (onlyTicked && !ticked.has(item.index)) return;
    const known = item.prediction >= 0;
    lines.push([i + 1, item.index, item.path, names[item.label], names[item.cluster], item.count, review.k,
      Math.round((item.count / review.k) * 1e4) / 1e4, known ? names[item.prediction] : '',
      known ? String(item.prediction === item.label) : ''].map(csvField).join(','));
  });
  const blob = new Blob([lines.join('\n') + '\n'], { type: 'text/csv' });
  const what = onlyTicked ? 'wrong_cluster_ticked' : 'wrong_cluster';
  const link = el('a', { href: URL.createObjectURL(blob), download: exportName(review, what) });
  document.body.append(link);
  link.click();
  link.remove();
}

// ------------------------------------------------------------------ controls

// Show `layer` at `epoch` and re-derive every view from them; `animate` moves the points from the epoch shown.
async function show(layer, epoch, { animate = false } = {}) {
  const previous = state.layer === layer ? state.epoch : null;
  const ticket = ++state.ticket;
  [state.layer, state.epoch] = [layer, epoch];
  state.review = null;
  delete document.body.dataset.shown;
  const epochs = state.index.epochs.map((e) => e.epoch);
  const slider = document.getElementById('epoch');
  slider.max = String(epochs.length - 1);
  slider.value = String(epochs.indexOf(epoch));
  document.getElementById('epoch-label').textContent = `epoch ${epoch}`;
  document.getElementById('layer').value = layer;
  // What belonged to the previous epoch or layer goes at once; each view comes back when its data is here.
  document.getElementById('review').replaceChildren(el('p', { class: 'hint' }, `loading ${layer}, epoch ${epoch}…`));
  for (const button of document.querySelectorAll('#review-section button')) button.disabled = true;
  const inspected = document.querySelector('#inspector .inspected');
  if (inspected && inspected.dataset.epoch !== String(epoch)) inspected.classList.add('stale');
  drawHeatmap();
  const start = performance.now();
  await drawMaps({ from: animate ? previous : null });
  if (ticket !== state.ticket) return;
  if (animate) timings.epochs.push(performance.now() - start);
  if (timings.ready === null) { // the heatmap and the first map are on screen
    timings.ready = performance.timeOrigin + performance.now();
    performance.mark('featviz-ready');
  }
  await Promise.all([drawReview(ticket), showInspector(ticket), showSelection(ticket)]);
  if (ticket !== state.ticket) return;
  document.body.dataset.layer = layer;
  document.body.dataset.epoch = String(epoch);
  document.body.dataset.shown = `${state.run}|${layer}|${epoch}`;
}

async function setEpochPosition(position) {
  await show(state.layer, state.index.epochs[position].epoch, { animate: true });
}

async function loadRun(run) {
  state.run = run;
  document.getElementById('run').value = run; // also when opened on a run named in the address (featvizRun)
  delete state.indexes[run];
  state.index = await indexOf(run);
  state.inspected = null;
  state.selection = [];
  document.getElementById('inspector').replaceChildren(el('p', { class: 'hint' }, 'Click a point, a list entry or search.'));
  const last = state.index.epochs[state.index.epochs.length - 1];
  const layers = last.layers.map((l) => l.name);
  const layer = layers.includes(state.layer) ? state.layer : layers[layers.length - 1];
  document.getElementById('layer').replaceChildren(...layers.map((name) => el('option', { value: name }, name)));
  if (state.compare === run) state.compare = '';
  document.getElementById('compare').replaceChildren(el('option', { value: '' }, 'compare with… (none)'),
    ...state.runs.filter((r) => r.run !== run).map((r) => el('option', { value: r.run }, r.run)));
  document.getElementById('compare').value = state.compare;
  await show(layer, last.epoch);
}

function togglePlay(play) {
  if (state.playing) { clearInterval(state.playing); state.playing = null; play.textContent = '▶ play'; return; }
  play.textContent = '■ stop';
  state.playing = setInterval(() => {
    const slider = document.getElementById('epoch');
    slider.value = String((Number(slider.value) + 1) % (Number(slider.max) + 1));
    setEpochPosition(Number(slider.value));
  }, 800);
}

function controls() {
  const runSelect = el('select', { id: 'run', onchange: (e) => loadRun(e.target.value) },
    ...state.runs.map((r) => el('option', { value: r.run }, r.run)));
  const play = el('button', { id: 'play', onclick: () => togglePlay(play) }, '▶ play');
  return el('div', { class: 'controls' },
    el('label', {}, 'run ', runSelect),
    el('label', {}, 'layer ', el('select', { id: 'layer', onchange: (e) => show(e.target.value, state.epoch) })),
    el('label', {}, 'colour by ', el('select', { id: 'colour', onchange: (e) => { state.colour = e.target.value; drawMaps(); } },
      ...[['class', 'class'], ['prediction', 'prediction'], ['correct', 'correct?'], ['wrong', 'wrong cluster'],
        ['purity', 'purity']].map(([v, t]) => el('option', { value: v }, t)))),
    el('input', { id: 'epoch', type: 'range', min: '0', max: '0', step: '1', value: '0',
      oninput: (e) => setEpochPosition(Number(e.target.value)) }),
    el('span', { id: 'epoch-label' }, ''), play,
    el('select', { id: 'compare', onchange: (e) => { state.compare = e.target.value; drawMaps(); } }),
    local ? '' : el('button', { id: 'refresh', title: 'read the epochs and runs written since the tab opened',
      onclick: async () => {
        state.runs = await getJSON('runs', {});
        document.getElementById('run').replaceChildren(...state.runs.map((r) => el('option', { value: r.run }, r.run)));
        [state.layerData, state.indexes] = [{}, {}];
        await loadRun(state.run);
      } }, '↻ new epochs'));
}

export async function render() {
  if (!local) document.head.append(el('link', { rel: 'stylesheet', href: 'style.css' }));
  document.body.classList.add('featviz');
  state.runs = await getJSON('runs', {});
  if (!state.runs.length) {
    document.body.append(el('p', {}, 'No run under this log dir holds FEATVIZ data (featviz_dashboard/).'));
    return;
  }
  const section = (id, title, ...body) => el('section', { id: `${id}-section` }, el('h2', {}, title), ...body);
  const measure = el('select', { id: 'measure', onchange: (e) => { state.measure = e.target.value; drawHeatmap(); drawMaps(); } },
    el('option', { value: 'purity' }, 'kNN purity'), el('option', { value: 'accuracy' }, 'kNN accuracy'));
  const button = (id, text, onclick) => el('button', { id, onclick }, text);
  document.body.append(
    controls(),
    el('div', { class: 'workspace' },
      el('div', { id: 'map-column' },
        el('section', { id: 'map-section' }, el('div', { id: 'map-title', class: 'title' }),
          el('div', { class: 'canvas-box' }, el('canvas', { id: 'map', width: '560', height: '460' }),
            el('div', { id: 'tooltip', class: 'tooltip', hidden: '' }), el('div', { id: 'band', hidden: '' })),
          el('div', { id: 'legend' }),
          el('p', { class: 'hint' }, 'Hover a point for its image; click it to inspect it; drag a box to select.'),
          el('div', { id: 'selection' }),
          el('div', { id: 'compare-box', hidden: '' }, el('div', { id: 'compare-title', class: 'title' }),
            el('div', { id: 'compare-numbers', class: 'numbers' }),
            el('canvas', { id: 'map-compare', width: '560', height: '460' }), el('div', { id: 'compare-heatmap' })))),
      // Beside the map: which layer and epoch (the heatmap), and the inspected image, where the eye is.
      el('aside', { id: 'side' },
        section('heatmap', 'Layer × epoch', measure, el('div', { id: 'heatmap' }),
          el('p', { class: 'hint' }, 'Click a cell to open that layer and epoch.')),
        el('section', { id: 'inspector-section' }, el('h2', {}, 'Image inspector'),
          el('div', { class: 'search' }, el('input', { id: 'search', placeholder: 'dataset index or path',
            onkeydown: (e) => { if (e.key === 'Enter') search(e.target.value); } }),
          el('span', { id: 'search-message' })),
          el('div', { id: 'inspector' }, el('p', { class: 'hint' }, 'Click a point, a list entry or search.'))))),
    section('review', 'Wrong-cluster review',
      el('div', {}, button('select-all', 'select all', () => {
        for (const box of document.querySelectorAll('#review .pick')) box.checked = true;
      }), button('download', 'download ticked as CSV', () => downloadReview(true)),
      button('download-all', 'download the list as CSV', () => downloadReview(false)),
      el('label', {}, ' order ', el('select', { id: 'review-order', onchange: (e) => {
        state.reviewOrder = e.target.value;
        drawReview(state.ticket);
      } }, el('option', { value: 'rank' }, 'neighbours in cluster (the CSV\'s rank)'),
      el('option', { value: 'dynamics' }, 'dynamics score (every epoch so far)')))),
      el('div', { id: 'review' })),
  );
  attachMapEvents();
  let wanted = null;
  try { wanted = new URLSearchParams(window.parent.location.search).get('featvizRun'); } catch (error) { /* */ }
  await loadRun(state.runs.some((r) => r.run === wanted) ? wanted : state.runs[0].run);
  document.body.dataset.ready = 'true';
}
