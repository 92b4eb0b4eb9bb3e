// The live queue: keeps the server-rendered table in step with /ws/queue/.
// Plain JS, no build step, no inline script (CSP-friendly). Agent text only ever goes through
// textContent, never innerHTML.
(function () {
  "use strict";

  var table = document.getElementById("queue");
  if (!table) return;
  var tbody = document.getElementById("queue-rows");
  var empty = document.getElementById("queue-empty");
  var counter = document.getElementById("queue-count");
  var statusEl = document.getElementById("live-status");
  var me = table.dataset.me;
  var detailUrl = table.dataset.detailUrl;
  var RANK = { urgent: 0, high: 1, normal: 2, low: 3 };
  var LABEL = { urgent: "Urgent", high: "High", normal: "Normal", low: "Low" };
  var KIND = { approval: "Approval", question: "Question" };

  // Ordering: a frame older than what we hold for its row (or than the last snapshot) is stale.
  var snapshotSeq = Number(table.dataset.seq || 0);
  var versions = {};

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + "s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + "m";
    var hours = Math.floor(minutes / 60); minutes %= 60;
    if (hours < 24) return minutes ? hours + "h " + minutes + "m" : hours + "h";
    var days = Math.floor(hours / 24); hours %= 24;
    return hours ? days + "d " + hours + "h" : days + "d";
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function buildRow(e) {
    var href = detailUrl.replace("ESCALATION_ID", encodeURIComponent(e.id));
    var tr = el("tr", "qrow");
    tr.dataset.id = e.id;
    tr.dataset.href = href;
    tr.dataset.priority = e.priority;
    tr.dataset.created = e.created_at;
    tr.dataset.expires = e.expires_at;

    var prio = el("td");
    prio.appendChild(el("span", "badge prio " + (RANK[e.priority] !== undefined ? e.priority : ""), LABEL[e.priority] || e.priority));
    tr.appendChild(prio);

    var title = el("td", "q-title");
    var link = el("a", null, e.title);
    link.href = href;
    title.appendChild(link);
    title.appendChild(el("div", "q-sub", e.agent + " · " + (KIND[e.kind] || e.kind)));
    tr.appendChild(title);

    var claim = el("td", "q-claim");
    if (e.claimed_by) {
      var who = el("span", "claim" + (e.claimed_by_id === me ? " mine" : ""), e.claimed_by);
      who.dataset.claimedBy = e.claimed_by_id || "";
      claim.appendChild(who);
    } else {
      claim.appendChild(el("span", "muted", "Unclaimed"));
    }
    tr.appendChild(claim);
    tr.appendChild(el("td", "q-waiting"));
    tr.appendChild(el("td", "q-left"));
    tr.appendChild(el("td", "q-level", e.levels ? e.level + " / " + e.levels : e.level));
    tr.appendChild(el("td", "q-approvals", e.approvals + " of " + e.required_approvals));
    tick(tr, Date.now());
    return tr;
  }

  function tick(tr, now) {
    var waiting = tr.querySelector(".q-waiting");
    var left = tr.querySelector(".q-left");
    var remaining = (Date.parse(tr.dataset.expires) - now) / 1000;
    waiting.textContent = duration((now - Date.parse(tr.dataset.created)) / 1000);
    left.textContent = duration(remaining);
    left.classList.toggle("soon", remaining < 300);
  }

  function rows() { return Array.prototype.slice.call(tbody.querySelectorAll("tr.qrow")); }
  function find(id) {
    return rows().filter(function (tr) { return tr.dataset.id === id; })[0] || null;
  }

  function before(a, b) {
    var ra = RANK[a.dataset.priority], rb = RANK[b.dataset.priority];
    if (ra !== rb) return ra < rb;
    var ca = Date.parse(a.dataset.created), cb = Date.parse(b.dataset.created);
    if (ca !== cb) return ca < cb;
    return a.dataset.id < b.dataset.id;
  }

  function place(tr) {
    var next = rows().filter(function (other) { return other !== tr && before(tr, other); })[0];
    tbody.insertBefore(tr, next || null);
  }

  function refreshCount() {
    var n = rows().length;
    counter.textContent = n;
    empty.hidden = n > 0;
    document.title = (n ? "(" + n + ") " : "") + document.title.replace(/^\(\d+\) /, "");
  }

  function upsert(e, fresh) {
    var old = find(e.id);
    var selected = old && old.getAttribute("aria-selected") === "true";
    var tr = buildRow(e);
    if (selected) tr.setAttribute("aria-selected", "true");
    if (old) tbody.replaceChild(tr, old);
    place(tr);
    if (fresh) tr.classList.add("fresh");
  }

  function remove(id) {
    var tr = find(id);
    if (!tr) return;
    if (tr.getAttribute("aria-selected") === "true") {
      var next = tr.nextElementSibling || tr.previousElementSibling;
      if (next) select(next);
    }
    tr.remove();
  }

  function applySnapshot(snapshot) {
    var selected = tbody.querySelector('tr[aria-selected="true"]');
    var selectedId = selected && selected.dataset.id;
    tbody.textContent = "";
    snapshot.escalations.forEach(function (e) { tbody.appendChild(buildRow(e)); });
    snapshotSeq = snapshot.seq;
    versions = {};
    if (selectedId && find(selectedId)) select(find(selectedId));
    refreshCount();
  }

  function applyFrame(frame) {
    var e = frame.escalation;
    var known = versions[e.id] !== undefined ? versions[e.id] : snapshotSeq;
    if (frame.seq < known) return; // stale: we already show something newer
    versions[e.id] = frame.seq;
    var isNew = !find(e.id);
    if (e.status !== "pending") {
      remove(e.id);
    } else {
      upsert(e, isNew);
      if (isNew && frame.event === "created") announce(e);
    }
    refreshCount();
  }

  // --- Notifications and sound -------------------------------------------------------------
  var notifyButton = document.getElementById("notify-toggle");
  var soundToggle = document.getElementById("sound-toggle");
  var audio = null;

  if ("Notification" in window && Notification.permission === "default") {
    notifyButton.hidden = false;
    notifyButton.addEventListener("click", function () {
      Notification.requestPermission().then(function () { notifyButton.hidden = true; });
    });
  }
  soundToggle.checked = localStorage.getItem("awaithuman.sound") === "on";
  soundToggle.addEventListener("change", function () {
    localStorage.setItem("awaithuman.sound", soundToggle.checked ? "on" : "off");
    if (soundToggle.checked) beep(); // also unlocks audio: browsers need a gesture first
  });

  function beep() {
    var Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    audio = audio || new Context();
    var now = audio.currentTime;
    [0, 0.16].forEach(function (offset, i) {
      var osc = audio.createOscillator();
      var gain = audio.createGain();
      osc.type = "sine";
      osc.frequency.value = i ? 1175 : 880;
      gain.gain.setValueAtTime(0.0001, now + offset);
      gain.gain.exponentialRampToValueAtTime(0.2, now + offset + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + offset + 0.14);
      osc.connect(gain).connect(audio.destination);
      osc.start(now + offset);
      osc.stop(now + offset + 0.15);
    });
  }

  function announce(e) {
    if (soundToggle.checked) beep();
    if ("Notification" in window && Notification.permission === "granted" && document.hidden) {
      var note = new Notification((LABEL[e.priority] || "") + " · " + e.agent, {
        body: e.title, tag: e.id,
      });
      note.onclick = function () { window.focus(); location.href = detailUrl.replace("ESCALATION_ID", encodeURIComponent(e.id)); };
    }
  }

  // --- The socket ---------------------------------------------------------------------------
  var retry = 0;
  function setStatus(state, text) { statusEl.dataset.state = state; statusEl.textContent = text; }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + table.dataset.wsPath);
    socket.onopen = function () {
      retry = 0;
      setStatus("live", "Live");
      socket.send(JSON.stringify({ type: "sync" })); // resync: nothing missed while away
    };
    socket.onmessage = function (message) {
      var frame = JSON.parse(message.data);
      if (frame.type === "snapshot") applySnapshot(frame);
      else if (frame.type === "escalation") applyFrame(frame);
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

  setInterval(function () {
    var now = Date.now();
    rows().forEach(function (tr) { tick(tr, now); });
  }, 15000);

  function select(tr) { window.AwaitHumanRows.select(tr); }
})();
