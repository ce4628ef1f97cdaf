"use strict";
// The marketers' page: read-only views of the worker's JSON (same token as /customers).
const state = { data: null, charts: {} };
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
const label = (v) => esc(v === null ? "none" : v === true ? "in" : v === false ? "out" : String(v));

function headers() {
  const token = $("token").value || sessionStorage.getItem("segstream-token") || "";
  if ($("token").value) sessionStorage.setItem("segstream-token", $("token").value);
  return token ? { Authorization: "Bearer " + token } : {};
}

async function get(path) {
  const response = await fetch(path, { headers: headers() });
  if (response.status === 401) throw new Error("the API token was refused");
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function chart(id, config) {
  if (state.charts[id]) state.charts[id].destroy();
  state.charts[id] = new Chart($(id), config);
}

function showSizes(data) {
  const labels = [], values = [];
  for (const [family, tiers] of Object.entries(data.sizes)) {
    for (const [tier, n] of Object.entries(tiers)) {
      labels.push(family === tier ? family : family + ": " + tier);  // a flag is its own name
      values.push(n);
    }
  }
  chart("sizes", { type: "bar", data: { labels, datasets: [{ label: "customers", data: values }] },
    options: { indexAxis: "y", animation: false, maintainAspectRatio: false,
      plugins: { legend: { display: false } } } });
}

function fillSelect(id, names, onChange) {
  const select = $(id);
  if (select.options.length === 0) {
    for (const name of names) select.add(new Option(name, name));
    select.addEventListener("change", onChange);
  }
}

function showHistory(data) {
  const family = $("history-family").value || Object.keys(data.sizes)[0];
  const days = data.history.map((h) => h.day);
  const tiers = new Set();
  data.history.forEach((h) => Object.keys(h.sizes[family] || {}).forEach((t) => tiers.add(t)));
  const datasets = [...tiers].map((tier) => ({
    label: tier, data: data.history.map((h) => (h.sizes[family] || {})[tier] || 0) }));
  chart("history", { type: "line", data: { labels: days, datasets },
    options: { animation: false, maintainAspectRatio: false } });
}

function showFlows(data) {
  const family = $("flow-family").value || Object.keys(data.flows)[0];
  const rows = data.flows[family] || [];
  const names = [...new Set(rows.flatMap((r) => [r.from, r.to]))].sort();
  const count = (a, b) => (rows.find((r) => r.from === a && r.to === b) || { customers: 0 }).customers;
  const max = Math.max(1, ...rows.map((r) => r.customers));
  let html = "<tr><th class='name'>from \\ to</th>" + names.map((n) => "<th>" + esc(n) + "</th>").join("") + "</tr>";
  for (const a of names) {
    html += "<tr><th class='name'>" + esc(a) + "</th>" + names.map((b) => {
      const n = count(a, b);
      return "<td style='background: rgba(54,162,235," + (n / max).toFixed(2) + ")'>" + (n || "") + "</td>";
    }).join("") + "</tr>";
  }
  $("flows").innerHTML = names.length ? html : "<tr><td class='name'>no moves yet</td></tr>";
}

function showShadow(data) {
  const report = data.shadow;
  if (!report) { $("shadow").textContent = "none running"; $("shadow-table").innerHTML = ""; return; }
  $("shadow").textContent = "shadow " + report.shadow + " against live " + report.live + ": " +
    report.customers_moving + " of " + report.customers_compared + " customers would move";
  let html = "<tr><th class='name'>segment</th><th>entered</th><th>exited</th><th>upgraded</th><th>downgraded</th></tr>";
  for (const [name, c] of Object.entries(report.segments)) {
    html += "<tr><td class='name'>" + esc(name) + "</td><td>" + c.entered + "</td><td>" + c.exited +
      "</td><td>" + c.upgraded + "</td><td>" + c.downgraded + "</td></tr>";
  }
  $("shadow-table").innerHTML = html;
}

async function load() {
  $("error").textContent = "";
  try {
    const data = await get("/marketing/data");
    state.data = data;
    $("context").textContent = "rules " + data.rules_version + " - this worker's partitions " +
      JSON.stringify(data.partitions) + " of " + data.of;
    fillSelect("history-family", Object.keys(data.sizes), () => showHistory(state.data));
    fillSelect("flow-family", Object.keys(data.sizes), () => showFlows(state.data));
    showSizes(data); showHistory(data); showFlows(data); showShadow(data);
    document.body.dataset.loaded = "yes";
  } catch (error) { $("error").textContent = error.message; }
}

async function lookup() {
  const id = $("customer").value.trim();
  const out = $("customer-out");
  if (!id) return;
  try {
    const c = await get("/customers/" + encodeURIComponent(id));
    let html = "<h3>" + esc(c.customer_id) + "</h3><table><tr><th class='name'>segment</th><th class='name'>now</th><th class='name'>why</th></tr>";
    for (const [name, value] of Object.entries(c.segments)) {
      const tiers = c.families[name];
      const why = tiers ? (tiers.find((t) => t.tier === value) || {}).when : (c.flags[name] || {}).when;
      html += "<tr><td class='name'>" + esc(name) + "</td><td class='name'>" + label(value) +
        "</td><td class='name'>" + esc(value === null || value === false ? "" : why || "") + "</td></tr>";
    }
    html += "</table><h3>Timeline</h3><table id='timeline'><tr><th class='name'>at</th><th class='name'>segment</th>" +
      "<th class='name'>from</th><th class='name'>to</th><th class='name'>change</th><th class='name'>cause</th></tr>";
    for (const t of c.timeline || []) {
      html += "<tr><td class='name'>" + esc(t.at) + "</td><td class='name'>" + esc(t.segment) +
        "</td><td class='name'>" + label(t.from) + "</td><td class='name'>" + label(t.to) +
        "</td><td class='name'>" + esc(t.change) + "</td><td class='name'>" + esc(t.cause) + "</td></tr>";
    }
    out.innerHTML = html + "</table>";
  } catch (error) { out.textContent = error.message; }
}

$("load").addEventListener("click", load);
$("lookup").addEventListener("click", lookup);
load();
