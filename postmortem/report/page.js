/* postmortem report: draws the figures whose specs the page carries as JSON.
   No network: plotly.js is inlined above this script. */
(function () {
  "use strict";
  var root = document.documentElement;
  var holder = document.getElementById("pm-figures");
  var spec = JSON.parse(holder.textContent);
  var pending = spec.figures.length;
  var failed = 0;

  function finish() {
    pending -= 1;
    if (pending === 0) {
      root.setAttribute("data-figures", failed ? "error" : "rendered");
    }
  }

  function fail(el, err) {
    failed += 1;
    el.setAttribute("data-rendered", "error");
    el.textContent = "This figure could not be drawn: " + String(err);
    console.error("postmortem figure " + el.id + ": " + String(err));
  }

  if (pending === 0) {
    root.setAttribute("data-figures", "rendered");
    return;
  }
  if (!window.Plotly) {
    spec.figures.forEach(function (f) {
      fail(document.getElementById("fig-" + f.key), "plotly.js did not load");
    });
    root.setAttribute("data-figures", "error");
    return;
  }
  spec.figures.forEach(function (f) {
    var el = document.getElementById("fig-" + f.key);
    try {
      window.Plotly.newPlot(el, f.data, f.layout, spec.config).then(function () {
        el.setAttribute("data-rendered", "true");
        finish();
      }, function (err) {
        fail(el, err);
        finish();
      });
    } catch (err) {
      fail(el, err);
      finish();
    }
  });
})();

/* Processes: a filter over their summaries, and the details of a big dump's processes,
   which travel gzip-compressed (base64) and are unpacked the first time one is opened. */
(function () {
  "use strict";
  var section = document.getElementById("processes");
  if (!section) {
    return;
  }
  var items = Array.prototype.slice.call(section.querySelectorAll("details[data-pid]"));
  var filter = document.getElementById("pm-process-filter");
  var count = document.getElementById("pm-process-count");
  function applyFilter() {
    var words = (filter.value || "").toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    items.forEach(function (d) {
      // The summary (role, pid, name, states) and, once opened, the details.
      var lazy = d.querySelector(".pm-lazy");
      var text = (lazy && !lazy.getAttribute("data-loaded") ?
        d.querySelector("summary").textContent : d.textContent).toLowerCase();
      var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
      d.hidden = !ok;
      if (ok) {
        shown += 1;
      }
    });
    count.textContent = shown + " of " + items.length + " processes";
  }
  if (filter && count) {
    filter.addEventListener("input", applyFilter);
    count.textContent = items.length + " processes";
  }

  var packed = document.getElementById("pm-details");
  if (!packed) {
    return;
  }
  var unpacked = null;
  function unpack() {
    if (unpacked === null) {
      if (typeof DecompressionStream === "undefined") {
        unpacked = Promise.reject(new Error(
          "this browser cannot unpack them (it lacks DecompressionStream); " +
          "`postmortem analyze DUMP --json` has every process"));
      } else {
        var bytes = Uint8Array.from(atob(packed.textContent.trim()), function (c) {
          return c.charCodeAt(0);
        });
        var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
        unpacked = new Response(stream).text().then(JSON.parse);
      }
    }
    return unpacked;
  }
  items.forEach(function (d) {
    d.addEventListener("toggle", function () {
      var holder = d.querySelector(".pm-lazy");
      if (!d.open || !holder || holder.getAttribute("data-loaded")) {
        return;
      }
      unpack().then(function (texts) {
        // Built by postmortem with every dump string escaped, like the rest of the page.
        holder.innerHTML = texts[Number(holder.getAttribute("data-index"))];
        holder.setAttribute("data-loaded", "true");
      }, function (err) {
        holder.textContent = "The details could not be opened: " + String(err.message || err);
      });
    });
  });
})();
