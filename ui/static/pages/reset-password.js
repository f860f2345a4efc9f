import { api } from "../api.js";
import { form, h, heading, link, newPasswordFields, onSubmit, passwordsAgree, takeFragmentToken } from "../dom.js";

export const title = "Choose a new password";

// The link of the reset mail: /accounts/reset-password#token=... (the
// token is read from the fragment and taken off the address bar at once,
// then sent with the new password).
export function render(main) {
  const token = takeFragmentToken();
  main.append(heading("Choose a new password"));
  if (!token) {
    main.append(
      h("p", { text: "This link is incomplete. Open the link of the mail again, or ask for a new one." }),
      h("p", {}, link("/accounts/forgot-password", "Send a new link")),
    );
    return;
  }
  const f = form(
    [
      ...newPasswordFields(),
    ],
    "Set password",
  );
  onSubmit(f, async (data) => {
    if (!passwordsAgree(f, data)) {
      return;
    }
    await api("POST", "/api/auth/password-reset/confirm", {
      json: { token, new_password: data.get("new_password") },
      session: false,
    });
    main.replaceChildren(
      heading("Password changed"),
      h("p", { class: "notice", role: "status", text: "Your password has been reset, and every session of your account has been signed out." }),
      h("p", {}, link("/accounts/sign-in", "Sign in with the new password")),
    );
    main.querySelector("h1").focus();
  });
  main.append(f, h("p", { class: "links" }, link("/accounts/forgot-password", "Send a new link")));
}

