/*
 * Item page behaviour: keyboard shortcuts (c confirm, r reject, j skip, v reveal), keeping the claim alive
 * while the page is open, and giving the item back when the moderator leaves without deciding.
 * Everything is configured through data- attributes because the Content-Security-Policy forbids inline code.
 */
(function () {
  "use strict";

  var root = document.getElementById("review-item");
  if (!root) {
    return;
  }
  var canDecide = root.dataset.canDecide === "1";
  var csrf = root.dataset.csrf;
  var leaseSeconds = parseInt(root.dataset.leaseSeconds, 10) || 120;
  var leavingViaForm = false;
  var submitted = false;

  function typingInField(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  function click(id) {
    var element = document.getElementById(id);
    if (element && !element.disabled) {
      element.click();
    }
  }

  function disableDecisions() {
    document.querySelectorAll("#decision-form button, #skip-button").forEach(function (button) {
      button.disabled = true;
    });
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typingInField(event.target)) {
      return;
    }
    var key = event.key.toLowerCase();
    if (key === "v") {
      var viewer = document.querySelector(".viewer");
      if (viewer) {
        viewer.classList.toggle("revealed");
      }
      return;
    }
    if (!canDecide) {
      return;
    }
    if (key === "c") {
      event.preventDefault();
      click("confirm-button");
    } else if (key === "r") {
      event.preventDefault();
      click("reject-button");
    } else if (key === "j") {
      event.preventDefault();
      click("skip-button");
    }
  });

  // Our own forms end the claim on the server (decide, skip, back to queue), so they need no release beacon;
  // a second submit is swallowed here and refused with 409 by the server if it gets through anyway.
  document.querySelectorAll("form[data-leaves-page]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (submitted) {
        event.preventDefault();
        return;
      }
      submitted = true;
      leavingViaForm = true;
      window.setTimeout(disableDecisions, 0);
    });
  });

  if (!canDecide) {
    return;
  }

  function renew() {
    var body = new FormData();
    body.append("csrfmiddlewaretoken", csrf);
    fetch(root.dataset.renewUrl, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf },
    }).then(function (response) {
      if (response.status === 409) {
        document.getElementById("claim-lost").hidden = false;
        disableDecisions();
        canDecide = false;
        window.clearInterval(timer);
      }
    }).catch(function () {
      // A missed ping is harmless: the lease is three pings long.
    });
  }

  var timer = window.setInterval(renew, Math.max(5, leaseSeconds / 3) * 1000);

  // A reload sends the old page's release beacon while this page loads; claim the item again once it landed.
  var navigation = performance.getEntriesByType && performance.getEntriesByType("navigation")[0];
  if (navigation && navigation.type === "reload") {
    window.setTimeout(renew, 1000);
  }

  window.addEventListener("pagehide", function () {
    if (leavingViaForm || !canDecide || !navigator.sendBeacon) {
      return;
    }
    var body = new FormData();
    body.append("csrfmiddlewaretoken", csrf);
    body.append("beacon", "1");
    navigator.sendBeacon(root.dataset.releaseUrl, body);
  });
})();
