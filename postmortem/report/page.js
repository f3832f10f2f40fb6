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
