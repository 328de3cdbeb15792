// A bar chart of spend per day, drawn as SVG elements (no library, no markup strings).

import {h, s, usd} from "./dom.js";

/** An axis value without trailing zeros: $0.00025, $1.5, $20. */
function tick(value) {
  if (value === 0) return "$0";
  return `$${Number(value.toPrecision(3))}`;
}

const WIDTH = 720;
const HEIGHT = 220;
const PAD = {top: 16, right: 12, bottom: 36, left: 64};

/** days: [{day: Date (UTC midnight), cost: number}], oldest first. */
export function spendChart(days, label) {
  const max = Math.max(...days.map((d) => d.cost), 0);
  const top = max > 0 ? niceCeiling(max) : 1;
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const step = plotW / Math.max(1, days.length);
  const barW = Math.max(2, step * 0.7);
  const dayFormat = new Intl.DateTimeFormat(undefined, {month: "short", day: "numeric", timeZone: "UTC"});
  const svg = s("svg", {viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img", "aria-label": label});
  for (let i = 0; i <= 4; i++) {
    const value = (top * i) / 4;
    const y = PAD.top + plotH - (plotH * i) / 4;
    svg.append(s("line", {x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: i === 0 ? "axis" : "grid"}),
               s("text", {x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "tick"}, tick(value)));
  }
  const every = Math.ceil(days.length / 8);
  days.forEach((d, i) => {
    const height = top > 0 ? (plotH * d.cost) / top : 0;
    const x = PAD.left + i * step + (step - barW) / 2;
    const bar = s("rect", {x: x.toFixed(1), y: (PAD.top + plotH - height).toFixed(1), width: barW.toFixed(1),
                           height: Math.max(height, d.cost > 0 ? 1 : 0).toFixed(1), class: "bar"},
      s("title", null, `${dayFormat.format(d.day)}: ${usd(d.cost)} over ${d.runs} run${d.runs === 1 ? "" : "s"}`));
    svg.append(bar);
    // labelled from the last day back, so today always has its label and no two overlap
    if ((days.length - 1 - i) % every === 0) {
      svg.append(s("text", {x: (x + barW / 2).toFixed(1), y: HEIGHT - PAD.bottom + 16, "text-anchor": "middle", class: "tick"}, dayFormat.format(d.day)));
    }
  });
  // the same figures as a table, for screen readers and for copying
  const table = h("details", {class: "chart-data"}, h("summary", null, "The figures"),
    h("table", null, h("thead", null, h("tr", null, h("th", {scope: "col"}, "Day (UTC)"), h("th", {scope: "col", class: "num"}, "Runs"), h("th", {scope: "col", class: "num"}, "Cost"))),
      h("tbody", null, days.filter((d) => d.runs > 0 || d.cost > 0).map((d) => h("tr", null,
        h("td", null, d.day.toISOString().slice(0, 10)), h("td", {class: "num"}, String(d.runs)), h("td", {class: "num"}, usd(d.cost)))))));
  return h("figure", {class: "chart-figure"}, svg, h("figcaption", {class: "muted small"}, label), table);
}

function niceCeiling(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * magnitude >= value) return m * magnitude;
  return 10 * magnitude;
}
