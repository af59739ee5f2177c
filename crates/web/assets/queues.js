// The queue page's actions: replay one message, or all of a kind once the count is confirmed.
'use strict';
(() => {
  const csrf = () => decodeURIComponent((document.cookie.split('; ').find(c => c.startsWith('sb_csrf=')) || '').slice(8));
  const post = (url, body) => fetch(url, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-csrf-token': csrf() },
    body: JSON.stringify(body),
  });

  for (const button of document.querySelectorAll('button.replay')) {
    button.addEventListener('click', async () => {
      const unknown = button.dataset.status === 'unknown';
      if (unknown && !window.confirm(button.dataset.unknown)) return;
      button.disabled = true;
      const response = await post(`/api/v1/messages/${button.dataset.id}/replay`, { confirm_unknown: unknown });
      if (response.ok) {
        button.textContent = button.dataset.done;
        button.closest('tr').classList.add('replayed');
      } else {
        button.disabled = false;
        const error = await response.json().catch(() => ({}));
        button.closest('tr').querySelector('.reason').textContent = (error.error && error.error.message) || response.statusText;
      }
    });
  }

  const all = document.getElementById('replay-all');
  if (all) {
    all.addEventListener('click', async () => {
      const status = all.dataset.status;
      const dry = await post('/api/v1/queues/replay', { status, dry_run: true });
      if (!dry.ok) return;
      const { matched } = await dry.json();
      const question = all.dataset.confirm.replace('{n}', matched) + (status === 'unknown' ? '\n' + all.dataset.unknown : '');
      if (!matched || !window.confirm(question)) return;
      const done = await post('/api/v1/queues/replay', { status, confirm_unknown: status === 'unknown' });
      if (done.ok) window.location.reload();
    });
  }
})();
