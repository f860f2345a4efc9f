// Package accounts is the account domain of the gateway: users, profiles,
// passwords and tokens, and the plain net/http handlers of the JSON API.
// It knows nothing of Caddy; the caddymodule package wires it in.
//
// The files are named by what they do: register.go, login.go,
// session_routes.go (refresh, logout, the caller's sessions), users.go,
// profile.go, password_change.go, admin.go, audit.go, apps.go, groups.go
// and jwks.go hold the routes of router.go's table; authenticate.go is
// the one check of every signed-in request, with cache.go and notify.go
// keeping it off the database; sessions.go, tokens.go, keys.go, passwords.go,
// legacyhash.go, ratelimit.go, email.go and cookies.go are the rules
// beneath them. The FastAPI wire format is package fastapi; the feature
// services' settings, whose routes router.go serves, are package settings.
//
// # Sessions
//
// Sessions: one sign-in (login) of one user on one device, with its
// refresh tokens, in the manner of supabase/auth (GoTrue), but storing
// only SHA-256 hashes of the tokens.
//
// # Sessions: Refresh-token rotation
//
// Login creates a session and its first refresh token (256 random bits,
// base64url). POST /api/auth/refresh exchanges a refresh token for a new
// access token and a new refresh token, and retires the one presented.
// Each exchange runs in one transaction that locks the session row
// (SELECT ... FOR UPDATE), so any number of gateway instances sharing the
// database see one order of exchanges. The rules, in order:
//
//   - unknown token, revoked session, idle session (no login or refresh
//     for SessionConfig.IdleTimeout) or old session (created more than
//     SessionConfig.MaxLifetime ago): 401 "Invalid refresh token";
//   - an active (not yet retired) token: it is retired together with any
//     other active token of the session, and its successor is the
//     session's one active token;
//   - a token retired less than SessionConfig.RefreshReuseGrace ago (concurrent
//     tabs or instances that refreshed with the same token at once): it
//     gets a successor too, which joins the session's active tokens
//     without retiring them. Every response of such a race thus carries
//     a token that works, whatever order the responses (and their
//     Set-Cookie headers) arrive in; the next ordinary exchange of any of
//     them retires them all. (GoTrue answers the race with the current
//     token itself; with only hashes stored there is no token to give
//     back, so a sibling is minted instead. The immediate parent alone
//     would not do: the third of three racing tabs would find its token
//     two generations old.)
//   - any other retired token is a reuse: the token was copied and
//     someone else exchanged it first. The whole session is revoked, its
//     newest tokens included, and the event is audited
//     (refresh.reuse_detected).
//
// # Sessions: Access tokens of a session
//
// Every access token issued at login or refresh carries the session id as
// its "sid" claim, and revoking the session (logout, DELETE of the
// session, password change, reuse detection, logout-all) refuses them on
// the next request, on every instance. The check costs no query on the
// request path: the user's cached state (cache.go) holds the ids of
// the user's sessions revoked recently enough that one of their tokens
// could still be unexpired, read with the user in the same single query,
// and revoking a session fires the user's change notification (migration
// 0003), which drops that cached state everywhere. Tokens without a sid
// (the old backend's) are refused only by logout-all's
// users.tokens_valid_after, or when they expire.
//
// # Cookies
//
// Cookie sessions for browsers, beside the Bearer header for every other
// client (API.md's contract, unchanged).
//
// Login sets two cookies, besides its JSON body:
//
//   - the access cookie (SessionConfig.AccessCookieName, default
//     "access_token"): a short-lived access token (AccessCookieLifetime,
//     default 15m) of the new session; Path=/, HttpOnly, Secure,
//     SameSite=Lax;
//   - the refresh cookie (RefreshCookieName, default "refresh_token"):
//     the session's refresh token; Path=/api/auth (sent to refresh and
//     logout only, never to the document service), HttpOnly, Secure,
//     SameSite=Strict; it lives as long as the session can.
//
// POST /api/auth/refresh with the refresh cookie sets both anew; logout,
// logout-all and a refused refresh clear both. A cross-origin browser
// request to login gets its JSON body but no cookies, so a foreign page
// cannot sign a visitor in to an account of its choosing.
//
// Authenticate takes the Bearer header when there is one, else the
// access cookie. A request that a cookie authenticates (or that uses the
// refresh cookie: refresh, logout) must pass the standard library's
// cross-origin check when its method is unsafe (anything but GET, HEAD,
// OPTIONS): browsers say where a request comes from (Sec-Fetch-Site, or
// Origin for older ones), and anything but a same-origin request, or a
// request from SessionConfig.TrustedOrigins, is refused with 403
// {"detail": "Cross-origin request refused"}. Requests without either
// header are not from a browser and pass. Bearer requests are never
// checked: a foreign page cannot make a browser send a Bearer header.
//
// # Administration
//
// Admin: the routes under /api/admin, for role admin only (the role as
// stored now, not as the token says): listing users, and changing a
// user's role and active state.
//
// # Administration: The last active admin
//
// A change that would leave no active admin is refused with 409. The check
// and the update run in one transaction that first locks every active
// admin row (SELECT ... FOR UPDATE, in id order so that two such
// transactions cannot deadlock): two concurrent requests that each remove
// one of the last two admins are serialized, and the second sees that
// its target is the only active admin left.
//
// # Profiles
//
// Profile: GET and PUT /api/profile, the signed-in user's own profile.
//
// # Profiles: Field rules
//
// Every field is optional text; null clears it. Lengths count characters
// (Unicode code points), as pydantic does. Errors are pydantic's shapes,
// one entry per failing field, in the order of profileFields.
//
//	full_name   at most 200 characters
//	phone       at most 32 characters, phone-like (see checkPhone)
//	job_title   at most 200 characters
//	department  at most 200 characters
//	bio         at most 2000 characters
//	avatar_url  at most 2048 characters, an absolute http(s) URL with a
//	            host (see checkAvatarURL)
//
// Text is stored as given, "" included (FastAPI stores it too), except
// where a format rule refuses it: "" is not a phone number (fewer than 5
// digits) nor a URL (pydantic's HttpUrl refuses it as "input is empty");
// null is how a client clears those. Text holding a NUL character is
// refused (value_error): PostgreSQL cannot store it, and the old backend
// answered it with a 500.
//
// # Apps, groups and grants
//
// The app registry (apps.go) lists the platform's feature services; a
// user may use an app when it is open to all, granted to the user, or
// granted to one of the user's groups (groups.go); admins may use every
// app. Memberships and grants are rows of link tables; adding one that
// exists or removing one that does not changes nothing (setLink), so
// concurrent requests for one pair never fail. The triggers of migration
// 0007 announce every change on the user channel: a membership or a
// direct grant names its user, a group's grant each member, and a change
// to an app or a group the empty payload, which drops every cached user.
//
// # Password hashes of the old backend
//
// Legacy bcrypt hashes: while the database holds password hashes of the
// old backend (bcrypt, upgraded to argon2id at each user's next login),
// a failed login must cost as much as a wrong password on the slowest of
// them, or the time of a failed login tells which emails have an account
// (Hasher, passwords.go). The service reads the largest bcrypt cost
// stored at the first login, after each upgrade of a hash, and again at
// most a minute later while logins come in (changes made elsewhere:
// another instance, a password change, an import); once no bcrypt hash
// is left, failed logins cost one argon2id verification again.
package accounts
