// "Notify this browser": subscribe with the server's VAPID key (pwa.js) and post the
// subscription with the form, which carries the CSRF token; the page then shows the result.
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
