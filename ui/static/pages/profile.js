import { api } from "../api.js";
import { field, form, h, heading, loadError, onSubmit, say, statusLine } from "../dom.js";

export const title = "Profile";

// The editable fields of PUT /api/profile, in the API's order.
const fields = [
  { name: "full_name", label: "Full name", autocomplete: "name", maxlength: 200 },
  { name: "phone", label: "Phone", type: "tel", autocomplete: "tel", maxlength: 32 },
  { name: "job_title", label: "Job title", autocomplete: "organization-title", maxlength: 200 },
  { name: "department", label: "Department", maxlength: 200 },
  { name: "bio", label: "About you", multiline: true, maxlength: 2000 },
  { name: "avatar_url", label: "Picture URL", type: "url", autocomplete: "photo", maxlength: 2048 },
];

export async function render(main, { user }) {
  main.append(heading("Profile"));
  let profile;
  try {
    profile = await api("GET", "/api/profile");
  } catch (err) {
    main.append(loadError(err));
    return;
  }
  const summary = h("section", { class: "card", "aria-label": "Your account" });
  const showSummary = () => summary.replaceChildren(...summaryOf(user, profile));
  showSummary();

  const saved = statusLine();
  const f = form(
    fields.map((spec) => field({ ...spec, value: profile[spec.name] })),
    "Save",
    { "aria-label": "Edit profile" },
  );
  onSubmit(f, async (data) => {
    say(saved, "");
    const body = {};
    for (const { name } of fields) {
      // An empty field clears the value (the API refuses "" for a phone
      // or a URL; null is "none").
      const value = String(data.get(name) ?? "");
      body[name] = value.trim() === "" ? null : value;
    }
    profile = await api("PUT", "/api/profile", { json: body });
    showSummary();
    say(saved, "Saved.");
  });
  main.append(summary, h("h2", { text: "Edit" }), f, saved);
}

function summaryOf(user, profile) {
  const out = [
    h("h2", { id: "profile-name", text: profile.full_name || user.email }),
    h("p", { id: "profile-email" }, user.email, " ", user.email_verified === false
      ? h("span", { class: "badge warn", text: "not confirmed" })
      : h("span", { class: "badge", text: "confirmed" })),
  ];
  if (profile.job_title || profile.department) {
    out.push(h("p", { class: "muted", text: [profile.job_title, profile.department].filter(Boolean).join(" · ") }));
  }
  if (profile.bio) {
    out.push(h("p", { id: "profile-bio", class: "bio", text: profile.bio }));
  }
  if (user.role === "admin") {
    out.push(h("p", {}, h("span", { class: "badge", text: "administrator" })));
  }
  if (user.email_verified === false) {
    const done = statusLine();
    const resend = h("button", { type: "button", text: "Send a new confirmation link" });
    resend.addEventListener("click", async () => {
      resend.disabled = true;
      try {
        const answer = await api("POST", "/api/auth/verify-email/resend", { json: { email: user.email }, session: false });
        say(done, answer.detail);
      } catch (err) {
        say(done, err.message);
      } finally {
        resend.disabled = false;
      }
    });
    out.push(h("p", {}, resend), done);
  }
  return out;
}
