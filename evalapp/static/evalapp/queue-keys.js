// j/k walk the queue links, Enter follows the selected one.
(function () {
  var links = Array.prototype.slice.call(document.querySelectorAll("ol.queue a")), i = -1;
  document.addEventListener("keydown", function (e) {
    if (/input|select|textarea/i.test(e.target.tagName) || !links.length) return;
    if (e.key === "j" || e.key === "k") {
      i = e.key === "j" ? Math.min(i + 1, links.length - 1) : Math.max(i - 1, 0);
      links[i].focus();
    }
  });
})();
