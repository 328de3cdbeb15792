// DOM helpers. Every piece of data reaches the page as text (textContent, text nodes, attributes set
// one by one), never as markup: the Content-Security-Policy forbids inline scripts, and this keeps an
// agent's output such as `<img onerror=...>` inert even where the policy would not catch it.

const SVG_NS = "http://www.w3.org/2000/svg";

function put(el, props) {
  if (!props) return;
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "on") for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    else if (key === "href") el.setAttribute("href", safeUrl(value));
    else if (key.startsWith("on")) throw new Error(`event handlers go in "on", not ${key}`);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function add(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** An element: h("a", {href, class, on: {click}}, "text", otherElement). Strings become text nodes. */
export function h(tag, props = null, ...children) {
  const el = document.createElement(tag);
  put(el, props);
  add(el, children);
  return el;
}

/** An SVG element, built like h(). */
export function s(tag, props = null, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  put(el, props);
  add(el, children);
  return el;
}

/** Append children, leaving out null, undefined and false (Element.append would write "null"). */
export function append(el, ...children) {
  add(el, children);
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

/** A URL that can only lead to http(s) or to this origin: never javascript: or data:. */
export function safeUrl(value) {
  const text = String(value);
  try {
    const url = new URL(text, location.origin);
    if (url.protocol === "http:" || url.protocol === "https:") return url.origin === location.origin ? url.pathname + url.search + url.hash : url.href;
  } catch {
    // falls through: not a URL
  }
  return "#";
}

const dateTime = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "medium"});
const timeOnly = new Intl.DateTimeFormat(undefined, {hour: "2-digit", minute: "2-digit", second: "2-digit"});

/** A <time> element showing an RFC 3339 instant in the reader's time zone, the exact value as its title. */
export function when(iso, short = false) {
  if (!iso) return h("span", {class: "muted"}, "—");
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h("span", null, String(iso));
  return h("time", {datetime: date.toISOString(), title: date.toISOString()}, (short ? timeOnly : dateTime).format(date));
}

export function usd(value) {
  if (value === null || value === undefined) return "—";
  const n = Number(value);
  if (n === 0) return "$0";
  return n < 0.01 ? `$${n.toFixed(6)}` : `$${n.toFixed(n < 10 ? 4 : 2)}`;
}

export function count(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString();
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** A value as a <pre> block of JSON (or the string itself). */
export function pre(value, cls = "") {
  return h("pre", {class: ["code", cls]}, typeof value === "string" ? value : json(value));
}

export function shorten(text, limit = 90) {
  const one = String(text ?? "").replace(/\s+/g, " ").trim();
  return one.length <= limit ? one : `${one.slice(0, limit - 1)}…`;
}

/** A definition list from [term, value] pairs; pairs whose value is null are left out. */
export function facts(pairs, cls = "facts") {
  const dl = h("dl", {class: cls});
  for (const [term, value] of pairs) {
    if (value === null || value === undefined) continue;
    dl.append(h("div", null, h("dt", null, term), h("dd", null, value)));
  }
  return dl;
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "expired"]);
export function terminal(status) {
  return TERMINAL.has(status);
}

export function badge(status) {
  return h("span", {class: ["badge", `badge-${String(status).replace(/[^a-z_]/g, "")}`]}, String(status).replace(/_/g, " "));
}

/** A message block: kind is "error" (announced at once), "info" or "ok". */
export function notice(kind, ...children) {
  return h("div", {class: ["notice", `notice-${kind}`], role: kind === "error" ? "alert" : "status"}, ...children);
}

/** A heading that the router focuses after a navigation. */
export function title(text, ...extra) {
  return h("h1", {tabindex: "-1", class: "page-title"}, text, ...extra);
}

/** Call fn now and every `ms` while the page is visible, until `signal` aborts; never two at once. */
export function poll(fn, ms, signal) {
  let timer = null;
  let running = false;
  const tick = async () => {
    clearTimeout(timer);
    if (signal.aborted) return;
    if (document.visibilityState === "visible" && !running) {
      running = true;
      try {
        await fn();
      } catch (e) {
        if (e?.name !== "AbortError") console.warn("refresh failed", e);
      } finally {
        running = false;
      }
    }
    if (!signal.aborted) timer = setTimeout(tick, ms);
  };
  const visible = () => {
    if (document.visibilityState === "visible") tick();
  };
  document.addEventListener("visibilitychange", visible);
  signal.addEventListener("abort", () => {
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", visible);
  });
  timer = setTimeout(tick, ms);
}
