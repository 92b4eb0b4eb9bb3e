// Contact points: a point's priorities save as soon as one is ticked (the Save button stays for
// browsers without scripts), and "Notify this browser" subscribes with the server's VAPID key
// (pwa.js) and posts the subscription with the form, which carries the CSRF token.
(function () {
  "use strict";
  document.querySelectorAll("form[data-autosave]").forEach(function (form) {
    var button = form.querySelector("[data-autosave-button]");
    if (button) button.hidden = true;
    form.addEventListener("change", function () {
      form.submit();
    });
  });
})();
(function () {
  "use strict";
  var form = document.getElementById("push-subscribe");
  if (!form) return;
  var status = document.getElementById("push-status");
  form.addEventListener("submit", function (event) {
    if (form.elements.subscription.value) return;
    event.preventDefault();
    if (!window.AwaitHumanPush || !("PushManager" in window)) {
      status.textContent = "This browser cannot receive Web Push (it needs HTTPS, or localhost).";
      return;
    }
    status.textContent = "Asking the browser for permission…";
    window.AwaitHumanPush.subscribe(form.dataset.vapidKey)
      .then(function (subscription) {
        form.elements.subscription.value = JSON.stringify(subscription);
        form.submit();
      })
      .catch(function (error) {
        status.textContent = error.message || String(error);
      });
  });
})();
