// A run's timeline, grouped by step. Events are applied in batches once per animation frame, a step's
// events are only turned into elements when the step is open, and only the last STEPS_SHOWN steps are
// in the page until the reader asks for earlier ones: a run of 500 steps stays as quick as one of 5.

import {badge, count, fill, h, json, pre, shorten, usd, when} from "./dom.js";

const STEPS_SHOWN = 100;
const LONG_OUTPUT = 600;

function calls(data) {
  return (data?.message?.parts ?? []).filter((p) => p.function_call).map((p) => p.function_call);
}

function texts(data) {
  return (data?.message?.parts ?? []).filter((p) => typeof p.text === "string" && p.text !== "");
}

/** A JSON value, folded away when long. */
function value(label, data) {
  const text = typeof data === "string" ? data : json(data);
  if (text.length <= LONG_OUTPUT) return h("div", {class: "value"}, h("span", {class: "label"}, label), pre(text));
  return h("details", {class: "value"}, h("summary", null, `${label} (${text.length.toLocaleString()} characters)`), pre(text));
}

function line(kind, ...children) {
  return h("p", {class: "what"}, h("span", {class: "kind"}, kind), " ", ...children);
}

function usage(u) {
  if (!u) return null;
  const cached = u.cached_input_tokens ? `, ${count(u.cached_input_tokens)} cached` : "";
  return h("p", {class: "usage"}, `${count(u.input_tokens)} in${cached} · ${count(u.output_tokens)} out tokens · ${usd(u.cost_usd)}`);
}

/** Whether a memory may carry a third party's words: learned from a tool's output, not from the conversation. */
function untrusted(item) {
  return item.trusted === false ? h("span", {class: "chip chip-warn untrusted"}, "from a tool's output") : null;
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function list(value) {
  return Array.isArray(value) ? value : [];
}

/** The memories put in the run's context before its first model call. */
function recalled(d) {
  const memories = list(d.memories);
  return [line("recalled", `${plural(memories.length, "memory", "memories")} put in the run's context`),
          h("ul", {class: "memories"}, memories.map((m) => h("li", {class: "memory", "data-memory": m.id ?? null},
            h("span", {class: "memory-text"}, m.text ?? ""), " ",
            h("span", {class: "muted small"}, [m.kind, typeof m.score === "number" ? `similarity ${m.score}` : null].filter(Boolean).join(" · ")),
            " ", untrusted(m))))];
}

function fact(f, withReason) {
  const seqs = list(f.sources);
  const sources = seqs.length ? `from event${seqs.length === 1 ? "" : "s"} ${seqs.join(", ")}` : null;
  return h("li", {class: "fact"},
    h("p", null, h("code", null, f.key ?? "?"), " = ", h("span", {class: "fact-value"}, f.value ?? ""), " ", untrusted(f)),
    f.text ? h("p", {class: "fact-text"}, f.text) : null,
    h("p", {class: "muted small"}, [f.kind, typeof f.confidence === "number" ? `confidence ${f.confidence}` : null,
      f.trusted === true ? "trusted" : null, f.about ? `about the ${f.about}` : null,
      typeof f.injection_score === "number" ? `injection score ${f.injection_score}` : null, sources].filter(Boolean).join(" · ")),
    withReason && f.reason ? h("p", {class: "reason"}, `Why: ${f.reason}`) : null);
}

/** What was learned from the run after it ended: the facts kept, those left out and why, and what it cost. */
function relation(r, withReason = false) {
  return h("li", {class: "fact"}, h("p", null, h("code", null, `${r.subject} ${r.predicate} ${r.object}`), " ", untrusted(r)),
           withReason && r.reason ? h("p", {class: "reason"}, `Why: ${r.reason}`) : null);
}

function learned(d) {
  const kept = list(d.facts);
  const related = list(d.relations);
  const left = list(d.left_out);
  const relations = related.length ? `, ${plural(related.length, "relation", "relations")}` : "";
  return [line("learned", `${plural(kept.length, "fact", "facts")}${relations} kept, ${left.length} left out`, d.model ? ` · by ${d.model}` : ""),
          kept.length ? h("ul", {class: "facts-learned"}, kept.map((f) => fact(f, false))) : null,
          related.length ? h("ul", {class: "facts-learned"}, related.map((r) => relation(r))) : null,
          left.length ? h("div", {class: "left-out"}, h("span", {class: "label"}, "Left out"),
                          h("ul", {class: "facts-learned"}, left.map((f) => (f.predicate ? relation(f, true) : fact(f, true))))) : null,
          usage(d.usage)];
}

function args(call) {
  return Object.keys(call.args ?? {}).length ? pre(call.args, "args") : h("p", {class: "muted small"}, "no arguments");
}

/** The elements describing one event. */
export function describe(event) {
  const d = event.data ?? {};
  switch (event.kind) {
    case "run_created":
      return [line("started", `by ${d.principal ?? "?"} on ${d.agent}@${d.agent_version}`),
              value("Input", d.input ?? ""),
              Object.keys(d.metadata ?? {}).length ? value("Metadata", d.metadata) : null];
    case "step_started":
      if (d.resumed || d.attempt > 0) {
        return [line("retry", `attempt ${d.attempt} ${d.resumed ? "resumes the step after the previous attempt stopped" : "starts the step again"}`)];
      }
      return [line("step", `attempt ${d.attempt ?? 0} started`)];
    case "model_response": {
      const out = [line("model", `${d.model ?? "?"}${d.finish_reason && d.finish_reason !== "STOP" ? ` (finish: ${d.finish_reason})` : ""}`)];
      if (d.route) {
        const failed = (d.route.failed ?? []).map((f) => `${f.model}: ${f.reason}`).join("; ");
        out.push(h("p", {class: "route"}, `Routed to ${d.route.model}: ${d.route.reason}`,
                   failed ? ` (could not answer: ${failed})` : "",
                   d.route.degraded?.length ? ` · degraded: ${d.route.degraded.join(", ")}` : ""));
      }
      for (const part of texts(d)) out.push(h("div", {class: ["said", part.thought ? "thought" : ""]}, part.thought ? h("span", {class: "label"}, "Thinking") : null, part.text));
      for (const call of calls(d)) out.push(h("div", {class: "call"}, h("p", null, "calls ", h("code", null, call.name)), args(call)));
      out.push(usage(d.usage));
      return out;
    }
    case "tool_intent":
      return [line("calling", h("code", null, d.name))];
    case "tool_result": {
      const guard = d.guard && d.guard.action && d.guard.action !== "allow" ? ` · guard: ${d.guard.action}` : "";
      return [line(d.ok ? "result" : "tool error", h("code", null, d.name), d.ok ? " ok" : " failed", guard),
              value(d.ok ? "Output" : "Error", d.output ?? null)];
    }
    case "tool_late_result":
      return [line("late result", h("code", null, d.name ?? "?"), d.ok ? " ok" : " failed", " (reported after its attempt lost its lease)"),
              value("Output", d.output ?? null)];
    case "step_completed":
      return [line("done", `${d.tool_calls ?? 0} tool call${d.tool_calls === 1 ? "" : "s"}${d.done ? "; the agent answered" : ""}`)];
    case "approval_requested": {
      const approvers = (d.approvers ?? []).join(", ") || "?";
      const link = h("a", {href: `/console/approvals/${encodeURIComponent(d.approval_id)}`}, "Open the approval");
      const headline = d.kind === "memory"
        ? line("memory", h("code", null, d.name), ": a learned fact contradicts a remembered one; a person decides which stands")
        : d.kind === "reconcile"
        ? line("uncertain", h("code", null, d.name), " may or may not have run before its attempt stopped: a person decides (retry, done or fail)")
        : d.kind === "budget"
          ? line("budget", `${d.name}: the run waits for a person to let it go on`)
          : line("approval", h("code", null, d.name), " waits for a person's decision");
      return [headline, d.reason ? h("p", {class: "reason"}, d.reason) : null,
              h("p", {class: "small"}, `Approvers: ${approvers}`, d.expires_at ? " · expires " : "", d.expires_at ? when(d.expires_at) : null, " · ", link)];
    }
    case "approval_decided":
      return [line(d.decision ?? "decided", d.by ? `by ${d.by}` : "",
                   {reconcile: " (reconciliation)", memory: " (memory conflict)"}[d.kind] ?? ""),
              d.comment ? h("blockquote", {class: "comment"}, d.comment) : null,
              d.arguments ? value("Edited arguments", d.arguments) : null];
    case "guard_verdict":
      return [line(`guard ${d.action ?? ""}`, `on ${d.channel ?? "?"}${d.tool ? ` (${d.tool})` : ""}`),
              h("ul", {class: "verdicts"}, (d.verdicts ?? []).map((v) => h("li", null,
                h("code", null, v.guard), ` ${v.action ?? ""}`, v.reason ? `: ${v.reason}` : "",
                typeof v.score === "number" ? ` (score ${v.score})` : "",
                v.findings?.length ? ` · ${v.findings.length} finding${v.findings.length === 1 ? "" : "s"}` : "")))];
    case "sweep_reenqueued":
      return [line("recovered", `the sweep re-enqueued a lost step task (generation ${d.generation ?? "?"})`)];
    case "run_migrated":
      return [line("migrated", `version ${d.from_version} → ${d.to_version}`, d.rule ? ` (${d.rule})` : "")];
    case "tool_deferred":
      return [line("deferred", h("code", null, d.name), " did not run; tried again ", when(d.retry_at), d.reason ? `: ${d.reason}` : "")];
    case "timer_set":
      return [line("waiting", "until ", when(d.wake_at), d.reason ? `: ${d.reason}` : "")];
    case "run_finished":
      return [line("finished", badge(d.status ?? "?")),
              d.result ? h("div", {class: "said final"}, d.result) : null,
              d.error ? h("p", {class: "error-text"}, `${d.error.code}: ${d.error.message}`) : null,
              usage(d.usage)];
    case "run_cancelled":
      return [line("cancelled", `by ${d.by ?? "?"}`)];
    case "memory_recalled":
      return recalled(d);
    case "memory_learned":
      return learned(d);
    default:
      return [line(event.kind), value("Data", d)];
  }
}

const QUIET = new Set(["tool_intent", "step_completed"]);

class Step {
  constructor(n) {
    this.n = n;
    this.events = [];
    this.shown = 0; // events already turned into elements
    this.live = null; // the model's text as it is written, until its model_response arrives
    this.pinned = false; // the reader opened or closed it: leave it as they set it
    this.expectOpen = false;
    this.li = null;
  }
}

export class Timeline {
  constructor({onEvent = () => {}} = {}) {
    this.onEvent = onEvent;
    this.steps = new Map();
    this.order = []; // step numbers, ascending
    this.firstShown = 0; // index in order of the first step in the page
    this.autoTrim = true;
    this.seen = new Set();
    this.maxSeq = 0;
    this.queue = [];
    this.scheduled = false;
    this.list = h("ol", {class: "steps"});
    this.earlier = h("button", {type: "button", class: "secondary earlier", hidden: true, on: {click: () => this.showEarlier()}});
    this.counter = h("p", {class: "muted small"});
    this.el = h("div", {class: "timeline"}, this.counter, this.earlier, this.list);
  }

  get lastSeq() {
    return this.maxSeq;
  }

  has(seq) {
    return this.seen.has(seq);
  }

  push(event) {
    if (this.seen.has(event.seq)) return;
    this.seen.add(event.seq);
    this.maxSeq = Math.max(this.maxSeq, event.seq);
    this.queue.push(event);
    this.schedule();
  }

  text(piece) {
    this.queue.push({live: piece});
    this.schedule();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    const run = () => {
      if (!this.scheduled) return;
      this.scheduled = false;
      this.flush();
    };
    requestAnimationFrame(run);
    setTimeout(run, 250); // a hidden tab gets no animation frames: still keep up, less often
  }

  step(n) {
    let step = this.steps.get(n);
    if (!step) {
      step = new Step(n);
      this.steps.set(n, step);
      let i = this.order.length;
      while (i > 0 && this.order[i - 1] > n) i--;
      this.order.splice(i, 0, n);
      if (i < this.firstShown) this.firstShown++;
    }
    return step;
  }

  flush() {
    const dirty = new Set();
    for (const item of this.queue) {
      if (item.live) {
        const piece = item.live;
        if (!Number.isInteger(piece.step)) continue;
        const step = this.step(piece.step);
        if (step.events.some((e) => e.kind === "model_response")) continue;
        step.live = (step.live ?? "").slice(0, piece.offset ?? 0) + (piece.text ?? "");
        dirty.add(step);
        continue;
      }
      const step = this.step(item.step);
      let i = step.events.length;
      while (i > 0 && step.events[i - 1].seq > item.seq) i--;
      if (i < step.events.length) step.shown = 0; // out of order: its list is rebuilt
      step.events.splice(i, 0, item);
      if (item.kind === "model_response") step.live = null;
      dirty.add(step);
      this.onEvent(item);
    }
    this.queue = [];
    if (!dirty.size) return;
    const latest = this.order[this.order.length - 1];
    if (this.autoTrim && this.order.length - this.firstShown > STEPS_SHOWN) {
      this.firstShown = this.order.length - STEPS_SHOWN;
    }
    for (const [i, n] of this.order.entries()) {
      const step = this.steps.get(n);
      if (i < this.firstShown) {
        if (step.li) {
          step.li.remove();
          step.li = null;
          step.shown = 0;
        }
        continue;
      }
      if (!step.li) this.mount(step, i);
      if (!step.pinned) this.setOpen(step, n === latest);
      if (dirty.has(step)) this.update(step);
    }
    this.counts();
  }

  mount(step, index) {
    const details = h("details", {class: "step-details"});
    const summary = h("summary");
    const body = h("ol", {class: "events"});
    const live = h("div", {class: "live", "aria-live": "polite", hidden: true});
    details.append(summary, h("div", {class: "step-body"}, body, live));
    details.addEventListener("toggle", () => {
      if (details.open !== step.expectOpen) step.pinned = true;
      step.expectOpen = details.open;
      if (details.open) this.update(step);
    });
    step.li = h("li", {class: "step", "data-step": String(step.n)}, details);
    step.details = details;
    step.summary = summary;
    step.body = body;
    step.liveEl = live;
    step.shown = 0;
    // in step order: before the first shown step with a larger number
    const next = this.order.slice(index + 1).map((n) => this.steps.get(n)).find((s) => s.li && s !== step);
    this.list.insertBefore(step.li, next ? next.li : null);
    this.update(step);
  }

  setOpen(step, open) {
    if (step.details.open === open) return;
    step.expectOpen = open;
    step.details.open = open;
    if (open) this.update(step);
  }

  update(step) {
    if (!step.li) return;
    fill(step.summary, ...this.summarize(step));
    step.li.className = ["step", ...this.flags(step).map((f) => `has-${f}`)].join(" ");
    if (!step.details.open) return;
    if (step.shown > step.events.length || step.body.children.length !== step.shown) {
      step.body.replaceChildren();
      step.shown = 0;
    }
    for (const event of step.events.slice(step.shown)) {
      step.body.append(h("li", {class: ["event", `ev-${event.kind}`, QUIET.has(event.kind) ? "quiet" : ""], "data-seq": String(event.seq)},
        h("span", {class: "at"}, when(event.at, true)), h("div", {class: "event-body"}, describe(event))));
    }
    step.shown = step.events.length;
    if (step.live !== null) {
      step.liveEl.hidden = false;
      fill(step.liveEl, h("span", {class: "label"}, "The model is writing…"), h("div", {class: "said streaming"}, step.live));
    } else {
      step.liveEl.hidden = true;
      step.liveEl.replaceChildren();
    }
  }

  flags(step) {
    const flags = [];
    for (const e of step.events) {
      const d = e.data ?? {};
      if (e.kind === "approval_requested" && !step.events.some((x) => x.kind === "approval_decided" && x.data?.approval_id === d.approval_id)) flags.push("waiting");
      if ((e.kind === "step_started" && (d.resumed || d.attempt > 0)) || e.kind === "sweep_reenqueued") flags.push("retry");
      if (e.kind === "guard_verdict") flags.push("guard");
      if ((e.kind === "tool_result" && !d.ok) || (e.kind === "run_finished" && d.status !== "succeeded")) flags.push("error");
    }
    return [...new Set(flags)];
  }

  summarize(step) {
    if (step.n === 0) return [h("span", {class: "step-no"}, "Start"), " ", this.brief(step)];
    const parts = [h("span", {class: "step-no"}, `Step ${step.n}`)];
    const chips = [];
    let tokensIn = 0, tokensOut = 0, cost = 0, models = 0;
    for (const e of step.events) {
      const d = e.data ?? {};
      if (e.kind === "model_response") {
        models++;
        tokensIn += d.usage?.input_tokens ?? 0;
        tokensOut += d.usage?.output_tokens ?? 0;
        cost += d.usage?.cost_usd ?? 0;
        const named = calls(d).map((c) => c.name);
        if (named.length) chips.push(h("span", {class: "chip"}, `→ ${named.join(", ")}`));
        else if (texts(d).length) chips.push(h("span", {class: "chip chip-answer"}, `“${shorten(texts(d).map((p) => p.text).join(" "), 60)}”`));
        if (d.route) chips.push(h("span", {class: "chip chip-warn"}, `via ${d.route.model}`));
      }
      if (e.kind === "approval_requested") chips.push(h("span", {class: "chip chip-warn"}, {reconcile: "reconciliation", memory: "memory conflict"}[d.kind] ?? "approval requested"));
      if (e.kind === "approval_decided") chips.push(h("span", {class: "chip"}, d.decision ?? "decided"));
      if (e.kind === "guard_verdict") chips.push(h("span", {class: "chip chip-warn"}, `guard ${d.action ?? ""}`));
      if ((e.kind === "step_started" && (d.resumed || d.attempt > 0)) || e.kind === "sweep_reenqueued") chips.push(h("span", {class: "chip chip-warn"}, "retry"));
      if (e.kind === "run_migrated") chips.push(h("span", {class: "chip"}, `migrated to v${d.to_version}`));
      if (e.kind === "tool_result" && !d.ok) chips.push(h("span", {class: "chip chip-error"}, `${d.name} failed`));
      if (e.kind === "run_finished") chips.push(badge(d.status ?? "?"));
      if (e.kind === "run_cancelled") chips.push(badge("cancelled"));
      if (e.kind === "memory_recalled") chips.push(h("span", {class: "chip"}, `recalled ${list(d.memories).length}`));
      if (e.kind === "memory_learned") chips.push(h("span", {class: "chip"}, `learned ${list(d.facts).length}`));
    }
    if (step.live !== null) chips.push(h("span", {class: "chip chip-live"}, "writing…"));
    parts.push(" ", ...chips.flatMap((c) => [c, " "]));
    if (models) parts.push(h("span", {class: "step-usage"}, `${count(tokensIn)} in · ${count(tokensOut)} out · ${usd(cost)}`));
    return parts;
  }

  brief(step) {
    const created = step.events.find((e) => e.kind === "run_created");
    return created ? h("span", {class: "chip"}, shorten(created.data?.input ?? "", 60)) : "";
  }

  counts() {
    const events = this.seen.size;
    const steps = this.order.filter((n) => n > 0).length;
    this.counter.textContent = `${events.toLocaleString()} event${events === 1 ? "" : "s"} over ${steps.toLocaleString()} step${steps === 1 ? "" : "s"}`;
    const hidden = this.firstShown;
    this.earlier.hidden = hidden === 0;
    this.earlier.textContent = `Show earlier steps (${hidden.toLocaleString()} not shown)`;
  }

  showEarlier() {
    this.autoTrim = false;
    const from = Math.max(0, this.firstShown - STEPS_SHOWN);
    const before = this.firstShown;
    this.firstShown = from;
    for (let i = before - 1; i >= from; i--) this.mount(this.steps.get(this.order[i]), i);
    this.counts();
  }
}
