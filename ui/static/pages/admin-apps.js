import { api } from "../api.js";
import { adminHeader, checkbox, confirmButton, onClick, problemLine, showProblem } from "../admin-kit.js";
import { field, fieldError, form, h, onSubmit, say, statusLine } from "../dom.js";

export const title = "Apps";

// The registry of apps: open one to all or close it, edit, delete (409
// when the running configuration requires it), and add one. PUT
// /api/admin/apps/{key} replaces the whole app, so every change sends
// name, description and open_to_all.
export async function render(main) {
  adminHeader(main, "/admin/apps", "Apps");
  main.append(h("p", { class: "muted", text: "A user may use an app that is open to all, granted to them, or granted to one of their groups. Administrators may use every app." }));
  const line = problemLine();
  const done = statusLine();
  const list = h("ul", { class: "cards", "aria-label": "Apps" });
  let apps = [];
  const path = (key) => "/api/admin/apps/" + encodeURIComponent(key);
  const put = (a) => api("PUT", path(a.key), { json: { name: a.name, description: a.description, open_to_all: a.open_to_all } });

  async function load() {
    apps = await api("GET", "/api/admin/apps");
    list.replaceChildren(...apps.map(card));
    if (!apps.length) {
      list.append(h("li", { class: "muted", text: "No app." }));
    }
  }

  function card(a) {
    const toggle = h("button", { type: "button", class: "primary", "aria-label": (a.open_to_all ? "Close " : "Open ") + a.key,
      text: a.open_to_all ? "Close to all" : "Open to all" });
    onClick(toggle, line, async () => {
      const changed = await put({ ...a, open_to_all: !a.open_to_all });
      say(done, changed.name + (changed.open_to_all ? " is open to all." : " is closed: only its grants may use it."));
      await load();
    });
    const saved = statusLine();
    const edit = form([
      field({ name: "name", label: "Name", required: true, maxlength: 100, value: a.name }),
      field({ name: "description", label: "Description", multiline: true, maxlength: 1000, value: a.description }),
      checkbox({ name: "open_to_all", label: "Open to all signed-in users", checked: a.open_to_all }),
    ], "Save", { "aria-label": "Edit " + a.key });
    onSubmit(edit, async (data) => {
      const description = String(data.get("description") || "").trim();
      await put({ key: a.key, name: data.get("name"), description: description || null, open_to_all: edit.elements.open_to_all.checked });
      say(done, "Saved " + a.key + ".");
      await load();
    });
    const del = confirmButton("Delete", "Click again to delete " + a.key, line, async () => {
      await api("DELETE", path(a.key));
      say(done, "Deleted " + a.key + ".");
      await load();
    }, { "aria-label": "Delete " + a.key });
    return h("li", { class: "card", "data-app": a.key, "data-open": a.open_to_all ? "true" : "false" },
      h("p", { class: "device" }, h("strong", { text: a.name }), h("code", { text: a.key }),
        a.open_to_all ? h("span", { class: "badge", text: "open to all" }) : h("span", { class: "badge warn", text: "closed" })),
      a.description ? h("p", { class: "muted bio", text: a.description }) : null,
      h("div", { class: "actions" }, toggle, del),
      h("details", { class: "manage" }, h("summary", { text: "Edit" }), edit, saved));
  }

  const create = form([
    field({ name: "key", label: "Key", required: true, maxlength: 63, hint: "Lower-case letters, digits, - and _, starting with a letter; fixed once made." }),
    field({ name: "name", label: "Name", required: true, maxlength: 100 }),
    field({ name: "description", label: "Description (optional)", multiline: true, maxlength: 1000 }),
    checkbox({ name: "open_to_all", label: "Open to all signed-in users" }),
  ], "Add app", { "aria-label": "Add an app" });
  onSubmit(create, async (data) => {
    const key = String(data.get("key") || "").trim();
    // PUT would replace an app of that key: refuse here rather than
    // overwrite it.
    if (apps.some((a) => a.key === key)) {
      fieldError(create, "key", "An app with this key exists; edit it above.");
      return;
    }
    const description = String(data.get("description") || "").trim();
    await put({ key, name: data.get("name"), description: description || null, open_to_all: create.elements.open_to_all.checked });
    create.reset();
    say(done, "Added " + key + ".");
    await load();
  });

  main.append(line, done, list, h("h2", { text: "Add an app" }), create);
  try {
    await load();
  } catch (err) {
    showProblem(line, err);
  }
}
