// The UI's entry point: the router (location.pathname below /accounts
// picks a page module from routes.js), the navigation, and the way back
// to sign-in when the session is gone.

import { api, currentUser, SignInRequired, whenSignInRequired } from "./api.js";
import { h, loadError } from "./dom.js";
import { match, nav } from "./routes.js";

const base = "/accounts";
const main = document.getElementById("main");
const navEl = document.getElementById("nav");
let generation = 0;

/** Goes to a path of the UI (e.g. "/accounts/profile") without reloading. */
export function navigate(path, { replace = false } = {}) {
  if (replace) {
    history.replaceState(null, "", path);
  } else {
    history.pushState(null, "", path);
  }
  render();
}

/** A path and query within the UI that is safe to return to after sign-in, or "". */
export function safeNext(next) {
  if (!next) {
    return "";
  }
  try {
    const u = new URL(next, location.origin);
    if (u.origin === location.origin && u.pathname.startsWith(base + "/") && !u.pathname.startsWith(base + "/sign-in")) {
      return u.pathname + u.search;
    }
  } catch {
    // not a URL: no way back
  }
  return "";
}

/** Sends the user to sign-in, to come back here afterwards. */
function toSignIn() {
  const here = safeNext(location.pathname + location.search);
  navigate(base + "/sign-in" + (here ? "?next=" + encodeURIComponent(here) : ""), { replace: true });
}
whenSignInRequired(toSignIn);

async function signOut() {
  try {
    await api("POST", "/api/auth/logout", { session: false });
  } finally {
    navigate(base + "/sign-in");
  }
}

function renderNav(user, path) {
  const links = [];
  if (user) {
    for (const item of nav) {
      if (item.admin && user.role !== "admin") {
        continue;
      }
      const href = base + item.path;
      const current = path === item.path || path.startsWith(item.path + "/") || (path === "/" && item.path === "/profile");
      links.push(h("li", {}, h("a", { href, "aria-current": current ? "page" : null, text: item.text })));
    }
    links.push(h("li", {}, h("button", { type: "button", class: "link", onclick: signOut, text: "Sign out" })));
  } else {
    for (const [p, text] of [["/sign-in", "Sign in"], ["/register", "Register"]]) {
      links.push(h("li", {}, h("a", { href: base + p, "aria-current": path === p ? "page" : null, text })));
    }
  }
  navEl.replaceChildren(h("ul", {}, links));
}

/** Renders the page of the current location. */
export async function render() {
  const mine = ++generation;
  const path = location.pathname.slice(base.length) || "/";
  const route = match(path);
  let user = null;
  try {
    if (route.access !== "public") {
      user = await currentUser();
    }
    const page = await import("./pages/" + route.page + ".js");
    if (mine !== generation) {
      return;
    }
    renderNav(user, path);
    document.title = page.title + " · Accounts";
    const view = h("div", { class: "page" });
    main.replaceChildren(view);
    if (route.access === "admin" && user.role !== "admin") {
      view.append(h("h1", { tabindex: "-1", text: "Admins only" }), h("p", { text: "Only administrators may open this page." }));
    } else {
      const ctx = { user, navigate, path, params: new URLSearchParams(location.search), safeNext, stale: () => mine !== generation };
      await page.render(view, ctx);
    }
  } catch (err) {
    if (err instanceof SignInRequired || mine !== generation) {
      return;
    }
    renderNav(user, path);
    main.replaceChildren(h("div", { class: "page" }, h("h1", { tabindex: "-1", text: "Something went wrong" }), loadError(err)));
  }
  if (mine === generation) {
    const h1 = main.querySelector("h1");
    if (h1 && document.activeElement !== h1 && !main.contains(document.activeElement)) {
      h1.focus();
    }
  }
}

// Links within the UI change the page without a reload; others (and
// clicks with a modifier, for a new tab) are the browser's.
document.addEventListener("click", (event) => {
  const a = event.target instanceof Element ? event.target.closest("a[href]") : null;
  if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey || a.target) {
    return;
  }
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || (url.pathname !== base && !url.pathname.startsWith(base + "/"))) {
    return;
  }
  if (url.pathname === location.pathname && url.hash) {
    return;
  }
  event.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", render);
render();
