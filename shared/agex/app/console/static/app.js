// The console: a small router over history.pushState, the session, and the page modules it loads on
// demand (each page is a module with render(ctx); it stops its streams and polls when ctx.signal aborts).

import {api, ApiError, explain, setCsrf, whenSignedOut} from "./api.js";
import {fill, h, notice, title} from "./dom.js";

const ROUTES = [
  [/^\/console\/?$/, "runs", "runs"],
  [/^\/console\/runs\/?$/, "runs", "runs"],
  [/^\/console\/runs\/([A-Za-z0-9_-]+)\/?$/, "run", "runs"],
  [/^\/console\/approvals\/?$/, "approvals", "approvals"],
  [/^\/console\/approvals\/([A-Za-z0-9_-]+)\/?$/, "approval", "approvals"],
  [/^\/console\/agents\/?$/, "agents", "agents"],
  [/^\/console\/agents\/([A-Za-z0-9_.@:+-]+)\/?$/, "agent", "agents"],
  [/^\/console\/memory\/?$/, "memory", "memory"],
  [/^\/console\/signin\/?$/, "signin", null],
];

const PAGES = {
  runs: () => import("./runs.js"),
  run: () => import("./run.js"),
  approvals: () => import("./approvals.js"),
  approval: () => import("./approval.js"),
  agents: () => import("./agents.js"),
  agent: () => import("./agent.js"),
  memory: () => import("./memory.js"),
  signin: () => import("./signin.js"),
};

const main = document.getElementById("main");
const header = document.getElementById("top");
const state = {session: null, after: null, page: null, first: true};

function match(pathname) {
  for (const [pattern, page, section] of ROUTES) {
    const found = pattern.exec(pathname);
    if (found) return {page, section, params: found.slice(1).map(decodeURIComponent)};
  }
  return null;
}

export function navigate(url, {replace = false} = {}) {
  const target = new URL(url, location.href);
  if (target.href === location.href && !replace) return route();
  history[replace ? "replaceState" : "pushState"](null, "", target.pathname + target.search + target.hash);
  return route();
}

function setTitle(text) {
  document.title = text ? `${text} · Agent Executor` : "Agent Executor";
}

async function route() {
  state.page?.abort();
  const controller = new AbortController();
  state.page = controller;
  const found = match(location.pathname);
  if (!state.session && found?.page !== "signin") {
    state.after = location.pathname + location.search;
    history.replaceState(null, "", "/console/signin");
    return route();
  }
  if (state.session && found?.page === "signin") {
    history.replaceState(null, "", state.after ?? "/console/runs");
    state.after = null;
    return route();
  }
  renderHeader(found?.section);
  if (!found) {
    setTitle("Not found");
    fill(main, title("Page not found"), h("p", null, "Nothing lives at this address. ", h("a", {href: "/console/runs"}, "Go to the runs.")));
    focusTitle();
    return;
  }
  let module;
  try {
    module = await PAGES[found.page]();
  } catch (e) {
    fill(main, notice("error", `The page could not be loaded (${e.message}). Reload to try again.`));
    return;
  }
  if (controller.signal.aborted) return;
  const query = new URLSearchParams(location.search);
  fill(main);
  try {
    await module.render({root: main, params: found.params, query, session: state.session, signal: controller.signal,
                         navigate, setTitle, signedIn, focusTitle});
  } catch (e) {
    if (e?.name === "AbortError" || controller.signal.aborted) return;
    if (e instanceof ApiError && e.status === 401) return;
    fill(main, title("Something went wrong"), notice("error", explain(e)));
  }
  if (!controller.signal.aborted) focusTitle();
}

function focusTitle() {
  // the first load keeps the browser's own focus; later navigations move it to the new page's heading,
  // so keyboard and screen reader users land on what changed
  if (state.first) {
    state.first = false;
    return;
  }
  const active = document.activeElement;
  if (active && active !== main && main.contains(active)) return; // the page focused its own field
  main.querySelector("h1")?.focus({preventScroll: false});
}

function renderHeader(section) {
  const brand = h("a", {class: "brand", href: "/console/runs"}, h("img", {src: "/console/static/icon.svg", alt: "", width: "24", height: "24"}), "Agent Executor");
  if (!state.session) {
    fill(header, h("div", {class: "bar"}, brand));
    return;
  }
  const link = (href, text, name) => h("a", {href, "aria-current": section === name ? "page" : null}, text);
  const signOut = h("button", {type: "button", class: "secondary", on: {click: signOutNow}}, "Sign out");
  fill(header, h("div", {class: "bar"},
    brand,
    h("nav", {"aria-label": "Main"}, h("ul", null,
      h("li", null, link("/console/runs", "Runs", "runs")),
      h("li", null, link("/console/approvals", "Approvals", "approvals")),
      h("li", null, link("/console/agents", "Agents", "agents")),
      h("li", null, link("/console/memory", "Memory", "memory")))),
    h("div", {class: "who"},
      h("span", {class: "principal", title: "Signed in as"}, state.session.principal),
      h("span", {class: "tenant", title: "Tenant"}, state.session.tenant),
      signOut)));
}

function signedIn(session) {
  state.session = session;
  setCsrf(session.csrf);
  const next = state.after && !state.after.startsWith("/console/signin") ? state.after : "/console/runs";
  state.after = null;
  return navigate(next, {replace: true});
}

async function signOutNow(event) {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await api("/console/session:signout", {method: "POST"});
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      button.disabled = false;
      main.prepend(notice("error", explain(e, "Signing out failed")));
      return;
    }
  }
  state.session = null;
  state.after = null;
  setCsrf(null);
  navigate("/console/signin", {replace: true});
}

whenSignedOut(() => {
  if (!state.session) return;
  state.session = null;
  setCsrf(null);
  state.after = location.pathname + location.search;
  navigate("/console/signin", {replace: true});
});

// links to console pages are handled here, without reloading the page; others behave as usual
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest?.("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/console") || url.pathname.startsWith("/console/static/")) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return;
  event.preventDefault();
  navigate(url.href);
});

window.addEventListener("popstate", () => route());

async function boot() {
  // the page's module loads while the session is asked for, not after
  const page = match(location.pathname)?.page;
  if (page) PAGES[page]().catch(() => {});
  try {
    state.session = await api("/console/session");
    setCsrf(state.session.csrf);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      fill(main, title("The console cannot start"), notice("error", explain(e)));
      return;
    }
    state.session = null;
  }
  await route();
}

boot();
