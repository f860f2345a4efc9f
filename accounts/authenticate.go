package accounts

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Principal is the authenticated caller of a request.
type Principal struct {
	// User is the caller's current account, as stored now, not as the
	// token described it when it was issued.
	User *User
	// Claims are the verified claims of the access token.
	Claims *Claims
	// ViaCookie is true when the access token came from the access
	// cookie rather than the Authorization header.
	ViaCookie bool
}

// bearerToken returns the token of an "Authorization: Bearer" header, as
// FastAPI's OAuth2PasswordBearer reads it (scheme in any letter case).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// Authenticate verifies the request's access token and loads its user,
// who must still exist and be active. The token is the Bearer header's,
// else the access cookie's; a cookie-authenticated unsafe
// request must pass the cross-origin check (403 otherwise). A token
// revoked by logout-all or by the end of its session is refused. It
// returns the API's 401 errors, or an unavailable
// error when the database cannot be reached.
func (s *Service) Authenticate(r *http.Request) (*Principal, error) {
	if len(r.Header["Authorization"]) > 1 {
		// The first would be verified and a proxy would forward both:
		// the second would be the client's choice.
		return nil, errMultipleAuthorization
	}
	token, ok := bearerToken(r)
	viaCookie := false
	if !ok {
		if token, ok = s.accessCookie(r); !ok {
			return nil, errNotAuthenticated
		}
		viaCookie = true
		if err := s.checkCrossOrigin(r); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	key := tokenKey(token)
	claims, ok := s.cache.claims(key, now, s.cfg.Leeway)
	if !ok {
		var err error
		if claims, err = s.tokens.Verify(token); err != nil {
			return nil, errInvalidCredentials
		}
		s.cache.tokens.put(key, claims)
	}
	u, err := s.currentUser(r.Context(), claims.Subject, now)
	if errors.Is(err, errNoUser) {
		return nil, errInvalidCredentials
	}
	if err != nil {
		return nil, err
	}
	if !u.IsActive || tokenRevoked(u, claims) {
		return nil, errInvalidCredentials
	}
	return &Principal{User: u, Claims: claims, ViaCookie: viaCookie}, nil
}

// currentUser returns the user's current state, from the cache when this
// instance is sure it is current.
func (s *Service) currentUser(ctx context.Context, id string, now time.Time) (*User, error) {
	if u, ok := s.cache.user(id, now); ok {
		return u, nil
	}
	epoch := s.cache.epoch.Load()
	u, err := s.userForAuth(ctx, id)
	if err != nil {
		return nil, err
	}
	s.cache.storeUser(u, epoch, now)
	return u, nil
}

// Need is what a request needs of its caller besides a valid token of
// an active user. The zero Need lets every such user through.
type Need struct {
	// Role is the role required ("admin"); an admin passes every role.
	Role string
	// App is the key of an app the caller must be allowed to use
	// (User.MayUse).
	App string
}

// Authorize authenticates r (Authenticate) and checks the caller's
// current role and apps against need. This is the one check of the
// request path: the API's routes and the Caddy handlers call it.
func (s *Service) Authorize(r *http.Request, need Need) (*Principal, error) {
	p, err := s.Authenticate(r)
	if err != nil {
		return nil, err
	}
	if need.Role != "" && p.User.Role != need.Role && p.User.Role != RoleAdmin {
		return nil, errForbidden
	}
	if need.App != "" && !p.User.MayUse(need.App) {
		return nil, errForbidden
	}
	return p, nil
}
