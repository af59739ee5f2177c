// The chat inside the widget's iframe. Talks to /api/webchat/<channel>/… on this origin.
// Every message is text: it goes into the page with textContent, never as markup.
(() => {
  'use strict';
  const body = document.body;
  const channel = body.dataset.channel;
  const t = JSON.parse(body.dataset.strings || '{}');
  const api = `/api/webchat/${encodeURIComponent(channel)}`;
  const storageKey = `switchboard-webchat:${channel}`;
  const $ = (id) => document.getElementById(id);
  const list = $('messages');
  const launcher = $('launcher');
  const panel = $('panel');
  const text = $('text');
  const status = $('status');
  const unreadBadge = $('unread');

  let token = null;
  try { token = localStorage.getItem(storageKey); } catch (_) { /* storage blocked: a visitor per visit */ }
  let open = false;
  let unread = 0;
  let newestAgent = null; // the newest business message shown
  let receipted = '';      // what we last reported for it
  const byId = new Map();  // message id -> element
  const pending = new Map(); // client id -> element, until the server knows the message

  function remember(newToken) {
    token = newToken;
    try { localStorage.setItem(storageKey, newToken); } catch (_) { /* kept in memory only */ }
  }

  function say(message) { status.textContent = message || ''; }

  function timeOf(at) {
    const date = new Date(at);
    return Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function element(from, words, at) {
    const item = document.createElement('li');
    item.className = from === 'agent' ? 'from-agent' : 'from-visitor';
    const p = document.createElement('p');
    p.textContent = words;
    item.appendChild(p);
    const time = document.createElement('time');
    if (at) { time.dateTime = at; time.textContent = timeOf(at); }
    item.appendChild(time);
    return item;
  }

  function scrollDown() { const s = $('scroller'); s.scrollTop = s.scrollHeight; }

  // A message from the server: shown once, whether it came from history, the stream or a send.
  function show(message) {
    if (byId.has(message.id)) { return; }
    let item = message.client_id && pending.get(message.client_id);
    if (item) {
      pending.delete(message.client_id);
      item.classList.remove('pending', 'failed');
      const time = item.querySelector('time');
      time.dateTime = message.at; time.textContent = timeOf(message.at);
      item.querySelector('.retry')?.remove();
    } else {
      item = element(message.from, message.text, message.at);
      list.appendChild(item);
    }
    item.dataset.id = message.id;
    byId.set(message.id, item);
    if (message.from === 'agent' && (!newestAgent || message.id > newestAgent)) {
      newestAgent = message.id;
      if (!open) { unread += 1; badge(); }
    }
    scrollDown();
    receipts();
  }

  function badge() {
    unreadBadge.hidden = unread === 0;
    unreadBadge.textContent = unread ? String(unread) : '';
    launcher.setAttribute('aria-label', unread ? `${t.open_chat} (${unread} ${t.unread})` : t.open_chat);
  }

  async function call(path, payload, withToken) {
    const headers = { 'Content-Type': 'application/json' };
    if (withToken) { headers.Authorization = `Bearer ${token}`; }
    return fetch(api + path, { method: 'POST', headers, body: JSON.stringify(payload) });
  }

  // The business's messages reached this browser (delivered) or were seen in the open chat (read).
  async function receipts() {
    if (!newestAgent || !token) { return; }
    const state = open && document.visibilityState === 'visible' ? 'read' : 'delivered';
    const key = `${newestAgent}:${state}`;
    if (receipted === key || (state === 'delivered' && receipted.startsWith(`${newestAgent}:read`))) { return; }
    receipted = key;
    try { await call('/seen', { up_to: newestAgent, status: state }, true); } catch (_) { receipted = ''; }
  }

  async function session() {
    const response = await call('/session', { token }, false);
    if (!response.ok) { throw new Error(`session ${response.status}`); }
    const answer = await response.json();
    remember(answer.token);
    answer.messages.forEach(show);
  }

  let source = null;
  function follow() {
    if (source) { source.close(); }
    source = new EventSource(`${api}/stream?token=${encodeURIComponent(token)}`);
    // (Re)connected: whatever came while we were away is in the history.
    source.addEventListener('open', () => { say(''); session().catch(() => {}); });
    source.addEventListener('message', (event) => {
      try { show(JSON.parse(event.data)); } catch (_) { /* not ours */ }
    });
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (a token from an old key, a restart): start again with a fresh session.
        say(t.offline);
        setTimeout(() => session().then(follow, follow), 3000);
      } else {
        say(t.offline);
      }
    });
  }

  function newId() {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  }

  // Sends one message, again with the same client id after a network failure (stored once).
  async function deliver(clientId, words, item, attempt = 0) {
    const payload = {
      text: words,
      client_id: clientId,
      name: $('name').value.trim() || null,
      email: $('email').value.trim() || null,
      page: document.referrer && /^https?:/.test(document.referrer) ? document.referrer : null,
    };
    let response;
    try {
      response = await call('/messages', payload, true);
    } catch (_) {
      if (attempt < 5) { setTimeout(() => deliver(clientId, words, item, attempt + 1), 1000 * 2 ** attempt); return; }
      return failed(clientId, words, item, t.failed);
    }
    if (response.status === 202) { show(await response.json()); return; }
    if (response.status === 401) {
      await session().catch(() => {});
      if (attempt < 1) { return deliver(clientId, words, item, attempt + 1); }
    }
    let reason = t.failed;
    if (response.status === 429) { reason = t.slow_down; }
    else {
      try { reason = (await response.json()).message || reason; } catch (_) { /* keep ours */ }
    }
    failed(clientId, words, item, reason);
  }

  function failed(clientId, words, item, reason) {
    item.classList.remove('pending');
    item.classList.add('failed');
    say(reason);
    if (item.querySelector('.retry')) { return; }
    const retry = document.createElement('button');
    retry.type = 'button';
    retry.className = 'retry';
    retry.textContent = t.retry;
    retry.addEventListener('click', () => {
      retry.remove();
      item.classList.replace('failed', 'pending');
      say('');
      deliver(clientId, words, item);
    });
    item.appendChild(retry);
  }

  function submit() {
    const words = text.value.trim();
    if (!words || !token) { return; }
    const clientId = newId();
    const item = element('visitor', words, null);
    item.classList.add('pending');
    list.appendChild(item);
    pending.set(clientId, item);
    text.value = '';
    scrollDown();
    deliver(clientId, words, item);
  }

  function setOpen(value) {
    open = value;
    panel.hidden = !open;
    launcher.hidden = open;
    launcher.setAttribute('aria-expanded', String(open));
    window.parent.postMessage({ type: 'switchboard-webchat', open }, '*');
    if (open) {
      unread = 0; badge();
      text.focus();
      scrollDown();
      receipts();
    } else {
      launcher.focus();
    }
  }

  launcher.addEventListener('click', () => setOpen(true));
  $('close').addEventListener('click', () => setOpen(false));
  $('composer').addEventListener('submit', (event) => { event.preventDefault(); submit(); });
  text.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) { event.preventDefault(); submit(); }
  });
  document.addEventListener('keydown', (event) => { if (event.key === 'Escape' && open) { setOpen(false); } });
  document.addEventListener('visibilitychange', receipts);

  session().then(follow, () => { say(t.offline); setTimeout(() => session().then(follow, follow), 3000); });
})();
