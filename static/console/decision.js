// The decision screen: keyboard shortcuts, client-side checks the HTML constraints cannot
// express (a reason to reject where the organization asks for one, JSON arguments), and live claim/decision state from /ws/queue/.
// Plain JS, no inline script; agent text only ever goes through textContent.
(function () {
  "use strict";

  var root = document.getElementById("decision");
  if (!root) return;
  var id = root.dataset.id;
  var me = root.dataset.me;
  var form = document.getElementById("respond-form");
  var comment = document.getElementById("f-comment");
  var args = document.getElementById("f-edited-arguments");
  var banner = document.getElementById("live-banner");
  var help = document.getElementById("help");

  function say(text) {
    banner.hidden = false;
    banner.textContent = text + " ";
    var reload = document.createElement("a");
    reload.href = location.pathname;
    reload.textContent = "Reload";
    banner.appendChild(reload);
  }

  function lock() {
    var fields = document.getElementById("respond-fields");
    if (fields) fields.disabled = true;
    document.querySelectorAll("#claim-form button, #release-form button").forEach(function (b) { b.disabled = true; });
  }

  // --- Client-side checks -------------------------------------------------------------------
  if (form) {
    var rejectMessage = "Say why: the reason goes back to the agent.";
    form.addEventListener("click", function (event) {
      var button = event.target.closest("button[type=submit]");
      if (button && button.value !== "reject" && comment) comment.setCustomValidity("");
    });
    form.addEventListener("submit", function (event) {
      var submitter = event.submitter;
      var needsReason = form.hasAttribute("data-reason-required");
      if (needsReason && submitter && submitter.value === "reject" && comment && !comment.value.trim()) {
        event.preventDefault();
        comment.setCustomValidity(rejectMessage);
        comment.reportValidity();
        comment.focus();
      }
    });
    if (comment) comment.addEventListener("input", function () { comment.setCustomValidity(""); });
    if (args) {
      var checkArgs = function () {
        var message = "";
        try {
          var value = JSON.parse(args.value);
          if (value === null || typeof value !== "object" || Array.isArray(value)) message = "The arguments must be a JSON object.";
        } catch (error) {
          message = "Not valid JSON: " + error.message;
        }
        args.setCustomValidity(message);
      };
      args.addEventListener("input", checkArgs);
      args.addEventListener("invalid", function () { args.closest("details").open = true; });
    }
    var firstInvalid = form.querySelector('[aria-invalid="true"]');
    if (firstInvalid) firstInvalid.focus();
  }

  // --- Keyboard -----------------------------------------------------------------------------
  function press(selector) {
    var button = document.querySelector(selector);
    if (!button || button.disabled || button.closest("fieldset:disabled")) return false;
    if (button.form && button.form.requestSubmit) button.form.requestSubmit(button);
    else button.click();
    return true;
  }

  document.querySelectorAll("[data-help-open]").forEach(function (button) {
    button.addEventListener("click", function () { help.showModal(); });
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    switch (event.key) {
      case "a": press('#respond-form [data-shortcut="a"]'); break;
      case "r":
        if (comment && !comment.value.trim()) { comment.focus(); comment.setCustomValidity(""); }
        else press('#respond-form [data-shortcut="r"]');
        break;
      case "c": press("#claim-form button") || press("#release-form button"); break;
      case "u": location.href = root.dataset.queueUrl; break;
      case "?": help.open ? help.close() : help.showModal(); break;
      default: return;
    }
    event.preventDefault();
  });

  // --- Live state ---------------------------------------------------------------------------
  if (root.dataset.status !== "pending") return;
  var claimEl = document.getElementById("claim-state");
  var quorumEl = document.getElementById("quorum");
  var statusBadge = document.getElementById("status-badge");
  var lastSeq = -1;
  var finished = false;

  function show(e, seq) {
    if (seq < lastSeq) return;
    lastSeq = seq;
    if (e.status !== "pending") {
      finished = true;
      statusBadge.textContent = e.status.charAt(0).toUpperCase() + e.status.slice(1);
      statusBadge.className = "badge status " + e.status.replace(/[^a-z]/g, "");
      lock();
      say("This escalation is now " + e.status + ".");
      return;
    }
    var before = claimEl.dataset.claimedById || (claimEl.dataset.claim === "unclaimed" ? "" : null);
    var now = e.claimed_by_id || "";
    claimEl.dataset.claimedById = now;
    claimEl.textContent = e.claimed_by ? e.claimed_by + (now === me ? " (you)" : "") : "nobody";
    if (quorumEl) quorumEl.textContent = e.approvals + " of " + e.required_approvals + " approval" + (e.required_approvals === 1 ? "" : "s");
    if (before !== null && before !== now && now !== me) {
      if (now) { lock(); say(e.claimed_by + " claimed this escalation."); }
      else say("The claim was released.");
    }
  }

  function connect() {
    if (finished) return;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + root.dataset.wsPath);
    socket.onopen = function () { socket.send(JSON.stringify({ type: "sync" })); };
    socket.onmessage = function (message) {
      var frame = JSON.parse(message.data);
      if (frame.type === "escalation" && frame.escalation.id === id) show(frame.escalation, frame.seq);
      if (frame.type === "snapshot") {
        var mine = frame.escalations.filter(function (e) { return e.id === id; })[0];
        if (mine) show(mine, frame.seq);
        else if (!finished) { finished = true; lock(); say("This escalation is no longer pending."); }
      }
    };
    socket.onclose = function (event) {
      if (event.code >= 4400 && event.code < 4500) return;
      setTimeout(connect, 2000 + Math.random() * 2000);
    };
  }
  connect();
})();
