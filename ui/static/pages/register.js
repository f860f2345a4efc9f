import { api } from "../api.js";
import { field, form, h, heading, link, onSubmit } from "../dom.js";

export const title = "Create an account";

export function render(main) {
  const f = form(
    [
      field({ name: "email", label: "Email", type: "email", autocomplete: "email", required: true }),
      field({
        name: "password",
        label: "Password",
        type: "password",
        autocomplete: "new-password",
        required: true,
        hint: "8 to 128 characters, with an uppercase letter and a character that is not a letter or digit.",
      }),
      field({ name: "full_name", label: "Full name (optional)", autocomplete: "name", maxlength: 200 }),
    ],
    "Create account",
  );
  onSubmit(f, async (data) => {
    const fullName = String(data.get("full_name") || "").trim();
    const user = await api("POST", "/api/auth/register", {
      json: { email: data.get("email"), password: data.get("password"), full_name: fullName || null },
      session: false,
    });
    main.replaceChildren(
      heading("Account created"),
      h("p", { class: "notice", role: "status" }, "We sent a link to ", h("strong", { text: user.email }), " to confirm the address."),
      h("p", {}, link("/accounts/sign-in", "Sign in")),
    );
    main.querySelector("h1").focus();
  });
  main.append(
    heading("Create an account"),
    f,
    h("p", { class: "links" }, "Already have one? ", link("/accounts/sign-in", "Sign in")),
  );
}
