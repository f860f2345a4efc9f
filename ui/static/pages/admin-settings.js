import { api } from "../api.js";
import { adminHeader, checkbox, choice, onClick, problemLine, showProblem } from "../admin-kit.js";
import { field, form, h, onSubmit, say, statusLine, when } from "../dom.js";

export const title = "Settings";

// The AI provider (the key only ever as the API masks it; a new one is
// typed in a password field and never shown), its connection test, the
// documents' upload limit, and the mail queue at a glance.
export async function render(main) {
  adminHeader(main, "/admin/settings", "Settings");
  const ai = h("section", { "aria-labelledby": "ai-h" }, h("h2", { id: "ai-h", text: "AI provider" }));
  const docs = h("section", { "aria-labelledby": "docs-h" }, h("h2", { id: "docs-h", text: "Documents" }));
  const mail = h("section", { "aria-labelledby": "mail-h" }, h("h2", { id: "mail-h", text: "Mail" }));
  main.append(ai, docs, mail);
  await Promise.all([aiSettings(ai), documentLimits(docs), mailStatus(mail)]);
}

async function aiSettings(section) {
  let s;
  try {
    s = await api("GET", "/api/settings/ai");
  } catch (err) {
    const line = problemLine();
    section.append(line);
    showProblem(line, err);
    return;
  }
  const key = h("p", { id: "ai-key" });
  const updated = h("p", { class: "muted small" });
  const show = () => {
    key.replaceChildren("API key: ", s.api_key_set ? h("code", { text: s.api_key }) : h("span", { class: "muted", text: "none" }));
    updated.textContent = s.updated_at ? "Last changed " + when(s.updated_at) : "Never changed: the defaults apply.";
  };
  show();
  const saved = statusLine();
  const f = form([
    choice({ name: "provider", label: "Provider", value: s.provider, options: [["openai", "OpenAI (or compatible)"], ["anthropic", "Anthropic"]] }),
    field({ name: "model", label: "Model", required: true, maxlength: 200, value: s.model }),
    field({ name: "base_url", label: "Base URL (optional)", type: "url", maxlength: 2048, value: s.base_url,
      hint: "Empty for the provider's own API." }),
    field({ name: "api_key", label: "New API key", type: "password", autocomplete: "off", maxlength: 1000,
      hint: "Leave empty to keep the stored key." }),
    checkbox({ name: "clear_key", label: "Remove the stored key" }),
    field({ name: "temperature", label: "Temperature", type: "number", value: s.temperature, hint: "0 to 2." }),
    field({ name: "max_tokens", label: "Most tokens per answer", type: "number", value: s.max_tokens, hint: "1 to 200000." }),
  ], "Save", { "aria-label": "AI provider" });
  f.elements.temperature.step = "0.1";
  f.elements.max_tokens.step = "1";
  onSubmit(f, async (data) => {
    say(saved, "");
    const body = {
      provider: data.get("provider"),
      model: data.get("model"),
      base_url: String(data.get("base_url") || "").trim() || null,
      temperature: number(data.get("temperature")),
      max_tokens: number(data.get("max_tokens")),
    };
    const typed = String(data.get("api_key") || "").trim();
    if (f.elements.clear_key.checked) {
      body.api_key = null;
    } else if (typed) {
      body.api_key = typed;
    }
    s = await api("PATCH", "/api/settings/ai", { json: body });
    // The typed key is gone from the page: only the API's mask remains.
    f.elements.api_key.value = "";
    f.elements.clear_key.checked = false;
    show();
    say(saved, "Saved.");
  });

  // The connection test uses the saved settings (the stored key is only
  // ever sent to the stored provider).
  const testLine = problemLine();
  const result = h("p", { id: "ai-test-result", role: "status", hidden: true });
  const test = h("button", { type: "button", id: "ai-test", text: "Test connection" });
  onClick(test, testLine, async () => {
    result.hidden = true;
    const r = await api("POST", "/api/settings/ai/test");
    result.className = r.ok ? "notice" : "form-message";
    result.textContent = r.message + (r.status_code !== null ? " (" + r.latency_ms + " ms)" : "");
    result.hidden = false;
  });
  section.append(key, updated, f, saved,
    h("h3", { text: "Connection test" }),
    h("p", { class: "muted", text: "Sends one short request to the provider with the saved settings." }),
    h("div", { class: "actions" }, test), testLine, result);
}

// number is a number field's value, undefined (unchanged) when empty.
function number(value) {
  const s = String(value ?? "").trim();
  return s === "" ? undefined : Number(s);
}

async function documentLimits(section) {
  let limits;
  try {
    limits = await api("GET", "/api/settings/documents/limits");
  } catch (err) {
    const line = problemLine();
    section.append(line);
    showProblem(line, err);
    return;
  }
  const saved = statusLine();
  const f = form([
    field({ name: "max_pdf_size_mb", label: "Largest upload (MiB)", type: "number", required: true, value: limits.max_pdf_size_mb, hint: "1 to 1024." }),
  ], "Save", { "aria-label": "Document limits" });
  onSubmit(f, async (data) => {
    say(saved, "");
    limits = await api("PATCH", "/api/settings/documents/limits", { json: { max_pdf_size_mb: Number(data.get("max_pdf_size_mb")) } });
    f.elements.max_pdf_size_mb.value = limits.max_pdf_size_mb;
    say(saved, "Saved.");
  });
  section.append(f, saved);
}

async function mailStatus(section) {
  const line = problemLine();
  const body = h("div", { id: "mail-status" });
  const refresh = h("button", { type: "button", text: "Refresh" });
  const load = async () => {
    const m = await api("GET", "/api/admin/mail");
    const rows = [
      ["Sending", m.enabled ? "configured" : "not configured on this instance"],
      ["Waiting", String(m.pending) + (m.oldest_pending_at ? ", the oldest since " + when(m.oldest_pending_at) : "")],
      ["Sent in the last hour", String(m.sent_last_hour)],
      ["Given up in the last day", String(m.failed_last_day)],
    ];
    if (m.last_failure) {
      rows.push(["Last given up", when(m.last_failure.at) + ": " + m.last_failure.kind + ", " + m.last_failure.reason]);
    }
    body.replaceChildren(h("dl", {}, rows.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })])));
  };
  onClick(refresh, line, load);
  section.append(line, body, h("div", { class: "actions" }, refresh));
  try {
    await load();
  } catch (err) {
    showProblem(line, err);
  }
}
