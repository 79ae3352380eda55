// Live progress without a page reload: any element with data-poll-url is
// re-fetched every two seconds while its fragment says it is still active.
(function () {
  function poll(el) {
    if (el.dataset.active !== "true") return;
    setTimeout(function () {
      fetch(el.dataset.pollUrl, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          var holder = document.createElement("div");
          holder.innerHTML = html;
          var fresh = holder.firstElementChild;
          el.replaceWith(fresh);
          poll(fresh);
        })
        .catch(function () { poll(el); });
    }, 2000);
  }
  document.querySelectorAll("[data-poll-url]").forEach(poll);
})();
