/**
 * The dashboard page (`/_/`): plain HTML, CSS and JavaScript, kept here as strings so that they
 * ship with the compiled server (no bundler, no asset copying). The script polls `/_/status`
 * every second and renders it; names in the data are only ever set as text, never as markup.
 * When the status answers 401 (a metrics token or an access key is required) it asks for the
 * token and keeps it in this tab's sessionStorage only.
 *
 * The jobs card speaks to the operator API (`/admin/jobs`, `POST /admin/prefetch`) with the admin
 * token, asked for separately and kept the same way: it lists the jobs and starts a prefetch. When
 * this address has no operator API (no adminToken, or it lives on adminListen) the card says so.
 */

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hubcache</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/_/dashboard.css">
<script src="/_/dashboard.js" defer></script>
</head>
<body>
<header><h1>hubcache</h1><span id="state" class="muted">connecting…</span></header>
<form id="login" hidden>
  <label for="token">This dashboard needs the mirror's metrics token (or an access key)</label>
  <input id="token" type="password" autocomplete="off" placeholder="token">
  <button id="login-submit" type="submit">Show</button>
</form>
<main id="main" hidden>
  <section class="card" id="disk-card">
    <h2>Disk</h2>
    <div class="bar"><div id="disk-bar" class="fill"></div></div>
    <p><span id="disk-used">–</span> used of <span id="disk-budget">–</span> budget · <span id="disk-free">–</span> free on disk</p>
  </section>
  <section class="card" id="ratio-card">
    <h2>Cache</h2>
    <p class="big"><span id="hit-ratio">–</span> <span class="muted">hit ratio (file downloads)</span></p>
    <p id="hit-counts" class="muted">–</p>
    <p>Served from cache <b id="served-cache">–</b> · from downloads in progress <b id="served-fill">–</b> · ranges passed through <b id="served-bypass">–</b></p>
    <p>Pulled from upstream <b id="upstream-file">–</b> (files) + <b id="upstream-metadata">–</b> (metadata) · saved <b id="saved">–</b></p>
    <svg id="history" viewBox="0 0 300 60" preserveAspectRatio="none" role="img" aria-label="hit ratio and bytes saved over time"></svg>
    <p class="legend"><span class="k ratio"></span>hit ratio per interval <span class="k saved"></span>bytes saved (cumulative)</p>
  </section>
  <section class="card wide" id="fills-card">
    <h2>Downloads in progress <span id="queue" class="muted"></span></h2>
    <p id="no-fills" class="muted">none</p>
    <ul id="fills"></ul>
  </section>
  <section class="card" id="repos-card">
    <h2>Top repos</h2>
    <p id="repos-hidden" class="muted" hidden>Repo names are shown only when the mirror has a metrics token.</p>
    <table id="repos"><thead><tr><th>repo</th><th>bytes</th><th>requests</th><th>hits</th></tr></thead><tbody></tbody></table>
  </section>
  <section class="card" id="errors-card">
    <h2>Recent errors</h2>
    <p id="no-errors" class="muted">none</p>
    <ul id="errors"></ul>
  </section>
  <section class="card wide" id="jobs-card">
    <h2>Jobs</h2>
    <p id="jobs-state" class="muted">–</p>
    <form id="admin-login" hidden>
      <label for="admin-token">Prefetch and the job list need the mirror's admin token</label>
      <input id="admin-token" type="password" autocomplete="off" placeholder="admin token">
      <button id="admin-submit" type="submit">Open</button>
    </form>
    <div id="jobs-panel" hidden>
      <form id="prefetch">
        <label for="pf-repo">Prefetch a repo (files not cached yet are downloaded, once each)</label>
        <select id="pf-type" aria-label="repo type"><option value="model">model</option><option value="dataset">dataset</option><option value="space">space</option></select>
        <input id="pf-repo" placeholder="org/name" required>
        <input id="pf-revision" placeholder="revision (main)" aria-label="revision">
        <input id="pf-include" placeholder="only these globs, e.g. *.safetensors *.json" aria-label="include globs">
        <button id="pf-start" type="submit">Start</button>
      </form>
      <p id="pf-result" class="muted"></p>
      <p id="no-jobs" class="muted">no jobs yet</p>
      <table id="jobs"><thead><tr><th>job</th><th>kind</th><th>what</th><th>state</th><th>progress</th></tr></thead><tbody></tbody></table>
    </div>
  </section>
</main>
<footer class="muted" id="footer"></footer>
</body>
</html>
`;

export const DASHBOARD_CSS = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #6b7280; --bg: #f6f7f9; --card: #fff; --accent: #2563eb; --ok: #16a34a; --warn: #d97706; --bad: #dc2626; }
@media (prefers-color-scheme: dark) { :root { --fg: #e5e7eb; --muted: #9ca3af; --bg: #111318; --card: #1b1e26; } }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 1rem; padding: .8rem 1rem; }
h1 { font-size: 1.3rem; margin: 0; }
h2 { font-size: 1rem; margin: 0 0 .5rem; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: .8rem; padding: 0 1rem 1rem; }
.card { background: var(--card); border-radius: 8px; padding: .8rem 1rem; box-shadow: 0 1px 2px rgba(0,0,0,.08); min-width: 0; }
.card.wide { grid-column: 1 / -1; }
.muted { color: var(--muted); }
.big { font-size: 1.6rem; margin: .2rem 0; }
.bar { height: .8rem; background: rgba(127,127,127,.2); border-radius: 4px; overflow: hidden; }
.bar .fill { height: 100%; width: 0; background: var(--accent); }
.bar .fill.warn { background: var(--warn); }
.bar .fill.bad { background: var(--bad); }
ul { list-style: none; margin: 0; padding: 0; }
#fills li { padding: .4rem 0; border-bottom: 1px solid rgba(127,127,127,.15); }
#fills .name { overflow-wrap: anywhere; }
#fills progress { width: 100%; height: .9rem; }
#fills .meta { font-size: .85rem; }
#errors li { font-size: .85rem; padding: .25rem 0; overflow-wrap: anywhere; }
#errors .code { font-weight: 600; color: var(--bad); }
table { width: 100%; border-collapse: collapse; font-size: .85rem; }
th, td { text-align: left; padding: .2rem .3rem; }
td:not(:first-child), th:not(:first-child) { text-align: right; }
td:first-child { overflow-wrap: anywhere; }
svg { width: 100%; height: 60px; background: rgba(127,127,127,.08); border-radius: 4px; }
svg .ratio { fill: none; stroke: var(--ok); stroke-width: 1.5; vector-effect: non-scaling-stroke; }
svg .saved { fill: none; stroke: var(--accent); stroke-width: 1.5; vector-effect: non-scaling-stroke; }
.legend { font-size: .8rem; color: var(--muted); }
.legend .k { display: inline-block; width: .8rem; height: .2rem; margin: 0 .3rem .2rem .6rem; vertical-align: middle; }
.legend .k.ratio { background: var(--ok); }
.legend .k.saved { background: var(--accent); }
form { padding: 1rem; display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
form label { flex-basis: 100%; }
input { font: inherit; padding: .3rem .5rem; min-width: 14rem; }
button { font: inherit; padding: .3rem .8rem; }
footer { padding: 0 1rem 1rem; font-size: .8rem; }
#jobs-card form { padding: .3rem 0; }
#jobs-card input { min-width: 10rem; flex: 1 1 10rem; }
#jobs td progress { width: 6rem; height: .8rem; vertical-align: middle; margin-right: .3rem; }
#jobs td:nth-child(3) { text-align: left; overflow-wrap: anywhere; }
#jobs tr[data-state="failed"] td:nth-child(4) { color: var(--bad); }
#jobs tr[data-state="done"] td:nth-child(4) { color: var(--ok); }
#pf-result.bad { color: var(--bad); }
`;

export const DASHBOARD_JS = String.raw`
'use strict';
(function () {
  var TOKEN_KEY = 'hubcache-dashboard-token';
  var ADMIN_KEY = 'hubcache-dashboard-admin-token';
  var POLL_MS = 1000;
  var JOBS_POLL_MS = 2000;
  var $ = function (id) { return document.getElementById(id); };
  /** Speeds: the last bytes seen per fill, keyed by what identifies it in the data. */
  var lastSeen = {};
  var timer = null;
  /** 'idle' until the page first renders, then 'polling'; 'off' when this address has no operator API. */
  var jobsMode = 'idle';
  var jobsTimer = null;

  function bytes(n) {
    if (n === null || n === undefined) return '–';
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    var u = 0;
    while (Math.abs(n) >= 1024 && u < units.length - 1) { n /= 1024; u++; }
    return (u === 0 ? String(n) : n.toFixed(1)) + ' ' + units[u];
  }
  function percent(x) { return (x * 100).toFixed(1) + '%'; }
  function text(el, value) { el.textContent = value; return el; }
  function node(tag, cls, value) {
    var el = document.createElement(tag);
    if (cls) el.className = cls;
    if (value !== undefined) el.textContent = value;
    return el;
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }
  function time(ms) { return new Date(ms).toLocaleTimeString(); }

  function headers() {
    var token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: 'Bearer ' + token } : {};
  }

  function poll() {
    fetch('/_/status', { headers: headers(), cache: 'no-store' }).then(function (res) {
      if (res.status === 401 || res.status === 403) { askToken(); return null; }
      if (!res.ok) throw new Error('status ' + res.status);
      return res.json();
    }).then(function (status) {
      if (status) { render(status); text($('state'), 'live · ' + time(status.now)); }
    }).catch(function (err) {
      text($('state'), 'unreachable (' + err.message + '), retrying');
    }).then(function () {
      if (!$('main').hidden) timer = setTimeout(poll, POLL_MS);
    });
  }

  function askToken() {
    $('main').hidden = true;
    $('login').hidden = false;
    text($('state'), sessionStorage.getItem(TOKEN_KEY) ? 'token refused' : 'token needed');
  }

  function render(s) {
    $('login').hidden = true;
    $('main').hidden = false;
    renderDisk(s.disk);
    renderCache(s);
    renderFills(s);
    renderRepos(s);
    renderErrors(s);
    if (jobsMode === 'idle') { jobsMode = 'polling'; pollJobs(); }
    text($('footer'), 'hubcache ' + s.version + ' · up since ' + new Date(s.startedAt).toLocaleString() +
      (s.names ? '' : ' · names hidden (no metrics token configured)'));
  }

  function renderDisk(d) {
    if (!d) return;
    var share = d.budgetBytes > 0 ? d.usedBytes / d.budgetBytes : 0;
    var bar = $('disk-bar');
    bar.style.width = Math.min(100, share * 100).toFixed(2) + '%';
    bar.className = 'fill' + (share > 0.95 ? ' bad' : share > 0.8 ? ' warn' : '');
    text($('disk-used'), bytes(d.usedBytes) + ' (' + percent(share) + ')');
    text($('disk-budget'), bytes(d.budgetBytes));
    text($('disk-free'), bytes(d.freeBytes));
  }

  function downloads(g) { return g.hit + g.miss + g.joined + g.bypass; }

  function renderCache(s) {
    var t = s.totals;
    var g = t.fileGets;
    var n = downloads(g);
    text($('hit-ratio'), n > 0 ? percent(g.hit / n) : '–');
    text($('hit-counts'), g.hit + ' hits · ' + g.miss + ' misses · ' + g.joined + ' joined · ' + g.bypass + ' ranges passed through · ' + g.error + ' failed');
    text($('served-cache'), bytes(t.served.cache));
    text($('served-fill'), bytes(t.served.fill));
    text($('served-bypass'), bytes(t.served.bypass));
    text($('upstream-file'), bytes(t.upstreamBytes.file));
    text($('upstream-metadata'), bytes(t.upstreamBytes.metadata));
    var served = t.served.cache + t.served.fill + t.served.bypass;
    text($('saved'), bytes(Math.max(0, served - t.upstreamBytes.file)));
    drawHistory(s.history.concat([{ at: s.now, fileGets: g, served: t.served, upstreamBytes: t.upstreamBytes }]));
  }

  function drawHistory(h) {
    var svg = $('history');
    clear(svg);
    if (h.length < 2) return;
    var t0 = h[0].at, t1 = h[h.length - 1].at, span = Math.max(1, t1 - t0);
    var ratio = [], saved = [], maxSaved = 1;
    for (var i = 0; i < h.length; i++) {
      var s = h[i].served, v = s.cache + s.fill + s.bypass - h[i].upstreamBytes.file;
      if (v > maxSaved) maxSaved = v;
    }
    for (var j = 1; j < h.length; j++) {
      var x = ((h[j].at - t0) / span) * 300;
      var dn = downloads(h[j].fileGets) - downloads(h[j - 1].fileGets);
      var dh = h[j].fileGets.hit - h[j - 1].fileGets.hit;
      ratio.push(x.toFixed(1) + ',' + (dn > 0 ? 58 - (dh / dn) * 56 : 58).toFixed(1));
      var sv = h[j].served, val = Math.max(0, sv.cache + sv.fill + sv.bypass - h[j].upstreamBytes.file);
      saved.push(x.toFixed(1) + ',' + (58 - (val / maxSaved) * 56).toFixed(1));
    }
    [['ratio', ratio], ['saved', saved]].forEach(function (line) {
      var p = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
      p.setAttribute('class', line[0]);
      p.setAttribute('points', line[1].join(' '));
      svg.appendChild(p);
    });
  }

  function renderFills(s) {
    var q = s.queue;
    text($('queue'), '· ' + q.running + ' running of ' + q.maxConcurrentFills + ' slots · ' + q.queued + ' queued');
    var list = $('fills');
    clear(list);
    $('no-fills').hidden = s.fills.length > 0;
    var seen = {};
    s.fills.forEach(function (f, i) {
      var id = (f.repo || '') + '/' + (f.path || '') + '@' + f.admittedAt + '#' + f.size + (f.repo ? '' : '#' + i);
      seen[id] = { bytes: f.bytes, at: s.now };
      var prev = lastSeen[id];
      var speed = prev && s.now > prev.at ? ((f.bytes - prev.bytes) * 1000) / (s.now - prev.at) : null;
      var li = node('li', 'fill-row');
      li.setAttribute('data-state', f.state);
      li.appendChild(node('div', 'name', f.repo ? f.repo + ' · ' + f.path : 'download ' + (i + 1)));
      var bar = node('progress');
      bar.max = Math.max(1, f.size);
      bar.value = f.bytes;
      li.appendChild(bar);
      var pct = f.size > 0 ? f.bytes / f.size : 1;
      li.appendChild(node('div', 'meta muted', f.state === 'queued' ? 'queued · waiting for a slot · ' + bytes(f.size) + ' · ' + f.readers + ' waiting'
        : bytes(f.bytes) + ' of ' + bytes(f.size) + ' (' + percent(pct) + ') · ' + (speed === null ? '–' : bytes(Math.max(0, speed)) + '/s') +
          ' · ' + f.readers + (f.readers === 1 ? ' client' : ' clients') + ' reading'));
      list.appendChild(li);
    });
    lastSeen = seen;
  }

  function renderRepos(s) {
    var body = $('repos').tBodies[0];
    clear(body);
    $('repos-hidden').hidden = s.topRepos !== null;
    $('repos').hidden = s.topRepos === null;
    (s.topRepos || []).forEach(function (r) {
      var tr = node('tr');
      tr.appendChild(node('td', '', r.repo));
      tr.appendChild(node('td', '', bytes(r.bytes)));
      tr.appendChild(node('td', '', String(r.requests)));
      tr.appendChild(node('td', '', String(r.hits)));
      body.appendChild(tr);
    });
  }

  function renderErrors(s) {
    var list = $('errors');
    clear(list);
    $('no-errors').hidden = s.errors.length > 0;
    s.errors.forEach(function (e) {
      var li = node('li');
      li.appendChild(node('span', 'muted', time(e.at) + ' '));
      li.appendChild(node('span', 'code', (e.status ? e.status + ' ' : '') + (e.code || (e.kind === 'fill' ? 'download failed' : 'error'))));
      var where = e.kind === 'fill' ? ' download' : ' ' + (e.method || '');
      li.appendChild(node('span', '', where + (e.path ? ' ' + e.path : '') + (e.message ? ': ' + e.message : '')));
      list.appendChild(li);
    });
  }

  function adminHeaders(json) {
    var token = sessionStorage.getItem(ADMIN_KEY);
    var h = token ? { Authorization: 'Bearer ' + token } : {};
    if (json) h['Content-Type'] = 'application/json';
    return h;
  }

  /** The error an operator API answer carries: its JSON "error", else X-Error-Message, else the status. */
  function apiError(res) {
    return res.json().then(function (b) { return b && b.error ? String(b.error) : null; }, function () { return null; }).then(function (m) {
      return m || res.headers.get('x-error-message') || ('status ' + res.status);
    });
  }

  function pollJobs() {
    if (jobsTimer) { clearTimeout(jobsTimer); jobsTimer = null; }
    fetch('/admin/jobs', { headers: adminHeaders(false), cache: 'no-store' }).then(function (res) {
      if (res.status === 404) {
        jobsMode = 'off';
        $('admin-login').hidden = true;
        $('jobs-panel').hidden = true;
        text($('jobs-state'), 'No operator API on this address: the mirror has no adminToken, or serves it on adminListen (the CLI: hubcache prefetch, hubcache jobs).');
        return null;
      }
      if (res.status === 401 || res.status === 403) {
        $('jobs-panel').hidden = true;
        $('admin-login').hidden = false;
        text($('jobs-state'), sessionStorage.getItem(ADMIN_KEY) ? 'admin token refused' : 'admin token needed');
        return null;
      }
      if (!res.ok) throw new Error('status ' + res.status);
      return res.json();
    }).then(function (body) {
      if (!body) return;
      $('admin-login').hidden = true;
      $('jobs-panel').hidden = false;
      text($('jobs-state'), body.jobs.length + (body.jobs.length === 1 ? ' job' : ' jobs') + ' · ' + time(Date.now()));
      renderJobs(body.jobs);
    }).catch(function (err) {
      text($('jobs-state'), 'jobs unreachable (' + err.message + '), retrying');
    }).then(function () {
      if (jobsMode === 'polling' && $('admin-login').hidden) jobsTimer = setTimeout(pollJobs, JOBS_POLL_MS);
    });
  }

  function jobWhat(j) {
    var p = j.params || {};
    if (j.kind === 'prefetch' && p.repo) {
      return p.repo.type + 's/' + p.repo.id + '@' + p.revision + (p.include && p.include.length ? ' · ' + p.include.join(' ') : '') +
        (p.exclude && p.exclude.length ? ' · not ' + p.exclude.join(' ') : '');
    }
    if (j.kind === 'import') return String(p.path || '');
    return '';
  }

  function renderJobs(jobs) {
    var body = $('jobs').tBodies[0];
    clear(body);
    $('no-jobs').hidden = jobs.length > 0;
    $('jobs').hidden = jobs.length === 0;
    jobs.forEach(function (j) {
      var g = j.progress;
      var tr = node('tr', 'job-row');
      tr.setAttribute('data-id', j.id);
      tr.setAttribute('data-state', j.state);
      tr.appendChild(node('td', '', j.id));
      tr.appendChild(node('td', '', j.kind));
      tr.appendChild(node('td', '', jobWhat(j)));
      tr.appendChild(node('td', '', j.state + (j.message ? ': ' + j.message : '')));
      var cell = node('td', 'progress');
      if (g.itemsTotal !== null) {
        var bar = node('progress');
        bar.max = Math.max(1, g.itemsTotal);
        bar.value = g.itemsDone;
        cell.appendChild(bar);
      }
      cell.appendChild(node('span', '', g.itemsDone + ' of ' + (g.itemsTotal === null ? '?' : g.itemsTotal) + ' files' +
        (g.itemsFailed ? ' (' + g.itemsFailed + ' failed)' : '') + ' · ' + bytes(g.bytesDone)));
      tr.appendChild(cell);
      body.appendChild(tr);
    });
  }

  function startPrefetch() {
    var include = $('pf-include').value.split(/[\s,]+/).filter(function (g) { return g.length > 0; });
    var req = { repo: $('pf-repo').value.trim(), type: $('pf-type').value };
    var revision = $('pf-revision').value.trim();
    if (revision) req.revision = revision;
    if (include.length) req.include = include;
    var result = $('pf-result');
    result.className = 'muted';
    text(result, 'starting…');
    fetch('/admin/prefetch', { method: 'POST', headers: adminHeaders(true), body: JSON.stringify(req), cache: 'no-store' }).then(function (res) {
      if (res.ok) return res.json().then(function (b) { text(result, 'started job ' + b.job.id + ' (' + b.job.state + ')'); });
      return apiError(res).then(function (m) { result.className = 'bad'; text(result, 'refused: ' + m); });
    }).catch(function (err) {
      result.className = 'bad';
      text(result, 'failed: ' + err.message);
    }).then(pollJobs);
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('admin-login').addEventListener('submit', function (ev) {
      ev.preventDefault();
      sessionStorage.setItem(ADMIN_KEY, $('admin-token').value.trim());
      $('admin-token').value = '';
      jobsMode = 'polling';
      pollJobs();
    });
    $('prefetch').addEventListener('submit', function (ev) {
      ev.preventDefault();
      startPrefetch();
    });
    $('login').addEventListener('submit', function (ev) {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
      $('token').value = '';
      $('login').hidden = true;
      $('main').hidden = false;
      if (timer) clearTimeout(timer);
      poll();
    });
    $('main').hidden = false;
    poll();
  });
})();
`;
