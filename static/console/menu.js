// The console's menu button on narrow screens: opens and closes the navigation and account
// links (on wide screens the button is hidden and both are always shown).
(function () {
  "use strict";
  var button = document.querySelector(".menu-toggle");
  if (!button) return;
  var bar = button.closest(".topbar");
  button.addEventListener("click", function () {
    var open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(open));
    bar.classList.toggle("open", open);
  });
})();
