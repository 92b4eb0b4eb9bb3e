// Keyboard and pointer for a console table of escalations (the queue, the history): j / k move
// the selection, Enter or o opens the selected row, ? shows the shortcuts; a click on a row opens
// it. The table body carries data-rows, each row data-href. Plain JS, no inline script (CSP).
(function () {
  "use strict";

  var tbody = document.querySelector("[data-rows]");
  if (!tbody) return;

  function rows() { return Array.prototype.slice.call(tbody.querySelectorAll("tr[data-href]")); }
  function selected() { return tbody.querySelector('tr[aria-selected="true"]'); }

  function select(tr) {
    rows().forEach(function (other) { other.removeAttribute("aria-selected"); });
    if (!tr) return;
    tr.setAttribute("aria-selected", "true");
    tr.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    var list = rows();
    if (!list.length) return;
    var index = list.indexOf(selected());
    index = index < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, index + step));
    select(list[index]);
  }

  // The live queue re-renders rows and keeps the selection through this.
  window.AwaitHumanRows = { select: select };

  tbody.addEventListener("click", function (event) {
    var tr = event.target.closest("tr[data-href]");
    if (!tr || event.target.closest("a")) return;
    location.href = tr.dataset.href;
  });

  var help = document.getElementById("help");
  document.querySelectorAll("[data-help-open]").forEach(function (button) {
    button.addEventListener("click", function () { help.showModal(); });
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    if (event.key === "Enter" && event.target.closest("a, button")) return;
    if (event.key === "j") move(1);
    else if (event.key === "k") move(-1);
    else if (event.key === "Enter" || event.key === "o") {
      var tr = selected();
      if (tr) location.href = tr.dataset.href;
    } else if (event.key === "?" && help) help.open ? help.close() : help.showModal();
    else return;
    event.preventDefault();
  });
})();
