import { api } from "../api.js";
import { h, heading, loadError } from "../dom.js";

export const title = "Groups";

export async function render(main) {
  main.append(heading("Groups"), h("p", { class: "muted", text: "The groups you belong to. An administrator manages them." }));
  let groups;
  try {
    groups = await api("GET", "/api/users/me/groups");
  } catch (err) {
    main.append(loadError(err));
    return;
  }
  if (!groups.length) {
    main.append(h("p", { text: "You are in no group." }));
    return;
  }
  main.append(h("ul", { class: "cards", "aria-label": "Your groups" }, groups.map((g) => h("li", { class: "card", "data-group-id": g.id, text: g.name }))));
}
