import { api } from "../api.js";
import { h, heading, loadError, say, statusLine, when } from "../dom.js";

export const title = "Sessions";

export async function render(main, { navigate }) {
  const list = h("ul", { class: "cards", "aria-label": "Your sessions" });
  const status = statusLine();
  const problem = h("div", { class: "form-message", role: "alert", hidden: true });
  main.append(
    heading("Sessions"),
    h("p", { class: "muted", text: "Every device and browser where your account is signed in." }),
    problem,
    status,
    list,
  );

  const fail = (err) => {
    if (err && err.name !== "SignInRequired") {
      problem.replaceChildren(h("p", { text: err.message }));
      problem.hidden = false;
    }
  };

  async function load() {
    const sessions = await api("GET", "/api/users/me/sessions");
    list.replaceChildren(...sessions.map(card));
    if (!sessions.length) {
      list.append(h("li", { class: "muted", text: "No active session." }));
    }
  }

  function card(s) {
    const label = s.device || "Unknown device";
    const item = h(
      "li",
      { class: "card", "data-session-id": s.id },
      h("p", { class: "device" }, h("strong", { text: label }), s.current ? h("span", { class: "badge", text: "this device" }) : null),
      h("dl", {},
        h("dt", { text: "Address" }), h("dd", { text: s.ip || "—" }),
        h("dt", { text: "Signed in" }), h("dd", { text: when(s.created_at) }),
        h("dt", { text: "Last active" }), h("dd", { text: when(s.last_used_at) })),
    );
    if (!s.current) {
      const revoke = h("button", { type: "button", class: "danger", "aria-label": "Revoke the session of " + label, text: "Revoke" });
      revoke.addEventListener("click", async () => {
        revoke.disabled = true;
        problem.hidden = true;
        try {
          await api("DELETE", "/api/users/me/sessions/" + encodeURIComponent(s.id));
          say(status, "Session revoked.");
          await load();
        } catch (err) {
          revoke.disabled = false;
          fail(err);
        }
      });
      item.append(h("div", { class: "actions" }, revoke));
    }
    return item;
  }

  const everywhere = h("button", { type: "button", class: "danger", text: "Sign out everywhere" });
  everywhere.addEventListener("click", async () => {
    everywhere.disabled = true;
    try {
      await api("POST", "/api/auth/logout-all");
      navigate("/accounts/sign-in", { replace: true });
    } catch (err) {
      everywhere.disabled = false;
      fail(err);
    }
  });
  main.append(h("div", { class: "actions" }, everywhere));

  try {
    await load();
  } catch (err) {
    list.replaceChildren();
    main.append(loadError(err));
  }
}
