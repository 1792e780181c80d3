// condaproxy operators' page: progressive enhancement only. Everything works
// without this file; with it, snippets get a copy button and the overview's job
// list updates itself while a job runs (same-origin fetch of the page itself,
// which carries the browser's Basic credentials; no token is ever in a URL).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("pre[data-copy]").forEach(function (pre) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "copy";
    b.textContent = "Copy";
    b.addEventListener("click", function () {
      var text = pre.querySelector("code").textContent;
      var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done);
      } else {
        var r = document.createRange();
        r.selectNodeContents(pre.querySelector("code"));
        var s = window.getSelection();
        s.removeAllRanges();
        s.addRange(r);
        if (document.execCommand("copy")) { done(); }
      }
    });
    pre.insertBefore(b, pre.firstChild);
  });

  var live = document.querySelector("[data-live]");
  if (!live) { return; }
  var every = (parseInt(live.getAttribute("data-live"), 10) || 2) * 1000;
  var tick = function () {
    fetch(location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(live.id);
        if (!fresh) { return; }
        live.innerHTML = fresh.innerHTML;
        if (fresh.hasAttribute("data-live")) { setTimeout(tick, every); }
      })
      .catch(function () { setTimeout(tick, every * 3); });
  };
  setTimeout(tick, every);
});
