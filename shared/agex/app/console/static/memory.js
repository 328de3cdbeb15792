// What is remembered about a user (GET /v1/memory?user=): each scope of theirs, with every agent that remembers
// and across agents, newest first, superseded and flagged memories included; and the user's erasure
// (DELETE /v1/memory?user=), for their right to see and erase what is kept about them.

import {api, ApiError, explain} from "./api.js";
import {append, badge, fill, h, notice, title, when} from "./dom.js";

const PAGE = 50;

export async function render({root, query, signal, navigate, setTitle, session}) {
  const user = (query.get("user") ?? "").trim() || session?.principal || "";
  setTitle(user ? `Memory of ${user}` : "Memory");
  const input = h("input", {id: "m-user", name: "user", type: "text", autocomplete: "off", required: true,
                            spellcheck: "false", "aria-describedby": "m-user-help"});
  input.value = user;
  const form = h("form", {class: "filters inline memory-user", role: "search", "aria-label": "Whose memories"},
    h("div", {class: "field"}, h("label", {for: "m-user"}, "User"), input,
      h("p", {id: "m-user-help", class: "hint"},
        "A run's user is its metadata.user when its caller names one, else the principal who started it.")),
    h("div", {class: "actions"}, h("button", {type: "submit"}, "Show")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = input.value.trim();
    if (!wanted) {
      input.focus();
      return;
    }
    navigate(`/console/memory?user=${encodeURIComponent(wanted)}`);
  });
  const status = h("div", {class: "list-status"});
  const scopes = h("div", {class: "memory-scopes", "aria-busy": "true"});
  const eraseStatus = h("div");
  const erase = h("button", {type: "button", class: "danger", disabled: true}, "Erase everything about this user");
  const eraseCard = h("section", {class: "card erase", "aria-labelledby": "erase-heading", hidden: true},
    h("h2", {id: "erase-heading"}, "Erase"),
    h("p", null, "Deletes everything remembered about ", h("strong", null, user),
      ": their memories with every agent and across agents, and what was learned from their conversations into an ",
      "agent's shared memories, in every store. Runs and their events are kept."),
    eraseStatus, h("div", {class: "actions"}, erase));
  append(root,
    title("Memory"),
    h("p", {class: "muted"}, "What agents remember about a user, for the user's right to see and erase it."),
    form, status, scopes, eraseCard);

  const dialog = confirmation(user);
  root.append(dialog.el);
  erase.addEventListener("click", async () => {
    if (!(await dialog.ask())) return;
    erase.disabled = true;
    eraseStatus.replaceChildren();
    let answer;
    try {
      answer = await api("/v1/memory", {method: "DELETE", query: {user}, signal});
    } catch (e) {
      erase.disabled = false;
      if (e.name !== "AbortError") eraseStatus.append(notice("error", explain(e, "Erasing failed")));
      return;
    }
    const deleted = Object.entries(answer?.deleted ?? {}).map(([store, n]) => `${Number(n).toLocaleString()} ${store === "graph" ? "graph items" : store}`);
    eraseStatus.append(notice("ok", `Erased what was remembered about ${user}${deleted.length ? `: ${deleted.join(", ")}` : ""}.`));
    await load();
  });

  if (user) await load();

  async function load() {
    scopes.setAttribute("aria-busy", "true");
    let listing;
    try {
      listing = await api("/v1/memory", {query: {user, page_size: PAGE}, signal});
    } catch (e) {
      if (e.name === "AbortError") throw e;
      scopes.replaceChildren();
      scopes.setAttribute("aria-busy", "false");
      if (e instanceof ApiError && e.status === 404) {
        eraseCard.hidden = true;
        fill(status, notice("info", "This deployment keeps no long-term memory: none of its agents declares Agent.memory, ",
                            "so nothing is remembered about anyone."));
        return;
      }
      fill(status, notice("error", explain(e, "Loading the memories failed")));
      return;
    }
    const total = listing.scopes.reduce((n, s) => n + s.memories.length, 0);
    fill(status, total ? null : h("p", {class: "empty"}, `Nothing is remembered about ${user}.`));
    fill(scopes, listing.scopes.filter((s) => s.memories.length).map((s) => scopeSection(s)));
    scopes.setAttribute("aria-busy", "false");
    eraseCard.hidden = false;
    erase.disabled = false;
  }

  function scopeSection(scope) {
    const id = `scope-${scope.agent ?? "all"}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const body = h("tbody");
    const more = h("button", {type: "button", class: "secondary", hidden: !scope.next_page_token}, "More");
    let token = scope.next_page_token;
    body.append(...scope.memories.map(row));
    more.addEventListener("click", async () => {
      more.disabled = true;
      try {
        const page = await api("/v1/memory", {query: {user, agent: scope.agent ?? "*", page_size: PAGE, page_token: token}, signal});
        const next = page.scopes[0] ?? {memories: [], next_page_token: null};
        body.append(...next.memories.map(row));
        token = next.next_page_token;
        more.hidden = !token;
      } catch (e) {
        if (e.name !== "AbortError") more.after(notice("error", explain(e, "Loading more failed")));
      } finally {
        more.disabled = false;
      }
    });
    return h("section", {class: "card memory-scope", "data-scope": scope.agent ?? "*", "aria-labelledby": id},
      h("h2", {id}, scope.agent === null ? "Across agents" : h("span", null, "With ", h("a", {href: `/console/agents/${encodeURIComponent(scope.agent)}`}, scope.agent))),
      h("div", {class: "table-wrap", tabindex: "0", role: "region", "aria-labelledby": id},
        h("table", {class: "memories-table"},
          h("thead", null, h("tr", null,
            h("th", {scope: "col"}, "Memory"),
            h("th", {scope: "col"}, "Key"),
            h("th", {scope: "col"}, "Status"),
            h("th", {scope: "col", class: "num"}, "Confidence"),
            h("th", {scope: "col"}, "Learned from"),
            h("th", {scope: "col"}, "Valid"),
            h("th", {scope: "col"}, "Kept until"))),
          body)),
      h("div", {class: "more"}, more));
  }
}

function row(m) {
  return h("tr", {"data-memory": m.memory_id},
    h("th", {scope: "row"}, h("div", {class: "memory-text"}, m.text), h("span", {class: "muted small"}, m.kind, " · ", h("span", {class: "mono"}, m.memory_id))),
    h("td", {"data-label": "Key"}, m.key ? [h("code", null, m.key), " = ", m.value ?? ""] : h("span", {class: "muted"}, "—")),
    h("td", {"data-label": "Status"}, badge(m.status),
      m.superseded_by ? h("div", {class: "muted small"}, "by ", h("span", {class: "mono"}, m.superseded_by)) : null,
      m.status === "flagged" ? h("div", {class: "muted small"}, "held back from recall") : null),
    h("td", {class: "num", "data-label": "Confidence"}, Number(m.confidence).toFixed(2)),
    h("td", {"data-label": "Learned from"},
      m.trusted ? "the conversation" : h("span", {class: "chip chip-warn untrusted"}, "a tool's output"),
      m.run_id ? h("div", {class: "small"}, "run ", h("a", {href: `/console/runs/${encodeURIComponent(m.run_id)}`, class: "mono"}, m.run_id)) : null),
    h("td", {"data-label": "Valid"}, "from ", when(m.valid_from), h("br"), m.valid_to ? ["until ", when(m.valid_to)] : h("span", {class: "current"}, "current")),
    h("td", {"data-label": "Kept until"}, m.expire_at ? when(m.expire_at) : h("span", {class: "muted"}, "until erased")));
}

/** A modal question before erasing: a <dialog>, so focus stays in it and Escape cancels. */
function confirmation(user) {
  const cancel = h("button", {type: "button", class: "secondary"}, "Cancel");
  const confirm = h("button", {type: "button", class: "danger"}, "Erase");
  const el = h("dialog", {class: "confirm", "aria-labelledby": "erase-title", "aria-describedby": "erase-text"},
    h("h2", {id: "erase-title"}, "Erase everything about this user?"),
    h("p", {id: "erase-text"}, "Everything remembered about ", h("strong", null, user),
      " is deleted, with every agent and in every store. This cannot be undone."),
    h("div", {class: "actions"}, cancel, confirm));
  let settle = () => {};
  cancel.addEventListener("click", () => el.close("cancel"));
  confirm.addEventListener("click", () => el.close("erase"));
  el.addEventListener("close", () => settle(el.returnValue === "erase"));
  return {
    el,
    ask() {
      el.returnValue = "";
      el.showModal();
      return new Promise((resolve) => {
        settle = resolve;
      });
    },
  };
}
