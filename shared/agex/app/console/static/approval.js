// One approval: what waits, and the decision form (approve / reject, or retry / done / fail for a
// reconciliation), with a comment and, where the policy allows edits, the arguments to run with.

import {api, ApiError, explain} from "./api.js";
import {badge, facts, fill, h, json, notice, pre, title, when} from "./dom.js";
import {conflict, kindLabel, standing} from "./approvals.js";

const CHOICES = {
  approval: [["approve", "Approve", ""], ["reject", "Reject", "danger"]],
  budget: [["approve", "Let the run go on", ""], ["reject", "Reject", "danger"]],
  reconcile: [["retry", "Retry the call", ""], ["done", "It ran: mark done", "secondary"], ["fail", "Fail the run", "danger"]],
  memory: [["approve", "Approve: remember the learned fact", ""], ["reject", "Reject: keep the remembered fact", "danger"]],
};

const HINTS = {
  reconcile: "What you found out (optional).",
  memory: "Required to reject: why the remembered fact stands.",
};

function refusal(error) {
  if (!(error instanceof ApiError)) return explain(error, "Deciding failed");
  if (error.status === 403) return `You may not decide this approval. ${error.message}`;
  if (error.status === 409) return `This approval can no longer be decided. ${error.message}`;
  if (error.status === 400) return `The decision was refused. ${error.message}`;
  return explain(error, "Deciding failed");
}

function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

export async function render({root, params, signal, setTitle, session}) {
  const [approvalId] = params;
  setTitle(`Approval ${approvalId}`);
  root.append(h("p", {class: "crumbs"}, h("a", {href: "/console/approvals"}, "Approvals"), " / ", approvalId));
  let approval;
  try {
    approval = await api(`/v1/approvals/${encodeURIComponent(approvalId)}`, {signal});
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      root.append(title("Approval not found"), notice("error", "No approval with this id in your tenant."));
      return;
    }
    throw e;
  }
  const heading = title(`${kindLabel(approval.kind)}: `, h("code", null, approval.tool));
  const detail = h("div");
  root.append(heading, detail);
  show();

  function show() {
    const memory = approval.kind === "memory";
    fill(detail,
      h("section", {class: "card"},
        h("div", {class: "head-line"}, badge(approval.status), h("span", {class: "chip"}, kindLabel(approval.kind)), h("span", {class: "mono small"}, approval.approval_id)),
        approval.reason ? h("p", {class: "reason"}, approval.reason) : null,
        memory ? [h("h2", null, "Remembered and learned"), conflict(approval),
                  h("p", {class: "muted small"}, "The run has ended: the decision changes what is remembered, not the run.")]
          : [h("h2", null, "Arguments"), pre(approval.arguments)],
        facts([
          ["Agent", h("a", {href: `/console/agents/${encodeURIComponent(approval.agent)}`}, approval.agent)],
          ["Run", h("a", {href: `/console/runs/${encodeURIComponent(approval.run_id)}`, class: "mono"}, approval.run_id)],
          ["Step", String(approval.step)],
          ["Requested by", approval.requested_by],
          ["Approvers", approval.approvers.length ? approval.approvers.join(", ") : "anyone in the tenant"],
          ["Four eyes", memory ? null : approval.four_eyes ? "yes: the requester may not decide" : "no"],
          ["Edits", memory ? null : approval.allow_edits ? "allowed" : "not allowed"],
          ["Requested", when(approval.created_at)],
          ["Expires", when(approval.expires_at)],
          ["On expiry", memory ? "the remembered fact is kept" : approval.on_expiry === "fail" ? "the run fails" : "the call is rejected"],
        ])),
      approval.status === "pending" ? form() : outcome());
  }

  function outcome() {
    return h("section", {class: "card"}, h("h2", null, "Decision"),
      facts([
        ["Status", badge(approval.status)],
        ["Resolution", approval.resolution],
        ["Decided by", approval.decided_by],
        ["Decided", approval.decided_at ? when(approval.decided_at) : null],
        ["Comment", approval.comment ? h("blockquote", {class: "comment"}, approval.comment) : null],
        ["Edited arguments", approval.edited_arguments ? pre(approval.edited_arguments) : null],
        ["Late result", approval.late_result ? pre(approval.late_result) : null],
        ["Late decisions", approval.late_decisions.length ? h("ul", null, approval.late_decisions.map((d) => h("li", null, `${d.decision} by ${d.by} at ${d.at} (never applied)`))) : null],
      ]));
  }

  function form() {
    const editable = approval.allow_edits && approval.kind === "approval";
    const comment = h("textarea", {id: "comment", name: "comment", rows: "3", maxlength: "2000", "aria-describedby": "comment-help"});
    const original = json(approval.arguments);
    const argsField = editable ? h("textarea", {id: "arguments", name: "arguments", rows: String(Math.min(14, original.split("\n").length + 1)),
                                               class: "code", spellcheck: "false", "aria-describedby": "arguments-help"}) : null;
    if (argsField) argsField.value = original;
    const status = h("div", {class: "form-status"});
    const buttons = (CHOICES[approval.kind] ?? CHOICES.approval).map(([decision, label, cls]) =>
      h("button", {type: "submit", name: "decision", value: decision, class: cls}, label));
    const may = standing(approval, session?.principal);
    const form = h("form", {class: "decide", novalidate: true, "aria-labelledby": "decide-title"},
      h("h2", {id: "decide-title"}, "Decide"),
      may && !may.may ? h("p", {class: "standing-no"}, may.why, " The API will refuse your decision.") : null,
      h("div", {class: "field"},
        h("label", {for: "comment"}, "Comment"),
        comment,
        h("p", {id: "comment-help", class: "hint"}, HINTS[approval.kind] ?? "Required to reject: the agent is told why.")),
      argsField ? h("div", {class: "field"},
        h("label", {for: "arguments"}, "Arguments to run with (JSON)"),
        argsField,
        h("p", {id: "arguments-help", class: "hint"}, "Change them to approve an edited call. A field shown as \"[redacted]\" keeps its original value.")) : null,
      status,
      h("div", {class: "actions"}, buttons));
    let key = null;
    let lastBody = null;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const decision = event.submitter?.value ?? buttons[0].value;
      status.replaceChildren();
      const body = {decision};
      if (comment.value.trim()) body.comment = comment.value;
      if (decision === "reject" && !comment.value.trim()) {
        status.append(notice("error", approval.kind === "memory" ? "A rejection needs a comment: say why the remembered fact stands."
                                                                  : "A rejection needs a comment: the agent is told why."));
        comment.focus();
        return;
      }
      if (argsField && decision === "approve" && argsField.value.trim() !== original) {
        try {
          body.arguments = JSON.parse(argsField.value);
        } catch (e) {
          status.append(notice("error", `The arguments are not valid JSON: ${e.message}`));
          argsField.focus();
          return;
        }
        if (!body.arguments || typeof body.arguments !== "object" || Array.isArray(body.arguments)) {
          status.append(notice("error", "The arguments must be a JSON object."));
          argsField.focus();
          return;
        }
      }
      // the same key for a resent identical decision (after a lost answer), a new one for another
      const sent = JSON.stringify(body);
      if (sent !== lastBody) key = newKey();
      lastBody = sent;
      for (const b of buttons) b.disabled = true;
      try {
        await api(`/v1/approvals/${encodeURIComponent(approvalId)}`, {method: "POST", body, signal, headers: {"Idempotency-Key": key}});
      } catch (e) {
        for (const b of buttons) b.disabled = false;
        if (e.name !== "AbortError") status.append(notice("error", refusal(e)));
        return;
      }
      status.append(notice("ok", "Decision submitted. It is applied to the run in a moment…"));
      await settle();
    });
    return form;
  }

  // a decision is applied asynchronously: read the approval until it is no longer pending
  async function settle() {
    for (let i = 0; i < 60 && !signal.aborted; i++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      try {
        approval = await api(`/v1/approvals/${encodeURIComponent(approvalId)}`, {signal});
      } catch (e) {
        if (e.name === "AbortError") return;
        continue;
      }
      if (approval.status !== "pending") {
        show();
        detail.prepend(notice("ok", `Decided: ${approval.status}${approval.decided_by ? ` by ${approval.decided_by}` : ""}.`));
        return;
      }
    }
  }
}
