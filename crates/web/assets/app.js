// Switchboard inbox. Follows the live stream, swaps in fragments the server rendered (and
// escaped), and sends actions to the JSON API with the session's CSRF token. Message content is
// never turned into markup here: text goes through textContent only.
(() => {
  'use strict';
  const $ = (selector, root = document) => root.querySelector(selector);
  const csrf = () => decodeURIComponent((document.cookie.split('; ').find(c => c.startsWith('sb_csrf=')) || '').slice(8));
  const api = (method, path, body, extra = {}) => fetch(path, {
    method,
    credentials: 'same-origin',
    headers: Object.assign({ 'content-type': 'application/json', 'x-csrf-token': csrf() }, extra),
    body: body === undefined ? undefined : JSON.stringify(body),
  });

  const login = $('#login-form');
  if (login) {
    login.addEventListener('submit', async event => {
      event.preventDefault();
      const form = new FormData(login);
      const response = await api('POST', '/api/v1/auth/login', {
        workspace: form.get('workspace'), email: form.get('email'), password: form.get('password'),
      });
      if (response.ok) location.assign('/inbox'); else $('#login-error').hidden = false;
    });
    return;
  }

  const main = $('main.inbox');
  if (!main) return;
  const view = main.dataset.view;
  const list = $('#list');
  const thread = $('#thread');
  let selected = new URLSearchParams(location.search).get('c');

  const toast = message => {
    let box = $('#toast');
    if (!box) {
      box = document.createElement('div');
      box.id = 'toast';
      box.setAttribute('role', 'status');
      document.body.append(box);
    }
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
  };
  const failed = async response => {
    let message = response.statusText;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    toast(message);
  };

  // The page's language (the server chose it from Accept-Language) in the browser's regional
  // flavour when it has one (de-AT, en-GB): dates and sizes read like the words around them.
  const locale = (navigator.languages || []).find(tag => tag.toLowerCase().split('-')[0] === document.documentElement.lang)
    || document.documentElement.lang || undefined;

  // Times come in UTC; agents read them in their own time zone and language.
  const formatTimes = root => root.querySelectorAll('time[datetime]').forEach(time => {
    const date = new Date(time.getAttribute('datetime'));
    if (Number.isNaN(date.getTime())) return;
    time.textContent = time.hasAttribute('data-day')
      ? date.toLocaleDateString(locale, { weekday: 'long', day: 'numeric', month: 'long', timeZone: 'UTC' })
      : date.toLocaleString(locale, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
    time.title = date.toLocaleString(locale);
  });

  // Sizes in the page's language, in decimal units as mail clients show them.
  const sizeText = bytes => {
    const [value, unit] = bytes >= 1e6 ? [bytes / 1e6, 'megabyte'] : bytes >= 1e3 ? [bytes / 1e3, 'kilobyte'] : [bytes, 'byte'];
    return new Intl.NumberFormat(locale,
      { style: 'unit', unit, unitDisplay: 'short', maximumFractionDigits: value < 100 ? 1 : 0 }).format(value);
  };
  const formatSizes = root => root.querySelectorAll('data[data-bytes]').forEach(data => {
    data.textContent = sizeText(Number(data.value));
  });

  const draftKey = () => selected && `draft:${selected}`;
  const saveDraft = () => {
    const reply = $('#reply');
    if (reply && draftKey()) sessionStorage.setItem(draftKey(), reply.value);
  };
  const restoreDraft = () => {
    const reply = $('#reply');
    if (reply && draftKey()) reply.value = sessionStorage.getItem(draftKey()) || '';
  };

  async function refreshList() {
    // Search results stay as found; views follow the stream.
    if (main.dataset.query) return;
    const response = await fetch(`/inbox/list?view=${encodeURIComponent(view)}${selected ? `&c=${selected}` : ''}`);
    if (!response.ok) return;
    const fresh = document.createElement('div');
    fresh.innerHTML = await response.text();
    const restore = keepFocus(list, list);
    list.replaceChildren(...fresh.childNodes);
    restore();
    formatTimes(list);
  }

  // A refresh must not drop the keyboard's place: the focused element's counterpart (same id,
  // action or link; else the first control where it was, e.g. Release for Claim) takes it back.
  const keepFocus = (old, replacement) => {
    const active = document.activeElement;
    if (!active || !old.contains(active)) return () => {};
    const key = active.id ? `#${CSS.escape(active.id)}`
      : active.dataset.action ? `[data-action="${CSS.escape(active.dataset.action)}"]`
        : active.dataset.id ? `[data-id="${CSS.escape(active.dataset.id)}"]` : null;
    return () => {
      const target = active === old ? replacement
        : (key && $(key, replacement)) || $('button, [href], input, select, textarea, summary, [tabindex]', replacement);
      if (target) target.focus({ preventScroll: true });
    };
  };
  // The thread is not a live region (each refresh would read it all out again); what a
  // customer newly wrote is said once, politely, in a status region of its own.
  const announce = entries => {
    const region = $('#announce');
    if (!region || !entries.length) return;
    const words = entries.map(entry => ($('.text', entry) || entry).textContent.trim()).join('\n');
    region.textContent = `${region.dataset.prefix}: ${words}`;
  };

  // A change to the open conversation refreshes its header, messages and side panel but never
  // the composer: an agent typing keeps the text, the caret and the focus.
  async function loadThread(id, { keepDraft = false } = {}) {
    if (!keepDraft) saveDraft();
    const response = await fetch(`/inbox/conversations/${id}`);
    if (!response.ok) return failed(response);
    const fresh = document.createElement('div');
    fresh.innerHTML = await response.text();
    const current = $('.conversation-detail', thread);
    const next = $('.conversation-detail', fresh);
    if (keepDraft && current && next && current.dataset.id === id) {
      const seen = new Set([...current.querySelectorAll('.messages .entry')].map(entry => entry.dataset.id));
      ['.thread-head', '.messages', '.side-info'].forEach(part => {
        const old = $(part, current);
        const replacement = $(part, next);
        if (!old || !replacement) return;
        const restore = keepFocus(old, replacement);
        old.replaceWith(replacement);
        restore();
      });
      announce([...thread.querySelectorAll('.messages .entry.inbound')].filter(entry => !seen.has(entry.dataset.id)));
      // The merge search keeps what the agent typed, unless the conversation's contact changed.
      const [oldMerge, newMerge] = [$('.merge', current), $('.merge', next)];
      if (oldMerge && newMerge && oldMerge.dataset.contact !== newMerge.dataset.contact) oldMerge.replaceWith(newMerge);
      current.dataset.status = next.dataset.status;
    } else {
      selected = id;
      thread.replaceChildren(...fresh.childNodes);
      restoreDraft();
    }
    formatTimes(thread);
    formatSizes(thread);
    renderPicked();
    const messages = $('.messages', thread);
    if (messages) messages.scrollTop = messages.scrollHeight;
    list.querySelectorAll('.conversation').forEach(a => a.classList.toggle('selected', a.dataset.id === id));
    markRead(id);
  }

  const markRead = id => { if (document.visibilityState === 'visible') api('POST', `/api/v1/conversations/${id}/read`, {}); };

  // The live stream's changes; `reset` means refetch everything. Changes arriving together
  // cause one refresh; a change arriving during a refresh causes another after it (never lost
  // between the two).
  let pendingList = false;
  let pendingThread = false;
  let scheduled = false;
  const flush = async () => {
    scheduled = false;
    const [doList, doThread] = [pendingList, pendingThread];
    pendingList = false;
    pendingThread = false;
    if (doList) await refreshList();
    if (doThread && selected) await loadThread(selected, { keepDraft: true });
  };
  const changed = event => {
    let data = {};
    try { data = JSON.parse(event.data); } catch (_) { /* keep empty */ }
    pendingList = true;
    // Reading changes the list's counts, not the thread (and opening a thread marks it read).
    const threadChanged = event.type !== 'conversation.read' && (!data.conversation_id || data.conversation_id === selected);
    if (threadChanged) pendingThread = true;
    if (!scheduled) {
      scheduled = true;
      setTimeout(flush, 120);
    }
  };
  // A dropped connection (the server restarting, a network change) is retried by EventSource
  // itself, resuming with Last-Event-ID. An answer that is not a stream (a proxy's 502 while
  // the server is down, a 503) closes it for good: then a new one is opened, backing off up to
  // 30 s, resuming from the last event seen. After any outage the list and the open thread are
  // refetched too: a stream that had seen no event yet has no position to resume from.
  const live = $('#live');
  const kinds = ['conversation.created', 'conversation.assigned', 'conversation.status_changed', 'conversation.updated',
    'conversation.read', 'message.created', 'message.status_changed', 'note.created', 'reset'];
  let lastEventId = '';
  let retryIn = 1000;
  let outage = false;
  const connect = () => {
    const stream = new EventSource(`/api/v1/stream${lastEventId ? `?last_event_id=${encodeURIComponent(lastEventId)}` : ''}`);
    stream.onopen = () => {
      live.textContent = live.dataset.online;
      live.classList.add('online');
      retryIn = 1000;
      if (outage) changed({ type: 'reset', data: '{}' });
      outage = false;
    };
    stream.onerror = () => {
      live.textContent = live.dataset.offline;
      live.classList.remove('online');
      outage = true;
      if (stream.readyState === EventSource.CLOSED) {
        setTimeout(connect, retryIn);
        retryIn = Math.min(retryIn * 2, 30000);
      }
    };
    kinds.forEach(kind => stream.addEventListener(kind, event => {
      if (event.lastEventId) lastEventId = event.lastEventId;
      changed(event);
    }));
    stream.addEventListener('unread.summary', event => {
      const summary = JSON.parse(event.data);
      $('#count-mine').textContent = summary.mine;
      $('#count-unassigned').textContent = summary.unassigned;
      $('#count-unread').textContent = summary.unread;
    });
  };
  connect();

  list.addEventListener('click', event => {
    const link = event.target.closest('a.conversation');
    if (!link) return;
    event.preventDefault();
    history.pushState({}, '', link.href);
    loadThread(link.dataset.id);
  });
  // Back and forward between conversations. The skip link's #list changes only the hash (a
  // popstate too): the open conversation stays as it is, focus and all.
  window.addEventListener('popstate', () => {
    const id = new URLSearchParams(location.search).get('c');
    if (id && id !== selected) loadThread(id);
  });

  const snoozeUntil = preset => {
    const at = new Date();
    if (preset === '1h') at.setHours(at.getHours() + 1);
    if (preset === 'tomorrow') { at.setDate(at.getDate() + 1); at.setHours(9, 0, 0, 0); }
    if (preset === 'week') { at.setDate(at.getDate() + ((8 - at.getDay()) % 7 || 7)); at.setHours(9, 0, 0, 0); }
    return at;
  };
  const act = async (path, body) => {
    const response = await api('POST', `/api/v1/conversations/${selected}/${path}`, body);
    if (!response.ok) return failed(response);
    await Promise.all([refreshList(), loadThread(selected, { keepDraft: true })]);
  };

  thread.addEventListener('click', event => {
    const other = event.target.closest('.others a');
    if (other) {
      event.preventDefault();
      history.pushState({}, '', other.href);
      loadThread(other.dataset.id);
      return;
    }
    const target = event.target.closest('button');
    if (!target || !selected) return;
    if (target.dataset.action) act(target.dataset.action, {});
    if (target.dataset.snooze) act('snooze', { until: snoozeUntil(target.dataset.snooze).toISOString() });
    if (target.hasAttribute('data-note')) {
      const reply = $('#reply');
      if (!reply.value.trim()) return;
      api('POST', `/api/v1/conversations/${selected}/notes`, { text: reply.value }).then(async response => {
        if (!response.ok) return failed(response);
        reply.value = '';
        sessionStorage.removeItem(draftKey());
        loadThread(selected, { keepDraft: false });
      });
    }
  });
  thread.addEventListener('change', event => {
    if (event.target.matches('[data-canned]') && event.target.value) {
      const reply = $('#reply');
      reply.value = reply.value ? `${reply.value}\n${event.target.value}` : event.target.value;
      event.target.value = '';
      saveDraft();
      reply.focus();
    }
    if (event.target.matches('[data-assign]')) {
      act('assign', { agent_id: event.target.value || null });
    }
    if (event.target.matches('[data-snooze-custom]') && event.target.value) {
      act('snooze', { until: new Date(event.target.value).toISOString() });
    }
  });
  thread.addEventListener('input', event => { if (event.target.id === 'reply') saveDraft(); });

  // Email attachments: the files chosen per conversation wait here until sent or removed. They
  // travel base64-encoded inside the JSON request, so what fits is the server's body limit less
  // a third (and some room for the text); beyond it the agent is told before anything is read.
  const picked = new Map();
  const pickedFiles = () => picked.get(selected) || [];
  const attachLimit = box => Math.floor((Number(box.dataset.limit) - 16384) * 3 / 4);
  const checkAttachments = () => {
    const box = $('.attach', thread);
    if (!box) return true;
    const total = pickedFiles().reduce((sum, file) => sum + file.size, 0);
    const fits = total <= attachLimit(box);
    const error = $('#attach-error', box);
    error.textContent = fits ? '' : box.dataset.tooLarge
      .replace('{size}', sizeText(total)).replace('{limit}', sizeText(attachLimit(box)));
    error.hidden = fits;
    return fits;
  };
  function renderPicked() {
    const box = $('.attach', thread);
    if (!box) return;
    const items = pickedFiles().map((file, index) => {
      const item = document.createElement('li');
      const name = document.createElement('span');
      name.className = 'file-name';
      name.textContent = file.name;
      const size = document.createElement('data');
      size.value = String(file.size);
      size.textContent = sizeText(file.size);
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'link';
      remove.dataset.unpick = String(index);
      remove.textContent = '×';
      remove.setAttribute('aria-label', `${box.dataset.remove} ${file.name}`);
      item.append(name, ' ', size, ' ', remove);
      return item;
    });
    $('#picked', box).replaceChildren(...items);
    checkAttachments();
  }
  const readBase64 = file => new Promise((resolve, reject) => {
    const reader = new FileReader();
    // A data: URL; what follows the comma is the base64 of the file.
    reader.onload = () => resolve(String(reader.result).split(',')[1] || '');
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  thread.addEventListener('change', event => {
    if (event.target.id !== 'attach' || !selected) return;
    picked.set(selected, [...pickedFiles(), ...event.target.files]);
    // Cleared, so choosing the same file again (after removing it) is a change too.
    event.target.value = '';
    renderPicked();
  });
  thread.addEventListener('click', event => {
    const remove = event.target.closest('[data-unpick]');
    if (!remove) return;
    const files = pickedFiles().filter((_, index) => index !== Number(remove.dataset.unpick));
    picked.set(selected, files);
    renderPicked();
    $('#attach', thread).focus();
  });

  // Merging: another contact, found by name, email or phone, is merged into the open
  // conversation's contact. That one survives, so the open conversation stays where it is and
  // the other contact's identifiers and conversations join it.
  let mergeTimer;
  let mergeTarget = null;
  const contactItem = contact => {
    const pick = document.createElement('button');
    pick.type = 'button';
    pick.className = 'link';
    pick.dataset.mergePick = contact.id;
    const name = document.createElement('span');
    name.className = 'who';
    name.textContent = contact.display_name || contact.identifiers.map(i => i.value)[0] || contact.id;
    const identifiers = document.createElement('span');
    identifiers.className = 'kind';
    identifiers.textContent = contact.identifiers.map(i => i.value).join(', ');
    pick.append(name, ' ', identifiers);
    const item = document.createElement('li');
    item.append(pick);
    return item;
  };
  const mergeSearch = async () => {
    const box = $('.merge', thread);
    if (!box) return;
    const q = $('#merge-q', box).value.trim();
    const results = $('#merge-results', box);
    $('.merge-confirm', box).hidden = true;
    if (!q) return results.replaceChildren();
    const response = await fetch(`/api/v1/contacts?limit=8&q=${encodeURIComponent(q)}`, { credentials: 'same-origin' });
    if (!response.ok) return failed(response);
    const found = (await response.json()).items.filter(contact => contact.id !== box.dataset.contact);
    // A slower answer to an older query must not replace a newer one's.
    if (!box.isConnected || $('#merge-q', box).value.trim() !== q) return;
    mergeTarget = Object.fromEntries(found.map(contact => [contact.id, contact]));
    if (!found.length) {
      const none = document.createElement('li');
      none.textContent = box.dataset.none;
      return results.replaceChildren(none);
    }
    results.replaceChildren(...found.map(contactItem));
  };
  thread.addEventListener('input', event => {
    if (event.target.id !== 'merge-q') return;
    clearTimeout(mergeTimer);
    mergeTimer = setTimeout(mergeSearch, 200);
  });
  thread.addEventListener('click', async event => {
    const box = $('.merge', thread);
    if (!box) return;
    const pick = event.target.closest('[data-merge-pick]');
    const confirm = $('.merge-confirm', box);
    if (pick) {
      const contact = mergeTarget[pick.dataset.mergePick];
      confirm.dataset.id = contact.id;
      $('#merge-question', box).textContent = box.dataset.confirm.replace('{name}', $('.who', pick).textContent);
      confirm.hidden = false;
      $('[data-merge-confirm]', box).focus();
    } else if (event.target.closest('[data-merge-cancel]')) {
      confirm.hidden = true;
      $('#merge-q', box).focus();
    } else if (event.target.closest('[data-merge-confirm]')) {
      const response = await api('POST', `/api/v1/contacts/${confirm.dataset.id}/merge`, { into: box.dataset.contact });
      if (!response.ok) return failed(response);
      toast(box.dataset.done);
      box.open = false;
      confirm.hidden = true;
      $('#merge-q', box).value = '';
      $('#merge-results', box).replaceChildren();
      await Promise.all([refreshList(), loadThread(selected, { keepDraft: true })]);
    }
  });

  // Variables for a template: one name=value per line.
  const variables = text => Object.fromEntries(text.split('\n')
    .map(line => line.split('=')).filter(parts => parts.length > 1 && parts[0].trim())
    .map(([name, ...rest]) => [name.trim(), rest.join('=').trim()]));
  const send = async form => {
    const text = $('#reply', form).value;
    const template = $('#template', form);
    const content = {};
    if (template && template.value) {
      content.template = { name: template.value, variables: variables($('#variables', form).value) };
    } else if (text.trim()) {
      content.text = text;
    } else {
      return;
    }
    const subject = $('#subject', form);
    if (subject && subject.value.trim()) content.subject = subject.value;
    const files = pickedFiles();
    if (files.length) {
      if (!checkAttachments()) return;
      try {
        content.attachments = await Promise.all(files.map(async file => ({
          filename: file.name, content_type: file.type || 'application/octet-stream', data: await readBase64(file),
        })));
      } catch (error) {
        return toast(String(error));
      }
    }
    const key = sessionStorage.getItem(`key:${selected}`) || crypto.randomUUID();
    sessionStorage.setItem(`key:${selected}`, key);
    const response = await api('POST', `/api/v1/conversations/${selected}/messages`, { content }, { 'idempotency-key': key });
    if (!response.ok) return failed(response);
    sessionStorage.removeItem(`key:${selected}`);
    sessionStorage.removeItem(draftKey());
    picked.delete(selected);
    $('#reply', form).value = '';
    if (template) template.value = '';
    loadThread(selected, { keepDraft: false });
  };
  thread.addEventListener('submit', event => { event.preventDefault(); send(event.target); });
  thread.addEventListener('keydown', event => {
    if (event.target.id === 'reply' && event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send(event.target.form);
    }
  });

  // Keyboard: j/k move, r replies, e resolves, ? shows the help.
  const help = $('#help');
  help.addEventListener('click', event => { if (event.target.closest('[data-close]') || event.target === help) help.hidden = true; });
  document.addEventListener('keydown', event => {
    if (event.target.closest('input, textarea, select') || event.metaKey || event.ctrlKey || event.altKey) return;
    const items = [...list.querySelectorAll('a.conversation')];
    const at = items.findIndex(a => a.dataset.id === selected);
    if (event.key === 'j' || event.key === 'k') {
      const next = items[Math.min(Math.max(at + (event.key === 'j' ? 1 : -1), 0), items.length - 1)];
      if (next) { history.pushState({}, '', next.href); loadThread(next.dataset.id); next.focus(); }
    } else if (event.key === 'r' && $('#reply')) {
      event.preventDefault();
      $('#reply').focus();
    } else if (event.key === 'e' && selected) {
      act('resolve', {});
    } else if (event.key === '?') {
      help.hidden = false;
      $('button', help).focus();
    } else if (event.key === 'Escape') {
      help.hidden = true;
    }
  });

  $('#logout').addEventListener('click', async () => {
    await api('POST', '/api/v1/auth/logout', {});
    location.assign('/login');
  });

  formatTimes(document);
  formatSizes(document);
  restoreDraft();
  if (selected) markRead(selected);
})();
