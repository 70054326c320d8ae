// TrainingCurve (anywidget): a metric per tree for each evaluation set, redrawn as trees
// arrive. Plain SVG, no dependencies.
// Model traits: metric (str), history ({set name: [value per tree]}), n_trees (int).

const NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#3182bd", "#e6550d", "#31a354", "#756bb1"];

function node(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// what an analyst calls the sets: the training rows and the held-out eval sets
function label(name) {
  if (!name.startsWith("validation_")) return name;
  const k = Number(name.slice("validation_".length));
  return k === 0 ? "held-out" : `held-out ${k + 1}`;
}

function draw(model, el) {
  const history = model.get("history") || {};
  const metric = model.get("metric") || "metric";
  const names = Object.keys(history).sort();
  const values = names.flatMap((n) => history[n]).filter((v) => Number.isFinite(v));
  const trees = Math.max(model.get("n_trees") || 0, ...names.map((n) => history[n].length), 1);
  el.replaceChildren();
  const width = 460, height = 220, left = 50, bottom = 30, top = 20, right = 140;
  const svg = node("svg", { width, height, role: "img", class: "fedlab-training-curve",
                            "aria-label": `${metric} per tree` });
  svg.appendChild(node("text", { x: left, y: 14, "font-size": 12, "font-weight": 600 },
                       `${metric} per tree`));
  const lo = values.length ? Math.min(...values) : 0;
  const hi = values.length ? Math.max(...values) : 1;
  const span = hi - lo || 1;
  const x = (i) => left + (i / Math.max(trees - 1, 1)) * (width - left - right);
  const y = (v) => top + (1 - (v - lo) / span) * (height - top - bottom);
  svg.appendChild(node("line", { x1: left, x2: width - right, y1: height - bottom,
                                 y2: height - bottom, stroke: "#999" }));
  svg.appendChild(node("line", { x1: left, x2: left, y1: top, y2: height - bottom,
                                 stroke: "#999" }));
  for (const v of [lo, hi]) {
    svg.appendChild(node("text", { x: 4, y: y(v) + 4, "font-size": 10 }, v.toPrecision(4)));
  }
  svg.appendChild(node("text", { x: left, y: height - 8, "font-size": 10 }, "tree 1"));
  svg.appendChild(node("text", { x: width - right - 30, y: height - 8, "font-size": 10 },
                       `tree ${trees}`));
  names.forEach((name, k) => {
    const pts = history[name].map((v, i) => [i, v]).filter(([, v]) => Number.isFinite(v));
    if (!pts.length) return;
    const color = PALETTE[k % PALETTE.length];
    svg.appendChild(node("polyline", {
      points: pts.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": 2, class: "fedlab-curve",
      "data-set": name }));
    const last = pts[pts.length - 1][1];
    svg.appendChild(node("text", { x: width - right + 6, y: top + 14 * (k + 1),
                                   "font-size": 11, fill: color },
                         `${label(name)} ${last.toPrecision(4)}`));
  });
  if (!names.length) {
    svg.appendChild(node("text", { x: left + 10, y: height / 2, "font-size": 11,
                                   fill: "#777" }, "waiting for the first tree…"));
  }
  el.appendChild(svg);
}

function render({ model, el }) {
  draw(model, el);
  const redraw = () => draw(model, el);
  for (const t of ["history", "metric", "n_trees"]) model.on(`change:${t}`, redraw);
  return () => {
    for (const t of ["history", "metric", "n_trees"]) model.off(`change:${t}`, redraw);
  };
}

export default { render };
