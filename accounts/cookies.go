package accounts

import (
	"fmt"
	"net/http"
	"time"

	"github.com/caddyaccounts/gateway/fastapi"
)

// refreshCookiePath scopes the refresh cookie to the routes that use it.
const refreshCookiePath = "/api/auth"

var errCrossOrigin = fastapi.NewError(http.StatusForbidden, "Cross-origin request refused")

// newCrossOriginProtection returns the CSRF check, trusting origins.
func newCrossOriginProtection(origins []string) (*http.CrossOriginProtection, error) {
	c := http.NewCrossOriginProtection()
	for _, o := range origins {
		if err := c.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("sessions: trusted origin: %w", err)
		}
	}
	return c, nil
}

// checkCrossOrigin refuses an unsafe cross-origin browser request.
func (s *Service) checkCrossOrigin(r *http.Request) error {
	if err := s.crossOrigin.Check(r); err != nil {
		return errCrossOrigin
	}
	return nil
}

// cookieValue returns the value of the cookie name, if not empty.
func cookieValue(r *http.Request, name string) (string, bool) {
	c, err := r.Cookie(name)
	if err != nil || c.Value == "" {
		return "", false
	}
	return c.Value, true
}

// accessCookie returns the access token of the access cookie.
func (s *Service) accessCookie(r *http.Request) (string, bool) {
	return cookieValue(r, s.cfg.Sessions.AccessCookieName)
}

// refreshCookie returns the refresh token of the refresh cookie.
func (s *Service) refreshCookie(r *http.Request) (string, bool) {
	return cookieValue(r, s.cfg.Sessions.RefreshCookieName)
}

// setSessionCookies sets the access cookie to accessToken (for the short
// cookie lifetime) and the refresh cookie to refreshToken until
// refreshExpires.
func (s *Service) setSessionCookies(w http.ResponseWriter, accessToken, refreshToken string, refreshExpires time.Time) {
	cfg := s.cfg.Sessions
	http.SetCookie(w, s.cookie(cfg.AccessCookieName, accessToken, "/", http.SameSiteLaxMode,
		time.Now().Add(cfg.AccessCookieLifetime)))
	http.SetCookie(w, s.cookie(cfg.RefreshCookieName, refreshToken, refreshCookiePath, http.SameSiteStrictMode,
		refreshExpires))
}

// clearSessionCookies tells the browser to drop both cookies.
func (s *Service) clearSessionCookies(w http.ResponseWriter) {
	cfg := s.cfg.Sessions
	http.SetCookie(w, s.cookie(cfg.AccessCookieName, "", "/", http.SameSiteLaxMode, time.Time{}))
	http.SetCookie(w, s.cookie(cfg.RefreshCookieName, "", refreshCookiePath, http.SameSiteStrictMode, time.Time{}))
}

// cookie makes one of the session cookies; a zero expires deletes it.
func (s *Service) cookie(name, value, path string, sameSite http.SameSite, expires time.Time) *http.Cookie {
	c := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     path,
		Domain:   s.cfg.Sessions.CookieDomain,
		HttpOnly: true,
		Secure:   true,
		SameSite: sameSite,
	}
	if expires.IsZero() {
		c.MaxAge = -1 // "Max-Age=0": delete now
		c.Expires = time.Unix(1, 0)
		return c
	}
	// Rounded, not truncated: expires is a lifetime from a moment ago, so
	// the time left is a hair under it, and truncating would say 899 for
	// a 15m cookie.
	c.MaxAge = max(int(time.Until(expires).Round(time.Second)/time.Second), 1)
	c.Expires = expires.UTC()
	return c
}

// SessionCookieNames returns the names of the access and refresh cookies:
// the gateway's credentials, never to be forwarded to a service.
func (s *Service) SessionCookieNames() []string {
	return []string{s.cfg.Sessions.AccessCookieName, s.cfg.Sessions.RefreshCookieName}
}
