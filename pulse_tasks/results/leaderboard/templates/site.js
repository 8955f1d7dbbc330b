// The leaderboard's only script: sortable tables, the search box and the paper/strict switch.
// No library and no network: the pages work from file:// and on any static host.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function sortValue(cell) {
    var v = cell.getAttribute("data-sort");
    return v === null ? cell.textContent.trim().toLowerCase() : v;
  }

  function compare(x, y) {
    // Empty values (missing, undefined, unranked) always sort last, whatever the direction.
    var nx = x === "" ? NaN : Number(x), ny = y === "" ? NaN : Number(y);
    if (!isNaN(nx) && !isNaN(ny)) return nx - ny;
    return x.localeCompare(y);
  }

  function sortTable(table, index, th) {
    var current = th.getAttribute("aria-sort");
    var first = th.getAttribute("data-first") || "asc";
    var ascending = current ? current !== "ascending" : first === "asc";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortValue(a.cells[index]), y = sortValue(b.cells[index]);
      if (x === "" || y === "") return (x === "") - (y === "");
      var c = compare(x, y);
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.tabIndex = 0;
      th.title = (th.title ? th.title + " - " : "") + "click to sort";
      th.addEventListener("click", function () { sortTable(table, index, th); });
      th.addEventListener("keydown", function (ev) { if (ev.key === "Enter") sortTable(table, index, th); });
    });
  });

  var box = document.getElementById("search"), counter = document.getElementById("search-count");
  function search() {
    var q = box.value.trim().toLowerCase(), rows = document.querySelectorAll("tr[data-search]");
    var shown = 0, total = 0;
    Array.prototype.forEach.call(rows, function (r) {
      var hit = !q || r.getAttribute("data-search").indexOf(q) >= 0;
      r.hidden = !hit;
      if (r.closest("section.view") === null || r.closest("section.view").classList.contains("shown")) {
        total += 1;
        shown += hit ? 1 : 0;
      }
    });
    if (counter) counter.textContent = q ? shown + " of " + total + " rows" : "";
  }
  if (box) box.addEventListener("input", search);

  var views = document.querySelectorAll("section.view"), buttons = document.querySelectorAll("button[data-mode]");
  function show(mode) {
    Array.prototype.forEach.call(views, function (v) { v.classList.toggle("shown", v.getAttribute("data-view") === mode); });
    Array.prototype.forEach.call(buttons, function (b) { b.setAttribute("aria-pressed", String(b.getAttribute("data-mode") === mode)); });
    if (box) search();
  }
  Array.prototype.forEach.call(buttons, function (b) {
    b.addEventListener("click", function () {
      show(b.getAttribute("data-mode"));
      try { history.replaceState(null, "", "#" + b.getAttribute("data-mode")); } catch (e) { /* some file:// setups refuse */ }
    });
  });
  if (views.length) show(location.hash === "#strict" ? "strict" : "paper");
})();
