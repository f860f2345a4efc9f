package accounts

import (
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/edge"
	"github.com/caddyaccounts/gateway/fastapi"
)

// apiFunc is a handler that returns its error instead of writing it.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

// authedFunc is a handler for an authenticated caller.
type authedFunc func(w http.ResponseWriter, r *http.Request, p *Principal) error

// Handler returns the JSON API as an http.Handler that serves the paths
// under /api that the accounts system owns, and /.well-known/jwks.json.
// Any other path gets FastAPI's 404 and a wrong method its 405, as JSON.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	// Every /api/auth/* route but the JWKS is behind the per-address rate
	// limit.
	handle := func(pattern string, f apiFunc) { mux.Handle(pattern, s.serve(s.limitAuthRoute(pattern, f))) }
	authed := func(pattern string, f authedFunc) { handle(pattern, s.withPrincipal("", f)) }

	handle("GET /api/health", s.handleHealth)
	handle("GET /api/openapi.json", s.handleOpenAPI)
	handle("GET /api/auth/jwks.json", s.handleJWKS)
	handle("GET /.well-known/jwks.json", s.handleJWKS)

	// Accounts and sessions.
	handle("POST /api/auth/register", s.handleRegister)
	handle("POST /api/auth/login", s.handleLogin)
	handle("POST /api/auth/refresh", s.handleRefresh)
	handle("POST /api/auth/logout", s.handleLogout)
	authed("POST /api/auth/logout-all", s.handleLogoutAll)

	// The caller.
	authed("GET /api/users/me", s.handleMe)
	authed("GET /api/users/me/sessions", s.handleListSessions)
	authed("DELETE /api/users/me/sessions/{session_id}", s.handleRevokeSession)
	authed("POST /api/users/me/password", s.handleChangePassword)
	authed("GET /api/profile", s.handleGetProfile)
	authed("PUT /api/profile", s.handlePutProfile)

	// Administration.
	handle("GET /api/admin/users", s.withPrincipal(RoleAdmin, s.handleListUsers))
	handle("PATCH /api/admin/users/{id}", s.withPrincipal(RoleAdmin, s.handlePatchUser))
	handle("GET /api/admin/audit", s.withPrincipal(RoleAdmin, s.handleListAuditEvents))

	// Email verification and password reset: password_reset.go.
	handle("POST /api/auth/verify-email", s.handleVerifyEmail)
	handle("POST /api/auth/verify-email/resend", s.handleResendVerification)
	handle("POST /api/auth/password-reset", s.handleRequestReset)
	handle("POST /api/auth/password-reset/confirm", s.handleConfirmReset)
	handle("POST /api/admin/users/{id}/password-reset", s.withPrincipal(RoleAdmin, s.handleAdminReset))
	handle("GET /api/admin/mail", s.withPrincipal(RoleAdmin, s.handleMailStatus))

	// Apps, groups and grants.
	authed("GET /api/apps", s.handleMyApps)
	authed("GET /api/users/me/groups", s.handleMyGroups)
	handle("GET /api/admin/apps", s.withPrincipal(RoleAdmin, s.handleListApps))
	handle("PUT /api/admin/apps/{key}", s.withPrincipal(RoleAdmin, s.handlePutApp))
	handle("DELETE /api/admin/apps/{key}", s.withPrincipal(RoleAdmin, s.handleDeleteApp))
	handle("GET /api/admin/groups", s.withPrincipal(RoleAdmin, s.handleListGroups))
	handle("POST /api/admin/groups", s.withPrincipal(RoleAdmin, s.handleCreateGroup))
	handle("GET /api/admin/groups/{id}", s.withPrincipal(RoleAdmin, s.handleGetGroup))
	handle("PATCH /api/admin/groups/{id}", s.withPrincipal(RoleAdmin, s.handlePatchGroup))
	handle("DELETE /api/admin/groups/{id}", s.withPrincipal(RoleAdmin, s.handleDeleteGroup))
	handle("GET /api/admin/groups/{id}/members", s.withPrincipal(RoleAdmin, s.handleGroupMembers))
	handle("PUT /api/admin/groups/{id}/members/{user_id}", s.withPrincipal(RoleAdmin, s.handleMembership))
	handle("DELETE /api/admin/groups/{id}/members/{user_id}", s.withPrincipal(RoleAdmin, s.handleMembership))
	handle("PUT /api/admin/groups/{id}/apps/{key}", s.withPrincipal(RoleAdmin, s.handleGroupGrant))
	handle("DELETE /api/admin/groups/{id}/apps/{key}", s.withPrincipal(RoleAdmin, s.handleGroupGrant))
	handle("GET /api/admin/users/{id}/apps", s.withPrincipal(RoleAdmin, s.handleUserApps))
	handle("PUT /api/admin/users/{id}/apps/{key}", s.withPrincipal(RoleAdmin, s.handleUserGrant))
	handle("DELETE /api/admin/users/{id}/apps/{key}", s.withPrincipal(RoleAdmin, s.handleUserGrant))

	// Settings of the feature services (package settings).
	handle("GET /api/settings/ai", s.withPrincipal(RoleAdmin, byID(s.settings.GetAI)))
	handle("PATCH /api/settings/ai", s.withPrincipal(RoleAdmin, byID(s.settings.PatchAI)))
	handle("POST /api/settings/ai/test", s.withPrincipal(RoleAdmin, byID(s.settings.TestAIConnection)))
	authed("GET /api/settings/documents/limits", byID(s.settings.GetDocumentLimits))
	handle("PATCH /api/settings/documents/limits", s.withPrincipal(RoleAdmin, byID(s.settings.PatchDocumentLimits)))

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		edge.StripIdentity(r.Header)
		h, pattern := mux.Handler(r)
		if pattern == "" {
			// No route: let the mux decide between 404 and 405 (it also
			// sets Allow), then answer in the API's JSON shape.
			rec := &statusRecorder{header: w.Header()}
			h.ServeHTTP(rec, r)
			err := fastapi.ErrNotFound
			if rec.status == http.StatusMethodNotAllowed {
				err = fastapi.ErrMethodNotAllowed
			}
			fastapi.WriteError(w, err)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// serve adapts an apiFunc to http.Handler, writing its error.
func (s *Service) serve(f apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			s.WriteError(w, r, err)
		}
	})
}

// WriteError writes err to the client in FastAPI's error shape and logs
// what the client must not see: the cause of every 5xx.
func (s *Service) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	if IsUnavailable(err) && !errors.Is(err, fastapi.ErrUnavailable) {
		err = fmt.Errorf("%w: %w", fastapi.ErrUnavailable, err)
	}
	status, _, _ := fastapi.Status(err)
	if status >= 500 {
		s.log.Error("request failed",
			zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.Int("status", status), zap.Error(err))
	}
	fastapi.WriteError(w, err)
}

// byID adapts a handler that takes the caller's user id (those of package
// settings) to an authedFunc.
func byID(f func(w http.ResponseWriter, r *http.Request, actorID string) error) authedFunc {
	return func(w http.ResponseWriter, r *http.Request, p *Principal) error { return f(w, r, p.User.ID) }
}

// withPrincipal authenticates the request, checks role (if any) against
// the user's current role, and calls f.
func (s *Service) withPrincipal(role string, f authedFunc) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.Authorize(r, Need{Role: role})
		if err != nil {
			return err
		}
		return f(w, r, p)
	}
}

// handleHealth serves GET /api/health: whether the database answers.
func (s *Service) handleHealth(w http.ResponseWriter, r *http.Request) error {
	if err := s.Ping(r.Context()); err != nil {
		s.log.Warn("health check: database unreachable", zap.Error(err))
		return fastapi.NewError(http.StatusServiceUnavailable, "Database unavailable")
	}
	fastapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// statusRecorder captures the status a fallback handler would send.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(status int)      { r.status = status }
