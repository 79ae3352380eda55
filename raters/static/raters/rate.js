// Keyboard rating and submission without a full page reload (the 1-10 page and the pairwise page).
// Each answer carries its key in data-key: digits for scale points (0 is 10 on a 1-10 scale),
// letters for named options, n for "not sure". Tab moves to the next question, Enter submits,
// ? shows each question's keys (evalapp.rubric.key_hints says the same in words), ! presses
// "this one is distressing" (every letter may name an option, so the key is not a letter).
(function () {
  var root = document.getElementById("rate-item") || document;

  function setup() {
    var form = document.getElementById("rating-form");
    // A break prompt or a cap in place of the item: no keys answer anything.
    if (!form) { document.onkeydown = null; return; }
    var scales = Array.prototype.slice.call(form.querySelectorAll("fieldset.scale"));
    var active = 0;
    var shownAt = Date.now();
    function mark() { scales.forEach(function (s, i) { s.classList.toggle("active", i === active); }); }
    mark();
    // The active question follows focus however it moves (a click, Tab out of a rationale box, the
    // browser focusing an unanswered field), so a key never answers a question the rater left.
    scales.forEach(function (s, i) {
      s.addEventListener("click", function () { active = i; mark(); });
      s.addEventListener("focusin", function () { active = i; mark(); });
    });

    form.onkeydown = null;
    document.onkeydown = function (e) {
      var tag = (e.target.tagName || "").toLowerCase();
      if (tag === "textarea" || (tag === "input" && e.target.type === "text") || tag === "select") return;
      if (e.key === "!" && form.querySelector("#distress")) {
        e.preventDefault();
        form.requestSubmit(form.querySelector("#distress"));
      } else if (e.key === "?") {
        form.classList.toggle("show-keys");
        Array.prototype.forEach.call(form.querySelectorAll(".hint"), function (h) { h.hidden = !form.classList.contains("show-keys"); });
        e.preventDefault();
      } else if (/^[0-9a-z]$/.test(e.key) && !e.ctrlKey && !e.metaKey && !e.altKey && scales.length) {
        var input = scales[active].querySelector('input[data-key="' + e.key + '"]');
        if (input) {
          input.checked = true;
          // The pairwise page (data-advance): an answer moves on to the next unanswered question.
          if (form.dataset.advance && active < scales.length - 1) {
            active += 1; mark();
            (scales[active].querySelector("input:checked") || scales[active].querySelector("input")).focus();
          } else {
            input.focus();
          }
          e.preventDefault();
        }
      } else if (e.key === "Tab" && !e.shiftKey && tag !== "button" && scales[active].querySelector("textarea")) {
        // A question that asks why: Tab goes to its box first; Tab from the box moves on natively.
        scales[active].querySelector("textarea").focus();
        e.preventDefault();
      } else if (e.key === "Tab" && !e.shiftKey && tag !== "button") {
        active = (active + 1) % scales.length; mark();
        var chosen = scales[active].querySelector("input:checked") || scales[active].querySelector("input");
        if (chosen) chosen.focus();
        e.preventDefault();
      } else if (e.key === "Enter") {
        e.preventDefault();
        form.requestSubmit(form.querySelector("#submit"));
      }
    };

    form.addEventListener("submit", function (e) {
      // getAttribute: form.action would be the skip button, which is named "action". The distress
      // button posts to its own address (formaction).
      var action = (e.submitter && e.submitter.getAttribute("formaction")) || form.getAttribute("action") || "";
      if (!window.fetch || (action.indexOf("/rate/") < 0 && action.indexOf("/compare/") < 0)) return;
      e.preventDefault();
      var error = document.getElementById("rate-error");
      var data = new FormData(form);
      if (e.submitter && e.submitter.name) data.append(e.submitter.name, e.submitter.value);
      var seconds = form.querySelector('input[name="seconds"]');
      if (seconds) data.set("seconds", ((Date.now() - shownAt) / 1000).toFixed(1));
      Array.prototype.forEach.call(form.querySelectorAll("button"), function (b) { b.disabled = true; });
      // Sent as the form itself would be (urlencoded: it has no file), which the server parses in a
      // fraction of multipart's time (bench/rating.py).
      fetch(action, { method: "POST", body: new URLSearchParams(data), credentials: "same-origin",
                      headers: { "X-Requested-With": "fetch" } })
        .then(function (r) { return r.text().then(function (t) { return { ok: r.ok, text: t }; }); })
        .then(function (res) {
          if (!res.ok) {
            if (error) error.textContent = res.text;
            Array.prototype.forEach.call(form.querySelectorAll("button"), function (b) { b.disabled = false; });
            return;
          }
          var holder = document.createElement("div");
          holder.innerHTML = res.text;
          document.getElementById("rate-item").replaceWith(holder.firstElementChild);
          setup();
          window.scrollTo(0, 0);
        })
        .catch(function () {
          if (error) error.textContent = "Could not reach the server; your answer was not lost. Try again.";
          Array.prototype.forEach.call(form.querySelectorAll("button"), function (b) { b.disabled = false; });
        });
    });
  }
  setup();
  // Lets a test (or an impatient user's script) know the keyboard handlers are live.
  document.documentElement.dataset.ratingReady = "true";
})();
