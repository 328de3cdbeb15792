// The approvals inbox: calls waiting for a person, and reconciliations (calls that may or may not have
// run) on their own tab. Refreshed every 3 s while visible.

import {api, explain} from "./api.js";
import {append, badge, facts, fill, h, notice, poll, pre, title, when} from "./dom.js";

const STATUSES = ["pending", "approved", "rejected", "expired", "cancelled", "resolved"];

/** Python's fnmatchcase, which the API matches approvers with: * ? [seq] [!seq]. */
function pattern(glob) {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      let j = i + 1;
      if (glob[j] === "!") j++;
      if (glob[j] === "]") j++;
      while (j < glob.length && glob[j] !== "]") j++;
      if (j >= glob.length) {
        re += "\\[";
      } else {
        let inside = glob.slice(i + 1, j).replace(/\\/g, "\\\\");
        if (inside.startsWith("!")) inside = `^${inside.slice(1)}`;
        else if (inside.startsWith("^")) inside = `\\${inside}`;
        re += `[${inside}]`;
        i = j;
      }
    } else re += c.replace(/[.*+?^${}()|[\]\\\/-]/g, "\\$&");
  }
  return new RegExp(`^${re}$`, "s");
}

/** Whether the signed-in person may decide, as far as the page can tell (the API decides, and says why not). */
export function standing(approval, principal) {
  if (approval.status !== "pending" || !principal) return null;
  if (approval.approvers.length && !approval.approvers.some((p) => pattern(p).test(principal))) {
    return {may: false, why: `You (${principal}) are not one of its approvers.`};
  }
  if (approval.four_eyes && approval.requested_by === principal && approval.kind !== "reconcile") {
    return {may: false, why: "You started this run: under four eyes another approver decides."};
  }
  return {may: true, why: "You may decide this."};
}

export function kindLabel(kind) {
  return {approval: "Approval", reconcile: "Reconciliation", budget: "Budget", memory: "Memory conflict"}[kind] ?? kind;
}

/** A memory conflict's question: the fact remembered against the one a run learned, each as text. */
export function conflict(a) {
  const args = a.arguments ?? {};
  return h("div", {class: "conflict"},
    h("div", {class: "conflict-side remembered"}, h("span", {class: "label"}, "Remembered"), h("div", {class: "said"}, String(args.remembered ?? "—"))),
    h("div", {class: "conflict-side learned"},
      h("span", {class: "label"}, "Learned", args.learned_from ? ` from ${args.learned_from}` : ""),
      h("div", {class: ["said", args.learned_from === "a tool's output" ? "untrusted" : ""]}, String(args.learned ?? "—"))),
    args.key ? h("p", {class: "muted small"}, "Key ", h("code", null, String(args.key))) : null);
}

export async function render({root, query, signal, navigate, setTitle, session}) {
  const tab = query.get("kind") === "reconcile" ? "reconcile" : "approval";
  const wanted = query.get("status") ?? "pending";
  setTitle(tab === "reconcile" ? "Reconciliations" : "Approvals");
  const tabLink = (kind, text) => {
    const qs = new URLSearchParams();
    if (kind === "reconcile") qs.set("kind", "reconcile");
    if (wanted !== "pending") qs.set("status", wanted);
    const href = `/console/approvals${qs.toString() ? `?${qs}` : ""}`;
    return h("li", null, h("a", {href, "aria-current": tab === kind ? "page" : null}, text));
  };
  const select = h("select", {id: "a-status", name: "status"},
    h("option", {value: "all", selected: wanted === "all"}, "Every status"),
    STATUSES.map((s) => h("option", {value: s, selected: s === wanted}, s)));
  select.addEventListener("change", () => {
    const qs = new URLSearchParams();
    if (tab === "reconcile") qs.set("kind", "reconcile");
    if (select.value !== "pending") qs.set("status", select.value);
    navigate(`/console/approvals${qs.toString() ? `?${qs}` : ""}`);
  });
  const status = h("div", {class: "list-status"});
  const list = h("ul", {class: "cards", "aria-busy": "true", "aria-label": tab === "reconcile" ? "Reconciliations" : "Approvals"});
  const more = h("button", {type: "button", class: "secondary", hidden: true}, "More");
  append(root,
    title(tab === "reconcile" ? "Reconciliations" : "Approvals"),
    h("nav", {class: "tabs", "aria-label": "Kinds"}, h("ul", null, tabLink("approval", "Approvals"), tabLink("reconcile", "Reconciliations"))),
    h("p", {class: "muted"}, tab === "reconcile"
      ? "Calls of tools that are not idempotent whose attempt stopped reporting: did they run? Retry them, mark them done, or fail the run."
      : "Tool calls (and spent budgets) waiting for a person's decision before the run goes on, and memory conflicts: a fact a run learned that contradicts one remembered."),
    h("div", {class: "filters inline"}, h("div", {class: "field"}, h("label", {for: "a-status"}, "Status"), select)),
    status, list, h("div", {class: "more"}, more));

  let items = [];
  let token = null;
  let signature = "";
  const apiStatus = wanted === "all" ? undefined : wanted;
  const ofTab = (a) => (tab === "reconcile" ? a.kind === "reconcile" : a.kind !== "reconcile");

  const show = () => {
    const shown = items.filter(ofTab);
    const next = JSON.stringify([shown, token]);
    if (next === signature) return;
    signature = next;
    fill(list, shown.map((a) => card(a, session?.principal)));
    more.hidden = !token;
    fill(status, shown.length ? null : h("p", {class: "empty"}, wanted === "pending"
      ? (tab === "reconcile" ? "No reconciliation waits." : "Nothing waits for a decision.") : "None."));
  };

  const refresh = async () => {
    const size = Math.min(1000, Math.max(100, items.length));
    const page = await api("/v1/approvals", {query: {status: apiStatus, page_size: size}, signal});
    items = page.approvals;
    token = page.next_page_token;
    show();
    list.setAttribute("aria-busy", "false");
  };

  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const page = await api("/v1/approvals", {query: {status: apiStatus, page_size: 100, page_token: token}, signal});
      items = items.concat(page.approvals);
      token = page.next_page_token;
      show();
    } catch (e) {
      if (e.name !== "AbortError") fill(status, notice("error", explain(e, "Loading more failed")));
    } finally {
      more.disabled = false;
    }
  });

  try {
    await refresh();
  } catch (e) {
    if (e.name === "AbortError") return;
    fill(status, notice("error", explain(e, "Loading approvals failed")));
  }
  poll(refresh, 3000, signal);
}

function card(a, principal) {
  const href = `/console/approvals/${encodeURIComponent(a.approval_id)}`;
  const may = standing(a, principal);
  return h("li", {class: "card approval-card", "data-approval": a.approval_id},
    h("div", {class: "head-line"},
      h("h2", null, h("a", {href}, h("code", null, a.tool), ` · ${a.agent}`)),
      h("span", {class: "chip"}, kindLabel(a.kind)), badge(a.status)),
    a.reason ? h("p", {class: "reason"}, a.reason) : null,
    a.kind === "memory" ? conflict(a) : h("div", {class: "value"}, h("span", {class: "label"}, "Arguments"), pre(a.arguments)),
    facts([
      ["Requested by", a.requested_by],
      ["Approvers", a.approvers.length ? a.approvers.join(", ") : "anyone in the tenant"],
      ["Four eyes", a.kind === "memory" ? null : a.four_eyes ? "yes: the requester may not decide" : "no"],
      ["Expires", when(a.expires_at)],
      ["Run", h("a", {href: `/console/runs/${encodeURIComponent(a.run_id)}`, class: "mono"}, a.run_id)],
      ["Decided by", a.decided_by],
    ], "facts compact"),
    h("p", {class: "card-actions"}, h("a", {href, class: "button"}, a.status === "pending" ? "Review and decide" : "Open"),
      may ? h("span", {class: may.may ? "muted small" : "standing-no small"}, may.why) : null));
}
