import { api } from "../api.js";
import {
  adminHeader, confirmButton, forgetGroupNames, getPage, keepQuery, onClick, pager, problemLine, problemText, showProblem, skipOf, userSearch,
} from "../admin-kit.js";
import { field, form, h, link, onSubmit, say, statusLine, when } from "../dom.js";

export const title = "Groups";

const limit = 20;

// /admin/groups: the list (q, paging) and a form to create one;
// /admin/groups/<id>: one group, its name and description, members and
// app grants, and its deletion.
export async function render(main, ctx) {
  const id = ctx.path.replace(/^\/admin\/groups\/?/, "").replace(/\/+$/, "");
  if (id) {
    return group(main, ctx, decodeURIComponent(id));
  }
  return list(main, ctx);
}

async function list(main, { params, navigate }) {
  adminHeader(main, "/admin/groups", "Groups");
  const query = { q: params.get("q") || "", skip: skipOf(params) };
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Find groups" },
    field({ name: "q", label: "Name contains", type: "search", value: query.q }),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: "Search" })));
  const line = problemLine();
  const items = h("ul", { class: "cards", "aria-label": "Groups" });
  const pages = pager((skip) => load(skip));

  const create = form([
    field({ name: "name", label: "Name", required: true, maxlength: 100 }),
    field({ name: "description", label: "Description (optional)", multiline: true, maxlength: 1000 }),
  ], "Create group", { "aria-label": "Create a group" });
  onSubmit(create, async (data) => {
    const description = String(data.get("description") || "").trim();
    const g = await api("POST", "/api/admin/groups", { json: { name: data.get("name"), description: description || null } });
    navigate("/accounts/admin/groups/" + encodeURIComponent(g.id));
  });

  main.append(filters, line, items, pages, h("h2", { text: "New group" }), create);

  async function load(skip) {
    query.skip = skip;
    keepQuery(query);
    showProblem(line, null);
    try {
      const { items: groups, total } = await getPage("/api/admin/groups", { ...query, limit });
      items.replaceChildren(...groups.map((g) => h("li", { class: "card", "data-group-id": g.id },
        h("p", { class: "device" }, link("/accounts/admin/groups/" + encodeURIComponent(g.id), g.name, { class: "group-name" }),
          h("span", { class: "badge", text: g.member_count === 1 ? "1 member" : g.member_count + " members" })),
        g.description ? h("p", { class: "muted bio", text: g.description }) : null,
        h("p", { class: "muted small", text: g.apps.length ? "Apps: " + g.apps.join(", ") : "No app granted" }))));
      pages.update(skip, limit, groups.length, total);
    } catch (err) {
      showProblem(line, err);
    }
  }
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    query.q = String(new FormData(filters).get("q") || "").trim();
    load(0);
  });
  await load(query.skip);
}

async function group(main, { navigate }, id) {
  main.classList.add("wide");
  const base = "/api/admin/groups/" + encodeURIComponent(id);
  let g;
  try {
    g = await api("GET", base);
  } catch (err) {
    adminHeader(main, "/admin/groups", "Group");
    main.append(h("div", { class: "form-message", role: "alert" }, h("p", { text: problemText(err) })),
      h("p", {}, link("/accounts/admin/groups", "All groups")));
    return;
  }
  adminHeader(main, "/admin/groups", g.name);
  const nameEl = main.querySelector("h1");
  nameEl.id = "group-name";
  const meta = h("p", { class: "muted small" });
  const showMeta = () => {
    nameEl.textContent = g.name;
    meta.replaceChildren("Created " + when(g.created_at) + " · ", h("code", { text: g.id }));
  };
  showMeta();

  // Name and description (PATCH).
  const saved = statusLine();
  const edit = form([
    field({ name: "name", label: "Name", required: true, maxlength: 100, value: g.name }),
    field({ name: "description", label: "Description", multiline: true, maxlength: 1000, value: g.description }),
  ], "Save", { "aria-label": "Name and description" });
  onSubmit(edit, async (data) => {
    say(saved, "");
    const description = String(data.get("description") || "").trim();
    g = await api("PATCH", base, { json: { name: data.get("name"), description: description || null } });
    forgetGroupNames();
    showMeta();
    say(saved, "Saved.");
  });

  // Members: list, remove, add by id or from a search.
  const membersLine = problemLine();
  const membersDone = statusLine();
  const members = h("ul", { class: "plain", "aria-label": "Members" });
  const showMembers = async () => {
    const users = await api("GET", base + "/members");
    members.replaceChildren(...users.map((u) => {
      const remove = h("button", { type: "button", class: "danger small", "aria-label": "Remove " + u.email, text: "Remove" });
      onClick(remove, membersLine, async () => {
        await api("DELETE", base + "/members/" + encodeURIComponent(u.id));
        say(membersDone, "Removed " + u.email + ".");
        await showMembers();
      });
      return h("li", { "data-user-id": u.id }, h("span", { text: u.email }), " ", remove);
    }));
    if (!users.length) {
      members.append(h("li", { class: "muted", text: "No member yet." }));
    }
  };
  const add = async (userID, label) => {
    await api("PUT", base + "/members/" + encodeURIComponent(userID));
    say(membersDone, "Added " + label + ".");
    await showMembers();
  };
  const byID = form([field({ name: "user_id", label: "User id", required: true, hint: "The id shown on the users page." })], "Add member",
    { "aria-label": "Add a member by id", class: "stack narrow" });
  onSubmit(byID, async (data) => {
    await add(String(data.get("user_id")).trim(), String(data.get("user_id")).trim());
    byID.reset();
  });
  const search = userSearch("Add", (u) => add(u.id, u.email));

  // App grants: one row per app, Grant or Revoke.
  const appsLine = problemLine();
  const appsDone = statusLine();
  const apps = h("ul", { class: "plain", "aria-label": "App grants" });
  const showApps = async () => {
    const every = await api("GET", "/api/admin/apps");
    const granted = new Set(g.apps);
    apps.replaceChildren(...every.map((a) => {
      const has = granted.has(a.key);
      const b = h("button", { type: "button", class: has ? "danger small" : "small", "aria-label": (has ? "Revoke " : "Grant ") + a.key, text: has ? "Revoke" : "Grant" });
      onClick(b, appsLine, async () => {
        await api(has ? "DELETE" : "PUT", base + "/apps/" + encodeURIComponent(a.key));
        g = await api("GET", base);
        say(appsDone, (has ? "Revoked " : "Granted ") + a.key + ".");
        await showApps();
      });
      return h("li", { "data-app": a.key, "data-granted": has ? "true" : "false" },
        h("strong", { text: a.name }), " ", h("code", { text: a.key }), " ",
        h("span", { class: has ? "badge" : "badge muted-badge", text: has ? "granted" : "not granted" }),
        a.open_to_all ? h("span", { class: "muted small", text: " (open to all anyway)" }) : null, " ", b);
    }));
  };

  // Deletion, after a second click.
  const deleteLine = problemLine();
  const del = confirmButton("Delete group", "Click again to delete", deleteLine, async () => {
    await api("DELETE", base);
    forgetGroupNames();
    navigate("/accounts/admin/groups", { replace: true });
  }, { id: "delete-group" });

  main.append(
    h("p", {}, link("/accounts/admin/groups", "All groups")),
    meta, edit, saved,
    h("h2", { text: "Members" }), membersLine, membersDone, members,
    h("h3", { text: "Add a member" }), search, byID,
    h("h2", { text: "Apps granted to the group" }), appsLine, appsDone, apps,
    h("h2", { text: "Delete" }),
    h("p", { class: "muted", text: "Its memberships and grants go with it." }),
    h("div", { class: "actions" }, del), deleteLine,
  );
  await Promise.all([showMembers().catch((err) => showProblem(membersLine, err)), showApps().catch((err) => showProblem(appsLine, err))]);
}
