// Aloha-rs console: live updates from the master's event stream, and the log tail.
// Served by the master itself; no framework, nothing from outside.
(function () {
  "use strict";
  var main = document.querySelector("main[data-live]");
  // The login page has nothing live (and no session to read the stream with yet).
  if (!main || location.pathname === "/ui/login") return;

  // ---- Live refresh: after events, fetch this page's <main> again and swap it in.
  var timer = null;
  // Something typed into a form of this page: a refresh would throw it away.
  var edited = false;
  main.addEventListener("input", function () { edited = true; });
  function busy() {
    if (edited) return true;
    var a = document.activeElement;
    return a && main.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName);
  }
  function refresh() {
    timer = null;
    if (busy()) { schedule(1000); return; }
    fetch(location.href, { headers: { "X-Console-Fragment": "main" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        // Typing may have started while the page was being fetched.
        if (busy()) { schedule(1000); return; }
        var oldLogs = main.querySelector(".logs");
        main.innerHTML = html;
        var newLogs = main.querySelector(".logs");
        if (oldLogs && newLogs && oldLogs.dataset.app === newLogs.dataset.app &&
            oldLogs.dataset.attempt === newLogs.dataset.attempt) {
          newLogs.replaceWith(oldLogs); // keep the running tail
        } else if (newLogs) {
          startLogs(newLogs);
        }
        main.dispatchEvent(new CustomEvent("console:refreshed"));
      })
      .catch(function () {});
  }
  function schedule(ms) { if (!timer) timer = setTimeout(refresh, ms); }

  var feed = main.querySelector("[data-feed]");
  function describe(e) {
    var parts = [e.seq, e.at.replace("T", " ").replace(/\..*Z$/, "Z"), e.type];
    if (e.app_id) parts.push(e.app_id);
    if (e.schedule_id) parts.push(e.schedule_id);
    if (e.worker_id) parts.push(e.worker_id);
    if (e.old_state !== undefined) parts.push((e.old_state || "-") + " → " + e.new_state);
    if (e.message) parts.push(e.message);
    return parts.join("  ");
  }
  try {
    var es = new EventSource("/api/v1/events");
    es.onmessage = function () { if (!feed) schedule(300); };
    // Changes between the page's render and the stream's (re)connection are not in the
    // stream: look again once it is open.
    es.onopen = function () { if (!feed) schedule(0); };
    ["app_state_changed", "app_relaunched", "worker_joined", "worker_lost", "leader_changed",
     "app.expired", "schedule.created", "schedule.updated", "schedule.fired", "schedule.skipped",
     "schedule.missed", "schedule.paused", "schedule.resumed", "schedule.ended",
     "schedule.deleted"].forEach(function (t) {
      es.addEventListener(t, function (m) {
        var feedNow = main.querySelector("[data-feed]");
        if (feedNow) {
          try {
            var li = document.createElement("li");
            li.textContent = describe(JSON.parse(m.data));
            feedNow.insertBefore(li, feedNow.firstChild);
            while (feedNow.children.length > 500) feedNow.removeChild(feedNow.lastChild);
          } catch (err) {}
        } else {
          schedule(300);
        }
      });
    });
  } catch (err) {}
  // Workers' heartbeats are not events: refresh the workers page now and then.
  if (location.pathname === "/ui/workers" || location.pathname === "/") {
    setInterval(function () { schedule(0); }, 5000);
  }

  // ---- The log tail of an app page.
  function startLogs(box) {
    var pre = box.querySelector("[data-log]");
    var select = box.querySelector("[data-log-stream]");
    var raw = box.querySelector("[data-log-raw]");
    var controller = null;
    function follow() {
      if (controller) controller.abort();
      controller = new AbortController();
      var stream = select ? select.value : "stdout";
      var base = "/api/v1/apps/" + encodeURIComponent(box.dataset.app) + "/logs?stream=" + stream +
        "&attempt=" + box.dataset.attempt;
      if (raw) raw.href = base;
      pre.textContent = "";
      fetch(base + "&follow=true", { signal: controller.signal, cache: "no-store" })
        .then(function (r) {
          if (!r.ok) {
            return r.json().then(function (j) { pre.textContent = "(" + (j.error || r.status) + ")"; },
                                 function () { pre.textContent = "(HTTP " + r.status + ")"; });
          }
          var reader = r.body.getReader();
          var dec = new TextDecoder();
          function pump() {
            return reader.read().then(function (chunk) {
              if (chunk.done) { box.dataset.ended = "true"; return; }
              var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
              pre.textContent += dec.decode(chunk.value, { stream: true });
              if (atEnd) pre.scrollTop = pre.scrollHeight;
              return pump();
            });
          }
          return pump();
        })
        .catch(function (err) { if (err.name !== "AbortError") pre.textContent += "\n(" + err + ")"; });
    }
    if (select) select.addEventListener("change", follow);
    follow();
  }
  var logs = main.querySelector(".logs");
  if (logs) startLogs(logs);
})();
