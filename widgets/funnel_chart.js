// FunnelChart (anywidget): released stage counts of exposed and control, with their
// 95% intervals as whiskers and the lift of each stage. Plain SVG, no dependencies.
// Model traits: title (str), stages (list of str), rows (list of {stage, group, count,
// ci_low, ci_high, lift, lift_ci_low, lift_ci_high, suppressed}).

const NS = "http://www.w3.org/2000/svg";
const COLORS = { exposed: "#3182bd", control: "#9ecae1" };

function node(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function pct(v) {
  return (v >= 0 ? "+" : "") + (100 * v).toFixed(1) + "%";
}

function finite(v) {
  return typeof v === "number" && Number.isFinite(v);
}

function draw(model, el) {
  const rows = model.get("rows") || [];
  const stages = model.get("stages") || [];
  const title = model.get("title") || "";
  el.replaceChildren();
  const width = 520, left = 90, right = 150, barH = 12, gap = 10;
  const groups = ["exposed", "control"];
  const height = 40 + stages.length * (2 * barH + gap + 8);
  const svg = node("svg", { width, height, role: "img", "aria-label": title,
                            class: "fedlab-funnel-chart" });
  svg.appendChild(node("text", { x: 0, y: 16, "font-weight": 600, "font-size": 13 }, title));
  const shown = rows.filter((r) => !r.suppressed);
  const top = Math.max(1, ...shown.map((r) => (finite(r.ci_high) ? r.ci_high : r.count)));
  const x = (v) => left + (Math.max(0, Math.min(v, top)) / top) * (width - left - right);
  stages.forEach((stage, i) => {
    const y0 = 32 + i * (2 * barH + gap + 8);
    svg.appendChild(node("text", { x: 0, y: y0 + barH + 4, "font-size": 12 }, stage));
    groups.forEach((group, g) => {
      const r = rows.find((d) => d.stage === stage && d.group === group);
      const y = y0 + g * (barH + 2);
      if (!r) return;
      if (r.suppressed) {
        svg.appendChild(node("text", { x: left, y: y + barH - 2, "font-size": 11,
                                       fill: "#777", class: "fedlab-suppressed" },
                             `${group}: suppressed (small count)`));
        return;
      }
      svg.appendChild(node("rect", { x: left, y, width: x(r.count) - left, height: barH,
                                     fill: COLORS[group], class: `fedlab-bar ${group}` }));
      if (finite(r.ci_low) && finite(r.ci_high)) {
        const mid = y + barH / 2;
        svg.appendChild(node("line", { x1: x(r.ci_low), x2: x(r.ci_high), y1: mid, y2: mid,
                                       stroke: "#111", class: "fedlab-ci" }));
        for (const v of [r.ci_low, r.ci_high]) {
          svg.appendChild(node("line", { x1: x(v), x2: x(v), y1: y + 2, y2: y + barH - 2,
                                         stroke: "#111" }));
        }
      }
      svg.appendChild(node("text", { x: width - right + 6, y: y + barH - 2, "font-size": 11 },
                           `${group} ${Math.round(r.count).toLocaleString("en")}`));
    });
    const exposed = rows.find((d) => d.stage === stage && d.group === "exposed");
    if (exposed && finite(exposed.lift)) {
      let text = `lift ${pct(exposed.lift)}`;
      if (finite(exposed.lift_ci_low) && finite(exposed.lift_ci_high)) {
        text += ` (${pct(exposed.lift_ci_low)} to ${pct(exposed.lift_ci_high)})`;
      }
      svg.appendChild(node("text", { x: left, y: y0 + 2 * barH + 12, "font-size": 11,
                                     fill: exposed.lift >= 0 ? "#1a7f37" : "#b42318",
                                     class: "fedlab-lift" }, text));
    }
  });
  el.appendChild(svg);
  const note = document.createElement("div");
  note.style.cssText = "font: 10px sans-serif; color: #666";
  note.textContent = "DP counts with 95% intervals for the true count; lift = exposed share "
    + "reaching the stage over the control share, minus 1 (95% interval).";
  el.appendChild(note);
}

function render({ model, el }) {
  draw(model, el);
  const redraw = () => draw(model, el);
  model.on("change:rows", redraw);
  model.on("change:title", redraw);
  model.on("change:stages", redraw);
  return () => {
    model.off("change:rows", redraw);
    model.off("change:title", redraw);
    model.off("change:stages", redraw);
  };
}

export default { render };
