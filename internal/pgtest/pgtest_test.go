package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestTemplatesOutagesAndRestart(t *testing.T) {
	ctx := context.Background()
	c, err := StartCluster()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	prepare := func(ctx context.Context, url string) error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('seed')")
		return err
	}
	a, b := c.NewDB(t, "seeded", prepare), c.NewDB(t, "seeded", prepare)
	if a == b {
		t.Fatal("two databases share a URL")
	}
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Exec(ctx, "INSERT INTO t VALUES ('only in a')"); err != nil {
		t.Fatal(err)
	}
	ca.Close(ctx)
	count := func(url string) int {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if count(a) != 2 || count(b) != 1 {
		t.Fatalf("rows: a=%d b=%d, want 2 and 1", count(a), count(b))
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, a); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if count(a) != 2 {
		t.Fatal("data lost across a restart")
	}
}
