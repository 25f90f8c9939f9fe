// Spectrum Management Console: a client of the HTTP/JSON API (/api/v1) of
// whichever node the page came from (through the balancer, any node). No
// framework, no build step, nothing loaded from elsewhere.
'use strict';

const TOKEN_KEY = 'spectrum.console.token';
const PAGES = ['overview', 'licenses', 'dataflows', 'resources', 'nodes', 'users', 'audit'];
const SVG = 'http://www.w3.org/2000/svg';
const CHART_POINTS = 60;
const POLL_MS = 2000;

// ---- small helpers ---------------------------------------------------------

const $ = (sel) => document.querySelector(sel);

/** An element with attributes and children (strings become text: never HTML). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'onclick') el.addEventListener('click', v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fillTable(table, rows) {
  const body = $(table + ' tbody');
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const cols = $(table + ' thead tr').children.length;
    body.append(h('tr', { class: 'empty' }, h('td', { colspan: cols }, 'none')));
  }
}

function show(el, text) {
  el.textContent = text || '';
  el.hidden = !text;
}

function flash(text, ok) {
  const m = $('#message');
  m.className = ok ? 'ok' : 'error';
  show(m, text);
}

function time(ms) {
  return ms ? new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '';
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// ---- the API ---------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API; resolves to the parsed JSON, or rejects with an ApiError. */
async function api(method, path, body) {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  let payload;
  if (body !== undefined) {
    payload = typeof body === 'string' ? body : JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  let res;
  for (let attempt = 0; ; attempt++) {
    try {
      res = await fetch('/api/v1' + path, { method, headers, body: payload, cache: 'no-store' });
      break;
    } catch (e) {
      // The node behind the connection went away: a read is safe to send again.
      if (method !== 'GET' || attempt >= 2) throw new ApiError(0, 'unavailable', 'cannot reach the cluster: ' + e.message);
    }
  }
  const served = res.headers.get('spectrum-served-by');
  if (served) $('#served-by').textContent = 'answered by ' + served;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: String(res.status), message: res.statusText };
    if (res.status === 401) signOut(err.message);
    throw new ApiError(res.status, err.code, err.message);
  }
  return data;
}

const enc = encodeURIComponent;

// ---- session and routing -----------------------------------------------------

let poller = null;

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  $('#nav').hidden = true;
  $('#session').hidden = true;
  showPage('signin');
  show($('#signin-error'), why || '');
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('#signin-token').value.trim());
  $('#signin-token').value = '';
  try {
    await api('GET', '/status');
  } catch (e) {
    if (e.status !== 401) signOut(e.message);
    return;
  }
  show($('#signin-error'), '');
  $('#nav').hidden = false;
  $('#session').hidden = false;
  if (!location.hash || location.hash === '#/signin') location.hash = '#/overview';
  else route();
}

function showPage(name) {
  for (const p of document.querySelectorAll('.page')) p.hidden = p.id !== 'page-' + name;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === name);
  document.body.dataset.page = name;
}

function route() {
  clearInterval(poller);
  poller = null;
  if (token() === null) return signOut();
  $('#nav').hidden = false;
  $('#session').hidden = false;
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1];
  const page = PAGES.includes(name) ? name : 'overview';
  showPage(page);
  flash('');
  LOADERS[page]().catch((e) => flash(e.message));
}

// ---- overview ------------------------------------------------------------------

const series = { lag: new Map(), clock: new Map(), rate: new Map(), failures: new Map(), latency: new Map() };

function record(name, id, value) {
  if (!series[name].has(id)) series[name].set(id, []);
  const points = series[name].get(id);
  points.push(value);
  if (points.length > CHART_POINTS) points.shift();
}

/** A line chart of each series in `map` (name -> numbers, null for unknown), as SVG. */
function chart(container, map) {
  const w = 420, hgt = 140, pad = 28, legend = 120;
  const all = [...map.values()].flat().filter((v) => v !== null);
  // The largest figure drawn, for readers of the page (and its tests).
  container.dataset.peak = String(Math.max(0, ...all));
  let lo = Math.min(0, ...all), hi = Math.max(1, ...all);
  if (hi === lo) hi = lo + 1;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  svg.setAttribute('class', 'chart-svg');
  const line = (x1, y1, x2, y2, cls) => {
    const l = document.createElementNS(SVG, 'line');
    Object.entries({ x1, y1, x2, y2, class: cls }).forEach(([k, v]) => l.setAttribute(k, v));
    svg.append(l);
  };
  const label = (x, y, text) => {
    const t = document.createElementNS(SVG, 'text');
    t.setAttribute('x', x); t.setAttribute('y', y); t.setAttribute('class', 'axis');
    t.textContent = text;
    svg.append(t);
  };
  const y = (v) => hgt - pad / 2 - ((v - lo) / (hi - lo)) * (hgt - pad);
  const x = (i) => pad + (i / (CHART_POINTS - 1)) * (w - legend - pad);
  line(pad, y(lo), w - legend, y(lo), 'grid');
  line(pad, y(hi), w - legend, y(hi), 'grid');
  label(2, y(hi) + 4, String(Math.round(hi)));
  label(2, y(lo) + 4, String(Math.round(lo)));
  let n = 0;
  for (const [id, points] of map) {
    const offset = CHART_POINTS - points.length;
    const coords = points.map((v, i) => (v === null ? null : `${x(i + offset).toFixed(1)},${y(v).toFixed(1)}`)).filter(Boolean);
    const p = document.createElementNS(SVG, 'polyline');
    p.setAttribute('points', coords.join(' '));
    p.setAttribute('class', 'series s' + (n % 6));
    svg.append(p);
    for (const xy of coords) {
      const dot = document.createElementNS(SVG, 'circle');
      const [cx, cy] = xy.split(',');
      dot.setAttribute('cx', cx); dot.setAttribute('cy', cy); dot.setAttribute('r', '2');
      dot.setAttribute('class', 'dot s' + (n % 6));
      svg.append(dot);
    }
    const t = document.createElementNS(SVG, 'text');
    t.setAttribute('x', w - legend + 8); t.setAttribute('y', 14 + 12 * n); t.setAttribute('class', 'legend s' + (n % 6));
    t.textContent = id;
    svg.append(t);
    n++;
  }
  container.replaceChildren(svg);
}

/** The balancer's previous sample, for rates: {at: ms, byId: Map(id -> backend)}. */
let lastBalancer = null;

/**
 * The balancer's own figures (GET /api/v1/balancer/stats, answered by the balancer,
 * never by a node): per-node request and failure rates from two samples, and latency.
 */
async function loadBalancer() {
  let b;
  try {
    b = await api('GET', '/balancer/stats');
  } catch (e) {
    lastBalancer = null;
    $('#balancer-charts').hidden = true;
    fillTable('#balancer-table', []);
    const note = $('#balancer-note');
    note.className = e.status === 404 ? 'no-balancer' : 'error';
    show(note, e.status === 404
      ? 'Not served through a balancer: this page came straight from a node, which has no balancer figures. Open the console at the balancer\'s address to see them.'
      : 'Balancer figures unavailable: ' + e.message);
    return;
  }
  const s = b.strategy;
  $('#balancer-note').className = '';
  show($('#balancer-note'), s ? `Strategy ${s.name}${s.hash_key ? ' (hash key ' + s.hash_key + ')' : ''}, from the ${s.source === 'database' ? 'cluster database' : "balancer's configuration"}; ${b.requests_total} requests in all.` : `${b.requests_total} requests in all.`);
  $('#balancer-charts').hidden = false;
  const prev = lastBalancer;
  const seconds = prev ? (b.sampled_at_unix_ms - prev.at) / 1000 : 0;
  const rate = (now, before) => (seconds > 0 && before !== undefined ? Math.max(0, now - before) / seconds : null);
  for (const n of b.backends) {
    const old = prev ? prev.byId.get(n.id) : undefined;
    record('rate', n.id, rate(n.requests_total, old && old.requests_total));
    record('failures', n.id, rate(n.failures_total, old && old.failures_total));
    record('latency', n.id, n.latency_ewma_us);
  }
  lastBalancer = { at: b.sampled_at_unix_ms, byId: new Map(b.backends.map((n) => [n.id, n])) };
  chart($('#chart-rate'), series.rate);
  chart($('#chart-failures'), series.failures);
  chart($('#chart-latency'), series.latency);
  fillTable('#balancer-table', b.backends.map((n) => h('tr', { 'data-node': n.id },
    h('td', {}, n.id), h('td', {}, n.address),
    h('td', { class: n.health === 'healthy' ? 'good' : 'bad' }, n.health + (n.draining ? ', draining' : '')),
    h('td', { class: 'requests' }, n.requests_total), h('td', { class: n.failures_total ? 'bad' : '' }, n.failures_total),
    h('td', {}, n.in_flight), h('td', {}, n.latency_ewma_us))));
}

/** One line on how the answering node replicates: its mode and, in Raft mode, the group as it sees it. */
function replicationSummary(r) {
  if (!r) return 'Replication: unknown';
  if (!r.raft) return r.mode === 'lww' ? 'Replication: lww (last-writer-wins: every node takes writes)' : `Replication: ${r.mode}`;
  const g = r.raft;
  const idx = (i) => (i === null || i === undefined ? '-' : String(i));
  const ids = (l) => (l.length ? l.join(', ') : 'none');
  return `Replication: raft. This node is ${g.role}${g.left ? ' (left the group: refusing writes)' : ''}; ` +
    `leader ${g.leader || 'none known'}, term ${g.term}; log ${idx(g.last_log_index)}, committed ${idx(g.committed)}, ` +
    `applied ${idx(g.applied)}, snapshot ${idx(g.snapshot)}; voters ${ids(g.voters)}; learners ${ids(g.learners)}`;
}

async function loadOverview() {
  const s = await api('GET', '/status');
  $('#cluster-id').textContent = s.cluster;
  $('#peers-of').textContent = s.node;
  $('#resources-on').textContent = s.node;
  show($('#overview-summary'), `${s.members.length} members; answered by ${s.node} (${s.addr}, Spectrum ${s.version}), ${s.keys} live keys, ${s.conflicts} open conflicts`);
  const warnings = [
    s.clock_fenced && 'Clock fenced (refusing writes): ' + s.clock_fenced,
    s.out_of_cluster && 'Out of the cluster (refusing reads and writes; this view is its own copy, no longer kept up to date): ' + s.out_of_cluster,
  ].filter(Boolean);
  show($('#clock-fenced'), warnings.join(' | '));
  show($('#replication-summary'), replicationSummary(s.replication));
  fillTable('#members-table', s.members.map((m) => h('tr', { 'data-node': m.id },
    h('td', {}, m.id), h('td', {}, m.addr), h('td', { class: 'state ' + m.state }, m.state),
    h('td', { class: 'liveness ' + m.liveness }, m.liveness))));
  fillTable('#peers-table', s.peers.map((p) => {
    const clock = p.clock_offset_ms === null ? '?' :
      `${p.clock_offset_ms >= 0 ? '+' : ''}${p.clock_offset_ms}${p.clock_uncertainty_ms !== null ? '±' + p.clock_uncertainty_ms : ''} ms`;
    return h('tr', {}, h('td', {}, p.id || '?'), h('td', {}, p.addr), h('td', {}, p.lag),
      h('td', {}, p.last_contact_ms_ago === null ? 'never' : p.last_contact_ms_ago + ' ms ago'),
      h('td', { class: p.clock_skewed ? 'bad' : '' }, clock + (p.clock_skewed ? ' SKEW' : '')),
      h('td', { class: 'detail' }, p.last_error || ''));
  }));
  fillTable('#node-resources-table', s.resources.map((r) => h('tr', {},
    h('td', {}, r.name), h('td', {}, r.kind), h('td', { class: r.available ? 'good' : 'bad' }, r.available ? 'yes' : 'NO'),
    h('td', { class: 'detail' }, r.detail))));
  await loadConflicts();
  // One series per member, as whichever node answered sees it (through the
  // balancer, successive samples may come from different nodes).
  for (const p of s.peers) {
    const id = p.id || p.addr;
    record('lag', id, p.lag);
    record('clock', id, p.clock_offset_ms);
  }
  chart($("#chart-lag"), series.lag);
  chart($("#chart-clock"), series.clock);
  await loadBalancer();
  if (!poller) {
    poller = setInterval(() => {
      if (document.body.dataset.page === 'overview') loadOverview().catch((e) => flash(e.message));
    }, POLL_MS);
  }
}

/** The open conflicts table, as the answering node holds them (every node agrees once it has every write). */
async function loadConflicts() {
  const list = await api('GET', '/conflicts');
  $('#conflict-count').textContent = `(${list.length})`;
  $('#conflict-count').className = 'count' + (list.length > 0 ? ' bad' : '');
  const write = (v) => (v.deleted ? 'delete ' : '') + v.version;
  fillTable('#conflicts-table', list.map((c) => h('tr', { 'data-key': c.key },
    h('td', {}, c.key),
    h('td', {}, write(c.winner)), h('td', {}, c.winner.node), h('td', {}, time(c.winner.stamp_wall_ms)),
    h('td', { class: 'bad' }, write(c.loser)), h('td', {}, c.loser.node), h('td', {}, time(c.loser.stamp_wall_ms)))));
}

// ---- licenses ----------------------------------------------------------------------

async function loadLicenses() {
  const list = await api('GET', '/licenses');
  fillTable('#licenses-table', list.map((l) => h('tr', { 'data-name': l.name },
    h('td', {}, l.name), h('td', {}, l.owner), h('td', {}, l.seats), h('td', {}, l.expires),
    h('td', { class: l.expired ? 'bad' : '' }, l.expired ? `expired ${-l.days_left} days ago` : l.days_left))));
}

async function saveLicense(event) {
  event.preventDefault();
  const f = event.target.elements;
  const doc = { owner: f.owner.value, seats: Number(f.seats.value), expires: f.expires.value };
  try {
    const done = await api('PUT', '/licenses/' + enc(f.name.value || 'main') + '?ack=all', doc);
    show($('#license-error'), '');
    flash(`license ${done.license.name} set (expires ${done.license.expires})`, true);
    await loadLicenses();
  } catch (e) {
    show($('#license-error'), e.message);
  }
}

// ---- dataflows ----------------------------------------------------------------------

async function loadDataflows() {
  const list = await api('GET', '/dataflows');
  fillTable('#dataflows-table', list.map((d) => h('tr', { 'data-name': d.name },
    h('td', {}, d.name), h('td', {}, d.version), h('td', { class: 'detail' }, JSON.stringify(d.definition)),
    h('td', {},
      h('button', { type: 'button', class: 'edit', onclick: () => editDataflow(d) }, 'Edit'),
      confirmButton('delete', 'Delete', () => deleteDataflow(d.name))))));
}

function editDataflow(d) {
  const f = $('#dataflow-form').elements;
  f.name.value = d.name || '';
  f.name.readOnly = !!d.name;
  f.definition.value = d.name ? JSON.stringify(d.definition, null, 2) : '{"steps": ["trim"]}';
  f.replace.value = d.name ? 'true' : 'false';
  $('#dataflow-form-title').textContent = d.name ? 'Edit dataflow ' + d.name : 'Create a dataflow';
  show($('#dataflow-error'), '');
}

async function saveDataflow(event) {
  event.preventDefault();
  const f = event.target.elements;
  try {
    const path = `/dataflows/${enc(f.name.value)}?ack=all&replace=${f.replace.value}`;
    await api('PUT', path, f.definition.value);
    flash(`dataflow ${f.name.value} saved`, true);
    editDataflow({});
    await loadDataflows();
  } catch (e) {
    show($('#dataflow-error'), e.message);
  }
}

async function deleteDataflow(name) {
  try {
    await api('DELETE', '/dataflows/' + enc(name) + '?ack=all');
    flash(`dataflow ${name} deleted`, true);
    await loadDataflows();
  } catch (e) {
    flash(e.message);
  }
}

// ---- resources ----------------------------------------------------------------------

// The fields of each kind, by their path in the definition (the API's error
// messages name these paths). `secret`: write-only; `number`: sent as a number.
const COMMON = [
  { path: 'name', label: 'Name', required: true },
  { path: 'description', label: 'Description' },
];
const KINDS = {
  jdbc: [
    { path: 'spec.url', label: 'JDBC URL', required: true, placeholder: 'jdbc:postgresql://host:5432/db' },
    { path: 'spec.driver', label: 'Driver class', required: true, placeholder: 'org.postgresql.Driver' },
    { path: 'spec.user', label: 'User' },
    { path: 'spec.password', label: 'Password', secret: true },
  ],
  database: [
    { path: 'spec.category', label: 'Category', required: true, suggestions: ['postal', 'geocoding', 'spatial'] },
    { path: 'spec.location.kind', label: 'Location', required: true, options: ['local', 'shared'] },
    { path: 'spec.location.path', label: 'Path (absolute, on every node)', required: true, placeholder: '/data/postal' },
  ],
  file_server: [
    { path: 'spec.protocol', label: 'Protocol', required: true, options: ['local', 'ftp', 'sftp', 'smb', 'http', 'https'] },
    { path: 'spec.host', label: 'Host' },
    { path: 'spec.port', label: 'Port', number: true },
    { path: 'spec.root', label: 'Root', required: true, placeholder: '/exports' },
    { path: 'spec.user', label: 'User' },
    { path: 'spec.password', label: 'Password', secret: true },
  ],
  web_service: [
    { path: 'spec.url', label: 'URL', required: true, placeholder: 'http://host:8080/api' },
    { path: 'spec.timeout_ms', label: 'Timeout (ms)', number: true },
    { path: 'spec.user', label: 'User' },
    { path: 'spec.password', label: 'Password', secret: true },
  ],
};

/**
 * The stored definition being edited (redacted), or null for a new one. Saving
 * starts from it, so fields the form does not show (a database's per-node
 * `location.overrides`, say) are kept, and a secret left empty goes back as its
 * redaction placeholder, which keeps the stored secret.
 */
let editing = null;

function fieldId(path) {
  return 'field-' + path.replace(/\./g, '-');
}

function renderResourceFields(kind) {
  const fields = [...COMMON, ...KINDS[kind]];
  $('#resource-fields').replaceChildren(...fields.map((f) => {
    const attrs = { id: fieldId(f.path), 'data-field': f.path, placeholder: f.placeholder };
    let input;
    if (f.options) {
      input = h('select', attrs, f.options.map((o) => h('option', { value: o }, o)));
    } else if (f.suggestions) {
      // Free text (custom values are allowed), offering the usual ones.
      const list = attrs.id + '-suggestions';
      input = h('span', {},
        h('input', { ...attrs, type: 'text', list, autocomplete: 'off', value: f.suggestions[0] }),
        h('datalist', { id: list }, f.suggestions.map((o) => h('option', { value: o }))));
    } else {
      input = h('input', { ...attrs, type: f.secret ? 'password' : (f.number ? 'number' : 'text'), autocomplete: 'off' });
      if (f.secret) input.placeholder = 'write-only: never shown again';
    }
    return h('div', { class: 'field' },
      h('label', { for: attrs.id }, f.label + (f.required ? ' *' : '')),
      input,
      h('span', { class: 'field-error', 'data-error-for': f.path, hidden: true }));
  }));
}

function setPath(obj, path, value) {
  const keys = path.split('.');
  let o = obj;
  for (const k of keys.slice(0, -1)) o = o[k] = o[k] || {};
  o[keys[keys.length - 1]] = value;
}

function getPath(obj, path) {
  return path.split('.').reduce((o, k) => (o && typeof o === 'object' ? o[k] : undefined), obj);
}

function deletePath(obj, path) {
  const keys = path.split('.');
  const parent = getPath(obj, keys.slice(0, -1).join('.'));
  if (parent && typeof parent === 'object') delete parent[keys[keys.length - 1]];
}

function resourceDefinition() {
  const kind = $('#resource-kind').value;
  const def = editing && editing.spec.kind === kind ? structuredClone(editing) : { spec: { kind } };
  for (const f of [...COMMON, ...KINDS[kind]]) {
    const raw = document.getElementById(fieldId(f.path)).value;
    if (raw === '') {
      // A secret left empty keeps what the definition had; another field emptied is unset.
      if (!f.secret) deletePath(def, f.path);
      continue;
    }
    const n = Number(raw);
    setPath(def, f.path, f.number && raw.trim() !== '' && !Number.isNaN(n) ? n : raw);
  }
  return def;
}

function clearFieldErrors() {
  for (const e of document.querySelectorAll('.field-error')) show(e, '');
  for (const e of document.querySelectorAll('.field.invalid')) e.classList.remove('invalid');
  show($('#resource-error'), '');
}

/** Puts an API error next to the field it names (`spec.url: …`), else under the form. */
function showResourceError(message) {
  const text = message.replace(/^invalid resource definition: /, '');
  const m = text.match(/^([\w.]+): ([\s\S]*)$/);
  if (m) {
    let path = m[1];
    while (path) {
      const slot = document.querySelector(`.field-error[data-error-for="${path}"]`);
      if (slot) {
        show(slot, m[2]);
        slot.parentElement.classList.add('invalid');
        return;
      }
      path = path.includes('.') ? path.slice(0, path.lastIndexOf('.')) : '';
      if (path === 'spec.location') path = 'spec.location.kind';
    }
  }
  show($('#resource-error'), message);
}

async function saveResource(event) {
  event.preventDefault();
  clearFieldErrors();
  const replace = $('#resource-replace').checked;
  try {
    const done = await api('POST', `/resources?ack=all&replace=${replace}`, resourceDefinition());
    flash(`resource ${done.resource.name} stored (${done.resource.kind}${done.resource.has_secret ? ', secret encrypted' : ''})`, true);
    newResource();
    await loadResources();
  } catch (e) {
    showResourceError(e.message);
  }
}

function newResource() {
  editing = null;
  renderResourceFields($('#resource-kind').value);
  $('#resource-replace').checked = false;
  $('#resource-form-title').textContent = 'Create a resource';
  clearFieldErrors();
}

function editResource(r) {
  const def = r.definition;
  $('#resource-kind').value = def.spec.kind;
  renderResourceFields(def.spec.kind);
  editing = structuredClone(def);
  for (const f of [...COMMON, ...KINDS[def.spec.kind]]) {
    const v = getPath(def, f.path);
    if (!f.secret) document.getElementById(fieldId(f.path)).value = v === undefined ? '' : v;
  }
  $('#resource-replace').checked = true;
  $('#resource-form-title').textContent = 'Edit resource ' + r.name;
  clearFieldErrors();
}

async function deleteResource(name) {
  try {
    await api('DELETE', '/resources/' + enc(name) + '?ack=all');
    flash(`resource ${name} deleted`, true);
    await loadResources();
  } catch (e) {
    flash(e.message);
  }
}

async function checkResources() {
  try {
    const checks = await api('GET', '/resource-checks');
    show($('#availability-error'), '');
    const rows = [];
    for (const n of checks.nodes) {
      if (n.error) rows.push(h('tr', {}, h('td', {}, '*'), h('td', {}, n.node), h('td', { class: 'bad' }, '?'), h('td', { class: 'detail' }, 'not reachable: ' + n.error)));
      for (const r of n.resources) {
        rows.push(h('tr', { 'data-name': r.name, 'data-node': n.node }, h('td', {}, r.name), h('td', {}, n.node),
          h('td', { class: r.available ? 'good' : 'bad' }, r.available ? 'yes' : 'NO'), h('td', { class: 'detail' }, r.detail)));
      }
    }
    fillTable('#availability-table', rows);
  } catch (e) {
    fillTable('#availability-table', []);
    show($('#availability-error'), e.message);
  }
}

async function loadResources() {
  const list = await api('GET', '/resources');
  fillTable('#resources-table', list.map((r) => h('tr', { 'data-name': r.name },
    h('td', {}, r.name), h('td', {}, r.kind), h('td', {}, r.has_secret ? '***' : '-'),
    h('td', {}, r.description), h('td', {}, r.version),
    h('td', {},
      h('button', { type: 'button', class: 'edit', onclick: () => editResource(r) }, 'Edit'),
      confirmButton('delete', 'Delete', () => deleteResource(r.name))))));
  await checkResources();
}

// ---- nodes ------------------------------------------------------------------------

async function nodeAction(id, action) {
  try {
    const done = await api('POST', `/nodes/${enc(id)}/${action}?ack=all`);
    flash(`node ${done.node} is now ${done.state}`, true);
    const cell = document.querySelector(`#nodes-table tr[data-node="${CSS.escape(done.node)}"] .state`);
    if (cell) { cell.textContent = done.state; cell.className = 'state ' + done.state; }
  } catch (e) {
    flash(e.message);
  }
}

/**
 * A button for what cannot be undone (remove a node, revoke a user, replace a
 * token, delete a definition): the first click arms it ("Confirm …"), the
 * second runs `action`.
 */
function confirmButton(cls, label, action) {
  const b = h('button', { type: 'button', class: cls }, label);
  b.addEventListener('click', () => {
    if (b.dataset.armed) return action();
    b.dataset.armed = '1';
    b.textContent = 'Confirm ' + label.toLowerCase();
  });
  return b;
}

function removeButton(id) {
  return confirmButton('remove', 'Remove', () => nodeAction(id, 'remove'));
}

async function loadNodes() {
  const s = await api('GET', '/status');
  fillTable('#nodes-table', s.members.map((m) => h('tr', { 'data-node': m.id },
    h('td', {}, m.id), h('td', {}, m.addr), h('td', { class: 'state ' + m.state }, m.state),
    h('td', { class: 'liveness ' + m.liveness }, m.liveness),
    h('td', {},
      h('button', { type: 'button', class: 'drain', onclick: () => nodeAction(m.id, 'drain') }, 'Drain'),
      h('button', { type: 'button', class: 'undrain', onclick: () => nodeAction(m.id, 'undrain') }, 'Undrain'),
      removeButton(m.id)))));
}

// ---- users and audit ------------------------------------------------------------------

function showToken(t) {
  $('#new-token-user').textContent = t.user.name;
  $('#new-token-value').textContent = t.token;
  $('#new-token').hidden = false;
}

async function loadUsers() {
  $('#new-token').hidden = true;
  const list = await api('GET', '/users');
  fillTable('#users-table', list.map((u) => h('tr', { 'data-name': u.name },
    h('td', {}, u.name), h('td', {}, u.role), h('td', {}, time(u.created_ms)), h('td', {}, u.revoked ? 'yes' : '-'),
    h('td', {}, u.revoked ? '' : [
      confirmButton('rotate', 'New token', () => userAction('POST', u.name, '/rotate')),
      confirmButton('revoke', 'Revoke', () => userAction('DELETE', u.name, ''))]))));
}

async function userAction(method, name, suffix) {
  try {
    const done = await api(method, `/users/${enc(name)}${suffix}?ack=all`);
    await loadUsers();
    if (done.token) showToken(done);
    flash(done.token ? `new token for ${name}` : `user ${name} revoked`, true);
  } catch (e) {
    flash(e.message);
  }
}

async function addUser(event) {
  event.preventDefault();
  const f = event.target.elements;
  try {
    const done = await api('POST', '/users?ack=all', { name: f.name.value, role: f.role.value });
    show($('#user-error'), '');
    await loadUsers();
    showToken(done);
  } catch (e) {
    show($('#user-error'), e.message);
  }
}

async function loadAudit(event) {
  if (event) event.preventDefault();
  const f = $('#audit-form').elements;
  const q = new URLSearchParams({ limit: f.limit.value || '100' });
  if (f.user.value) q.set('user', f.user.value);
  const log = await api('GET', '/audit?' + q);
  fillTable('#audit-table', log.map((e) => h('tr', { class: e.ok ? '' : 'failed' },
    h('td', {}, time(e.at_ms)), h('td', {}, e.node), h('td', {}, e.caller), h('td', {}, e.role),
    h('td', {}, e.operation), h('td', {}, e.target), h('td', { class: 'detail' }, e.ok ? 'ok' : `${e.code}: ${e.message || ''}`))));
}

const LOADERS = {
  overview: loadOverview,
  licenses: loadLicenses,
  dataflows: loadDataflows,
  resources: loadResources,
  nodes: loadNodes,
  users: loadUsers,
  audit: () => loadAudit(),
};

document.addEventListener('DOMContentLoaded', () => {
  $('#signin-form').addEventListener('submit', signIn);
  $('#signout').addEventListener('click', () => signOut());
  $('#license-form').addEventListener('submit', saveLicense);
  $('#dataflow-form').addEventListener('submit', saveDataflow);
  $('#dataflow-new').addEventListener('click', () => editDataflow({}));
  $('#resource-form').addEventListener('submit', saveResource);
  $('#resource-kind').addEventListener('change', () => renderResourceFields($('#resource-kind').value));
  $('#resource-new').addEventListener('click', newResource);
  $('#resources-check').addEventListener('click', checkResources);
  $('#user-form').addEventListener('submit', addUser);
  $('#audit-form').addEventListener('submit', (e) => loadAudit(e).catch((err) => flash(err.message)));
  renderResourceFields('jdbc');
  window.addEventListener('hashchange', route);
  route();
});
