// Draws the lineage DAG with plotly.js and shows a node's record, diffs and log on click.
// Data comes from the inlined JSON block #report-data; nothing is fetched at view time.
// The DAG reads without clicking: every node is labelled with its val_bpb and delta (+ =
// better), coloured by what became of it (one legend entry per outcome), merge commits are
// diamonds, best's path is a thick gold line, suspect and contended runs are ringed.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  window.__reportData = D;
  var OUTCOMES = ["baseline", "kept", "merged", "carried", "pending", "discarded", "unjudged", "failed",
                  "sample", "unrecorded"];
  var LABEL = { baseline: "baseline (root)", kept: "kept (moved best)",
                merged: "merged onto best", carried: "carried (in another's merge)",
                pending: "pending", discarded: "discarded",
                unjudged: "never judged (no clean sample)", failed: "crashed / timed out",
                sample: "sample only", unrecorded: "unrecorded" };

  function fmt(v, digits, signed) {
    if (v === null || v === undefined || isNaN(v)) return "-";
    var s = Number(v).toFixed(digits);
    return signed && v > 0 ? "+" + s : s;
  }

  function symbol(n) {
    if (n.is_merge) return "diamond";
    if (n.status === "crash") return "x";
    if (n.status === "timeout") return "triangle-down";
    return "circle";
  }

  function label(n) {
    var v = fmt(n.val_bpb, 4, false), d = n.outcome === "baseline" ? "" : fmt(n.delta, 4, true);
    return v === "-" ? "" : v + (d !== "-" && d ? " " + d : "");
  }

  function hover(n) {
    var head = n.sha.slice(0, 7) + "  " + (LABEL[n.outcome] || n.outcome || "") +
               (n.decision && n.decision !== n.outcome ? " (" + n.decision + ")" : "");
    return head + "<br>" + (n.agent || "-") + " / " + (n.program || "?") +
           "<br>val_bpb " + fmt(n.val_bpb, 4) + " (" + (n.samples || 0) + " samples), Δ " +
           fmt(n.delta, 4, true) + "<br>" +
           String(n.description || "").slice(0, 80).replace(/</g, "&lt;");
  }

  function nodeSize(n) { return n.best_path ? 14 : (n.is_merge ? 12 : 9); }

  function nodeTraces() {
    var by = {};
    D.nodes.forEach(function (n, i) {
      var o = OUTCOMES.indexOf(n.outcome) >= 0 ? n.outcome : "unrecorded";
      var t = by[o];
      if (!t) {
        t = by[o] = {
          type: "scattergl", mode: "markers", name: LABEL[o] || o, x: [], y: [], text: [],
          customdata: [], meta: "node", hoverinfo: "text", legendrank: OUTCOMES.indexOf(o),
          marker: { color: D.outcome_colors[o] || "#fff", size: [], symbol: [],
                    line: { color: "#333", width: [] } }
        };
      }
      t.x.push(n.x); t.y.push(n.y); t.customdata.push(i); t.text.push(hover(n));
      t.marker.symbol.push(symbol(n));
      t.marker.size.push(nodeSize(n));
      t.marker.line.width.push(n.best_path ? 2 : 0.6);
    });
    return OUTCOMES.filter(function (o) { return by[o]; }).map(function (o) { return by[o]; });
  }

  // Two lines (val_bpb, then Δ). Best's path: above each node, always shown. Every other node:
  // to its right, shown while a generation is wide enough on screen for it (zoom in for more).
  // Each label sits beside an invisible marker of its node's size, so plotly places it outside
  // the node (a text-only trace starts at the centre: the node hid the sign of every Δ to its
  // right). hoverinfo "skip" keeps the clicks on the nodes.
  function labelTrace(onPath) {
    var x = [], y = [], text = [], size = [];
    D.nodes.forEach(function (n) {
      if (!!n.best_path !== onPath) return;
      var l = label(n);
      if (l) { x.push(n.x); y.push(n.y); text.push(l.replace(" ", "<br>")); size.push(nodeSize(n)); }
    });
    return { type: "scatter", mode: "markers+text", x: x, y: y, text: text,
             marker: { size: size, opacity: 0 },
             textposition: onPath ? "top center" : "middle right",
             textfont: { size: onPath ? 10 : 9, color: onPath ? "#000" : "#333" }, hoverinfo: "skip",
             showlegend: false, meta: onPath ? "label-best" : "label", cliponaxis: false };
  }

  var LABEL_PX = 46;   // a label ("2.4512" over "+0.0210", 9 px) needs about this many pixels
  function fitLabels() {
    var ax = gd._fullLayout.xaxis, i = gd.data.findIndex(function (t) { return t.meta === "label"; });
    if (i < 0) return;
    var show = D.label_all && ax._length / Math.max(1, ax.range[1] - ax.range[0]) >= LABEL_PX;
    if (gd.data[i].visible !== show) Plotly.restyle(gd, { visible: show }, [i]);
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
             line: { color: second ? "#1f77b4" : "rgba(120,120,120,0.45)",
                     width: second ? 1.5 : 1, dash: second ? "dash" : "solid" } };
  }

  function bestPath() {
    var x = [], y = [];
    D.edges.forEach(function (e) {
      var a = D.nodes[e[0]], b = D.nodes[e[1]];
      if (e[2] && a.best_path && b.best_path) { x.push(a.x, b.x, null); y.push(a.y, b.y, null); }
    });
    return { type: "scattergl", mode: "lines", x: x, y: y, hoverinfo: "skip", meta: "best",
             name: "best's path", line: { color: "rgba(230,170,0,0.85)", width: 6 } };
  }

  function overlay(name, pick, color, dash) {
    var x = [], y = [], cd = [];
    D.nodes.forEach(function (n, i) { if (pick(n)) { x.push(n.x); y.push(n.y); cd.push(i); } });
    return { type: "scatter", mode: "markers", name: name, x: x, y: y, customdata: cd,
             meta: "overlay", hoverinfo: "skip", visible: x.length ? true : "legendonly",
             marker: { symbol: "circle-open", size: 22, color: color,
                       line: { color: color, width: dash ? 2 : 3 } } };
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

  function cell(k, v) {
    if (D.time_fields.indexOf(k) >= 0 && typeof v === "number") {
      return new Date(v * 1000).toLocaleString();   // the reader's local time
    }
    return String(v);
  }

  function show(i) {
    var n = D.nodes[i], panel = document.getElementById("panel");
    panel.textContent = "";
    panel.dataset.sha = n.sha;
    panel.appendChild(el("h3", n.sha.slice(0, 10) + "  " + (n.description || "")));
    // the outcome once, the decision word only where it says more (did-not-stack, promote...)
    var what = (LABEL[n.outcome] || n.outcome || "") +
               (n.decision && n.decision !== n.outcome && LABEL[n.decision] === undefined ?
                " (" + n.decision + ")" : "");
    var flags = [what, n.step ? "step " + n.step + " of best" : "", n.is_merge ? "merge commit" : "",
                 n.on_best && !n.step ? "on best" : "", n.suspect ? "SUSPECT" : "",
                 n.contended ? "contended run" : ""].filter(Boolean).join(" · ");
    panel.appendChild(el("p", flags, n.suspect ? "suspect" : "flags"));
    var used = "val_bpb " + fmt(n.val_bpb, 4) + " over " + (n.samples || 0) + " sample(s)" +
               (n.value_source ? " (" + n.value_source + ")" : "") + "; Δ " + fmt(n.delta, 4, true) +
               " (+ = better)";
    if (n.decision_samples_best) {
      used += "; its decision used " + (n.decision_samples || n.samples || 0) + " sample(s) of it against " +
              n.decision_samples_best + " of best";
    }
    panel.appendChild(el("p", used, "used"));
    panel.appendChild(el("p", "by " + (n.agent || "-") + " (" + (n.program || "?") + ")" +
                              (n.ran_by && n.ran_by !== n.agent ? ", trained by " + n.ran_by : "") +
                              ", generation " + n.generation, "flags"));
    n.records.forEach(function (r) {
      var tbl = el("table", null, "record");
      Object.keys(r).forEach(function (k) {
        if (r[k] === null || r[k] === "") return;
        var tr = el("tr"); tr.appendChild(el("th", k)); tr.appendChild(el("td", cell(k, r[k])));
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

  var maxGen = D.nodes.reduce(function (m, n) { return Math.max(m, n.x); }, 0);
  var gd = document.getElementById("dag");
  var traces = [bestPath(), edgeTrace(false), edgeTrace(true)].concat(nodeTraces()).concat([
    // hidden from the start when a generation is too narrow for a label (no second drawing)
    Object.assign(labelTrace(false), { visible: D.label_all &&
                  gd.clientWidth / (maxGen + 1.3) >= LABEL_PX }), labelTrace(true),
    overlay("suspect move", function (n) { return n.suspect; }, "#d62728", false),
    overlay("contended run", function (n) { return n.contended; }, "#9467bd", true)
  ]);
  var layout = {
    margin: { l: 20, r: 20, t: 40, b: 40 }, hovermode: "closest", dragmode: "pan",
    // generations are whole numbers: ticks at integers only
    xaxis: { title: { text: "generation (commits from the root)" }, zeroline: false,
             range: [-0.4, maxGen + 0.9],
             tick0: 0, dtick: Math.max(1, Math.ceil(maxGen / 20)), tickformat: "d" },
    yaxis: { visible: false }, legend: { orientation: "h", y: -0.1 },
    title: { text: D.nodes.length + " trained commits", font: { size: 13 } }
  };
  Plotly.newPlot(gd, traces, layout, { responsive: true, scrollZoom: true, displaylogo: false })
    .then(function () {
      fitLabels();
      gd.on("plotly_relayout", fitLabels);
      gd.on("plotly_click", function (ev) {
        var p = ev.points && ev.points[0];
        if (p && p.customdata != null) show(p.customdata);
      });
      window.__reportReady = true;
    });
})();
