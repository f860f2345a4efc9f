import { api } from "../api.js";
import { field, form, h, heading, link, onSubmit, say, statusLine } from "../dom.js";

export const title = "Forgot your password";

export function render(main) {
  const done = statusLine();
  const f = form([field({ name: "email", label: "Email", type: "email", autocomplete: "email", required: true })], "Send reset link");
  onSubmit(f, async (data) => {
    say(done, "");
    const answer = await api("POST", "/api/auth/password-reset", { json: { email: data.get("email") }, session: false });
    say(done, answer.detail);
  });
  main.append(
    heading("Forgot your password?"),
    h("p", { text: "Enter the email address of your account: we will send it a link to choose a new password." }),
    f,
    done,
    h("p", { class: "links" }, link("/accounts/sign-in", "Sign in")),
  );
}
