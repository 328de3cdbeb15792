// One agent: what it is (versions, tools, approval policies, guards, limits) and how it behaves
// (metrics, drift alerts, evaluations, spend per day). Each section loads on its own.

import {api, explain} from "./api.js";
import {append, badge, count, facts, fill, h, json, notice, pre, title, usd, when} from "./dom.js";
import {spendChart} from "./chart.js";

const DAYS = 30;
const OPS = {gt: ">", ge: "≥", lt: "<", le: "≤", eq: "=", ne: "≠", in: "in", not_in: "not in"};

function section(id, heading, ...children) {
  return h("section", {class: "card", "aria-labelledby": id}, h("h2", {id}, heading), ...children);
}

function loading() {
  return h("p", {class: "muted"}, "Loading…");
}

function dist(d) {
  if (!d || !d.n) return "—";
  return `p50 ${round(d.p50)} · p90 ${round(d.p90)} · max ${round(d.max)}`;
}

function round(n) {
  return n === null || n === undefined ? "—" : Number(n) >= 100 ? Math.round(n).toLocaleString() : String(Number(Number(n).toPrecision(3)));
}

function plural(n, word) {
  return `${n} ${word}${String(n) === "1" ? "" : "s"}`;
}

function counts(obj) {
  const entries = Object.entries(obj ?? {});
  return entries.length ? entries.map(([k, v]) => `${k} ${v}`).join(", ") : "—";
}

export async function render({root, params, signal, setTitle}) {
  const [name] = params;
  setTitle(`Agent ${name}`);
  const agent = await api(`/v1/agents/${encodeURIComponent(name)}`, {signal});
  const versions = h("div", null, loading());
  const metrics = h("div", null, loading());
  const alerts = h("div", null, loading());
  const evals = h("div", null, loading());
  const spend = h("div", null, loading());
  const guards = agent.guards ?? agent.guard_chain ?? agent.guardrails ?? null;
  append(root,
    h("p", {class: "crumbs"}, h("a", {href: "/console/agents"}, "Agents"), " / ", agent.name),
    title("Agent ", h("span", {class: "mono"}, agent.name)),
    agent.description ? h("p", {class: "lead"}, agent.description) : null,
    h("p", null, h("a", {href: `/console/runs?agent=${encodeURIComponent(agent.name)}`}, "Its runs"), " · ",
      h("a", {href: "/console/approvals"}, "Approvals")),
    section("overview-title", "Overview", facts([
      ["Version", agent.version],
      ["Fingerprint", agent.fingerprint ? h("code", null, agent.fingerprint) : "unknown: a tool's server cannot be reached"],
      ["Model", agent.model],
      ["Fallbacks", agent.fallbacks?.length ? agent.fallbacks.join(", ") : "none"],
      ["Identity", agent.identity ? h("code", null, agent.identity) : null],
      ["Watched values", agent.watch?.length ? agent.watch.join(", ") : "none"],
      ["Operators", agent.operators?.length ? agent.operators.join(", ") : null],
    ])),
    section("spend-title", `Spend per day, last ${DAYS} days`, spend),
    section("metrics-title", "Behaviour, last 7 days", metrics),
    section("versions-title", "Versions", versions),
    section("alerts-title", "Drift alerts", alerts),
    section("evals-title", "Evaluations", evals),
    section("tools-title", `Tools (${agent.tools.length})`, agent.tools.length ? h("ul", {class: "plain"}, agent.tools.map(tool)) : h("p", {class: "muted"}, "No tools.")),
    section("policies-title", "Approval policies", agent.approvals.length ? h("ul", {class: "plain"}, agent.approvals.map(policy)) : h("p", {class: "muted"}, "No call waits for a person.")),
    guards ? section("guards-title", "Guard chain", guardList(guards)) : null,
    section("limits-title", "Limits per run", facts(Object.entries(agent.limits ?? {}).map(([k, v]) => [k.replace(/_(s|usd)$/, "").replace(/_/g, " "), limit(k, v)]))));

  const load = async (el, what, fn) => {
    try {
      fill(el, await fn());
    } catch (e) {
      if (e.name !== "AbortError") fill(el, notice("error", explain(e, `Loading ${what} failed`)));
    }
  };
  const enc = encodeURIComponent(name);
  await Promise.all([
    load(versions, "the versions", async () => versionTable((await api(`/v1/agents/${enc}/versions`, {signal})).versions)),
    load(metrics, "the metrics", async () => metricTable(await api(`/v1/agents/${enc}/metrics`, {query: {bucket: "none"}, signal}))),
    load(alerts, "the alerts", async () => alertList((await api("/v1/alerts", {query: {agent: name, page_size: 20}, signal})).alerts)),
    load(evals, "the evaluations", async () => evalList((await api(`/v1/agents/${enc}/evals`, {query: {page_size: 20}, signal})).evals)),
    load(spend, "the spend", async () => spendOf(name, signal)),
  ]);
}

function limit(key, value) {
  if (value === null || value === undefined) return "none";
  if (key.endsWith("_usd")) return usd(value);
  if (key.endsWith("_s")) return value >= 86400 ? plural(round(value / 86400), "day") : value >= 3600 ? `${round(value / 3600)} h` : `${value} s`;
  return typeof value === "object" ? json(value) : count(value);
}

function tool(t) {
  return h("li", null, h("details", null,
    h("summary", null, h("code", null, t.name), ` · ${t.kind ?? "python"}`, t.idempotent === false ? " · not idempotent" : "", t.description ? ` — ${t.description}` : ""),
    facts([
      ["Idempotent", t.idempotent === false ? "no: never called blindly a second time" : "yes"],
      ["Timeout", t.timeout_s ? `${t.timeout_s} s` : null],
      ["Secrets", t.secrets?.length ? t.secrets.join(", ") : null],
      ["Concurrency", t.limits?.max_concurrent ? String(t.limits.max_concurrent) : null],
      ["Rate", t.limits?.per_second ? `${t.limits.per_second}/s` : null],
    ], "facts compact"),
    h("div", {class: "value"}, h("span", {class: "label"}, "Parameters (JSON Schema)"), pre(t.parameters ?? {}))));
}

function policy(p) {
  const when = p.when.length ? p.when.map((c) => `${c.field} ${OPS[c.op] ?? c.op} ${JSON.stringify(c.value)}`).join(" or ") : "every call";
  return h("li", {class: "policy"},
    h("h3", null, h("code", null, p.tool), ` when ${when}`),
    p.reason ? h("p", {class: "reason"}, p.reason) : null,
    facts([
      ["Approvers", p.approvers.join(", ") || "anyone"],
      ["Four eyes", p.four_eyes ? "yes" : "no"],
      ["Edits", p.allow_edits ? "allowed" : "not allowed"],
      ["Expires after", limit("expires_after_s", p.expires_after_s)],
      ["On expiry", p.on_expiry],
      ["Redacted", p.redact.length ? p.redact.join(", ") : null],
    ], "facts compact"));
}

function guardList(guards) {
  if (!Array.isArray(guards)) return pre(guards);
  return h("ol", null, guards.map((g) => h("li", null, typeof g === "string" ? h("code", null, g)
    : [h("code", null, g.name ?? g.guard ?? "guard"), g.channels ? ` on ${[].concat(g.channels).join(", ")}` : "", g.action ? ` · ${g.action}` : "",
       Object.keys(g).some((k) => !["name", "guard", "channels", "action"].includes(k)) ? pre(g) : null])));
}

function versionTable(list) {
  if (!list.length) return h("p", {class: "muted"}, "No versions.");
  return h("div", {class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Versions"}, h("table", null,
    h("thead", null, h("tr", null, h("th", {scope: "col"}, "Version"), h("th", {scope: "col"}, "Served"),
      h("th", {scope: "col"}, "Fingerprint"), h("th", {scope: "col", class: "num"}, "Unfinished runs"), h("th", {scope: "col"}, "Migrates to"))),
    h("tbody", null, list.map((v) => h("tr", null,
      h("th", {scope: "row"}, v.version, v.current ? h("span", {class: "chip"}, "current") : null),
      h("td", null, v.served ? "yes" : h("strong", {class: "error-text"}, "no: its runs wait")),
      h("td", null, v.fingerprint ? h("code", null, v.fingerprint) : "—"),
      h("td", {class: "num"}, count(v.unfinished_runs)),
      h("td", null, v.migrates_to ?? "—"))))));
}

function metricTable(report) {
  const versions = report.versions ?? [];
  if (!versions.length || versions.every((v) => !v.total?.runs)) return h("p", {class: "muted"}, "No run of this agent ended in the last 7 days.");
  const rows = [
    ["Runs", (t) => count(t.runs)],
    ["Outcomes", (t) => counts(t.outcomes)],
    ["Errors", (t) => counts(t.errors)],
    ["Steps", (t) => dist(t.steps)],
    ["Tokens", (t) => dist(t.tokens)],
    ["Cost", (t) => (t.cost_usd?.n ? `${usd(t.cost_usd.total)} in all · ${usd(t.cost_usd.mean)} a run` : "—")],
    ["Latency (s)", (t) => dist(t.latency_s)],
    ["Tool calls", (t) => counts(t.tool_calls)],
    ["Tool errors", (t) => counts(t.tool_errors)],
    ["Approvals", (t) => counts(t.approvals)],
    ["Guard verdicts", (t) => counts(t.guard_verdicts)],
    ["Retries", (t) => count(t.retries)],
  ];
  return h("div", null,
    h("div", {class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Metrics per version"}, h("table", {class: "metrics"},
      h("thead", null, h("tr", null, h("th", {scope: "col"}, "Metric"), versions.map((v) => h("th", {scope: "col"}, `v${v.version}`)))),
      h("tbody", null, rows.map(([label, get]) => h("tr", null, h("th", {scope: "row"}, label), versions.map((v) => h("td", null, get(v.total ?? {})))))))),
    report.truncated ? h("p", {class: "muted small"}, "Over 20,000 runs ended in the period: these figures are of the first ones.") : null);
}

function alertList(alerts) {
  if (!alerts.length) return h("p", {class: "muted"}, "No drift alert.");
  return h("ul", {class: "plain"}, alerts.map(({alert: a, published_at}) => h("li", {class: "alert-item"},
    h("p", null, h("strong", null, a.metric), ` of v${a.version} moved (${a.test}, p = ${Number(a.p_value).toPrecision(3)} < ${Number(a.threshold).toPrecision(3)}) against v${a.baseline_version}`),
    h("p", {class: "muted small"}, "Published ", when(published_at)),
    a.examples?.length ? h("p", {class: "small"}, "Runs: ", a.examples.map((e, i) => [i ? ", " : "", h("a", {href: `/console/runs/${encodeURIComponent(e.run_id)}`, class: "mono"}, e.run_id)])) : null)));
}

function evalList(list) {
  if (!list.length) return h("p", {class: "muted"}, "No evaluation stored (agex eval stores them).");
  return h("div", {class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Evaluations"}, h("table", null,
    h("thead", null, h("tr", null, h("th", {scope: "col"}, "Evaluation set"), h("th", {scope: "col"}, "Version"), h("th", {scope: "col"}, "Result"),
      h("th", {scope: "col"}, "Accepted"), h("th", {scope: "col"}, "When"), h("th", {scope: "col", class: "hide-narrow"}, "Summary"))),
    h("tbody", null, list.map((e) => h("tr", null,
      h("th", {scope: "row"}, e.evalset), h("td", null, e.version), h("td", null, badge(e.passed ? "passed" : "failed")),
      h("td", null, e.accepted ? "yes" : "no"), h("td", null, when(e.created_at)),
      h("td", {class: "hide-narrow"}, Object.entries(e.summary ?? {}).slice(0, 6).map(([k, v]) => h("span", {class: "chip"}, `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`))))))));
}

async function spendOf(name, signal) {
  const today = new Date();
  const end = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate());
  const start = end - (DAYS - 1) * 86400000;
  const usage = await api("/v1/usage", {query: {group_by: "day", agent: name, from: new Date(start).toISOString(), to: today.toISOString()}, signal});
  const byDay = new Map();
  for (const g of usage.groups) {
    const day = Date.parse(g.key.day);
    if (!Number.isNaN(day)) byDay.set(day, g);
  }
  const days = [];
  for (let t = start; t <= end; t += 86400000) {
    const g = byDay.get(t);
    days.push({day: new Date(t), cost: g?.cost_usd ?? 0, runs: g?.runs ?? 0});
  }
  return h("div", null,
    h("p", null, `${usd(usage.total_cost_usd)} in all over ${plural(days.reduce((n, d) => n + d.runs, 0).toLocaleString(), "run")}.`),
    spendChart(days, `Cost of ${name}'s runs per day (UTC), the last ${DAYS} days`));
}
