// Sign in with a bearer token. The token goes to POST /console/session once, in the body; the server
// answers with an HttpOnly cookie, and the page keeps nothing but the CSRF token, in memory.

import {api, explain} from "./api.js";
import {h, notice, title} from "./dom.js";

export async function render({root, setTitle, signedIn}) {
  setTitle("Sign in");
  const field = h("input", {id: "token", name: "token", type: "password", autocomplete: "off", required: true,
                            spellcheck: "false", "aria-describedby": "token-help"});
  const status = h("div", {class: "form-status"});
  const submit = h("button", {type: "submit"}, "Sign in");
  const form = h("form", {class: "signin", method: "post", action: "/console/session", novalidate: true},
    h("label", {for: "token"}, "Access token"),
    field,
    h("p", {id: "token-help", class: "hint"},
      "Locally, a token of AGEX_DEV_TOKENS (such as dev-token). It is sent once to sign you in and is not stored by this page."),
    status,
    submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = field.value.trim();
    status.replaceChildren();
    if (!token) {
      status.append(notice("error", "Enter a token."));
      field.focus();
      return;
    }
    submit.disabled = true;
    try {
      const session = await api("/console/session", {method: "POST", body: {token}});
      field.value = "";
      await signedIn(session);
    } catch (e) {
      submit.disabled = false;
      status.append(notice("error", e.status === 401 ? "That token was not accepted. Check it and try again." : explain(e, "Signing in failed")));
      field.select();
      field.focus();
    }
  });
  // where Identity-Aware Proxy fronts the API it vouches for each request: no token to paste
  const iapStatus = h("div", {class: "form-status"});
  const iap = h("button", {type: "button", class: "secondary"}, "Sign in through Identity-Aware Proxy");
  iap.addEventListener("click", async () => {
    iap.disabled = true;
    iapStatus.replaceChildren();
    try {
      await signedIn(await api("/console/session", {method: "POST", body: {iap: true}}));
    } catch (e) {
      iap.disabled = false;
      iapStatus.append(notice("error", e.status === 400 ? "This deployment does not sign in through Identity-Aware Proxy: use a token."
                                                         : explain(e, "Signing in through Identity-Aware Proxy failed")));
    }
  });
  root.append(h("section", {class: "signin-page"},
    title("Sign in to the console"),
    h("p", null, "Follow runs, decide approvals and look at your agents."),
    form,
    h("div", {class: "alt-signin"}, h("p", {class: "hint"}, "Or, where your organisation signs you in with Google in front of the API:"), iap, iapStatus)));
  field.focus();
}
