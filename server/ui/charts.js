// Small horizontal bar charts in inline SVG: one bar per arm, optional error bars.

import { svg } from "./dom.js";

const WIDTH = 300;
const BAR = 16;
const GAP = 8;
const LABEL = 96;
const VALUE = 70;

// rows: [{label, value, low?, high?}]; format(value) for the text at the bar's end.
export function barChart(title, rows, format) {
  const plot = WIDTH - LABEL - VALUE;
  const top = Math.max(...rows.map((r) => (r.high ?? r.value) || 0), 0) || 1;
  const height = rows.length * (BAR + GAP) + GAP;
  const x = (v) => LABEL + (plot * (v || 0)) / top;
  const summary = rows.map((r) => `${r.label}: ${format(r.value)}`).join(", ");
  const chart = svg("svg", {
    class: "chart", viewBox: `0 0 ${WIDTH} ${height}`, width: WIDTH, height, role: "img",
    "aria-label": `${title}. ${summary}`,
  }, svg("title", { text: `${title}: ${summary}` }));
  rows.forEach((r, k) => {
    const y = GAP + k * (BAR + GAP);
    chart.append(
      svg("text", { x: LABEL - 6, y: y + BAR - 4, "text-anchor": "end", class: "chart-label", text: r.label }),
      svg("rect", { x: LABEL, y, width: Math.max(x(r.value) - LABEL, r.value ? 1 : 0), height: BAR, class: `bar bar-${k % 4}` }),
      svg("text", { x: x(r.high ?? r.value) + 4, y: y + BAR - 4, class: "chart-value", text: format(r.value) }),
    );
    if (r.low !== undefined && r.high !== undefined && r.value !== null) {
      const mid = y + BAR / 2;
      chart.append(
        svg("line", { x1: x(r.low), x2: x(r.high), y1: mid, y2: mid, class: "whisker" }),
        svg("line", { x1: x(r.low), x2: x(r.low), y1: mid - 5, y2: mid + 5, class: "whisker" }),
        svg("line", { x1: x(r.high), x2: x(r.high), y1: mid - 5, y2: mid + 5, class: "whisker" }),
      );
    }
  });
  return chart;
}
