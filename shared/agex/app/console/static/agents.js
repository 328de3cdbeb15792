// The deployment's agents.

import {api} from "./api.js";
import {append, h, shorten, title} from "./dom.js";

export async function render({root, signal, setTitle}) {
  setTitle("Agents");
  const {agents} = await api("/v1/agents", {signal});
  append(root, title("Agents"),
    agents.length ? h("div", {class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Agents"},
      h("table", null,
        h("thead", null, h("tr", null,
          h("th", {scope: "col"}, "Agent"), h("th", {scope: "col"}, "Version"), h("th", {scope: "col"}, "Model"),
          h("th", {scope: "col", class: "num"}, "Tools"), h("th", {scope: "col", class: "num hide-narrow"}, "Approval policies"),
          h("th", {scope: "col", class: "hide-narrow"}, "Description"))),
        h("tbody", null, agents.map((a) => h("tr", null,
          h("th", {scope: "row"}, h("a", {href: `/console/agents/${encodeURIComponent(a.name)}`}, a.name)),
          h("td", null, a.version),
          h("td", null, a.model),
          h("td", {class: "num"}, String(a.tools.length)),
          h("td", {class: "num hide-narrow"}, String(a.approvals.length)),
          h("td", {class: "hide-narrow"}, shorten(a.description, 120)))))))
      : h("p", {class: "empty"}, "This deployment serves no agents."));
}
