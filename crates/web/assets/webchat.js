// Switchboard webchat: include on a page as
//   <script src="https://<switchboard>/webchat.js" data-channel="<channel id>" async></script>
// It adds one iframe in the corner; the chat runs inside it, on Switchboard's origin, so this
// page's scripts and styles and the chat never reach into each other.
(function () {
  'use strict';
  var script = document.currentScript;
  if (!script || !script.dataset.channel) { return; }
  var base = new URL(script.src, location.href).origin;
  var frame = document.createElement('iframe');
  frame.src = base + '/webchat/' + encodeURIComponent(script.dataset.channel) + '/frame';
  frame.title = script.dataset.title || 'Chat';
  frame.setAttribute('allow', '');
  var style = frame.style;
  style.position = 'fixed';
  style.right = '16px';
  style.bottom = '16px';
  style.border = '0';
  style.zIndex = '2147483647';
  style.background = 'transparent';
  style.colorScheme = 'normal';
  function size(open) {
    // Closed: the round button. Open: a panel, the whole screen on a phone.
    var small = window.innerWidth < 480;
    style.width = open ? (small ? '100vw' : '380px') : '72px';
    style.height = open ? (small ? '100vh' : 'min(600px, calc(100vh - 32px))') : '72px';
    style.right = open && small ? '0' : '16px';
    style.bottom = open && small ? '0' : '16px';
  }
  size(false);
  window.addEventListener('message', function (event) {
    if (event.source !== frame.contentWindow || event.origin !== base) { return; }
    var data = event.data || {};
    if (data.type === 'switchboard-webchat') { size(Boolean(data.open)); }
  });
  function mount() { document.body.appendChild(frame); }
  if (document.body) { mount(); } else { document.addEventListener('DOMContentLoaded', mount); }
})();
