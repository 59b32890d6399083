// Sortable columns and the budget filter: no library, no network; the page reads fine without it.
(function () {
  "use strict";
  function value(cell) {
    if (!cell) return null;
    var v = cell.getAttribute("data-v");
    if (v !== null && v !== "") return parseFloat(v);
    return null;
  }
  function sortBy(table, col, th) {
    // the selectors' body: the last one but the sanity references' (they stay below, never sorted in)
    var bodies = Array.prototype.filter.call(table.tBodies, function (b) { return !b.classList.contains("sanity"); });
    var body = bodies[bodies.length - 1];
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.some(function (r) { return value(r.cells[col]) !== null; });
    var desc = th.getAttribute("aria-sort") === "none" ? numeric : th.getAttribute("aria-sort") !== "descending";
    rows.sort(function (a, b) {
      var ca = a.cells[col], cb = b.cells[col];
      if (numeric) {
        var x = value(ca), y = value(cb);
        if (x === null && y === null) return 0;
        if (x === null) return 1;  // N/A last, either way
        if (y === null) return -1;
        return desc ? y - x : x - y;
      }
      var s = (ca ? ca.textContent : ""), t = (cb ? cb.textContent : "");
      return desc ? t.localeCompare(s) : s.localeCompare(t);
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", desc ? "descending" : "ascending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var head = table.tHead.rows[table.tHead.rows.length - 1];
    Array.prototype.forEach.call(head.cells, function (th, col) {
      th.setAttribute("aria-sort", "none");
      th.tabIndex = 0;
      th.title = th.title || "sort by this column";
      th.addEventListener("click", function () { sortBy(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, col, th); }
      });
    });
  });
  var filter = document.getElementById("budget-filter");
  if (filter) {
    filter.parentNode.hidden = false;
    filter.addEventListener("change", function () {
      var b = filter.value;
      Array.prototype.forEach.call(document.querySelectorAll("[data-budget]"), function (el) {
        el.hidden = b !== "" && el.getAttribute("data-budget") !== b;
      });
    });
  }
})();
