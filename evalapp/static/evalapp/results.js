// The results page's progress box: while a computation is under way, ask for its stage every 2 s
// (a tiny fetch loop rather than a library: one page uses it). The first results reload the page;
// newer results replacing shown ones only offer a reload, so a reader does not lose their place.
(function () {
  var box = document.querySelector("[data-poll]");
  if (!box) return;
  var url = box.getAttribute("data-poll"), mode = box.getAttribute("data-reload");
  function show(cls, text) {
    var el = box.querySelector(cls);
    if (el) el.textContent = text;
  }
  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (s) {
        var p = s.progress;
        if (mode === "first" ? s.computed || p.status === "failed" : !s.stale) {
          if (mode === "first") { window.location.reload(); return; }
          var ready = box.querySelector(".results-ready");
          if (ready) ready.hidden = false;
          return;
        }
        if (p.status === "failed") { window.location.reload(); return; }
        show(".results-stage", p.stage || "queued");
        show(".results-percent", String(p.percent));
        var bar = box.querySelector("progress");
        if (bar) bar.value = p.percent;
        window.setTimeout(poll, 2000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 2000);
})();
