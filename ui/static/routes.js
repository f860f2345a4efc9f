// The pages, by path below /accounts: the module in pages/ that renders
// it and who may see it ("public": anyone, "user": signed in, "admin").
// A page is one module exporting title and render(main, ctx); a new page
// is one line here and one file there. A path that is not listed falls
// back to the longest listed prefix marked "prefix" (so /admin/groups/<id>
// reaches the groups page, which reads the id from ctx.path, and any other
// /admin/... the administration's overview, to admins only).

export const routes = {
  "/": { page: "profile", access: "user" },
  "/sign-in": { page: "sign-in", access: "public" },
  "/register": { page: "register", access: "public" },
  "/verify-email": { page: "verify-email", access: "public" },
  "/resend-verification": { page: "resend-verification", access: "public" },
  "/forgot-password": { page: "forgot-password", access: "public" },
  "/reset-password": { page: "reset-password", access: "public" },
  "/profile": { page: "profile", access: "user" },
  "/sessions": { page: "sessions", access: "user" },
  "/password": { page: "password", access: "user" },
  "/apps": { page: "apps", access: "user" },
  "/groups": { page: "groups", access: "user" },
  "/admin": { page: "admin", access: "admin", prefix: true },
  "/admin/users": { page: "admin-users", access: "admin" },
  "/admin/groups": { page: "admin-groups", access: "admin", prefix: true },
  "/admin/apps": { page: "admin-apps", access: "admin" },
  "/admin/settings": { page: "admin-settings", access: "admin" },
  "/admin/audit": { page: "admin-audit", access: "admin" },
};

/** The links of the navigation for a signed-in user; admin: only for admins. */
export const nav = [
  { path: "/profile", text: "Profile" },
  { path: "/sessions", text: "Sessions" },
  { path: "/password", text: "Password" },
  { path: "/apps", text: "Apps" },
  { path: "/groups", text: "Groups" },
  { path: "/admin", text: "Admin", admin: true },
];

/** The route of a path below /accounts, or the not-found page. */
export function match(path) {
  const clean = path.length > 1 ? path.replace(/\/+$/, "") : path;
  if (Object.hasOwn(routes, clean)) {
    return routes[clean];
  }
  let best = null;
  for (const [prefix, route] of Object.entries(routes)) {
    if (route.prefix && clean.startsWith(prefix + "/") && (!best || prefix.length > best[0].length)) {
      best = [prefix, route];
    }
  }
  return best ? best[1] : { page: "not-found", access: "public" };
}
