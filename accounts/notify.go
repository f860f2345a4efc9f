package accounts

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// userChangedChannel is the NOTIFY channel on which the database announces
// changed users (migration 0002).
const userChangedChannel = "accounts_user_changed"

// Run listens for user changes until ctx ends, reconnecting after
// failures. While it is not listening, user state is read from the
// database on every request.
//
// With a mailer, it also runs the mail outbox's sender, and returns once
// the sender has stopped too.
func (s *Service) Run(ctx context.Context) {
	if s.cfg.Mail.Mailer != nil {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.runOutbox(ctx)
		}()
		defer func() { <-done }()
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		connected, err := s.listen(ctx)
		s.cache.listening.Store(false)
		if connected {
			backoff = 100 * time.Millisecond // a new outage: start over
		}
		s.cache.invalidate("")
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("not listening for user changes; user state is read from the database until reconnected",
			zap.Error(err), zap.Duration("retry_in", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// listen keeps the cache current until the connection fails; connected
// tells whether it got as far as listening.
func (s *Service) listen(ctx context.Context) (connected bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, s.db.Config().ConnConfig)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+userChangedChannel); err != nil {
		return false, err
	}
	s.cache.invalidate("")
	s.cache.listening.Store(true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		s.cache.invalidate(n.Payload)
	}
}
