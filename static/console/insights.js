// The overview's live "pending by priority" chart: the bars are drawn server-side as SVG;
// whenever the live queue's websocket (/ws/queue/) reports a change, the figures are fetched
// again from a small JSON endpoint and the bars resized. Plain JS, no inline script (CSP).
(function () {
  "use strict";

  var figure = document.getElementById("pending-live");
  if (!figure) return;
  var svg = figure.querySelector("svg");
  var statusEl = document.getElementById("pending-status");
  var plotWidth = Number(svg.dataset.plotWidth);
  var timer = null;

  function setStatus(state, text) { statusEl.dataset.state = state; statusEl.textContent = text; }

  function draw(pending) {
    var max = 0;
    Object.keys(pending).forEach(function (key) { max = Math.max(max, pending[key]); });
    var total = 0;
    svg.querySelectorAll("g.row").forEach(function (row) {
      var key = row.dataset.key;
      var count = pending[key] || 0;
      total += count;
      var bar = row.querySelector("rect.bar");
      var value = row.querySelector("text.value");
      var width = max ? count / max * plotWidth : 0;
      bar.setAttribute("width", width.toFixed(1));
      bar.dataset.value = String(count);
      value.setAttribute("x", (Number(bar.getAttribute("x")) + width + 6).toFixed(1));
      value.textContent = count.toLocaleString("en-US");
    });
    svg.dataset.total = String(total);
  }

  function refresh() {
    fetch(figure.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) { if (body) draw(body.pending); })
      .catch(function () { /* the next frame or reconnect asks again */ });
  }

  function soon() {
    // A burst of frames (a policy deciding many at once) costs one request.
    if (timer) return;
    timer = setTimeout(function () { timer = null; refresh(); }, 300);
  }

  var retry = 0;
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + figure.dataset.wsPath);
    socket.onopen = function () {
      retry = 0;
      setStatus("live", "Live");
      refresh(); // catch up on anything missed while away
    };
    socket.onmessage = function (message) {
      var frame = JSON.parse(message.data);
      if (frame.type === "escalation") soon();
    };
    socket.onclose = function (event) {
      if (event.code === 4401 || event.code === 4403) {
        setStatus("offline", event.code === 4401 ? "Signed out" : "No access");
        return;
      }
      retry = Math.min(retry + 1, 6);
      setStatus("connecting", "Reconnecting…");
      setTimeout(connect, Math.min(15000, 500 * Math.pow(2, retry)) * (0.75 + Math.random() / 2));
    };
  }
  connect();
})();
