// One run: its head (GET /v1/runs/{id}), its timeline followed live over server-sent events, links to
// its traces and logs, and Cancel while it has not ended.

import {api, ApiError, explain} from "./api.js";
import {badge, count, facts, fill, h, notice, poll, terminal, title, usd, when} from "./dom.js";
import {Timeline} from "./timeline.js";

// every event kind the stream names (docs/api.md); a kind added later still arrives: the gaps it leaves
// in the sequence are filled from the events listing once the stream ends
const KINDS = ["run_created", "step_started", "model_response", "tool_intent", "tool_result", "step_completed",
               "run_finished", "run_cancelled", "sweep_reenqueued", "approval_requested", "approval_decided",
               "tool_deferred", "timer_set", "guard_verdict", "run_migrated", "tool_late_result", "message",
               "memory_recalled", "memory_learned"];
/** How long after a run ended its page still looks for events written after the end: what was learned from it
    (memory_learned) and the decisions of the memory conflicts it raised. */
const AFTER_END_MS = 10 * 60 * 1000;
const HEAD_CHANGES = new Set(["model_response", "step_completed", "run_finished", "run_cancelled", "approval_requested",
                              "approval_decided", "timer_set", "tool_deferred", "run_migrated", "step_started"]);

export async function render({root, params, signal, setTitle}) {
  const [runId] = params;
  setTitle(`Run ${runId}`);
  const status = h("span", {class: "head-status"});
  const streamState = h("span", {class: "stream-state", role: "status"});
  const headFacts = h("div", {class: "head-facts"});
  const texts = h("div", {class: "head-texts"});
  const actionStatus = h("div");
  const cancel = h("button", {type: "button", class: "danger", hidden: true}, "Cancel run");
  const head = h("section", {class: "card run-head", "aria-labelledby": "run-title"},
    h("div", {class: "head-line"}, status, streamState, h("div", {class: "head-actions"}, cancel)),
    actionStatus, headFacts, texts);
  const links = h("section", {class: "card links", "aria-labelledby": "links-title"},
    h("h2", {id: "links-title"}, "Traces and logs"), h("p", {class: "muted"}, "Loading…"));
  const timeline = new Timeline({onEvent});
  const timelineSection = h("section", {class: "timeline-section", "aria-labelledby": "timeline-title"},
    h("h2", {id: "timeline-title"}, "Timeline"), timeline.el);
  const heading = title("Run ", h("span", {class: "mono", id: "run-title"}, runId));
  root.append(h("p", {class: "crumbs"}, h("a", {href: "/console/runs"}, "Runs"), " / ", runId), heading);

  let run;
  try {
    run = await api(`/v1/runs/${encodeURIComponent(runId)}`, {signal});
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      root.append(notice("error", "No run with this id in your tenant: it never existed, was deleted after its retention, or belongs to another tenant."));
      return;
    }
    throw e;
  }
  root.append(head, timelineSection, links);
  let principal = null;
  let ended = false;

  function showHead() {
    fill(status, badge(run.status));
    cancel.hidden = terminal(run.status);
    const u = run.usage;
    fill(headFacts, facts([
      ["Agent", h("a", {href: `/console/agents/${encodeURIComponent(run.agent)}`}, `${run.agent}@${run.agent_version}`)],
      ["Started by", principal ?? h("span", {class: "muted"}, "…")],
      ["Created", when(run.created_at)],
      ["Updated", when(run.updated_at)],
      ["Steps", count(run.step)],
      ["Tokens", `${count(u.input_tokens)} in · ${count(u.output_tokens)} out`],
      ["Cost", `${usd(u.cost_usd)} over ${count(u.model_calls)} model call${u.model_calls === 1 ? "" : "s"}`],
      ["Thread", run.thread_id ? h("a", {href: `/console/runs?thread=${encodeURIComponent(run.thread_id)}`, class: "mono"}, run.thread_id) : null],
      ["Metadata", Object.keys(run.metadata ?? {}).length ? Object.entries(run.metadata).map(([k, v]) => h("span", {class: "chip"}, `${k}=${v}`)) : null],
      ["Kept until", when(run.expire_at)],
    ]));
    fill(texts,
      h("h3", null, "Input"), h("div", {class: "said"}, run.input),
      run.result !== null && run.result !== undefined ? [h("h3", null, "Result"), h("div", {class: "said final", "data-testid": "result"}, run.result)] : null,
      run.error ? [h("h3", null, "Error"), h("p", {class: "error-text"}, h("code", null, run.error.code), ": ", run.error.message)] : null);
  }

  let refreshTimer = null;
  async function refreshHead() {
    try {
      run = await api(`/v1/runs/${encodeURIComponent(runId)}`, {signal});
      showHead();
    } catch (e) {
      if (e.name !== "AbortError") fill(actionStatus, notice("error", explain(e, "Refreshing the run failed")));
    }
  }
  function soon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshHead, 250);
  }
  signal.addEventListener("abort", () => clearTimeout(refreshTimer));

  function onEvent(event) {
    if (event.kind === "run_created" && event.data?.principal) {
      principal = event.data.principal;
      showHead();
    }
    if (HEAD_CHANGES.has(event.kind)) soon();
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    actionStatus.replaceChildren();
    try {
      run = await api(`/v1/runs/${encodeURIComponent(runId)}:cancel`, {method: "POST", signal});
      showHead();
      actionStatus.append(notice("ok", "The run is cancelled."));
    } catch (e) {
      if (e.name !== "AbortError") actionStatus.append(notice("error", explain(e, "Cancelling failed")));
    } finally {
      cancel.disabled = false;
    }
  });

  showHead();
  loadLinks();
  follow();
  // the stream says when something changed; this catches what it cannot (an approval decided elsewhere), and
  // what is written on a run after it ended, once its stream is over
  poll(async () => {
    if (!terminal(run.status)) await refreshHead();
    else if (ended && Date.now() - Date.parse(run.updated_at) < AFTER_END_MS) await laterEvents();
  }, 5000, signal);

  function follow() {
    ended = false;
    const source = new EventSource(`/v1/runs/${encodeURIComponent(runId)}/events?follow=true`);
    const onMessage = (message) => {
      try {
        timeline.push(JSON.parse(message.data));
      } catch (e) {
        console.warn("unreadable event", e);
      }
    };
    for (const kind of KINDS) source.addEventListener(kind, onMessage);
    source.addEventListener("model_text", (message) => {
      try {
        timeline.text(JSON.parse(message.data));
      } catch (e) {
        console.warn("unreadable text", e);
      }
    });
    source.addEventListener("reconnect", () => {
      // the server ends a stream before its request timeout; EventSource reconnects by itself and
      // resumes after the last id it got (Last-Event-ID)
      fill(streamState, "Reconnecting…");
    });
    source.addEventListener("end", async () => {
      ended = true;
      source.close();
      fill(streamState, "Run ended");
      await refreshHead();
      await fillGaps();
      loadLinks();
    });
    source.addEventListener("open", () => fill(streamState, h("span", {class: "live-dot", "aria-hidden": "true"}), "Live"));
    source.addEventListener("error", () => {
      if (ended) return;
      if (source.readyState === EventSource.CLOSED) {
        const again = h("button", {type: "button", class: "secondary small-button", on: {click: () => {
          source.close();
          follow();
        }}}, "Reconnect");
        fill(streamState, "Disconnected ", again);
        refreshHead();
      } else {
        fill(streamState, "Reconnecting…");
      }
    });
    signal.addEventListener("abort", () => source.close());
  }

  async function laterEvents() {
    let token = timeline.lastSeq ? String(timeline.lastSeq) : null;
    do {
      const page = await api(`/v1/runs/${encodeURIComponent(runId)}/events`, {query: {page_size: 1000, page_token: token}, signal});
      for (const event of page.events) timeline.push(event);
      token = page.next_page_token;
    } while (token);
  }

  async function fillGaps() {
    if (timeline.seen.size === timeline.lastSeq) return;
    let token = null;
    do {
      const page = await api(`/v1/runs/${encodeURIComponent(runId)}/events`, {query: {page_size: 1000, page_token: token}, signal});
      for (const event of page.events) timeline.push(event);
      token = page.next_page_token;
    } while (token);
  }

  async function loadLinks() {
    let found;
    try {
      found = await api(`/console/api/runs/${encodeURIComponent(runId)}/links`, {signal});
    } catch (e) {
      if (e.name === "AbortError") return;
      fill(links, h("h2", {id: "links-title"}, "Traces and logs"), notice("error", explain(e, "Loading the links failed")));
      return;
    }
    const refresh = h("button", {type: "button", class: "secondary small-button", on: {click: loadLinks}}, "Refresh");
    const open = links.querySelector("details")?.open ?? false;
    const items = [];
    if (found.trace) items.push(h("li", null, h("a", {href: found.trace, rel: "noopener noreferrer", target: "_blank"}, "Cloud Trace: the run's trace")));
    if (found.logs) items.push(h("li", null, h("a", {href: found.logs, rel: "noopener noreferrer", target: "_blank"}, "Cloud Logging: the run's log entries")));
    fill(links,
      h("div", {class: "head-line"}, h("h2", {id: "links-title"}, "Traces and logs"), refresh),
      items.length ? h("ul", null, items) : null,
      found.lines ? h("details", {class: "log-lines", open},
        h("summary", null, `Log lines (${found.lines.length.toLocaleString()})`),
        h("pre", {class: "code logs", tabindex: "0"}, found.lines.join("\n"))) : null,
      !items.length && !found.lines ? h("p", {class: "muted"}, "No trace or log links for this deployment.") : null);
  }
}
