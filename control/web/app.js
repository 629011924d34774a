// The wschaos admin page: open sessions and manual faults, the rules'
// switches, the event stream and a test client, all through the admin API
// of the server that serves this file.
'use strict';

(() => {
  const TOKEN_KEY = 'wschaos.admin.token';
  const POLL_MS = 1000;
  const MAX_EVENTS = 200;
  const MAX_CLOSES = 50;
  const MAX_NOTES = 6;

  // The close codes with a button of their own on every session.
  const CODE_BUTTONS = [
    { code: 1001, reason: 'going away', title: '1001 Going Away' },
    { code: 1012, reason: 'service restart', title: '1012 Service Restart' },
    { code: 1013, reason: 'try again later', title: '1013 Try Again Later' },
    { code: 1014, reason: 'bad gateway', title: '1014 Bad Gateway' },
    { code: 3008, reason: 'timeout', title: '3008 Timeout' },
  ];

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
        else e.setAttribute(k, v === true ? '' : v);
      }
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  // --- formatting

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function clock(t) {
    const d = t instanceof Date ? t : new Date(t);
    if (Number.isNaN(d.getTime())) return '';
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function duration(ms) {
    if (!(ms >= 0)) ms = 0;
    const s = Math.floor(ms / 1000);
    if (s < 60) return ms < 10000 ? `${(ms / 1000).toFixed(1)}s` : `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${pad(s % 60)}s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h}h ${pad(m % 60)}m`;
    return `${Math.floor(h / 24)}d ${h % 24}h`;
  }

  // A duration in its largest unit or two, for tight spaces.
  function shortDuration(ms) {
    const s = Math.max(0, Math.ceil(ms / 1000));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m`;
    const h = Math.floor(m / 60);
    return h < 48 ? `${h}h ${pad(m % 60)}m` : `${Math.floor(h / 24)}d`;
  }

  function bytes(n) {
    if (n < 1024) return `${n} B`;
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let v = n;
    let i = -1;
    do { v /= 1024; i += 1; } while (v >= 1024 && i < units.length - 1);
    return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
  }

  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  // --- messages: errors stay until dismissed (or until what failed works
  // again, for keyed ones); notices fade after a few seconds.

  const notes = new Map();

  function notify(kind, text, key) {
    key = key || `${kind}:${text}`;
    const box = $('messages');
    let n = notes.get(key);
    if (n) {
      n.count += 1;
      n.text.textContent = text;
      n.badge.textContent = n.count > 1 ? `×${n.count}` : '';
      n.time.textContent = clock(new Date());
      box.prepend(n.el);
    } else {
      const text_ = el('span', { class: 'note-text', text });
      const time = el('span', { class: 'note-time', text: clock(new Date()) });
      const badge = el('span', { class: 'note-count' });
      const close = el('button', { type: 'button', class: 'note-close', title: 'dismiss', 'aria-label': 'dismiss', text: '×' });
      const div = el('div', { class: `note note-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, time, text_, badge, close);
      n = { el: div, text: text_, time, badge, count: 1, timer: null };
      close.addEventListener('click', () => clearNote(key));
      notes.set(key, n);
      box.prepend(div);
      while (box.children.length > MAX_NOTES) {
        const last = box.lastElementChild;
        for (const [k, v] of notes) if (v.el === last) notes.delete(k);
        last.remove();
      }
    }
    clearTimeout(n.timer);
    if (kind !== 'error') n.timer = setTimeout(() => clearNote(key), 4000);
  }

  function clearNote(key) {
    const n = notes.get(key);
    if (!n) return;
    clearTimeout(n.timer);
    n.el.remove();
    notes.delete(key);
  }

  // --- the API

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    info: null,
    authNeeded: false,
    running: false,
    pollFailed: false,
  };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function authHeaders(extra) {
    const h = Object.assign({}, extra);
    if (state.token) h.Authorization = `Bearer ${state.token}`;
    return h;
  }

  // apiText performs one request and returns the body of a 2xx answer;
  // anything else throws an ApiError carrying the API's own message.
  async function apiText(method, path, body) {
    const init = { method, headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `${method} ${path}: the admin API cannot be reached (${e.message})`);
    }
    let text = '';
    try { text = await res.text(); } catch (e) { /* a cut body: reported below if needed */ }
    if (res.status === 401) {
      needToken();
      throw new ApiError(401, `${method} ${path}: ${errorText(text) || 'a token is required'}`);
    }
    if (!res.ok) {
      throw new ApiError(res.status, `${method} ${path}: ${res.status} ${errorText(text) || res.statusText}`);
    }
    return text;
  }

  function errorText(text) {
    try {
      const v = JSON.parse(text);
      if (v && typeof v.error === 'string') return v.error;
    } catch (e) { /* not JSON */ }
    return text.trim().slice(0, 300);
  }

  async function api(method, path, body) {
    const text = await apiText(method, path, body);
    if (!text.trim()) return null;
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new ApiError(200, `${method} ${path}: the answer is not JSON (${e.message})`);
    }
  }

  // --- the token

  function needToken() {
    if (state.authNeeded) return;
    state.authNeeded = true;
    stopEvents();
    $('main').hidden = true;
    $('token-card').hidden = false;
    $('forget-token').hidden = true;
    $('token-note').textContent = state.token
      ? 'The API refused the token this tab had. Enter the right one.'
      : '';
    setLive('error', 'token needed');
    const input = $('token-input');
    input.value = '';
    input.focus();
  }

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token-input').value.trim();
    if (!t) return;
    state.token = t;
    sessionStorage.setItem(TOKEN_KEY, t);
    state.authNeeded = false;
    $('token-card').hidden = true;
    $('token-note').textContent = '';
    boot();
  });

  $('forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    location.reload();
  });

  // --- header

  function setLive(kind, text) {
    const live = $('live');
    live.className = `live live-${kind}`;
    live.textContent = text;
  }

  // The seed is a 64-bit integer: JSON.parse would round it, so it is
  // read from the text.
  function parseInfo(text) {
    const info = JSON.parse(text);
    const m = /"seed"\s*:\s*(-?\d+)/.exec(text);
    if (m) info.seed = m[1];
    return info;
  }

  // The URL the test client dials: the proxy's, with an unspecified host
  // (a proxy listening on every interface) replaced by this page's host.
  function proxyBase() {
    if (!state.info || !state.info.proxy_url) return '';
    try {
      const u = new URL(state.info.proxy_url);
      if (['0.0.0.0', '[::]', '::', ''].includes(u.hostname)) u.hostname = location.hostname;
      return u.href.replace(/\/$/, '');
    } catch (e) {
      return state.info.proxy_url.replace(/\/$/, '');
    }
  }

  function renderInfo() {
    const i = state.info;
    $('info-version').textContent = i.version ? `v${i.version}` : '';
    $('info-proxy').textContent = i.proxy_url || '–';
    $('info-upstream').textContent = i.upstream || '–';
    $('info-seed').textContent = i.seed !== undefined ? String(i.seed) : '–';
    $('forget-token').hidden = !state.token;
    document.title = `wschaos admin · ${i.proxy_url || ''}`;
    updateClientURL();
  }

  // --- start

  let bootTimer = null;

  async function boot() {
    clearTimeout(bootTimer);
    let text;
    try {
      text = await apiText('GET', '/api/info');
      state.info = parseInfo(text);
    } catch (e) {
      if (e.status === 401) return;
      notify('error', e.message, 'info');
      setLive('error', 'API unreachable');
      bootTimer = setTimeout(boot, 2000);
      return;
    }
    clearNote('info');
    if (state.info.token && !state.token) {
      needToken();
      return;
    }
    renderInfo();
    $('main').hidden = false;
    if (!state.running) {
      state.running = true;
      pollLoop();
    } else {
      pollOnce();
    }
    startEvents();
  }

  // --- polling sessions and rules

  let pollTimer = null;

  async function pollOnce() {
    if (state.authNeeded) return;
    const results = await Promise.allSettled([refreshSessions(), refreshRules()]);
    if (state.authNeeded) return;
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      state.pollFailed = true;
      if (failed.reason.status !== 401) notify('error', failed.reason.message, 'poll');
      setLive('error', failed.reason.status === 0 ? 'API unreachable' : 'API error');
    } else {
      clearNote('poll');
      setLive('ok', `live · ${clock(new Date()).slice(0, 8)}`);
      if (state.pollFailed) {
        // The proxy may have restarted with another port or seed.
        state.pollFailed = false;
        apiText('GET', '/api/info').then((text) => {
          state.info = parseInfo(text);
          renderInfo();
        }).catch(() => {});
      }
    }
  }

  async function pollLoop() {
    clearTimeout(pollTimer);
    await pollOnce();
    pollTimer = setTimeout(pollLoop, POLL_MS);
  }

  // --- sessions

  const sessionRows = new Map(); // id -> {tr, cells, data}
  let sessionsSeq = 0;

  async function refreshSessions() {
    const seq = ++sessionsSeq;
    const list = await api('GET', '/api/sessions');
    if (seq !== sessionsSeq) return; // a newer answer is on its way
    renderSessions(Array.isArray(list) ? list : []);
  }

  function renderSessions(list) {
    const body = $('sessions-body');
    const seen = new Set();
    list.forEach((s, i) => {
      const id = String(s.id);
      seen.add(id);
      let row = sessionRows.get(id);
      if (!row) {
        row = makeSessionRow(id);
        sessionRows.set(id, row);
      }
      if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
      updateSessionRow(row, s);
    });
    for (const [id, row] of sessionRows) {
      if (seen.has(id)) continue;
      row.tr.remove();
      sessionRows.delete(id);
      if (popover.session === id) hidePopover();
    }
    $('sessions-count').textContent = String(list.length);
    $('sessions-empty').hidden = list.length > 0;
  }

  function makeSessionRow(id) {
    const cells = {};
    const td = (name, cls) => (cells[name] = el('td', { class: cls }));
    const actions = el('div', { class: 'actions' });
    for (const b of CODE_BUTTONS) {
      actions.append(el('button', {
        type: 'button', class: 'btn btn-sm btn-code', title: `close with ${b.title}`, text: String(b.code),
        data: { session: id, action: 'close', code: String(b.code), reason: b.reason },
      }));
    }
    actions.append(
      el('button', { type: 'button', class: 'btn btn-sm', title: 'close with a code and reason of your choice', text: 'Custom…', data: { session: id, action: 'custom' } }),
      el('span', { class: 'sep' }),
      el('button', { type: 'button', class: 'btn btn-sm btn-danger', title: 'TCP reset: the client sees 1006', text: 'Reset', data: { session: id, action: 'reset' } }),
      el('button', { type: 'button', class: 'btn btn-sm btn-danger', title: 'TCP FIN without a close frame: the client sees 1006', text: 'Drop', data: { session: id, action: 'drop' } }),
    );
    const tr = el('tr', { data: { sessionRow: id } },
      td('id', 'num mono'), td('client', 'mono'), td('path', 'mono path'), td('proto', ''),
      td('age', 'num'), td('c2u', 'num'), td('u2c', 'num'), td('rules', 'rules-cell'));
    tr.append(el('td', { class: 'actions-cell' }, actions));
    return { tr, cells, id };
  }

  function traffic(t) {
    t = t || { messages: 0, bytes: 0, frames: 0 };
    return el('div', { class: 'traffic', title: `${plural(t.frames, 'frame', 'frames')}, ${t.bytes} bytes` },
      el('div', { text: plural(t.messages, 'msg', 'msgs') }), el('div', { class: 'muted', text: bytes(t.bytes) }));
  }

  function setCell(cell, text, title) {
    if (cell.textContent !== text) cell.textContent = text;
    if (title !== undefined && cell.title !== title) cell.title = title;
  }

  function updateSessionRow(row, s) {
    const c = row.cells;
    const path = s.path + (s.query ? `?${s.query}` : '');
    setCell(c.id, String(s.id));
    setCell(c.client, s.client || '');
    setCell(c.path, path, path);
    setCell(c.proto, s.subprotocol || '–');
    const started = Date.parse(s.started);
    setCell(c.age, duration(Date.now() - started), s.started);
    c.c2u.replaceChildren(traffic(s.client_to_upstream));
    c.u2c.replaceChildren(traffic(s.upstream_to_client));
    c.rules.replaceChildren(...sessionRules(s.rules || []));
    row.data = s;
  }

  function sessionRules(rules) {
    if (!rules.length) return [el('span', { class: 'muted', text: '–' })];
    return rules.map((r) => {
      const parts = [el('span', { class: 'chip-name', text: r.name })];
      let title = `${r.name}: `;
      if (r.fired) {
        parts.push(el('span', { class: 'mark mark-fired', text: 'fired' }));
        title += 'fired on this session';
      } else if (r.hit) {
        parts.push(el('span', { class: 'mark mark-hit', text: 'hit' }));
        title += 'picked for this session by the seeded draw';
        if (r.fires_at) {
          const left = Date.parse(r.fires_at) - Date.now();
          parts.push(el('span', { class: 'muted', text: `in ${shortDuration(left)}` }));
          title += `; fires at ${r.fires_at}`;
        }
      } else {
        title += 'not picked for this session by the seeded draw';
      }
      if (r.counted) title += `; counted ${r.counted}`;
      const cls = r.fired ? 'chip chip-fired' : r.hit ? 'chip chip-hit' : 'chip chip-miss';
      return el('span', { class: cls, title, data: { rule: r.name, hit: String(!!r.hit), fired: String(!!r.fired) } }, ...parts);
    });
  }

  // A close code as the API takes it: a number, or a name such as
  // "service_restart" or "none".
  function codeValue(s) {
    s = String(s).trim();
    return /^\d+$/.test(s) ? parseInt(s, 10) : s;
  }

  async function sessionAction(id, action, code, reason, button) {
    const row = sessionRows.get(id);
    const body = action === 'close' ? { code: codeValue(code), reason: reason || '' } : undefined;
    const what = action === 'close' ? `close ${code}` : action;
    if (button) button.disabled = true;
    if (row) row.tr.classList.add('ending');
    try {
      await api('POST', `/api/sessions/${encodeURIComponent(id)}/${action}`, body);
      notify('ok', `session ${id}: ${what} sent`);
      return true;
    } catch (e) {
      if (row) row.tr.classList.remove('ending');
      if (e.status !== 401) notify('error', e.message);
      return false;
    } finally {
      if (button) button.disabled = false;
      refreshSessions().catch(() => {});
    }
  }

  $('sessions-body').addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-action]');
    if (!b) return;
    const id = b.dataset.session;
    switch (b.dataset.action) {
      case 'close': sessionAction(id, 'close', b.dataset.code, b.dataset.reason, b); break;
      case 'custom': showPopover(id, b); break;
      case 'reset':
      case 'drop': sessionAction(id, b.dataset.action, undefined, undefined, b); break;
      default:
    }
  });

  // --- the custom close popover

  const popover = { session: null, anchor: null };

  function showPopover(id, anchor) {
    const form = $('custom-close');
    if (popover.session === id && !form.hidden) { hidePopover(); return; }
    popover.session = id;
    popover.anchor = anchor;
    $('custom-session').textContent = id;
    form.hidden = false;
    placePopover();
    $('custom-code').focus();
    $('custom-code').select();
  }

  function placePopover() {
    const form = $('custom-close');
    if (form.hidden || !popover.anchor) return;
    const r = popover.anchor.getBoundingClientRect();
    const w = form.offsetWidth;
    const left = Math.max(8, Math.min(r.right - w, document.documentElement.clientWidth - w - 8));
    form.style.left = `${left + window.scrollX}px`;
    form.style.top = `${r.bottom + window.scrollY + 6}px`;
  }

  function hidePopover() {
    $('custom-close').hidden = true;
    popover.session = null;
    popover.anchor = null;
  }

  $('custom-close').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const id = popover.session;
    if (!id) return;
    const code = $('custom-code').value.trim();
    const reason = $('custom-reason').value;
    if (new TextEncoder().encode(reason).length > 123) {
      notify('error', 'a close reason is at most 123 bytes of UTF-8');
      return;
    }
    if (await sessionAction(id, 'close', code, reason, $('custom-send'))) hidePopover();
  });
  $('custom-cancel').addEventListener('click', hidePopover);
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') hidePopover(); });
  document.addEventListener('mousedown', (ev) => {
    const form = $('custom-close');
    if (form.hidden || form.contains(ev.target) || ev.target === popover.anchor) return;
    hidePopover();
  });
  window.addEventListener('resize', placePopover);

  // --- close all

  $('close-all-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const code = $('close-all-code').value.trim() || '1001';
    const body = { code: codeValue(code), reason: $('close-all-reason').value };
    const glob = $('close-all-path').value.trim();
    if (glob) body.match = { path: glob };
    const btn = ev.submitter || $('close-all-form').querySelector('button');
    const out = $('close-all-result');
    btn.disabled = true;
    out.textContent = '';
    try {
      const r = await api('POST', '/api/close', body);
      const n = r && typeof r.closed === 'number' ? r.closed : 0;
      out.textContent = `closed ${plural(n, 'session', 'sessions')}${glob ? ` matching ${glob}` : ''}`;
      out.dataset.closed = String(n);
    } catch (e) {
      if (e.status !== 401) notify('error', e.message);
    } finally {
      btn.disabled = false;
      refreshSessions().catch(() => {});
    }
  });

  // --- rules

  const ruleRows = new Map(); // name -> {tr, input, fired, summary, pending}

  async function refreshRules() {
    const list = await api('GET', '/api/rules');
    renderRules(Array.isArray(list) ? list : []);
  }

  function renderRules(list) {
    const body = $('rules-body');
    const seen = new Set();
    list.forEach((r, i) => {
      seen.add(r.name);
      let row = ruleRows.get(r.name);
      if (!row) {
        row = makeRuleRow(r.name);
        ruleRows.set(r.name, row);
      }
      if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
      if (!row.pending) row.input.checked = !!r.enabled;
      row.tr.classList.toggle('disabled', !r.enabled);
      let summary = r.summary || `${r.trigger} -> ${r.action}`;
      if (summary.startsWith(`${r.name}: `)) summary = summary.slice(r.name.length + 2);
      setCell(row.summary, summary, r.summary);
      setCell(row.fired, r.limit ? `${r.fired} / ${r.limit}` : String(r.fired), r.limit ? `fired ${r.fired} times of at most ${r.limit}` : `fired ${r.fired} times`);
      row.fired.dataset.fired = String(r.fired);
    });
    for (const [name, row] of ruleRows) {
      if (!seen.has(name)) {
        row.tr.remove();
        ruleRows.delete(name);
      }
    }
    $('rules-count').textContent = String(list.length);
    $('rules-empty').hidden = list.length > 0;
  }

  function makeRuleRow(name) {
    const input = el('input', {
      type: 'checkbox', class: 'switch', role: 'switch', title: `enable or disable ${name}`,
      'aria-label': `rule ${name} enabled`, data: { rule: name, action: 'toggle-rule' },
    });
    const summary = el('td', { class: 'summary' });
    const fired = el('td', { class: 'num' });
    const tr = el('tr', { data: { ruleRow: name } },
      el('td', { class: 'switch-cell' }, input), el('td', { class: 'mono rule-name', text: name }), summary, fired);
    const row = { tr, input, summary, fired, pending: false };
    input.addEventListener('change', () => toggleRule(name, row));
    return row;
  }

  async function toggleRule(name, row) {
    const on = row.input.checked;
    row.pending = true;
    row.input.disabled = true;
    try {
      await api('POST', `/api/rules/${encodeURIComponent(name)}/${on ? 'enable' : 'disable'}`);
      notify('ok', `rule ${name} ${on ? 'enabled' : 'disabled'}`);
    } catch (e) {
      row.input.checked = !on;
      if (e.status !== 401) notify('error', e.message);
    } finally {
      row.pending = false;
      row.input.disabled = false;
      refreshRules().catch(() => {});
    }
  }

  $('reload').addEventListener('click', async (ev) => {
    const b = ev.currentTarget;
    b.disabled = true;
    try {
      const r = await api('POST', '/api/reload');
      notify('ok', `configuration reloaded: ${plural(r && r.rules ? r.rules : 0, 'rule', 'rules')}`);
    } catch (e) {
      if (e.status !== 401) notify('error', e.message);
    } finally {
      b.disabled = false;
      refreshRules().catch(() => {});
    }
  });

  // --- the event stream: fetch, not EventSource, which cannot send the
  // Authorization header.

  const events = { ctrl: null, gen: 0, pending: [], flushTimer: null, count: 0 };

  function setStream(kind, text) {
    const s = $('events-status');
    s.className = `stream stream-${kind}`;
    s.textContent = text;
  }

  function stopEvents() {
    events.gen += 1;
    if (events.ctrl) events.ctrl.abort();
    events.ctrl = null;
  }

  function startEvents() {
    stopEvents();
    followEvents(events.gen);
  }

  async function followEvents(gen) {
    let backoff = 1000;
    while (gen === events.gen) {
      const ctrl = new AbortController();
      events.ctrl = ctrl;
      setStream('wait', 'connecting…');
      try {
        const res = await fetch('/api/events?follow=1', {
          headers: authHeaders({ Accept: 'text/event-stream' }), cache: 'no-store', signal: ctrl.signal,
        });
        if (res.status === 401) {
          needToken();
          return;
        }
        if (!res.ok || !res.body) {
          const text = await res.text().catch(() => '');
          throw new Error(`${res.status} ${errorText(text) || res.statusText}`);
        }
        // The stream starts with the events the proxy kept: start over.
        clearEvents();
        clearNote('events');
        setStream('ok', 'live');
        backoff = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, '\n');
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            sseBlock(block);
          }
        }
        throw new Error('the stream ended');
      } catch (e) {
        if (gen !== events.gen) return;
        setStream('error', `reconnecting in ${Math.round(backoff / 1000)}s`);
        notify('error', `GET /api/events?follow=1: ${e.message}; reconnecting`, 'events');
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 10000);
      }
    }
  }

  function sseBlock(block) {
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') data.push(value);
    }
    if (!data.length) return;
    let ev;
    try {
      ev = JSON.parse(data.join('\n'));
    } catch (e) {
      return;
    }
    events.pending.push(ev);
    if (!events.flushTimer) events.flushTimer = setTimeout(flushEvents, 50);
  }

  function flushEvents() {
    events.flushTimer = null;
    const batch = events.pending.splice(0).slice(-MAX_EVENTS);
    if (!batch.length) return;
    const body = $('events-body');
    const frag = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i -= 1) frag.append(eventRow(batch[i]));
    body.prepend(frag);
    while (body.children.length > MAX_EVENTS) body.lastElementChild.remove();
    events.count += batch.length;
    $('events-count').textContent = String(body.children.length);
    $('events-count').title = `${events.count} received since the stream (re)started`;
    $('events-empty').hidden = body.children.length > 0;
  }

  function clearEvents() {
    events.pending = [];
    events.count = 0;
    $('events-body').replaceChildren();
    $('events-count').textContent = '0';
    $('events-empty').hidden = false;
  }

  function eventRow(e) {
    const path = (e.path || '') + (e.query ? `?${e.query}` : '');
    let what = '';
    if (e.kind === 'fault') what = [e.rule, e.action].filter(Boolean).join(' · ') + (e.trigger && e.trigger !== 'manual' ? ` (${e.trigger})` : '');
    else if (e.kind === 'refused') what = [e.refusal, e.status ? `HTTP ${e.status}` : ''].filter(Boolean).join(' · ');
    else if (e.kind === 'opened' && e.subprotocol) what = `subprotocol ${e.subprotocol}`;
    let why = [e.by, e.why].filter(Boolean).join(': ');
    if (e.kind === 'closed' && e.duration_ns) why += ` after ${duration(e.duration_ns / 1e6)}`;
    const codeTitle = e.kind === 'closed' ? `client sent ${e.client_code || '–'}, upstream sent ${e.upstream_code || '–'}` : undefined;
    return el('tr', { class: `ev ev-${e.kind}`, data: { kind: e.kind, session: e.session ? String(e.session) : '', code: e.code ? String(e.code) : '' } },
      el('td', { class: 'mono nowrap', text: clock(e.time), title: e.time }),
      el('td', {}, el('span', { class: `badge badge-${e.kind}`, text: e.kind })),
      el('td', { class: 'num mono', text: e.session ? String(e.session) : '' }),
      el('td', { class: 'mono', text: e.client || '' }),
      el('td', { class: 'mono path', text: path, title: path }),
      el('td', { text: what }),
      el('td', { class: 'num mono', text: e.code ? String(e.code) : '', title: codeTitle }),
      el('td', { class: 'reason', text: e.reason || '', title: e.reason || undefined }),
      el('td', { class: 'why', text: why, title: why || undefined }));
  }

  $('events-clear').addEventListener('click', () => {
    $('events-body').replaceChildren();
    $('events-count').textContent = '0';
    $('events-empty').hidden = false;
  });

  // --- the test client: a WebSocket through the proxy that reconnects
  // with exponential back-off and full visibility of every close.

  const BACKOFF_MIN = 250;
  const BACKOFF_MAX = 8000;
  const STABLE_MS = 60000;

  const client = {
    running: false,
    ws: null,
    attempts: 0,
    step: 0, // back-off doubling count
    seq: 0,
    sent: 0,
    echoed: 0,
    sentAt: new Map(),
    openedAt: 0,
    retryAt: 0,
    timers: { retry: null, send: null, stable: null, countdown: null },
  };

  function clientURL() {
    let p = $('client-path').value.trim() || '/';
    if (!p.startsWith('/')) p = `/${p}`;
    const base = proxyBase();
    return base ? base + p : '';
  }

  function updateClientURL() {
    $('client-url').textContent = clientURL() || '–';
  }

  $('client-path').addEventListener('input', updateClientURL);

  function setClientState(s) {
    const e = $('client-state');
    e.textContent = s;
    e.className = `state state-${s}`;
    $('client-start').disabled = client.running;
    $('client-stop').disabled = !client.running;
    $('client-path').disabled = client.running;
  }

  function clearClientTimers() {
    clearTimeout(client.timers.retry);
    clearInterval(client.timers.send);
    clearTimeout(client.timers.stable);
    clearInterval(client.timers.countdown);
    client.timers = { retry: null, send: null, stable: null, countdown: null };
    $('client-retry').textContent = '';
  }

  function clientStart() {
    if (client.running) return;
    if (!proxyBase()) {
      notify('error', 'the proxy URL is not known yet (GET /api/info)');
      return;
    }
    client.running = true;
    client.step = 0;
    connect();
  }

  function connect() {
    clearClientTimers();
    if (!client.running) return;
    const url = clientURL();
    updateClientURL();
    client.attempts += 1;
    $('client-attempts').textContent = String(client.attempts);
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      client.running = false;
      setClientState('stopped');
      notify('error', `test client: ${url}: ${e.message}`);
      return;
    }
    client.ws = ws;
    client.openedAt = 0;
    let errored = false;
    setClientState('connecting');
    ws.addEventListener('open', () => {
      if (client.ws !== ws) return;
      client.openedAt = Date.now();
      setClientState('open');
      client.timers.stable = setTimeout(() => { client.step = 0; }, STABLE_MS);
      client.timers.send = setInterval(() => sendTick(ws), 1000);
      sendTick(ws);
    });
    ws.addEventListener('message', (ev) => {
      if (client.ws !== ws) return;
      client.echoed += 1;
      $('client-echoed').textContent = String(client.echoed);
      const text = typeof ev.data === 'string' ? ev.data : `(${ev.data.size || ev.data.byteLength} bytes)`;
      const m = /^tick (\d+)$/.exec(text);
      let note = `last: “${text.slice(0, 40)}”`;
      if (m && client.sentAt.has(m[1])) {
        note += ` in ${Date.now() - client.sentAt.get(m[1])} ms`;
        client.sentAt.delete(m[1]);
      }
      $('client-last-echo').textContent = note;
    });
    ws.addEventListener('error', () => { errored = true; });
    ws.addEventListener('close', (ev) => {
      if (client.ws !== ws) return;
      client.ws = null;
      const openFor = client.openedAt ? Date.now() - client.openedAt : null;
      clearClientTimers();
      client.sentAt.clear();
      recordClose(ev, errored, openFor);
      if (client.running) {
        setClientState('closed');
        scheduleReconnect();
      } else {
        setClientState('stopped');
      }
    });
  }

  function sendTick(ws) {
    if (ws.readyState !== WebSocket.OPEN) return;
    client.seq += 1;
    const id = String(client.seq);
    client.sentAt.set(id, Date.now());
    if (client.sentAt.size > 100) client.sentAt.delete(client.sentAt.keys().next().value);
    ws.send(`tick ${id}`);
    client.sent += 1;
    $('client-sent').textContent = String(client.sent);
  }

  function scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** client.step);
    client.step = Math.min(client.step + 1, 16);
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    client.retryAt = Date.now() + delay;
    client.timers.retry = setTimeout(connect, delay);
    const show = () => {
      $('client-retry').textContent = `reconnecting in ${(Math.max(0, client.retryAt - Date.now()) / 1000).toFixed(1)}s`;
    };
    show();
    client.timers.countdown = setInterval(show, 100);
  }

  function recordClose(ev, errored, openFor) {
    $('client-last-code').textContent = String(ev.code);
    $('client-last-reason').textContent = ev.reason ? `“${ev.reason}”` : '';
    const body = $('client-closes');
    const tr = el('tr', { data: { code: String(ev.code) } },
      el('td', { class: 'mono nowrap', text: clock(new Date()) }),
      el('td', { class: 'num mono strong', text: String(ev.code) }),
      el('td', { class: 'reason', text: ev.reason || '', title: ev.reason || undefined }),
      el('td', { text: ev.wasClean ? 'yes' : errored ? 'no (error event)' : 'no' }),
      el('td', { class: 'num', text: openFor === null ? 'never opened' : duration(openFor) }));
    body.prepend(tr);
    while (body.children.length > MAX_CLOSES) body.lastElementChild.remove();
    $('client-closes-empty').hidden = true;
  }

  function clientStop() {
    client.running = false;
    clearClientTimers();
    const ws = client.ws;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      setClientState('closing');
      ws.close(1000, 'stopped from the admin page');
    } else {
      client.ws = null;
      setClientState('stopped');
    }
  }

  $('client-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    clientStart();
  });
  $('client-stop').addEventListener('click', clientStop);

  // --- go

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.running && !state.authNeeded) pollOnce();
  });

  boot();
})();
