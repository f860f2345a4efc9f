import { adminHeader, adminSections } from "../admin-kit.js";
import { h, link } from "../dom.js";

export const title = "Administration";

const about = {
  "/admin/users": "Search accounts; change a role, deactivate, confirm an email, send a reset link; see and grant a user's apps.",
  "/admin/groups": "Create, rename and delete groups; their members and the apps granted to them.",
  "/admin/apps": "The platform's apps: open one to everyone or close it, add one, remove one.",
  "/admin/settings": "The AI provider (with a connection test), the documents' upload limit, and the mail queue.",
  "/admin/audit": "The security events, filtered by event, user and time.",
};

// The overview: one card per section (any other /admin/... path lands
// here too).
export function render(main) {
  adminHeader(main, "", "Administration");
  main.append(h("ul", { class: "cards" }, adminSections.map(([path, text]) =>
    h("li", { class: "card" }, h("h2", {}, link("/accounts" + path, text)), h("p", { class: "muted", text: about[path] })))));
}
