// Draws the lineage DAG with plotly.js and shows a node's record, diffs and log on click.
// Data comes from the inlined JSON block #report-data; nothing is fetched at view time.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  window.__reportData = D;
  var SYMBOL = { ok: "circle", crash: "x", timeout: "triangle-down" };

  function nodeTraces() {
    var byProg = {};
    D.nodes.forEach(function (n, i) {
      var t = byProg[n.program];
      if (!t) {
        t = byProg[n.program] = {
          type: "scattergl", mode: "markers", name: n.program, x: [], y: [], text: [],
          customdata: [], meta: "node", hoverinfo: "text",
          marker: { color: D.colors[n.program] || "#333", size: [], symbol: [],
                    line: { color: [], width: [] } }
        };
      }
      t.x.push(n.x); t.y.push(n.y); t.customdata.push(i);
      t.text.push(n.sha.slice(0, 7) + " " + n.status + " " + (n.decision || "") + "<br>" +
                  n.agent + " / " + n.program + "<br>val_bpb " +
                  (n.val_bpb == null ? "-" : n.val_bpb.toFixed(4)) + "<br>" +
                  String(n.description || "").slice(0, 80).replace(/</g, "&lt;"));
      t.marker.symbol.push(n.is_merge ? "diamond" : (SYMBOL[n.status] || "circle"));
      t.marker.size.push(n.on_best ? 11 : (n.status === "ok" ? 7 : 9));
      t.marker.line.color.push(n.on_best ? "#000" : "rgba(0,0,0,0.25)");
      t.marker.line.width.push(n.on_best ? 2 : 0.5);
    });
    return Object.keys(byProg).sort().map(function (k) { return byProg[k]; });
  }

  function edgeTrace(second) {
    var x = [], y = [];
    D.edges.forEach(function (e) {
      if (!!e[2] === second) return;   // e = [src index, dst index, first_parent]
      var a = D.nodes[e[0]], b = D.nodes[e[1]];
      x.push(a.x, b.x, null); y.push(a.y, b.y, null);
    });
    return { type: "scattergl", mode: "lines", x: x, y: y, hoverinfo: "skip", meta: "edge",
             name: second ? "merged-in parent" : "parent",
             line: { color: second ? "#d62728" : "rgba(120,120,120,0.45)",
                     width: second ? 1.5 : 1, dash: second ? "dash" : "solid" } };
  }

  function overlay(name, pick, symbol, color, size) {
    var x = [], y = [], cd = [];
    D.nodes.forEach(function (n, i) { if (pick(n)) { x.push(n.x); y.push(n.y); cd.push(i); } });
    return { type: "scattergl", mode: "markers", name: name, x: x, y: y, customdata: cd,
             meta: "overlay", hoverinfo: "skip",
             marker: { symbol: symbol, size: size, color: color, line: { color: color, width: 2 } } };
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text != null) e.textContent = text;   // textContent: ledger strings are never HTML
    if (cls) e.className = cls;
    return e;
  }

  function diffPre(text) {
    var pre = el("pre", null, "diff");
    String(text).split("\n").forEach(function (line) {
      var c = line[0] === "+" && line.slice(0, 3) !== "+++" ? "add" :
              line[0] === "-" && line.slice(0, 3) !== "---" ? "del" :
              line.slice(0, 2) === "@@" ? "hunk" : "";
      pre.appendChild(el("span", line + "\n", c));
    });
    return pre;
  }

  function show(i) {
    var n = D.nodes[i], panel = document.getElementById("panel");
    panel.textContent = "";
    panel.dataset.sha = n.sha;
    panel.appendChild(el("h3", n.sha.slice(0, 10) + "  " + (n.description || "")));
    var flags = [n.status, n.decision, n.is_merge ? "merge" : "", n.on_best ? "on best" : "",
                 n.suspect ? "SUSPECT" : ""].filter(Boolean).join(" · ");
    panel.appendChild(el("p", flags, n.suspect ? "suspect" : "flags"));
    n.records.forEach(function (r) {
      var tbl = el("table", null, "record");
      Object.keys(r).forEach(function (k) {
        if (r[k] === null || r[k] === "") return;
        var tr = el("tr"); tr.appendChild(el("th", k)); tr.appendChild(el("td", String(r[k])));
        tbl.appendChild(tr);
      });
      panel.appendChild(tbl);
    });
    n.diffs.forEach(function (d) {
      panel.appendChild(el("h4", "train.py against " + d.parent.slice(0, 10) +
                                 (d.first_parent ? " (first parent)" : " (merged-in parent)")));
      panel.appendChild(diffPre(d.text));
    });
    if (!n.diffs.length) panel.appendChild(el("p", "root commit: no parent to diff against"));
    panel.appendChild(el("h4", "log tail"));
    panel.appendChild(el("pre", n.log || "(no run.log)", "log"));
  }
  window.__showNode = show;

  var gd = document.getElementById("dag");
  var traces = [edgeTrace(false), edgeTrace(true)].concat(nodeTraces()).concat([
    overlay("suspect promotion", function (n) { return n.suspect; }, "circle-open", "#d62728", 20),
    overlay("merge commit", function (n) { return n.is_merge; }, "diamond-open", "#000", 16)
  ]);
  var layout = {
    margin: { l: 10, r: 10, t: 30, b: 30 }, hovermode: "closest", dragmode: "pan",
    xaxis: { title: { text: "generation" }, zeroline: false },
    yaxis: { visible: false }, legend: { orientation: "h", y: -0.08 },
    title: { text: D.nodes.length + " trained commits", font: { size: 13 } }
  };
  Plotly.newPlot(gd, traces, layout, { responsive: true, scrollZoom: true, displaylogo: false })
    .then(function () {
      gd.on("plotly_click", function (ev) {
        var p = ev.points && ev.points[0];
        if (p && p.customdata != null) show(p.customdata);
      });
      window.__reportReady = true;
    });
})();
