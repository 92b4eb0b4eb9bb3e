// Registers the service worker (installable console, Web Push) and offers the contact points
// page one call to subscribe this browser: AwaitHumanPush.subscribe(vapidPublicKey) resolves to
// the PushSubscription's JSON ({endpoint, keys: {p256dh, auth}}) to store as the contact point.
(function () {
  "use strict";
  if (!("serviceWorker" in navigator)) return;
  var script = document.currentScript;
  // Scope "/": the console's pages are the worker's clients (the server sends
  // Service-Worker-Allowed: / with sw.js), which makes the installed app open them.
  var ready = navigator.serviceWorker.register(script.dataset.sw, { scope: "/" }).then(function () {
    return navigator.serviceWorker.ready;
  });

  function keyBytes(base64url) {
    var padded = (base64url + "===".slice((base64url.length + 3) % 4))
      .replace(/-/g, "+")
      .replace(/_/g, "/");
    var raw = atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  window.AwaitHumanPush = {
    subscribe: function (vapidPublicKey) {
      return Notification.requestPermission().then(function (permission) {
        if (permission !== "granted") throw new Error("Notifications are blocked in this browser.");
        return ready.then(function (registration) {
          return registration.pushManager.subscribe({
            userVisibleOnly: true,
            applicationServerKey: keyBytes(vapidPublicKey),
          });
        }).then(function (subscription) {
          return subscription.toJSON();
        });
      });
    },
  };
})();
