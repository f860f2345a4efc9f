import { api } from "../api.js";
import { h, heading, loadError } from "../dom.js";

export const title = "Apps";

export async function render(main) {
  main.append(heading("Apps"), h("p", { class: "muted", text: "The apps your account may use." }));
  let apps;
  try {
    apps = await api("GET", "/api/apps");
  } catch (err) {
    main.append(loadError(err));
    return;
  }
  if (!apps.length) {
    main.append(h("p", { text: "No app is open to you yet." }));
    return;
  }
  main.append(
    h("ul", { class: "cards", "aria-label": "Your apps" }, apps.map((app) =>
      h("li", { class: "card", "data-app": app.key },
        h("p", {}, h("strong", { text: app.name }), " ", h("code", { text: app.key })),
        app.description ? h("p", { class: "muted", text: app.description }) : null))),
  );
}
