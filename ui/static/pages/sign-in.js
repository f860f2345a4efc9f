import { api } from "../api.js";
import { field, form, h, heading, link, onSubmit } from "../dom.js";

export const title = "Sign in";

export function render(main, { navigate, params, safeNext }) {
  const next = safeNext(params.get("next"));
  const f = form(
    [
      field({ name: "username", label: "Email", type: "email", autocomplete: "username", required: true }),
      field({ name: "password", label: "Password", type: "password", autocomplete: "current-password", required: true }),
    ],
    "Sign in",
  );
  onSubmit(f, async (data) => {
    await api("POST", "/api/auth/login", {
      form: { username: data.get("username"), password: data.get("password") },
      session: false,
    });
    navigate(next || "/accounts/profile", { replace: true });
  });
  main.append(heading("Sign in"));
  if (next) {
    main.append(h("p", { class: "notice", text: "Your session has ended. Sign in to continue." }));
  }
  main.append(
    f,
    h(
      "p",
      { class: "links" },
      link("/accounts/forgot-password", "Forgot your password?"),
      " · ",
      link("/accounts/register", "Create an account"),
    ),
  );
}
