package accounts

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// errUnavailable marks a failure to reach a dependency (the database);
// clients get 503 and may retry.
var errUnavailable = errors.New("dependency unavailable")

// isUnavailable reports whether err means the database could not be
// reached or went away mid-query, as opposed to a query that the server
// answered with an error. Those give 503 instead of 500.
func isUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errUnavailable) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exception; 53: insufficient resources;
		// 57P: operator intervention (shutdown, cannot connect now).
		return strings.HasPrefix(pgErr.Code, "08") ||
			strings.HasPrefix(pgErr.Code, "53") ||
			strings.HasPrefix(pgErr.Code, "57P")
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) ||
		errors.As(err, &netErr) ||
		pgconn.Timeout(err) ||
		errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "conn closed") ||
		strings.Contains(err.Error(), "closed pool")
}

// IsUnavailable reports whether err means the database (or another
// dependency) could not be reached, so that retrying later may succeed.
func IsUnavailable(err error) bool { return isUnavailable(err) }

// isUniqueViolation reports whether err is PostgreSQL's unique_violation.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// Ping checks that the database answers. It is what /api/health reports.
func (s *Service) Ping(ctx context.Context) error {
	return s.db.Ping(ctx)
}

// NewPool opens a pgx pool for a PostgreSQL URL, without connecting yet,
// so that a gateway recovers by itself when the database comes back.
// maxConns 0 keeps pgx's default.
func NewPool(ctx context.Context, databaseURL string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		// The parse error may quote the URL, password included.
		return nil, errors.New("invalid database URL")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}
