import { api } from "../api.js";
import { clearErrors, field, fieldError, form, heading, onSubmit, say, statusLine } from "../dom.js";

export const title = "Change password";

export function render(main) {
  const done = statusLine();
  const f = form(
    [
      field({ name: "current_password", label: "Current password", type: "password", autocomplete: "current-password", required: true }),
      field({
        name: "new_password",
        label: "New password",
        type: "password",
        autocomplete: "new-password",
        required: true,
        hint: "8 to 128 characters, with an uppercase letter and a character that is not a letter or digit.",
      }),
      field({ name: "confirm", label: "New password again", type: "password", autocomplete: "new-password", required: true }),
    ],
    "Change password",
  );
  onSubmit(f, async (data) => {
    say(done, "");
    if (data.get("new_password") !== data.get("confirm")) {
      fieldError(f, "confirm", "The two passwords differ.");
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
