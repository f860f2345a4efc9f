import { api } from "../api.js";
import { field, form, h, heading, link, onSubmit, say, statusLine } from "../dom.js";

export const title = "Send a new confirmation link";

export function render(main, { user }) {
  const done = statusLine();
  const f = form(
    [field({ name: "email", label: "Email", type: "email", autocomplete: "email", required: true, value: user ? user.email : "" })],
    "Send link",
  );
  onSubmit(f, async (data) => {
    say(done, "");
    const answer = await api("POST", "/api/auth/verify-email/resend", { json: { email: data.get("email") }, session: false });
    say(done, answer.detail);
  });
  main.append(heading("Send a new confirmation link"), f, done, h("p", { class: "links" }, link("/accounts/sign-in", "Sign in")));
}
