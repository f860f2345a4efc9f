import { api } from "../api.js";
import {
  adminHeader, checkbox, choice, getPage, groupName, keepQuery, onClick, pager, problemLine, showProblem, skipOf,
} from "../admin-kit.js";
import { field, form, h, link, onSubmit, say, statusLine, when } from "../dom.js";

export const title = "Users";

const limit = 20;

// The users (GET /api/admin/users: q, role, is_active, paging), each with
// a "Manage" part: role, active, email confirmed (PATCH), a reset link,
// and the user's apps with the reasons, direct grants and revokes.
export async function render(main, { params, user: me }) {
  adminHeader(main, "/admin/users", "Users");
  const query = {
    q: params.get("q") || "",
    role: ["user", "admin"].includes(params.get("role")) ? params.get("role") : "",
    is_active: ["true", "false"].includes(params.get("is_active")) ? params.get("is_active") : "",
    skip: skipOf(params),
  };
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Find users" },
    field({ name: "q", label: "Email contains", type: "search", value: query.q }),
    choice({ name: "role", label: "Role", value: query.role, options: [["", "Any"], ["user", "User"], ["admin", "Administrator"]] }),
    choice({ name: "is_active", label: "State", value: query.is_active, options: [["", "Any"], ["true", "Active"], ["false", "Deactivated"]] }),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: "Search" })));
  const line = problemLine();
  const list = h("ul", { class: "cards", "aria-label": "Users" });
  const pages = pager((skip) => load(skip));
  main.append(filters, line, list, pages);

  let apps = null; // every app, for the grant lists (loaded once)
  const allApps = async () => (apps ??= await api("GET", "/api/admin/apps"));

  async function load(skip) {
    query.skip = skip;
    keepQuery(query);
    showProblem(line, null);
    try {
      const { items, total } = await getPage("/api/admin/users", { ...query, limit });
      list.replaceChildren(...items.map(card));
      pages.update(skip, limit, items.length, total);
    } catch (err) {
      showProblem(line, err);
    }
  }

  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(filters);
    query.q = String(data.get("q") || "").trim();
    query.role = String(data.get("role") || "");
    query.is_active = String(data.get("is_active") || "");
    load(0);
  });

  function badges(u) {
    return [
      u.role === "admin" ? h("span", { class: "badge", text: "administrator" }) : null,
      u.is_active ? null : h("span", { class: "badge warn", text: "deactivated" }),
      u.email_verified ? h("span", { class: "badge", text: "confirmed" }) : h("span", { class: "badge warn", text: "not confirmed" }),
    ];
  }

  function card(u) {
    const head = h("p", { class: "device" });
    const showHead = () => head.replaceChildren(h("strong", { text: u.email }), ...badges(u).filter(Boolean));
    showHead();
    const details = h("details", { class: "manage" }, h("summary", { text: "Manage" }));
    let built = false;
    details.addEventListener("toggle", () => {
      if (details.open && !built) {
        built = true;
        details.append(...manage(u, showHead));
      }
    });
    return h("li", { class: "card", "data-user-id": u.id }, head,
      h("p", { class: "muted small" }, "Since " + when(u.created_at) + " · ", h("code", { text: u.id })), details);
  }

  function manage(u, showHead) {
    // Role, active, email confirmed: PATCH of what changed.
    const saved = statusLine();
    const f = form([
      choice({ name: "role", label: "Role", value: u.role, options: [["user", "User"], ["admin", "Administrator"]] }),
      checkbox({ name: "is_active", label: "Active (may sign in)", checked: u.is_active }),
      checkbox({ name: "email_verified", label: "Email confirmed", checked: u.email_verified }),
    ], "Save", { "aria-label": "Account of " + u.email });
    onSubmit(f, async () => {
      say(saved, "");
      const body = {};
      const role = f.elements.role.value;
      if (role !== u.role) {
        body.role = role;
      }
      for (const name of ["is_active", "email_verified"]) {
        if (f.elements[name].checked !== u[name]) {
          body[name] = f.elements[name].checked;
        }
      }
      if (!Object.keys(body).length) {
        say(saved, "Nothing changed.");
        return;
      }
      Object.assign(u, await api("PATCH", "/api/admin/users/" + encodeURIComponent(u.id), { json: body }));
      showHead();
      say(saved, u.id === me.id && u.role !== "admin" ? "Saved. You are no longer an administrator." : "Saved.");
    });

    // The reset link (409 when mail is not configured: the API says so).
    const resetLine = problemLine();
    const resetDone = statusLine();
    const reset = h("button", { type: "button", class: "reset-link", text: "Send a password reset link" });
    onClick(reset, resetLine, async () => {
      say(resetDone, "");
      const answer = await api("POST", "/api/admin/users/" + encodeURIComponent(u.id) + "/password-reset");
      say(resetDone, answer.detail);
    });

    // The apps and why.
    const appsLine = problemLine();
    const appsDone = statusLine();
    const appList = h("ul", { class: "plain apps-why", "aria-label": "Apps of " + u.email });
    const grantSelect = choice({ name: "app", label: "App to grant directly", options: [] });
    const grant = h("form", { class: "inline-form", "aria-label": "Grant an app to " + u.email },
      grantSelect, h("button", { type: "submit", text: "Grant" }));
    const appsSection = h("section", { class: "sub", "aria-label": "Apps" }, h("h3", { text: "Apps" }), appsLine, appsDone, appList, grant);
    const showApps = async () => {
      const [why, every] = await Promise.all([api("GET", "/api/admin/users/" + encodeURIComponent(u.id) + "/apps"), allApps()]);
      const names = new Map(every.map((a) => [a.key, a.name]));
      const items = [];
      for (const a of why) {
        const reasons = [];
        if (a.direct) {
          reasons.push("granted directly");
        }
        if (a.groups.length) {
          const gs = await Promise.all(a.groups.map(groupName));
          reasons.push("through " + (gs.length > 1 ? "groups " : "group ") + gs.join(", "));
        }
        if (a.open_to_all) {
          reasons.push("open to all");
        }
        if (!reasons.length && u.role === "admin") {
          reasons.push("administrators may use every app");
        }
        const li = h("li", { "data-app": a.key }, h("strong", { text: names.get(a.key) || a.key }), " ", h("code", { text: a.key }), ": ",
          h("span", { class: "why", text: reasons.join("; ") }));
        if (a.direct) {
          const revoke = h("button", { type: "button", class: "danger small", "aria-label": "Revoke the direct grant of " + a.key, text: "Revoke" });
          onClick(revoke, appsLine, async () => {
            await api("DELETE", "/api/admin/users/" + encodeURIComponent(u.id) + "/apps/" + encodeURIComponent(a.key));
            say(appsDone, "Revoked " + a.key + ".");
            await showApps();
          });
          li.append(" ", revoke);
        }
        items.push(li);
      }
      appList.replaceChildren(...items);
      if (!items.length) {
        appList.append(h("li", { class: "muted", text: "No app." }));
      }
      const direct = new Set(why.filter((a) => a.direct).map((a) => a.key));
      const open = every.filter((a) => !direct.has(a.key));
      grantSelect.querySelector("select").replaceChildren(...open.map((a) => h("option", { value: a.key, text: a.name + " (" + a.key + ")" })));
      grant.hidden = !open.length;
    };
    grant.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = grant.elements.app.value;
      const button = grant.querySelector("button");
      button.disabled = true;
      showProblem(appsLine, null);
      try {
        await api("PUT", "/api/admin/users/" + encodeURIComponent(u.id) + "/apps/" + encodeURIComponent(key));
        say(appsDone, "Granted " + key + ".");
        await showApps();
      } catch (err) {
        showProblem(appsLine, err);
      } finally {
        button.disabled = false;
      }
    });
    showApps().catch((err) => showProblem(appsLine, err));

    return [
      f, saved,
      h("div", { class: "actions" }, reset), resetLine, resetDone,
      appsSection,
      h("p", {}, link("/accounts/admin/audit?target_id=" + encodeURIComponent(u.id), "Audit log of this user")),
    ];
  }

  await load(query.skip);
}
