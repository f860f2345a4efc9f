// Building the DOM: elements are made with createElement, text is set
// with textContent or appended as text nodes. Nothing is ever parsed as
// HTML, so nothing a user typed can become markup.

import { ApiError, SignInRequired } from "./api.js";

/**
 * h("p", { class: "note", text: "Hello" }, child, "text", ...): an element.
 * Props: class, text (textContent), on<event> (listener), true for a bare
 * attribute; null, undefined and false are left out. Children: nodes or
 * strings (appended as text).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) {
      continue;
    }
    if (key === "class") {
      el.className = value;
    } else if (key === "text") {
      el.textContent = value;
    } else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      el.append(child instanceof Node ? child : String(child));
    }
  }
  return el;
}

/** A link within the UI (app.js routes its clicks without reloading). */
export function link(path, text, props = {}) {
  return h("a", { href: path, ...props }, text);
}

/** The page heading; the router focuses it after each navigation. */
export function heading(text) {
  return h("h1", { tabindex: "-1", text });
}

/** A short date and time in the reader's locale. */
export function when(iso) {
  if (!iso) {
    return "—";
  }
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

let nextID = 0;

/**
 * A labelled input: field({ name, label, type, value, autocomplete, required, hint, multiline }).
 * Its error line (filled by showError for a 422 on that field) is tied
 * to the input with aria-describedby.
 */
export function field({ name, label, type = "text", value, autocomplete, required, hint, multiline, maxlength }) {
  const id = "f-" + name + "-" + ++nextID;
  const described = [];
  let hintEl = null;
  if (hint) {
    hintEl = h("p", { class: "hint", id: id + "-hint", text: hint });
    described.push(hintEl.id);
  }
  const error = h("div", { class: "field-error", id: id + "-error", hidden: true });
  described.push(error.id);
  const props = { id, name, autocomplete, required, maxlength, "aria-describedby": described.join(" ") };
  const input = multiline ? h("textarea", { ...props, rows: 5 }) : h("input", { ...props, type });
  input.value = value ?? "";
  const wrap = h("div", { class: "field" }, h("label", { for: id, text: label }), hintEl, input, error);
  wrap.dataset.field = name;
  return wrap;
}

/** The new password and its confirmation, with the policy as a hint. */
export function newPasswordFields() {
  return [
    field({
      name: "new_password",
      label: "New password",
      type: "password",
      autocomplete: "new-password",
      required: true,
      hint: "8 to 128 characters, with an uppercase letter and a character that is not a letter or digit.",
    }),
    field({ name: "confirm", label: "New password again", type: "password", autocomplete: "new-password", required: true }),
  ];
}

/** Whether the two new passwords of a form agree; if not, it says so at the second. */
export function passwordsAgree(form, data) {
  if (data.get("new_password") === data.get("confirm")) {
    return true;
  }
  fieldError(form, "confirm", "The two passwords differ.");
  return false;
}

/** The message line of a form: errors (role=alert) or news (role=status). */
export function messageLine() {
  return h("div", { class: "form-message", role: "alert", hidden: true });
}

/** A status line for good news, announced politely. */
export function statusLine() {
  return h("p", { class: "notice", role: "status", hidden: true });
}

/** Shows text in a status line (empty hides it). */
export function say(line, text) {
  line.textContent = text || "";
  line.hidden = !text;
}

/** Removes every error shown in a form. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) {
    el.replaceChildren();
    el.hidden = true;
  }
  for (const el of form.querySelectorAll("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
  }
  for (const el of form.querySelectorAll(".form-message")) {
    el.replaceChildren();
    el.hidden = true;
  }
}

// messageOf makes a 422 entry's msg readable: pydantic's "Value error, "
// prefix is for programs.
function messageOf(entry) {
  const msg = String(entry && entry.msg ? entry.msg : "Invalid value");
  return msg.startsWith("Value error, ") ? msg.slice("Value error, ".length) : msg;
}

/** Shows one error next to a field of the form. */
export function fieldError(form, name, text) {
  const wrap = form.querySelector('[data-field="' + CSS.escape(name) + '"]');
  if (!wrap) {
    return false;
  }
  const line = wrap.querySelector(".field-error");
  line.append(h("span", { text }));
  line.hidden = false;
  wrap.querySelector("input, textarea, select").setAttribute("aria-invalid", "true");
  return true;
}

/**
 * Shows an error of the API in a form: each entry of a 422 list next to
 * its field (loc ["body", name]), the rest, and any other detail, in the
 * form's message line. SignInRequired is not shown: the user is on the
 * way to the sign-in page.
 */
export function showError(form, err) {
  if (err instanceof SignInRequired) {
    return;
  }
  const rest = [];
  if (err instanceof ApiError && Array.isArray(err.detail)) {
    for (const entry of err.detail) {
      const loc = Array.isArray(entry.loc) ? entry.loc : [];
      const name = loc.length > 1 ? String(loc[loc.length - 1]) : "";
      if (!name || !fieldError(form, name, messageOf(entry))) {
        rest.push(messageOf(entry));
      }
    }
  } else {
    rest.push(err instanceof ApiError ? err.message : "Something went wrong: " + err);
  }
  const line = form.querySelector(".form-message");
  if (line && rest.length) {
    line.replaceChildren(...rest.map((text) => h("p", { text })));
    line.hidden = false;
  }
  const first = form.querySelector("[aria-invalid]");
  if (first) {
    first.focus();
  }
}

/**
 * Runs fn(FormData) when the form is submitted, with the submit button
 * disabled meanwhile and errors shown in the form.
 */
export function onSubmit(form, fn) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const button = form.querySelector('button[type="submit"]');
    if (button) {
      button.disabled = true;
    }
    form.setAttribute("aria-busy", "true");
    try {
      await fn(new FormData(form));
    } catch (err) {
      showError(form, err);
    } finally {
      if (button) {
        button.disabled = false;
      }
      form.removeAttribute("aria-busy");
    }
  });
}

/** A form: h("form") with a message line first and a submit button last. */
export function form(fields, submitText, props = {}) {
  return h(
    "form",
    { class: "stack", ...props },
    messageLine(),
    fields,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: submitText })),
  );
}

/** An error of a page's first load, shown in place of its content. */
export function loadError(err) {
  if (err instanceof SignInRequired) {
    return h("p", { class: "muted", text: "Signing in again…" });
  }
  return h("div", { class: "form-message", role: "alert" }, h("p", { text: err instanceof ApiError ? err.message : String(err) }));
}

/** Reads the token of a mail's link from the fragment (#token=...) and removes it from the address bar. */
export function takeFragmentToken() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (location.hash) {
    history.replaceState(history.state, "", location.pathname + location.search);
  }
  return token || "";
}
