// Keeps the page's live region current while something runs (a mailing sending, an import),
// without a manual reload: the page is fetched again every few seconds and the region with
// id "live" replaced (and the buttons of "live-actions" when the state changed). The server
// drops the data-live attribute once there is nothing left to wait for. "Stop updating"
// pauses it (WCAG 2.2.2). Without JavaScript the page still works: reload it by hand.
(function () {
  "use strict";
  var region = document.getElementById("live");
  if (!region || !region.hasAttribute("data-live")) { return; }
  var every = (Number(region.getAttribute("data-live")) || 3) * 1000;
  var toggle = document.getElementById("live-toggle");
  var stamp = document.getElementById("live-stamp");
  var paused = false;
  var timer = null;

  function schedule() { if (!paused) { timer = window.setTimeout(tick, every); } }

  function tick() {
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) { schedule(); return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        if (!fresh) { schedule(); return; }
        if (fresh.getAttribute("data-state") !== region.getAttribute("data-state")) {
          // The state moved (e.g. finished): the buttons that fit it change too. They are
          // replaced only then, so keyboard focus on them is not lost every few seconds.
          var actions = document.getElementById("live-actions");
          var freshActions = doc.getElementById("live-actions");
          if (actions && freshActions) { actions.innerHTML = freshActions.innerHTML; }
          region.setAttribute("data-state", fresh.getAttribute("data-state"));
        }
        region.innerHTML = fresh.innerHTML;
        if (stamp) { stamp.textContent = "Updated " + new Date().toLocaleTimeString(); }
        if (fresh.hasAttribute("data-live")) { schedule(); } else {
          region.removeAttribute("data-live");
          if (toggle) { toggle.hidden = true; }
        }
      })
      .catch(function () { schedule(); });
  }

  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.textContent = paused ? "Resume updating" : "Stop updating";
      toggle.setAttribute("aria-pressed", paused ? "true" : "false");
      if (paused) { window.clearTimeout(timer); } else { tick(); }
    });
  }
  schedule();
}());

// An upload form marked data-upload shows the upload's progress: it is sent with
// XMLHttpRequest (whose upload events report bytes sent) and the browser then goes where the
// server's answer led (the import's progress page) or shows the answer (an error page).
(function () {
  "use strict";
  var form = document.querySelector("form[data-upload]");
  var status = document.getElementById("upload-status");
  var bar = document.getElementById("upload-progress");
  var label = document.getElementById("upload-percent");
  if (!form || !status || !bar || !window.FormData) { return; }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var xhr = new XMLHttpRequest();
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; }
    status.hidden = false;
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) { return; }
      var done = Math.round(100 * e.loaded / e.total);
      bar.value = done;
      bar.textContent = done + "%";
      label.textContent = done + "%";
    });
    xhr.addEventListener("load", function () {
      if (xhr.status < 400 && xhr.responseURL) { window.location.assign(xhr.responseURL); return; }
      document.open();
      document.write(xhr.responseText);
      document.close();
    });
    xhr.addEventListener("error", function () {
      if (button) { button.disabled = false; }
      label.textContent = "the upload failed; check the connection and try again";
    });
    xhr.open("POST", form.action);
    xhr.send(new FormData(form));
  });
}());
