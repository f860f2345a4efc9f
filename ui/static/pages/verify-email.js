import { api, ApiError } from "../api.js";
import { h, heading, link, takeFragmentToken } from "../dom.js";

export const title = "Confirm your email";

// The link of the verification mail: /accounts/verify-email#token=...
// The token is in the fragment, which no server sees; it is taken off
// the address bar at once and sent in a POST (a GET never uses it up,
// so a mail scanner that follows the link changes nothing).
export async function render(main) {
  const token = takeFragmentToken();
  main.append(heading("Confirm your email"));
  if (!token) {
    main.append(
      h("p", { text: "This link is incomplete. Open the link of the mail again, or ask for a new one." }),
      h("p", {}, link("/accounts/resend-verification", "Send a new link")),
    );
    return;
  }
  const status = h("p", { role: "status", text: "Confirming…" });
  main.append(status);
  try {
    const user = await api("POST", "/api/auth/verify-email", { json: { token }, session: false });
    status.replaceChildren("Thank you: ", h("strong", { text: user.email }), " is confirmed.");
    status.className = "notice";
    main.append(h("p", {}, link("/accounts/sign-in", "Sign in")));
  } catch (err) {
    status.textContent = err instanceof ApiError && err.status === 400
      ? "This link is invalid, used or expired."
      : err.message;
    status.className = "form-message";
    main.append(h("p", {}, link("/accounts/resend-verification", "Send a new link")));
  }
}
