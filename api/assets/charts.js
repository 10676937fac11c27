// Charts drawn as SVG by hand: no chart library to vendor, pin or licence. Series differ by
// pattern as well as colour (readable without colour, same styles as the API's format=svg),
// every bar has a text alternative, and the data is also in a table next to each chart.

import { bucketEnd, timeLabel } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
// Okabe–Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"];
const WIDTH = 800;
const HEIGHT = 300;
const LEFT = 56;
const TOP = 12;
const BOTTOM = 28;

function element(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [attribute, value] of Object.entries(attributes)) {
    node.setAttribute(attribute, String(value));
  }
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

/** The fill pattern of series `index`: a colour and an overlay (none, diagonal, dots, lines). */
function addPattern(defs, index, id) {
  const pattern = element("pattern", { id, width: 8, height: 8, patternUnits: "userSpaceOnUse" }, defs);
  element("rect", { width: 8, height: 8, fill: PALETTE[index % PALETTE.length] }, pattern);
  const overlay = index % 4;
  if (overlay === 1) {
    element("path", { d: "M0,8 L8,0", stroke: "#000", "stroke-opacity": 0.55 }, pattern);
  } else if (overlay === 2) {
    element("circle", { cx: 4, cy: 4, r: 1.4, fill: "#000", "fill-opacity": 0.55 }, pattern);
  } else if (overlay === 3) {
    element("path", { d: "M0,4 L8,4", stroke: "#000", "stroke-opacity": 0.55 }, pattern);
  }
}

/** A small legend swatch for series `index`, filled as its bars are. */
export function swatch(index) {
  const svg = element("svg", { width: 14, height: 14, viewBox: "0 0 14 14", "aria-hidden": "true" });
  addPattern(element("defs", {}, svg), index, `swatch-${index}`);
  element("rect", { x: 1, y: 1, width: 12, height: 12, fill: `url(#swatch-${index})`, stroke: "#333" }, svg);
  return svg;
}

/**
 * Draws `rows` ({bucket, key, count}) as one stacked bar per bucket into `container`.
 * `keys` is the stacking order. Each bar is focusable; `onSelect(bucket)` runs on click,
 * Enter or Space.
 */
export function stackedBars(container, rows, keys, bucket, onSelect) {
  container.replaceChildren();
  const perBucket = new Map();
  for (const row of rows) {
    if (!perBucket.has(row.bucket)) {
      perBucket.set(row.bucket, []);
    }
    perBucket.get(row.bucket).push(row);
  }
  const buckets = [...perBucket.keys()].sort((a, b) => a - b);
  const svg = element("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "group",
    "aria-label": `Messages per ${bucket}, stacked by category; the data table below holds the same values`,
  }, container);
  if (buckets.length === 0) {
    const note = element("text", { x: LEFT, y: 40 }, svg);
    note.textContent = "No messages in this range.";
    return;
  }
  const defs = element("defs", {}, svg);
  keys.forEach((_, index) => addPattern(defs, index, `series-${index}`));
  let largest = 1;
  for (const start of buckets) {
    largest = Math.max(largest, perBucket.get(start).reduce((sum, row) => sum + row.count, 0));
  }
  const plotWidth = WIDTH - LEFT - 8;
  const plotHeight = HEIGHT - TOP - BOTTOM;
  const baseline = TOP + plotHeight;
  const scale = plotHeight / largest;
  for (const value of [0, Math.round(largest / 2), largest]) {
    const y = baseline - value * scale;
    element("line", { x1: LEFT, x2: LEFT + plotWidth, y1: y, y2: y, stroke: "#ccc" }, svg);
    const label = element("text", { x: LEFT - 6, y: y + 4, "text-anchor": "end" }, svg);
    label.textContent = String(value);
  }
  // A time axis: bars where their periods are, gaps where nothing was sent.
  const axisStart = buckets[0];
  const axisSpan = Math.max(1, bucketEnd(buckets[buckets.length - 1], bucket) - axisStart);
  const xOf = (time) => LEFT + ((time - axisStart) / axisSpan) * plotWidth;
  const order = new Map(keys.map((key, index) => [key, index]));
  const ticks = 6;
  for (let tick = 0; tick < ticks; tick += 1) {
    const time = axisStart + (tick * axisSpan) / ticks;
    element("text", { x: xOf(time), y: baseline + 16 }, svg).textContent = timeLabel(time, bucket);
  }
  for (const start of buckets) {
    const x = xOf(start);
    const barWidth = Math.max(1, (xOf(bucketEnd(start, bucket)) - x) * 0.85);
    const bucketRows = perBucket.get(start).slice().sort((a, b) => order.get(a.key) - order.get(b.key));
    const total = bucketRows.reduce((sum, row) => sum + row.count, 0);
    const label = timeLabel(start, bucket);
    const group = element("g", {
      class: "bar",
      tabindex: 0,
      role: "button",
      "data-bucket": start,
      "data-total": total,
      "aria-label": `${label}: ${total} messages. Press Enter to zoom in.`,
    }, svg);
    element("title", {}, group).textContent = `${label}: ${total} messages`;
    let top = baseline;
    for (const row of bucketRows) {
      const height = row.count * scale;
      top -= height;
      element("rect", {
        x, y: top, width: barWidth, height,
        fill: `url(#series-${order.get(row.key)})`, stroke: "#333", "stroke-width": 0.5,
        "data-key": row.key, "data-count": row.count,
      }, group);
    }
    group.addEventListener("click", () => onSelect(start));
    group.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onSelect(start);
      }
    });
  }
}
