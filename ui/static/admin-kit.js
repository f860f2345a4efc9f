// What the administration pages share: their sub-navigation, paged
// lists (X-Total-Count), labelled selects and checkboxes, problem lines,
// delete buttons that ask for a second click (no dialog), and a user
// search. The pages stay clients of the API: what it refuses, they show.

import { api, ApiError, SignInRequired } from "./api.js";
import { h, heading, link } from "./dom.js";

const sections = [
  ["/admin/users", "Users"],
  ["/admin/groups", "Groups"],
  ["/admin/apps", "Apps"],
  ["/admin/settings", "Settings"],
  ["/admin/audit", "Audit log"],
];

/** The heading of an administration page and the links to the others. */
export function adminHeader(main, current, title) {
  main.classList.add("wide");
  main.append(
    heading(title),
    h("nav", { class: "subnav", "aria-label": "Administration" },
      h("ul", {}, sections.map(([path, text]) =>
        h("li", {}, link("/accounts" + path, text, { "aria-current": path === current ? "page" : null }))))),
  );
}

/** The sections of the administration, for its overview. */
export const adminSections = sections;

/** The message of an error: a 403 says the page is for admins only. */
export function problemText(err) {
  if (err instanceof ApiError && err.status === 403) {
    return "Admins only: " + err.message;
  }
  if (err instanceof ApiError && Array.isArray(err.detail)) {
    return err.detail.map((e) => String(e.msg || "Invalid value").replace(/^Value error, /, "")).join(" ");
  }
  return err instanceof Error ? err.message : String(err);
}

/** A line for errors of buttons (role=alert), hidden while empty. */
export function problemLine() {
  return h("div", { class: "form-message", role: "alert", hidden: true });
}

/** Shows err in a problem line (nothing for SignInRequired; null hides it). */
export function showProblem(line, err) {
  if (err instanceof SignInRequired) {
    return;
  }
  line.replaceChildren(...(err ? [h("p", { text: problemText(err) })] : []));
  line.hidden = !err;
}

/**
 * Runs fn when the button is clicked, the button disabled meanwhile;
 * an error goes to the problem line.
 */
export function onClick(button, line, fn) {
  button.addEventListener("click", () => run(button, line, fn));
  return button;
}

// run runs fn with button disabled meanwhile, its error on line.
async function run(button, line, fn) {
  button.disabled = true;
  showProblem(line, null);
  try {
    await fn();
  } catch (err) {
    showProblem(line, err);
  } finally {
    button.disabled = false;
  }
}

/**
 * A button that does something that cannot be undone: the first click
 * asks (the button says confirmText for 6 seconds), the second does it.
 */
export function confirmButton(text, confirmText, line, fn, props = {}) {
  const button = h("button", { type: "button", class: "danger", ...props, text });
  let armed = null;
  const disarm = () => {
    clearTimeout(armed);
    armed = null;
    button.textContent = text;
    button.removeAttribute("data-armed");
  };
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = confirmText;
      button.setAttribute("data-armed", "");
      armed = setTimeout(disarm, 6000);
      return;
    }
    disarm();
    await run(button, line, fn);
  });
  button.addEventListener("blur", () => armed && disarm());
  return button;
}

let nextID = 0;

/** A labelled select: choice({ name, label, options: [[value, text]], value }). */
export function choice({ name, label, options, value = "" }) {
  const id = "c-" + name + "-" + ++nextID;
  const select = h("select", { id, name }, options.map(([v, text]) => h("option", { value: v, text })));
  select.value = value;
  const wrap = h("div", { class: "field" }, h("label", { for: id, text: label }), select, h("div", { class: "field-error", hidden: true }));
  wrap.dataset.field = name;
  return wrap;
}

/** A labelled checkbox: checkbox({ name, label, checked }). */
export function checkbox({ name, label, checked = false }) {
  const id = "k-" + name + "-" + ++nextID;
  const input = h("input", { id, name, type: "checkbox", checked });
  const wrap = h("div", { class: "field check" }, input, h("label", { for: id, text: label }), h("div", { class: "field-error", hidden: true }));
  wrap.dataset.field = name;
  return wrap;
}

/** GETs one page of a list: { items, total } (total from X-Total-Count). */
export async function getPage(path, query) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    for (const one of [v].flat()) {
      if (one !== "" && one !== null && one !== undefined) {
        qs.append(k, String(one));
      }
    }
  }
  const { body, headers } = await api("GET", path + "?" + qs, { withHeaders: true });
  const total = Number.parseInt(headers.get("X-Total-Count") || "", 10);
  return { items: body, total: Number.isNaN(total) ? body.length : total };
}

/**
 * Previous / next buttons and "1–20 of 57"; go(skip) loads another page.
 * update(skip, count, total) sets them after each load.
 */
export function pager(go) {
  const info = h("p", { class: "muted pager-info", role: "status" });
  const prev = h("button", { type: "button", text: "Previous page" });
  const next = h("button", { type: "button", text: "Next page" });
  const el = h("div", { class: "pager" }, prev, info, next);
  let skip = 0;
  let limit = 20;
  prev.addEventListener("click", () => go(Math.max(0, skip - limit)));
  next.addEventListener("click", () => go(skip + limit));
  el.update = (s, l, count, total) => {
    skip = s;
    limit = l;
    info.textContent = total === 0 ? "None found." : `${count ? s + 1 : s}–${s + count} of ${total}`;
    prev.disabled = s <= 0;
    next.disabled = s + count >= total;
  };
  return el;
}

/** Keeps a page's filters in the address (replaceState: reload shows the same). */
export function keepQuery(query) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    for (const one of [v].flat()) {
      if (one !== "" && one !== null && one !== undefined && !(k === "skip" && one === 0)) {
        qs.append(k, String(one));
      }
    }
  }
  const s = qs.toString();
  history.replaceState(history.state, "", location.pathname + (s ? "?" + s : ""));
}

/** A non-negative integer from a query parameter, else 0. */
export function skipOf(params) {
  const n = Number.parseInt(params.get("skip") || "0", 10);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/**
 * A search for users by email: pick(user) runs when one of the results'
 * buttons (labelled actionText) is pressed.
 */
export function userSearch(actionText, pick) {
  const id = "us-" + ++nextID;
  const input = h("input", { id, type: "search", name: "user_q", autocomplete: "off" });
  const results = h("ul", { class: "plain", "aria-label": "Users found" });
  const line = problemLine();
  const find = h("button", { type: "submit", text: "Find" });
  const f = h("form", { class: "inline-form", role: "search" },
    h("div", { class: "field" }, h("label", { for: id, text: "Find a user by email" }), input), find);
  f.addEventListener("submit", async (event) => {
    event.preventDefault();
    showProblem(line, null);
    find.disabled = true;
    try {
      const { items, total } = await getPage("/api/admin/users", { q: input.value.trim(), limit: 10 });
      results.replaceChildren(...items.map((u) => {
        const b = h("button", { type: "button", "aria-label": actionText + " " + u.email, text: actionText });
        onClick(b, line, () => pick(u));
        return h("li", { "data-user-id": u.id }, h("span", { text: u.email }), " ", b);
      }));
      if (!items.length) {
        results.append(h("li", { class: "muted", text: "No user matches." }));
      } else if (total > items.length) {
        results.append(h("li", { class: "muted", text: `${total - items.length} more: narrow the search.` }));
      }
    } catch (err) {
      showProblem(line, err);
    } finally {
      find.disabled = false;
    }
  });
  return h("div", { class: "user-search" }, f, line, results);
}

const groupNames = new Map();

/** The name of a group by id (GET /api/admin/groups/{id}, kept for the page's life). */
export async function groupName(id) {
  if (!groupNames.has(id)) {
    groupNames.set(id, api("GET", "/api/admin/groups/" + encodeURIComponent(id)).then((g) => g.name, () => id));
  }
  return groupNames.get(id);
}

/** Forgets the group names kept (after a rename). */
export function forgetGroupNames() {
  groupNames.clear();
}
