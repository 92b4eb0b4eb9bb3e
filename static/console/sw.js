// AwaitHuman's service worker: shows Web Push notifications and answers simple approvals from
// the notification's Approve / Reject actions (POST /hooks/push/answer with the push's token).
// Payloads come from notifications/transports/push.py: {type, tag, title, body, url,
// answer_url?, token?, actions?}. A "decided" push reuses the tag, replacing the notification.
"use strict";

self.addEventListener("install", function () {
  self.skipWaiting();
});

self.addEventListener("activate", function (event) {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("push", function (event) {
  var data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (error) {
    data = { title: "AwaitHuman", body: event.data ? event.data.text() : "" };
  }
  var asking = data.type === "escalation";
  var options = {
    body: data.body || "",
    tag: data.tag || "awaithuman",
    data: data,
    icon: "icon-192.png",
    badge: "icon-192.png",
    renotify: asking,
    requireInteraction: asking,
    silent: data.type === "decided",
    actions: asking && data.token ? data.actions || [] : [],
  };
  event.waitUntil(self.registration.showNotification(data.title || "AwaitHuman", options));
});

function openPage(url) {
  return self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (list) {
    for (var i = 0; i < list.length; i++) {
      if (list[i].url === url && "focus" in list[i]) return list[i].focus();
    }
    return self.clients.openWindow(url);
  });
}

function answer(data, action) {
  return fetch(data.answer_url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "omit",
    body: JSON.stringify({ token: data.token, action: action }),
  })
    .then(function (response) {
      return response.json().catch(function () {
        return { detail: "The answer could not be read (" + response.status + ")." };
      });
    })
    .catch(function () {
      return { detail: "Offline: the answer was not sent. Open AwaitHuman to answer." };
    })
    .then(function (result) {
      return self.registration.showNotification(data.title || "AwaitHuman", {
        body: result.detail || "",
        tag: data.tag,
        data: { type: "result", url: data.url },
        icon: "icon-192.png",
      });
    });
}

self.addEventListener("notificationclick", function (event) {
  var data = event.notification.data || {};
  event.notification.close();
  if ((event.action === "approve" || event.action === "reject") && data.token && data.answer_url) {
    event.waitUntil(answer(data, event.action));
    return;
  }
  event.waitUntil(openPage(data.url || "/"));
});
