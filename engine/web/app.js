// The gateway's status page. It reads the gateway's JSON endpoints with
// the key its user gives (kept in sessionStorage only) and builds every
// node with createElement and text nodes: a model name or an upstream
// error is shown as text, never parsed as HTML.
'use strict';
(() => {
  const REFRESH_MS = 4000;
  const SLOT = 'gateway.key';
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';

  let key = sessionStorage.getItem(SLOT) || '';
  let win = '1h';
  let timer = 0;
  let busy = false;
  let again = false;
  let running = false;
  let modelIds = '';
  // The model list changes only on a reload: it is asked for every
  // MODELS_EVERY refreshes, to spend fewer requests of a rate-limited
  // anonymous client.
  const MODELS_EVERY = 5;
  let models = null;
  let ticks = 0;

  class AuthError extends Error {}
  class HTTPError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }
  // RateError is a 429: the whole refresh waits as long as it says.
  class RateError extends HTTPError {}

  // el makes an element of class cls holding kids (nodes, or text).
  function el(tag, cls, ...kids) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }

  function headers(extra) {
    const h = Object.assign({}, extra);
    if (key) h.Authorization = 'Bearer ' + key;
    return h;
  }

  async function failure(r) {
    let msg = 'HTTP ' + r.status;
    try {
      const b = await r.json();
      if (b && b.error && b.error.message) msg = b.error.message;
    } catch (_) { /* not JSON: keep the status */ }
    return new HTTPError(r.status, msg);
  }

  async function api(path) {
    const r = await fetch(path, { headers: headers(), cache: 'no-store', credentials: 'omit' });
    if (r.status === 401) throw new AuthError();
    if (r.status === 429) {
      const e = new RateError(429, (await failure(r)).message);
      e.wait = Math.max(1, Number(r.headers.get('Retry-After')) || 0) * 1000;
      throw e;
    }
    if (!r.ok) throw await failure(r);
    return r.json();
  }

  // optional turns an endpoint's refusal (not one of the key) into
  // {missing: error}, so one section says so and the others still show.
  function optional(p) {
    return p.catch((e) => {
      if (e instanceof AuthError || e instanceof RateError) throw e;
      return { missing: e };
    });
  }

  function missingText(e) {
    if (e.status === 404) return 'not available on this gateway';
    if (e.status === 403) return 'admin keys only';
    return 'not available: ' + e.message;
  }

  function fill(id, ...kids) {
    $(id).querySelector('.body').replaceChildren(...kids);
  }

  // ---- formatting ----

  function num(n) {
    n = Number(n) || 0;
    if (n >= 1e9) return (n / 1e9).toFixed(1) + 'G';
    if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (n >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return String(Math.round(n * 100) / 100);
  }

  function ms(v) {
    v = Number(v) || 0;
    return v >= 1000 ? (v / 1000).toFixed(2) + ' s' : Math.round(v) + ' ms';
  }

  function when(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    const sameDay = d.toDateString() === new Date().toDateString();
    return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function sum(obj) {
    let n = 0;
    for (const k in obj || {}) n += Number(obj[k]) || 0;
    return n;
  }

  const STATES = ['healthy', 'cooling_down', 'rate_limited', 'invalid', 'error', 'closed', 'open', 'half_open', 'eligible', 'ok', 'failed'];
  function badge(state, text) {
    const s = String(state);
    return el('span', 'badge s-' + (STATES.includes(s) ? s : 'other'), text === undefined ? s : text);
  }

  function table(head, rows) {
    const t = el('table');
    t.append(el('thead', null, el('tr', null, ...head.map((h) => el('th', null, h)))));
    const b = el('tbody');
    for (const r of rows) b.append(r);
    t.append(b);
    return t;
  }

  function row(cells) {
    return el('tr', null, ...cells.map((c) => el('td', null, c)));
  }

  // ---- sections ----

  function renderHeader(stats, health) {
    const v = health.missing ? '' : 'version ' + health.version;
    $('version').textContent = v;
    const viewer = stats.viewer;
    let who = key ? 'key given' : 'auth off';
    if (viewer) who = viewer.key ? 'key ' + viewer.key + (viewer.admin ? ' (admin)' : '') : (viewer.admin ? 'auth off' : who);
    $('viewer').textContent = who;
    $('forget').hidden = !key;
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  }

  function renderConfig(stats, health) {
    const dl = el('dl', 'facts');
    const add = (k, ...v) => dl.append(el('dt', null, k), el('dd', null, ...v));
    const cfg = stats.config || {};
    add('config', el('code', null, String(cfg.checksum || '').slice(0, 12)), ' loaded ' + when(cfg.loadedAt || cfg.loaded_at));
    const rl = stats.reload || (health.missing ? null : {
      ok: health.last_reload.ok, at: health.last_reload.at, errorCount: health.last_reload.errors,
    });
    if (rl) {
      const errs = rl.errors || [];
      const count = rl.errors ? errs.length : (rl.errorCount || 0);
      add('last reload', badge(rl.ok ? 'ok' : 'failed'), ' ' + when(rl.at),
        count ? ' \u00b7 ' + count + ' error' + (count > 1 ? 's' : '') : '');
      if (errs.length) dl.append(el('dd', 'wide', el('ul', 'errors', ...errs.map((e) => el('li', null, e)))));
    }
    add('uptime', stats.uptime || '');
    add('requests', num(stats.totalRequests) + (stats.window ? ' (window ' + stats.window + ')' : ' since start'));
    add('cache', (stats.cacheHitRate || '0%') + ' hits, ' + num(stats.cachedKeys) + ' entries');
    add('sticky sessions', num(stats.stickySessions));
    fill('config', dl);
  }

  function keyChip(target, k) {
    const c = el('span', 'key', '#' + k.index + ' ', badge(k.state));
    c.dataset.key = target + '#' + k.index;
    c.dataset.state = String(k.state);
    if (k.until) c.append(' until ' + when(k.until));
    if (k.probe) c.append(el('small', null, ' probe ' + k.probe + (k.probedAt ? ' ' + when(k.probedAt) : '')));
    return c;
  }

  function renderProviders(stats) {
    const provs = stats.providers || {};
    const order = (stats.targets || []).filter((p) => provs[p]);
    for (const p in provs) if (!order.includes(p)) order.push(p);
    const rows = [];
    for (const p of order) {
      const models = provs[p].models || {};
      for (const m of Object.keys(models)) {
        const t = models[m];
        const target = p + '/' + m;
        const errs = sum(t.errors);
        const rate = t.requests ? (100 * errs / t.requests).toFixed(1) + '%' : '-';
        const keys = el('span', 'keys', ...(t.keys || []).map((k) => keyChip(target, k)));
        const tr = row([el('code', null, target), badge(t.breaker), num(t.requests), rate,
          t.ttfb && t.ttfb.count ? ms(t.ttfb.p50Ms) + ' / ' + ms(t.ttfb.p99Ms) : '-', keys]);
        tr.dataset.target = target;
        if (errs) tr.title = Object.keys(t.errors).map((c) => c + ': ' + t.errors[c]).join(', ');
        rows.push(tr);
      }
    }
    fill('providers', rows.length ? table(['target', 'breaker', 'attempts', 'errors', 'TTFB p50 / p99', 'keys'], rows) : el('p', 'none', 'no providers'));
  }

  function renderKeys(stats) {
    const keys = stats.keys || {};
    const names = Object.keys(keys).sort();
    const rows = names.map((n) => {
      const u = keys[n];
      const tr = row([n, num(u.requests), num(u.successes), num(sum(u.errors)), num(u.promptTokens) + ' / ' + num(u.completionTokens)]);
      tr.dataset.gwkey = n;
      return tr;
    });
    fill('keys', rows.length ? table(['key', 'requests', 'ok', 'errors', 'tokens in / out'], rows) : el('p', 'none', key ? 'no usage to show' : 'auth off: no gateway keys'));
  }

  function renderRequests(res) {
    if (res.missing) return fill('requests', el('p', 'none', missingText(res.missing)));
    const list = res.requests || [];
    if (!list.length) return fill('requests', el('p', 'none', 'no requests yet'));
    const rows = list.map((r) => {
      const tr = row([when(r.ts), r.key || '-', r.model || '', r.via || '-', badge(r.status < 400 ? 'ok' : 'failed', String(r.status)),
        ms(r.latencyMs), num(r.fallbacks), num(r.promptTokens) + ' / ' + num(r.completionTokens), r.stream ? 'yes' : '', r.error || '']);
      tr.title = (r.id || '') + ' ' + (r.route || '');
      tr.dataset.gwkey = r.key || '';
      return tr;
    });
    fill('requests', table(['time', 'key', 'model', 'via', 'status', 'latency', 'fallbacks', 'tokens in / out', 'stream', 'error'], rows));
  }

  function renderGroups(models, explains) {
    if (models.missing) return fill('groups', el('p', 'none', missingText(models.missing)));
    const groups = (models.data || []).filter((m) => m.owned_by === 'gateway');
    if (!groups.length) return fill('groups', el('p', 'none', 'no model groups'));
    const out = groups.map((g, i) => {
      const ex = explains[i];
      const box = el('div', 'group', el('h3', null, g.id), g.description ? el('span', 'desc', g.description) : null);
      box.dataset.group = g.id;
      if (!ex) box.append(el('p', 'none', 'chain: admin keys only'));
      else if (ex.missing) box.append(el('p', 'none', 'chain: ' + missingText(ex.missing)));
      else {
        box.append(el('p', 'route', 'route ' + (ex.route || 'default') + ' \u00b7 ' + (ex.strategy || '') +
          ' \u00b7 picks ', el('code', 'pick', ex.pick || 'nothing')));
        const ol = el('ol', 'chain');
        for (const c of ex.candidates || []) {
          const li = el('li', c.pick ? 'picked' : null, el('code', null, c.target), ' key ' + c.key + '/' + c.keys + ' ',
            badge(String(c.state).startsWith('eligible') ? 'eligible' : 'other', c.state), c.until ? ' until ' + when(c.until) : '');
          ol.append(li);
        }
        box.append(ol);
      }
      return box;
    });
    fill('groups', ...out);
  }

  // ---- charts: hand-drawn SVG, one per figure ----

  const CHARTS = [
    ['requests', [['requests', 'requests']]],
    ['errors', [['errors', 'errors']]],
    ['fallbacks', [['fallbacks', 'fallbacks']]],
    ['tokens', [['promptTokens', 'in'], ['completionTokens', 'out']]],
  ];

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const a in attrs) e.setAttribute(a, attrs[a]);
    return e;
  }

  function chart(title, series, points, step) {
    const W = 300, H = 80;
    let max = 0, total = 0;
    for (const p of points) {
      for (const [f] of series) {
        max = Math.max(max, Number(p[f]) || 0);
        total += Number(p[f]) || 0;
      }
    }
    const s = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', role: 'img' });
    const x = (i) => points.length > 1 ? i * W / (points.length - 1) : W / 2;
    const y = (v) => H - 2 - (max ? (Number(v) || 0) * (H - 4) / max : 0);
    series.forEach(([f], si) => {
      let d = '';
      points.forEach((p, i) => { d += (i ? 'L' : 'M') + x(i).toFixed(1) + ' ' + y(p[f]).toFixed(1); });
      if (!d) return;
      if (si === 0) s.append(svg('path', { d: d + 'L' + W + ' ' + H + 'L0 ' + H + 'Z', class: 'area' }));
      s.append(svg('path', { d: d, class: 'line c' + si }));
    });
    const cursor = svg('line', { x1: 0, x2: 0, y1: 0, y2: H, class: 'cursor' });
    s.append(cursor);
    const legend = series.length > 1 ? el('span', 'legend', ...series.map(([, name], i) => el('span', 'c' + i, name + ' '))) : null;
    const read = el('span', 'read', 'total ' + num(total) + ', peak ' + num(max) + ' per ' + (step >= 3600 ? step / 3600 + ' h' : step / 60 + ' min'));
    s.addEventListener('mousemove', (ev) => {
      if (!points.length) return;
      const r = s.getBoundingClientRect();
      const i = Math.max(0, Math.min(points.length - 1, Math.round((ev.clientX - r.left) / r.width * (points.length - 1))));
      cursor.setAttribute('x1', x(i));
      cursor.setAttribute('x2', x(i));
      read.textContent = new Date(points[i].t * 1000).toLocaleString() + ': ' + series.map(([f, n]) => n + ' ' + num(points[i][f])).join(', ');
    });
    const from = points.length ? new Date(points[0].t * 1000).toLocaleString() : '';
    return el('figure', 'chart', el('figcaption', null, el('b', null, title), ' ', legend, read), s,
      el('div', 'axis', el('span', null, from), el('span', null, 'now')));
  }

  function renderCharts(series) {
    if (series.missing) return fill('charts', el('p', 'none', missingText(series.missing)));
    const pts = series.points || [];
    fill('charts', ...CHARTS.map(([t, s]) => chart(t, s, pts, series.stepSeconds || 60)));
  }

  // ---- refresh loop: one at a time, every REFRESH_MS ----

  async function refresh() {
    const q = '?window=' + encodeURIComponent(win);
    const fresh = !models || models.missing || ticks++ % MODELS_EVERY === 0;
    const [stats, series, reqs, health, list] = await Promise.all([
      api('/api/stats' + q),
      optional(api('/api/stats/series' + q)),
      optional(api('/api/requests?limit=50')),
      optional(api('/health')),
      fresh ? optional(api('/v1/models')) : models,
    ]);
    models = list;
    const admin = stats.viewer ? stats.viewer.admin : true;
    const groups = models.missing ? [] : (models.data || []).filter((m) => m.owned_by === 'gateway').slice(0, 50);
    const explains = await Promise.all(groups.map((g) => admin
      ? optional(api('/api/explain?model=' + encodeURIComponent(g.id)))
      : Promise.resolve(null)));
    renderHeader(stats, health);
    renderConfig(stats, health);
    renderProviders(stats);
    renderGroups(models, explains);
    renderCharts(series);
    renderKeys(stats);
    renderRequests(reqs);
    updateModels(models);
    $('problem').hidden = true;
  }

  function kick() {
    clearTimeout(timer);
    if (!running) return;
    if (busy) {
      again = true;
      return;
    }
    if (document.hidden) {
      timer = setTimeout(kick, REFRESH_MS);
      return;
    }
    run();
  }

  async function run() {
    busy = true;
    let refused = false;
    let wait = REFRESH_MS;
    try {
      await refresh();
      $('main').hidden = false;
    } catch (e) {
      if (e instanceof AuthError) refused = true;
      else {
        if (e instanceof RateError) wait = Math.max(wait, e.wait);
        $('problem').textContent = 'refresh failed: ' + e.message + ' (retrying in ' + Math.round(wait / 1000) + ' s)';
        $('problem').hidden = false;
      }
    }
    busy = false;
    if (refused) return askKey(key ? 'That key was refused. Enter a gateway key.' : 'This gateway asks for a gateway key.');
    timer = setTimeout(kick, again && wait === REFRESH_MS ? 0 : wait);
    again = false;
  }

  function start() {
    running = true;
    $('login').hidden = true;
    kick();
  }

  function askKey(msg) {
    running = false;
    models = null;
    clearTimeout(timer);
    key = '';
    sessionStorage.removeItem(SLOT);
    $('main').hidden = true;
    $('forget').hidden = true;
    $('login-msg').textContent = msg;
    $('login').hidden = false;
    $('login-key').focus();
  }

  // ---- playground ----

  function updateModels(models) {
    if (models.missing) return;
    // Names that serve no chat (embeddings only) cannot answer a prompt.
    const ids = (models.data || []).filter((m) => !m.operations || m.operations.includes('chat')).map((m) => m.id);
    if (ids.join('\n') === modelIds) return;
    modelIds = ids.join('\n');
    const sel = $('play-model');
    const keep = sel.value;
    sel.replaceChildren(...ids.map((id) => {
      const o = el('option', null, id);
      o.value = id;
      return o;
    }));
    if (ids.includes(keep)) sel.value = keep;
  }

  let abort = null;

  async function play(ev) {
    ev.preventDefault();
    if (abort) return;
    const out = document.createTextNode('');
    $('play-out').replaceChildren(out);
    for (const id of ['play-status', 'play-via', 'play-fallbacks', 'play-ttft', 'play-total']) $(id).textContent = '-';
    $('play-out').className = '';
    abort = new AbortController();
    $('play-send').disabled = true;
    $('play-stop').hidden = false;
    const t0 = performance.now();
    let first = 0;
    try {
      const r = await fetch('/v1/chat/completions', {
        method: 'POST', cache: 'no-store', credentials: 'omit', signal: abort.signal,
        headers: headers({ 'Content-Type': 'application/json' }),
        body: JSON.stringify({ model: $('play-model').value, stream: true, messages: [{ role: 'user', content: $('play-prompt').value }] }),
      });
      $('play-status').textContent = String(r.status);
      $('play-via').textContent = r.headers.get('x-routed-via') || '-';
      $('play-fallbacks').textContent = r.headers.get('x-fallback-attempts') || '0';
      if (r.status === 401) return askKey('That key was refused. Enter a gateway key.');
      if (!r.ok) throw await failure(r);
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim();
          if (data === '[DONE]') continue;
          const ev = JSON.parse(data);
          if (ev.error) throw new Error(ev.error.message || 'the stream failed');
          const text = ev.choices && ev.choices[0] && ev.choices[0].delta && ev.choices[0].delta.content;
          if (text) {
            if (!first) {
              first = performance.now();
              $('play-ttft').textContent = ms(first - t0);
            }
            out.appendData(text);
          }
        }
      }
      $('play-total').textContent = ms(performance.now() - t0);
      $('play-out').className = 'done';
    } catch (e) {
      $('play-out').append(el('span', 'failed', (out.length ? '\n' : '') + (e.name === 'AbortError' ? 'stopped' : e.message)));
      $('play-total').textContent = ms(performance.now() - t0);
      $('play-out').className = 'done';
    } finally {
      abort = null;
      $('play-send').disabled = false;
      $('play-stop').hidden = true;
      kick();
    }
  }

  // ---- wiring ----

  document.addEventListener('DOMContentLoaded', () => {
    $('login').addEventListener('submit', (ev) => {
      ev.preventDefault();
      key = $('login-key').value.trim();
      $('login-key').value = '';
      if (key) sessionStorage.setItem(SLOT, key);
      start();
    });
    $('forget').addEventListener('click', () => askKey('Key forgotten. Enter a gateway key.'));
    $('window').addEventListener('change', (ev) => {
      win = ev.target.value;
      kick();
    });
    $('play').addEventListener('submit', play);
    $('play-stop').addEventListener('click', () => abort && abort.abort());
    document.addEventListener('visibilitychange', () => { if (!document.hidden) kick(); });
    start();
  });
})();
