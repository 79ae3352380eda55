// A form with data-confirm asks before it submits (in place of an inline onsubmit, which the
// Content-Security-Policy forbids).
document.addEventListener("submit", function (e) {
  var message = e.target.getAttribute && e.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) e.preventDefault();
}, true);
