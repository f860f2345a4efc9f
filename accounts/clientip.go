package accounts

import (
	"context"
	"net"
	"net/http"
)

type clientIPKey struct{}

// WithClientIP returns a request context that carries the client's IP
// address as the server in front established it (for Caddy: after its
// trusted_proxies handling). Rate limits and the audit log use it; a raw
// X-Forwarded-For header is never trusted.
func WithClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, clientIPKey{}, ip)
}

// ClientIP returns the client IP of r: the one given by WithClientIP, else
// the peer address of the connection.
func ClientIP(r *http.Request) string {
	if ip, ok := r.Context().Value(clientIPKey{}).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
