import { ApiError } from "../api.js";
import { adminHeader, getPage, keepQuery, pager, problemLine, showProblem, skipOf } from "../admin-kit.js";
import { clearErrors, field, h, link, showError, when } from "../dom.js";

export const title = "Audit log";

const limit = 50;

// The events of docs/API.md, offered as suggestions (any name may be typed).
const events = [
  "register", "login.success", "login.failure", "login.locked", "refresh.reuse_detected", "logout", "logout.all",
  "session.revoked", "password.change", "user.role_change", "user.active_change", "user.email_verified_change",
  "email.verified", "password.reset", "password.reset_sent", "mail.failed", "app.create", "app.update", "app.delete",
  "group.create", "group.delete", "group.update", "group.member_add", "group.member_remove", "user.app_grant",
  "user.app_revoke", "group.app_grant", "group.app_revoke", "settings.change", "settings.ai_test",
];

// A time of the API (RFC 3339) as a datetime-local value, and back.
function toLocal(iso) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) {
    return "";
  }
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}
function fromLocal(value) {
  const d = new Date(value);
  return value && !Number.isNaN(d.getTime()) ? d.toISOString() : "";
}

// GET /api/admin/audit with its filters (event, repeated; actor_id,
// target_id; since, until) and paging, newest first. The filters live
// in the address, so a link can open a filtered log.
export async function render(main, { params }) {
  adminHeader(main, "/admin/audit", "Audit log");
  const query = {
    event: params.getAll("event"),
    actor_id: params.get("actor_id") || "",
    target_id: params.get("target_id") || "",
    since: params.get("since") || "",
    until: params.get("until") || "",
    skip: skipOf(params),
  };
  const eventField = field({ name: "event", label: "Events", value: query.event.join(", "), hint: "One or more, separated by commas; empty for all." });
  eventField.querySelector("input").setAttribute("list", "audit-events");
  const filters = h("form", { class: "filters audit-filters", role: "search", "aria-label": "Filter the audit log" },
    h("div", { class: "form-message", role: "alert", hidden: true }),
    eventField,
    h("datalist", { id: "audit-events" }, events.map((e) => h("option", { value: e }))),
    field({ name: "actor_id", label: "By user (id)", value: query.actor_id }),
    field({ name: "target_id", label: "Concerning user or group (id)", value: query.target_id }),
    field({ name: "since", label: "From", type: "datetime-local", value: toLocal(query.since) }),
    field({ name: "until", label: "Before", type: "datetime-local", value: toLocal(query.until) }),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: "Filter" }),
      link("/accounts/admin/audit", "Clear filters", { class: "button-link" })));
  const line = problemLine();
  const body = h("tbody");
  const table = h("div", { class: "table-wrap" }, h("table", { class: "audit" },
    h("caption", { class: "muted", text: "Newest first" }),
    h("thead", {}, h("tr", {}, ["When", "Event", "By", "Concerning", "Address", "Details"].map((t) => h("th", { scope: "col", text: t })))),
    body));
  const pages = pager((skip) => load(skip));
  main.append(filters, line, table, pages);

  const who = (id, param) => id ? link("/accounts/admin/audit?" + param + "=" + encodeURIComponent(id), id, { class: "id" }) : "—";
  async function load(skip) {
    query.skip = skip;
    keepQuery(query);
    showProblem(line, null);
    table.setAttribute("aria-busy", "true");
    try {
      const { items, total } = await getPage("/api/admin/audit", { ...query, limit });
      body.replaceChildren(...items.map((e) => h("tr", { "data-event": e.event, "data-id": e.id },
        h("td", { text: when(e.at) }),
        h("td", {}, h("code", { text: e.event })),
        h("td", {}, who(e.actor_id, "actor_id")),
        h("td", {}, who(e.target_id, "target_id")),
        h("td", { text: e.ip || "—" }),
        h("td", {}, h("code", { class: "details", text: Object.keys(e.details || {}).length ? JSON.stringify(e.details) : "" })))));
      pages.update(skip, limit, items.length, total);
    } catch (err) {
      body.replaceChildren();
      // A 422 names the parameter: shown next to its field.
      if (err instanceof ApiError && Array.isArray(err.detail)) {
        showError(filters, err);
      } else {
        showProblem(line, err);
      }
    } finally {
      table.removeAttribute("aria-busy");
    }
  }
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors(filters);
    const data = new FormData(filters);
    query.event = String(data.get("event") || "").split(",").map((s) => s.trim()).filter(Boolean);
    query.actor_id = String(data.get("actor_id") || "").trim();
    query.target_id = String(data.get("target_id") || "").trim();
    query.since = fromLocal(String(data.get("since") || ""));
    query.until = fromLocal(String(data.get("until") || ""));
    load(0);
  });
  await load(query.skip);
}
