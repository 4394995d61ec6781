// Live status of training runs: every element with data-status-url polls its run's JSON until it finishes.
(function () {
  "use strict";
  var POLL_MS = 2000;

  function update(element, data) {
    var status = element.querySelector('[data-field="status"]');
    var bar = element.querySelector('[data-field="progress"]');
    var phase = element.querySelector('[data-field="phase"]');
    if (status) status.textContent = data.status_display;
    if (bar) {
      bar.max = Math.max(1, data.progress_total);
      bar.value = data.fraction >= 1 ? bar.max : data.progress_current;
    }
    if (phase) {
      var text = data.phase || "";
      if (data.status === "running" && data.progress_total) text += " " + data.progress_current + "/" + data.progress_total;
      phase.textContent = text;
    }
  }

  function poll(element) {
    var url = element.getAttribute("data-status-url");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (data) {
        update(element, data);
        if (data.open) {
          window.setTimeout(function () { poll(element); }, POLL_MS);
        } else {
          // Finished: reload once so the model version, reason and gate figures appear.
          window.location.reload();
        }
      })
      .catch(function () {
        window.setTimeout(function () { poll(element); }, POLL_MS * 3);
      });
  }

  document.querySelectorAll("[data-status-url]").forEach(poll);
})();
