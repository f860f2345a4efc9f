import { h, heading } from "../dom.js";

export const title = "Administration";

// A placeholder: the administration pages (users, groups, apps,
// settings, audit log) are coming, each a module of its own listed in
// routes.js.
export function render(main) {
  main.append(heading("Administration"), h("p", { text: "The administration pages are coming." }));
}
