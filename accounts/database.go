package accounts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddyaccounts/gateway/fastapi"
)

// IsUnavailable reports whether err means the database (or another
// dependency) could not be reached or went away mid-query, as opposed to
// a query that the server answered with an error: retrying later may
// succeed. Those give 503 instead of 500.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, fastapi.ErrUnavailable) {
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

// pagedQuery is a filtered list query: the conditions and arguments of
// its WHERE clause, built one condition at a time.
type pagedQuery struct {
	where []string
	args  []any
}

// arg adds v as the next argument and returns its placeholder ($n).
func (q *pagedQuery) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

// cond adds a condition of the WHERE clause.
func (q *pagedQuery) cond(c string) { q.where = append(q.where, c) }

// listPage returns one page of the rows of table that q selects, in
// order, and how many it selects in all; both come from one read-only
// snapshot, so the count matches the page.
func listPage[T any](ctx context.Context, db *pgxpool.Pool, table, columns, order string, q pagedQuery,
	page fastapi.Page, scan func(pgx.Row) (T, error)) ([]T, int64, error) {
	items := []T{}
	cond := ""
	if len(q.where) > 0 {
		cond = " WHERE " + strings.Join(q.where, " AND ")
	}
	var total int64
	err := pgx.BeginTxFunc(ctx, db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+table+cond, q.args...).Scan(&total); err != nil {
			return err
		}
		if total <= page.Skip {
			return nil
		}
		n := len(q.args)
		rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s FROM %s%s ORDER BY %s OFFSET $%d LIMIT $%d",
			columns, table, cond, order, n+1, n+2), append(q.args, page.Skip, page.Limit)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			item, err := scan(rows)
			if err != nil {
				return err
			}
			items = append(items, item)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("listing %s: %w", table, err)
	}
	return items, total, nil
}

// seconds is d as PostgreSQL takes a duration from Go: a float8 number
// of seconds, multiplied by interval '1 second' in the query.
func seconds(d time.Duration) float64 { return d.Seconds() }
