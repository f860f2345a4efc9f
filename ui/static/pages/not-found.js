import { h, heading, link } from "../dom.js";

export const title = "Page not found";

export function render(main) {
  main.append(heading("Page not found"), h("p", {}, "There is no such page. ", link("/accounts/", "Go to your account")));
}
