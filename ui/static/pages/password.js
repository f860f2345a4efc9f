import { api } from "../api.js";
import { clearErrors, field, form, heading, newPasswordFields, onSubmit, passwordsAgree, say, statusLine } from "../dom.js";

export const title = "Change password";

export function render(main) {
  const done = statusLine();
  const f = form(
    [
      field({ name: "current_password", label: "Current password", type: "password", autocomplete: "current-password", required: true }),
      ...newPasswordFields(),
    ],
    "Change password",
  );
  onSubmit(f, async (data) => {
    say(done, "");
    if (!passwordsAgree(f, data)) {
      return;
    }
    await api("POST", "/api/users/me/password", {
      json: { current_password: data.get("current_password"), new_password: data.get("new_password") },
    });
    f.reset();
    clearErrors(f);
    say(done, "Password changed. Your other sessions have been signed out.");
  });
  main.append(heading("Change password"), f, done);
}
