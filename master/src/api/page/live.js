// Mezzanine status page: live refresh of <main id="live"> and log follow.
// Everything here is optional: without JavaScript the pages are complete
// as served, only not live.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var every = 2000;
  function refresh() {
    if (document.hidden || !live) return;
    fetch(location.href, { headers: { "X-Mezz-Live": "1" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        if (fresh) live.innerHTML = fresh.innerHTML;
        var stamp = document.getElementById("stamp");
        if (stamp) stamp.textContent = "live · " + new Date().toLocaleTimeString();
      })
      .catch(function () {});
  }
  if (live) setInterval(refresh, every);

  // <pre class="log" data-src="/api/tasks/F/T/files/stdout" data-offset="N">
  function follow(pre) {
    var src = pre.getAttribute("data-src");
    var offset = parseInt(pre.getAttribute("data-offset") || "0", 10);
    function step() {
      fetch(src + "?offset=" + offset, { cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (j) {
          if (j.data) {
            var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
            pre.appendChild(document.createTextNode(j.data));
            if (atBottom) pre.scrollTop = pre.scrollHeight;
          }
          offset = j.next_offset;
          pre.setAttribute("data-offset", String(offset));
          if (j.eof && j.task_terminal) {
            var note = document.getElementById(pre.id + "-state");
            if (note) note.textContent = "complete";
            return;
          }
          setTimeout(step, j.data ? 200 : 1000);
        })
        .catch(function () { setTimeout(step, 3000); });
    }
    step();
  }
  var logs = document.querySelectorAll("pre.log[data-src]");
  for (var i = 0; i < logs.length; i++) follow(logs[i]);
})();
