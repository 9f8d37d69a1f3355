// Shoal scheduler dashboard: polls the scheduler's JSON API (/api/v1/...) every
// second and renders hosts, tasks, throughput and the task graph. Plain DOM
// (no innerHTML with data: host ids and repositories are text, never markup);
// uPlot draws the chart. Bundled by esbuild and embedded in shoal-scheduler.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './style.css';

const POLL_MS = 1000;
const $ = (sel) => document.querySelector(sel);

// ---- formatting ----------------------------------------------------------

export function bytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${Math.round(n)} B` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}
const rate = (n) => (n == null ? '–' : `${bytes(n)}/s`);
const pct = (f) => `${(100 * f).toFixed(1)}%`;
function ago(ms) {
  if (ms == null) return '–';
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}
const shortDigest = (d) => (d && d.length > 19 ? `${d.slice(0, 19)}…` : d || '');

// Builds an element: h('td', {class: 'num'}, 'text', child, ...).
function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c == null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
function progressCell(f) {
  return h('td', { class: 'progress', 'data-progress': f.toFixed(4) },
    h('progress', { max: 1, value: f }), pct(f));
}
function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// ---- API -----------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, init = {}) {
  const res = await fetch(`/api/v1/${path}`, { credentials: 'same-origin', cache: 'no-store', ...init });
  if (res.status === 401) throw new Unauthorized('token required');
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || `${path}: HTTP ${res.status}`);
  return body;
}

// ---- overview + chart ------------------------------------------------------

let chart = null;
function chartData(series) {
  return [
    series.t_unix_ms.map((t) => t / 1000),
    series.from_peers,
    series.from_registry,
  ];
}
function ensureChart(series) {
  const el = $('#chart');
  const width = Math.max(320, el.clientWidth - 12);
  if (!chart) {
    chart = new uPlot({
      width,
      height: 240,
      cursor: { points: { show: false } },
      series: [
        {},
        { label: 'from peers', points: { show: false }, stroke: '#2a7ae2', fill: 'rgba(42,122,226,0.12)', value: (u, v) => rate(v) },
        { label: 'from the registry', points: { show: false }, stroke: '#d9534f', fill: 'rgba(217,83,79,0.10)', value: (u, v) => rate(v) },
      ],
      axes: [{}, { size: 80, values: (u, vals) => vals.map((v) => rate(v)) }],
      scales: { y: { range: (u, min, max) => [0, Math.max(max, 1024 * 1024)] } },
    }, chartData(series), el);
    window.addEventListener('resize', () => chart.setSize({ width: Math.max(320, el.clientWidth - 12), height: 240 }));
  } else {
    chart.setData(chartData(series));
  }
}

function renderOverview(o) {
  $('#stat-hosts').textContent = `${o.hosts.online} / ${o.hosts.total}`;
  $('#stat-tasks').textContent = `${o.tasks.active}`;
  $('#stat-delivered').textContent = bytes(o.bytes.delivered);
  $('#stat-registry').textContent = bytes(o.bytes.from_registry);
  $('#stat-saved').textContent = bytes(o.bytes.saved);
  $('#stat-saved-sub').textContent = o.bytes.delivered
    ? `${pct(o.bytes.saved_fraction)} of delivered bytes came from peers` +
      (o.bytes.amplification ? ` · ${o.bytes.amplification.toFixed(2)}x the registry's bytes` : '')
    : 'nothing delivered yet';
  $('#stat-rate').textContent = rate(o.throughput.from_peers + o.throughput.from_registry);
  $('#stat-rate-sub').textContent = `peers ${rate(o.throughput.from_peers)} · registry ${rate(o.throughput.from_registry)}`;
  preheatAvailable = !!o.features?.preheat;
  $('#nav-preheat').hidden = !preheatAvailable;
  $('#view-preheat').dataset.available = preheatAvailable ? 'yes' : 'no';
  $('#footer').textContent = `shoal-scheduler ${o.version} · up ${ago(o.uptime_ms)} · ${o.peers} peers`;
  ensureChart(o.series);
}

// ---- hosts and tasks --------------------------------------------------------

function renderHosts(list) {
  replaceRows($('#hosts-table tbody'), list.hosts.map((x) => {
    const disk = x.disk_total_bytes
      ? `${bytes(x.disk_total_bytes - x.disk_free_bytes)} / ${bytes(x.disk_total_bytes)}` : '–';
    return h('tr', { 'data-host-id': x.id, class: x.online ? null : 'offline' },
      h('td', {}, h('code', {}, x.id), x.seed ? ' (seed)' : ''),
      h('td', {}, x.zone || '–'),
      h('td', {}, h('code', {}, x.address || '–')),
      h('td', { class: 'num' }, rate(x.download_rate)),
      h('td', { class: 'num' }, rate(x.upload_rate)),
      h('td', { class: 'num' }, x.upload_slots ? `${x.upload_slots_in_use} / ${x.upload_slots}` : '–'),
      h('td', { class: 'num' }, disk),
      h('td', { class: 'num' }, bytes(x.cache_bytes)),
      h('td', {}, x.version || '–'),
      h('td', { class: 'num' }, x.online ? `${ago(x.last_seen_ago_ms)} ago` : `offline (${ago(x.last_seen_ago_ms)})`));
  }));
}

function renderTasks(list) {
  const rows = [...list.tasks].sort((a, b) => b.created_unix_ms - a.created_unix_ms).map((t) =>
    h('tr', { 'data-task-id': t.id, class: 'clickable', onclick: () => { location.hash = `#/task/${t.id}`; } },
      h('td', {}, h('a', { href: `#/task/${t.id}` }, h('code', {}, shortDigest(t.digest)))),
      h('td', {}, t.repository || t.url || '–'),
      h('td', { class: 'num' }, bytes(t.content_length)),
      h('td', { class: 'num peers-done' }, `${t.peer_counts.done}`),
      h('td', { class: 'num peers-running' }, `${t.peer_counts.running}`),
      progressCell(t.progress),
      h('td', { class: 'num' }, bytes(t.bytes_from_registry)),
      h('td', { class: 'num' }, bytes(t.bytes_from_peers)),
      h('td', { class: `state-${t.state}` }, t.state),
      h('td', { class: 'num' }, ago(t.age_ms))));
  replaceRows($('#tasks-table tbody'), rows);
}

// ---- one task: peers and the graph ----------------------------------------------

function renderTask(t) {
  $('#task-digest').textContent = t.digest;
  $('#task-summary').textContent =
    `${t.repository || t.url || ''} · ${bytes(t.content_length)} in ${t.piece_count} pieces of ${bytes(t.piece_length)}` +
    ` · ${t.state} · ${t.peer_counts.done} done, ${t.peer_counts.running} in progress · ${pct(t.progress)}` +
    ` · registry ${bytes(t.bytes_from_registry)}, peers ${bytes(t.bytes_from_peers)}`;
  replaceRows($('#peers-table tbody'), t.peers.map((p) =>
    h('tr', { 'data-host-id': p.host_id },
      h('td', {}, h('code', {}, p.host_id), p.source ? ' (source)' : ''),
      h('td', {}, p.zone || '–'),
      h('td', { class: `state-${p.state}` }, p.state),
      progressCell(p.progress),
      h('td', { class: 'num' }, bytes(p.bytes_from_registry)),
      h('td', { class: 'num' }, bytes(p.bytes_from_peers)),
      h('td', { class: 'num' }, rate(p.download_rate)),
      h('td', {}, p.parents.join(', ') || '–'),
      h('td', { class: 'num' }, `${p.children}`))));
  renderGraph(t);
}

// Registry on the left, peers on a circle; one arrow per parent -> child edge,
// as thick as the log of its bytes, highlighted while pieces still flow on it.
function renderGraph(t) {
  const svg = $('#task-graph');
  const W = 720, H = 420, cx = 420, cy = 210, r = 160;
  const ids = t.peers.map((p) => p.host_id);
  for (const e of t.edges) {
    if (e.from && !ids.includes(e.from)) ids.push(e.from);
    if (!ids.includes(e.to)) ids.push(e.to);
  }
  const pos = new Map();
  pos.set(null, { x: 70, y: H / 2 });
  ids.forEach((id, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, ids.length) - Math.PI / 2;
    pos.set(id, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
  });
  const done = new Set(t.peers.filter((p) => p.state === 'done').map((p) => p.host_id));
  const maxBytes = Math.max(1, ...t.edges.map((e) => e.bytes));
  const kids = [h('svg:defs', {}, h('svg:marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5,
    markerWidth: 12, markerHeight: 12, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' },
  h('svg:path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow' })))];
  for (const e of t.edges) {
    const a = pos.get(e.from ?? null), b = pos.get(e.to);
    if (!a || !b) continue;
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const nodeR = 22;
    const x1 = a.x + (dx / len) * nodeR, y1 = a.y + (dy / len) * nodeR;
    const x2 = b.x - (dx / len) * (nodeR + 2), y2 = b.y - (dy / len) * (nodeR + 2);
    // bend the line a little so A->B and B->A do not overlap
    const mx = (x1 + x2) / 2 - (dy / len) * 14, my = (y1 + y2) / 2 + (dx / len) * 14;
    const width = 1 + 4 * Math.log1p(e.bytes) / Math.log1p(maxBytes);
    kids.push(h('svg:path', {
      d: `M ${x1.toFixed(1)} ${y1.toFixed(1)} Q ${mx.toFixed(1)} ${my.toFixed(1)} ${x2.toFixed(1)} ${y2.toFixed(1)}`,
      class: `edge${e.from ? '' : ' origin'}${e.active ? ' active' : ''}`,
      'stroke-width': width.toFixed(2), 'marker-end': 'url(#arrow)',
      'data-from': e.from ?? 'registry', 'data-to': e.to,
    }, h('svg:title', {}, `${e.from ?? 'registry'} → ${e.to}: ${bytes(e.bytes)} in ${e.pieces} pieces`)));
    kids.push(h('svg:text', { x: mx.toFixed(1), y: my.toFixed(1), class: 'elabel' }, bytes(e.bytes)));
  }
  const node = (id, label, cls) => {
    const p = pos.get(id);
    return h('svg:g', { class: `node ${cls}`, transform: `translate(${p.x.toFixed(1)},${p.y.toFixed(1)})` },
      h('svg:circle', { r: 20 }),
      h('svg:text', { y: 34, 'text-anchor': 'middle' }, label));
  };
  kids.push(node(null, 'registry', 'registry'));
  for (const id of ids) kids.push(node(id, id.length > 18 ? `${id.slice(0, 17)}…` : id, done.has(id) ? 'done' : ''));
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren(...kids);
}

// ---- preheat ------------------------------------------------------------------

const preheats = new Map(); // id -> last status
let preheatAvailable = false;

function renderPreheats() {
  const table = $('#preheat-table');
  table.hidden = preheats.size === 0;
  replaceRows(table.querySelector('tbody'), [...preheats.values()].map((p) =>
    h('tr', { 'data-preheat-id': p.id },
      h('td', {}, h('code', {}, p.reference || '')),
      h('td', { class: `state-${p.state}` }, p.state || ''),
      h('td', {}, p.seeds.map((s) => `${s.host_id}: ${s.state}`).join(', ') || '–'),
      h('td', { class: 'num' }, p.blobs_total ? `${p.blobs_done} / ${p.blobs_total * p.seeds.length}` : '–'),
      progressCell(Number(p.progress ?? 0)),
      h('td', { class: 'num' }, p.bytes_total ? `${bytes(p.bytes_done)} / ${bytes(p.bytes_total * p.seeds.length)}` : '–'),
      h('td', {}, p.error || ''))));
}

async function submitPreheat(ev) {
  ev.preventDefault();
  const msg = $('#preheat-message');
  const reference = $('#preheat-ref').value.trim();
  if (!reference) return;
  msg.className = 'message';
  msg.textContent = `starting preheat of ${reference}…`;
  try {
    const p = await api('preheat', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ reference }),
    });
    preheats.set(p.id, p);
    msg.textContent = `preheat ${p.id} started`;
    renderPreheats();
  } catch (e) {
    msg.className = 'message error';
    msg.textContent = e.message;
  }
}

async function pollPreheats() {
  const list = await api('preheat');
  preheats.clear();
  for (const p of list.preheats) preheats.set(p.id, p);
  renderPreheats();
}

// ---- routing and the poll loop ------------------------------------------------------

function route() {
  const m = location.hash.match(/^#\/task\/([0-9a-f]{64})$/);
  const taskId = m ? m[1] : null;
  for (const v of ['overview', 'hosts', 'tasks']) $(`#view-${v}`).hidden = !!taskId;
  $('#view-preheat').hidden = !!taskId || !preheatAvailable;
  $('#view-task').hidden = !taskId;
  if (!taskId) {
    const section = location.hash.slice(2);
    const el = section && document.getElementById(`view-${section}`);
    if (el) el.scrollIntoView();
  }
  return taskId;
}

async function poll() {
  const status = $('#status');
  try {
    const taskId = route();
    const [overview, hosts, tasks] = await Promise.all([api('overview'), api('hosts'), api('tasks')]);
    renderOverview(overview);
    renderHosts(hosts);
    renderTasks(tasks);
    if (taskId) {
      try {
        const t = await api(`tasks/${taskId}`);
        renderTask(t);
      } catch (e) {
        $('#task-summary').textContent = e.message;
      }
    }
    if (preheatAvailable) await pollPreheats();
    $('#banner').hidden = true;
    status.className = 'status';
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    status.className = 'status error';
    status.textContent = e instanceof Unauthorized ? 'token required' : `error: ${e.message}`;
    if (e instanceof Unauthorized) {
      const b = $('#banner');
      b.textContent = 'This dashboard needs the scheduler\'s token: open /?token=TOKEN (shoal-scheduler --dashboard-token).';
      b.hidden = false;
    }
  }
}

async function loop() {
  const start = performance.now();
  await poll();
  setTimeout(loop, Math.max(0, POLL_MS - (performance.now() - start)));
}

window.addEventListener('hashchange', () => { poll(); });
$('#preheat-form').addEventListener('submit', submitPreheat);
loop();
