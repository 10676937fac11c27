// The dashboard: volume over time by category, top users/packages/topics, the releng latest
// events, a plugin browser, kept live by asking the API whether the volume changed (ETag and
// If-None-Match, so an unchanged statistic costs a bodiless 304 and an idle page nothing more).

import { allRows, getJson, query, watch } from "./api.js";
import { stackedBars, swatch } from "./charts.js";
import { age, bucketEnd, epochToInput, finerBucket, inputToEpoch, timeLabel } from "./format.js";

const LIVE_INTERVAL_MS = 5000;
const TOP_ROWS = 10;
// Which bucket a preset range is drawn in.
const PRESET_BUCKETS = { 3600: "minute", 86400: "hour", 604800: "day", 2678400: "day", 31622400: "week", all: "month" };

const state = { start: null, end: null, bucket: "month", zoomHistory: [] };
let renders = 0;
let rendering = null;
let renderAgain = false;

const byId = (id) => document.getElementById(id);
const now = () => Math.floor(Date.now() / 1000);

function cell(row, text, attributes = {}) {
  const td = document.createElement("td");
  td.textContent = text;
  for (const [name, value] of Object.entries(attributes)) {
    td.setAttribute(name, String(value));
  }
  row.appendChild(td);
  return td;
}

/** The statistic parameters of the chosen range (end omitted: now, which keeps it live). */
function rangeParams() {
  return { start: state.start, end: state.end };
}

/** Keys by total, largest first (ties by name): the stacking and legend order. */
function keysByTotal(rows) {
  const totals = new Map();
  for (const row of rows) {
    totals.set(row.key, (totals.get(row.key) || 0) + row.count);
  }
  const keys = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a) || a.localeCompare(b));
  return { keys, totals };
}

async function drawVolume() {
  const params = { ...rangeParams(), bucket: state.bucket };
  const { rows, truncated } = await allRows("volume-by-category", params);
  const { keys, totals } = keysByTotal(rows);
  stackedBars(byId("volume-chart"), rows, keys, state.bucket, zoomInto);

  const legend = byId("volume-legend");
  legend.replaceChildren();
  keys.forEach((key, index) => {
    const item = document.createElement("li");
    item.append(swatch(index), ` ${key} (${totals.get(key)})`);
    legend.appendChild(item);
  });

  const body = byId("volume-table").tBodies[0];
  body.replaceChildren();
  const sorted = rows.slice().sort((a, b) => a.bucket - b.bucket || a.key.localeCompare(b.key));
  for (const row of sorted) {
    const tr = body.insertRow();
    tr.dataset.bucket = row.bucket;
    tr.dataset.key = row.key;
    tr.dataset.count = row.count;
    cell(tr, timeLabel(row.bucket, state.bucket));
    cell(tr, row.key);
    cell(tr, String(row.count));
  }

  const total = rows.reduce((sum, row) => sum + row.count, 0);
  const summary = byId("volume-summary");
  summary.dataset.total = total;
  summary.textContent = `${total} messages in ${keys.length} categories, per ${state.bucket}` +
    (truncated ? " (only the first pages of rows are drawn: narrow the range)" : "");
  byId("volume").dataset.query = query(params);
}

async function drawTop(plugin, tableId) {
  const { rows, truncated } = await allRows(plugin, { ...rangeParams(), bucket: "all" });
  rows.sort((a, b) => b.count - a.count || a.key.localeCompare(b.key));
  const top = rows.slice(0, TOP_ROWS);
  const table = byId(tableId);
  table.dataset.truncated = truncated;
  const body = table.tBodies[0];
  body.replaceChildren();
  const largest = top.length > 0 ? top[0].count : 1;
  for (const row of top) {
    const tr = body.insertRow();
    tr.dataset.key = row.key;
    tr.dataset.count = row.count;
    cell(tr, row.key);
    const count = cell(tr, String(row.count), { class: "count" });
    const bar = document.createElement("span");
    bar.className = "meter";
    bar.setAttribute("aria-hidden", "true");
    bar.style.width = `${Math.max(2, (row.count / largest) * 100)}%`;
    count.prepend(bar);
  }
  if (top.length === 0) {
    cell(body.insertRow(), "No messages in this range.", { colspan: 2 });
  }
}

/** A status word as text that does not need colour to read. */
function statusMark(status) {
  if (/fail|error|abort|doomed/i.test(status)) {
    return ["✗ ", "status-bad"];
  }
  if (/finish|complete|success|synced|done|uploaded|released/i.test(status)) {
    return ["✓ ", "status-good"];
  }
  return ["• ", "status-other"];
}

async function drawReleng() {
  const { rows } = await allRows("releng-dashboard", { bucket: "all" });
  rows.sort((a, b) => b.timestamp - a.timestamp || a.key.localeCompare(b.key));
  const body = byId("releng-table").tBodies[0];
  body.replaceChildren();
  const current = now();
  for (const row of rows) {
    const status = row.value && typeof row.value === "object" ? String(row.value.status ?? "") : String(row.value ?? "");
    const slash = row.key.indexOf("/");
    const tr = body.insertRow();
    tr.dataset.key = row.key;
    tr.dataset.status = status;
    tr.dataset.msgId = row.msg_id;
    cell(tr, slash < 0 ? row.key : row.key.slice(0, slash));
    cell(tr, slash < 0 ? "" : row.key.slice(slash + 1));
    const [mark, className] = statusMark(status);
    cell(tr, `${mark}${status}`, { class: className });
    cell(tr, timeLabel(row.timestamp));
    cell(tr, age(row.timestamp, current));
    const link = document.createElement("a");
    link.href = `/id?${query({ id: row.msg_id })}`;
    link.textContent = "message";
    link.setAttribute("aria-label", `message of ${row.key}`);
    cell(tr, "").appendChild(link);
  }
  if (rows.length === 0) {
    cell(body.insertRow(), "No release-engineering events stored yet.", { colspan: 6 });
  }
}

let plugins = [];

async function loadPlugins() {
  plugins = await getJson("/api/");
  const select = byId("plugin-select");
  const chosen = select.value;
  select.replaceChildren();
  for (const plugin of plugins) {
    const option = document.createElement("option");
    option.value = plugin.identifier;
    option.textContent = plugin.name;
    select.appendChild(option);
  }
  if (plugins.some((plugin) => plugin.identifier === chosen)) {
    select.value = chosen;
  }
}

async function drawPlugin() {
  const plugin = plugins.find((candidate) => candidate.identifier === byId("plugin-select").value);
  if (!plugin) {
    return;
  }
  const details = byId("plugin-details");
  details.replaceChildren();
  const facts = [
    ["Description", plugin.description],
    ["Kind", plugin.kind],
    ["Table (for analysts)", `statscache.${plugin.table}`],
    ["Topics", plugin.topics.length > 0 ? plugin.topics.join(", ") : "all"],
    ["Newest fact", plugin.newest_fact_time === null ? "none yet" : `${timeLabel(plugin.newest_fact_time)} UTC`],
  ];
  for (const [term, text] of facts) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = text;
    if (term.startsWith("Table")) {
      dd.replaceChildren(document.createElement("code"));
      dd.firstChild.textContent = text;
    }
    details.append(dt, dd);
  }

  const bucket = plugin.kind === "latest" ? "all" : state.bucket;
  const params = { ...rangeParams(), bucket, rows_per_page: 100 };
  const path = `/api/${encodeURIComponent(plugin.identifier)}`;
  const links = byId("plugin-links");
  links.replaceChildren();
  for (const [format, label] of [["csv", "Download CSV"], ["json", "JSON"], ["svg", "SVG chart"]]) {
    const link = document.createElement("a");
    link.href = `${path}?${query({ ...params, format })}`;
    link.textContent = label;
    if (format === "csv") {
      link.download = `${plugin.identifier}.csv`;
    }
    links.append(link, " ");
  }

  const page = await getJson(path, params);
  const body = byId("plugin-table").tBodies[0];
  body.replaceChildren();
  let total = 0;
  for (const row of page.rows) {
    const tr = body.insertRow();
    tr.dataset.key = row.key;
    cell(tr, row.bucket === undefined ? "all" : timeLabel(row.bucket, bucket), { "data-bucket": row.bucket ?? "" });
    cell(tr, row.key);
    if (row.count !== undefined) {
      total += row.count;
      tr.dataset.count = row.count;
      cell(tr, String(row.count));
    } else {
      cell(tr, typeof row.value === "object" ? JSON.stringify(row.value) : String(row.value));
    }
  }
  const chart = byId("plugin-chart");
  chart.alt = `Chart of ${plugin.name}: ${page.rows.length} rows of ${page.total}` +
    (plugin.kind === "latest" ? "" : `, ${total} in all`) + "; the data table below holds the same values.";
  chart.src = `${path}?${query({ ...params, format: "svg" })}`;
}

async function renderAll() {
  byId("start").value = epochToInput(state.start);
  byId("end").value = epochToInput(state.end);
  byId("bucket").value = state.bucket;
  byId("zoom-out").disabled = state.zoomHistory.length === 0;
  await Promise.all([
    drawVolume(),
    drawTop("volume-by-user", "top-users"),
    drawTop("volume-by-package", "top-packages"),
    drawTop("volume-by-topic", "top-topics"),
    drawReleng(),
    loadPlugins().then(drawPlugin),
  ]);
  renders += 1;
  document.body.dataset.renders = renders;
  const time = new Date().toISOString().slice(11, 19);
  byId("live-status").textContent = `Live: updated ${time} UTC; the page asks every ${LIVE_INTERVAL_MS / 1000} s whether anything changed.`;
}

/** Renders now, or once more after the render in progress (never two at once). */
function render() {
  if (rendering) {
    renderAgain = true;
    return rendering;
  }
  rendering = renderAll()
    .catch((error) => {
      console.error(error);
      byId("live-status").textContent = `Could not load the statistics: ${error.message}`;
    })
    .finally(() => {
      rendering = null;
      if (renderAgain) {
        renderAgain = false;
        render();
      }
    });
  return rendering;
}

function zoomInto(bucketStart) {
  state.zoomHistory.push({ start: state.start, end: state.end, bucket: state.bucket });
  state.start = bucketStart;
  state.end = bucketEnd(bucketStart, state.bucket) - 1;
  state.bucket = finerBucket(state.bucket);
  byId("range-preset").value = "custom";
  render();
}

function zoomOut() {
  const previous = state.zoomHistory.pop();
  if (previous) {
    Object.assign(state, previous);
    render();
  }
}

function choosePreset() {
  const preset = byId("range-preset").value;
  if (preset === "custom") {
    return;
  }
  state.zoomHistory = [];
  state.start = preset === "all" ? null : now() - Number(preset);
  state.end = null;
  state.bucket = PRESET_BUCKETS[preset];
  render();
}

function submitRange(event) {
  event.preventDefault();
  state.zoomHistory = [];
  state.start = inputToEpoch(byId("start").value);
  state.end = inputToEpoch(byId("end").value);
  state.bucket = byId("bucket").value;
  byId("range-preset").value = "custom";
  render();
}

byId("range-preset").addEventListener("change", choosePreset);
byId("range-form").addEventListener("submit", submitRange);
byId("zoom-out").addEventListener("click", zoomOut);
byId("plugin-select").addEventListener("change", () => drawPlugin().catch((error) => console.error(error)));
render();
// What the live view follows: any new message, and the releng events.
watch(["/api/volume?bucket=all", "/api/releng-dashboard?bucket=all"], LIVE_INTERVAL_MS, render);
