// Runs: the tenant's runs, newest first, filtered by the query string, refreshed every 3 s while visible.

import {api, explain} from "./api.js";
import {append, badge, count, fill, h, notice, poll, shorten, title, usd, when} from "./dom.js";

const STATUSES = ["queued", "running", "waiting_approval", "waiting_timer", "waiting_turn", "succeeded", "failed",
                  "cancelled", "expired"];
const FILTERS = ["agent", "status", "principal", "thread", "created_after", "created_before"];
const PAGE = 50;

/** "2026-11-29T10:00:00Z" as the value of a datetime-local input, in the reader's time zone. */
function localInput(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function field(id, label, control) {
  control.id = id;
  control.name = id;
  return h("div", {class: "field"}, h("label", {for: id}, label), control);
}

export async function render({root, query, signal, navigate, setTitle}) {
  setTitle("Runs");
  const filters = Object.fromEntries(FILTERS.map((f) => [f, query.get(f) ?? ""]));
  const agentSelect = h("select", null, h("option", {value: ""}, "Any agent"));
  if (filters.agent) agentSelect.append(h("option", {value: filters.agent, selected: true}, filters.agent));
  const statusSelect = h("select", null, h("option", {value: ""}, "Any status"),
    STATUSES.map((s) => h("option", {value: s, selected: s === filters.status}, s.replace(/_/g, " "))));
  const principal = h("input", {type: "text", value: filters.principal, autocomplete: "off", placeholder: "name@example.com"});
  const thread = h("input", {type: "text", value: filters.thread, autocomplete: "off", placeholder: "thr_…"});
  const after = h("input", {type: "datetime-local", value: filters.created_after ? localInput(filters.created_after) : ""});
  const before = h("input", {type: "datetime-local", value: filters.created_before ? localInput(filters.created_before) : ""});
  const form = h("form", {class: "filters", role: "search", "aria-label": "Filter runs"},
    field("f-agent", "Agent", agentSelect),
    field("f-status", "Status", statusSelect),
    field("f-principal", "Started by", principal),
    field("f-thread", "Thread", thread),
    field("f-after", "Created after", after),
    field("f-before", "Created before", before),
    h("div", {class: "actions"},
      h("button", {type: "submit"}, "Apply"),
      h("a", {class: "button secondary", href: "/console/runs"}, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    const set = (key, value) => value && next.set(key, value);
    set("agent", agentSelect.value);
    set("status", statusSelect.value);
    set("principal", principal.value.trim());
    set("thread", thread.value.trim());
    if (after.value) set("created_after", new Date(after.value).toISOString());
    if (before.value) set("created_before", new Date(before.value).toISOString());
    const qs = next.toString();
    navigate(`/console/runs${qs ? `?${qs}` : ""}`);
  });
  api("/v1/agents", {signal}).then(({agents}) => {
    for (const agent of agents) {
      if (agent.name !== filters.agent) agentSelect.append(h("option", {value: agent.name}, agent.name));
    }
  }).catch(() => {});

  const status = h("div", {class: "list-status"});
  const updated = h("p", {class: "muted small updated"});
  const body = h("tbody");
  const table = h("table", {class: "runs"},
    h("caption", {class: "visually-hidden"}, "Runs, newest first"),
    h("thead", null, h("tr", null,
      h("th", {scope: "col"}, "Run"),
      h("th", {scope: "col"}, "Agent"),
      h("th", {scope: "col"}, "Status"),
      h("th", {scope: "col"}, "Created"),
      h("th", {scope: "col", class: "num"}, "Steps"),
      h("th", {scope: "col", class: "num hide-narrow"}, "Tokens"),
      h("th", {scope: "col", class: "num"}, "Cost"),
      h("th", {scope: "col", class: "hide-narrow"}, "Input"))),
    body);
  const more = h("button", {type: "button", class: "secondary", hidden: true}, "More");
  const region = h("div", {class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Runs", "aria-busy": "true"}, table);
  const active = FILTERS.filter((f) => filters[f]);
  append(root,
    title("Runs"),
    form,
    active.length ? h("p", {class: "muted small"}, `Filtered by ${active.map((f) => f.replace(/_/g, " ")).join(", ")}.`) : null,
    status,
    region,
    h("div", {class: "more"}, more),
    updated);

  const rows = new Map();
  let loaded = [];
  let token = null;
  const params = Object.fromEntries(FILTERS.filter((f) => filters[f]).map((f) => [f, filters[f]]));

  const rowOf = (run) => {
    let row = rows.get(run.run_id);
    if (!row) {
      row = h("tr", {"data-run": run.run_id});
      rows.set(run.run_id, row);
    }
    const signature = JSON.stringify([run.status, run.step, run.usage, run.agent_version]);
    if (row.dataset.sig === signature) return row;
    row.dataset.sig = signature;
    fill(row,
      h("th", {scope: "row"}, h("a", {href: `/console/runs/${encodeURIComponent(run.run_id)}`, class: "mono"}, run.run_id)),
      h("td", {"data-label": "Agent"}, `${run.agent}@${run.agent_version}`),
      h("td", {"data-label": "Status"}, badge(run.status)),
      h("td", {"data-label": "Created"}, when(run.created_at)),
      h("td", {class: "num", "data-label": "Steps"}, count(run.step)),
      h("td", {class: "num hide-narrow", "data-label": "Tokens"}, count(run.usage.input_tokens + run.usage.output_tokens)),
      h("td", {class: "num", "data-label": "Cost"}, usd(run.usage.cost_usd)),
      h("td", {class: "hide-narrow input-cell", title: run.input}, shorten(run.input, 80)));
    return row;
  };

  const show = () => {
    const wanted = loaded.map(rowOf);
    // move rows only when the order changed, so a focused link in a row keeps its focus
    const current = [...body.children];
    if (current.length !== wanted.length || current.some((row, i) => row !== wanted[i])) body.replaceChildren(...wanted);
    for (const id of rows.keys()) if (!loaded.some((r) => r.run_id === id)) rows.delete(id);
    more.hidden = !token;
    fill(status, loaded.length ? null : h("p", {class: "empty"}, active.length ? "No runs match these filters." : "No runs yet."));
    region.setAttribute("aria-busy", "false");
    fill(updated, "Updated ", when(new Date().toISOString(), true), " · refreshes every 3 s");
  };

  const refresh = async () => {
    // the whole list as far as it was paged, so the refresh neither drops loaded pages nor duplicates
    const size = Math.min(1000, Math.max(PAGE, loaded.length));
    const page = await api("/v1/runs", {query: {...params, page_size: size}, signal});
    loaded = page.runs;
    token = page.next_page_token;
    show();
  };

  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const page = await api("/v1/runs", {query: {...params, page_size: PAGE, page_token: token}, signal});
      const seen = new Set(loaded.map((r) => r.run_id));
      loaded = loaded.concat(page.runs.filter((r) => !seen.has(r.run_id)));
      token = page.next_page_token;
      show();
    } catch (e) {
      if (e.name !== "AbortError") status.replaceChildren(notice("error", explain(e, "Loading more runs failed")));
    } finally {
      more.disabled = false;
    }
  });

  try {
    await refresh();
  } catch (e) {
    if (e.name === "AbortError") return;
    fill(status, notice("error", explain(e, "Loading runs failed")));
  }
  poll(async () => {
    try {
      await refresh();
    } catch (e) {
      if (e.name !== "AbortError") fill(status, notice("error", explain(e, "Refreshing failed")));
    }
  }, 3000, signal);
}
