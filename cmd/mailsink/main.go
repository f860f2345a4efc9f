// Command mailsink is a development SMTP server that prints every mail it
// receives (From, To, Subject and the text body) to standard output, so
// that a developer running the gateway locally (scripts/run) reads the
// verification and password-reset mails in the terminal. It is the
// in-process SMTP server of the tests (internal/smtptest) in plain mode:
// no TLS, no AUTH, every message accepted and kept in memory. It is not
// part of the gateway binary and is never for production.
//
//	mailsink [-addr 127.0.0.1:2525] [-watch-stdin]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caddyaccounts/gateway/internal/smtptest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2525", "where to listen for SMTP (host:port)")
	watchStdin := flag.Bool("watch-stdin", false, "exit when standard input closes (scripts/run ties the sink to the gateway's life this way)")
	flag.Parse()
	if err := run(*addr, *watchStdin); err != nil {
		fmt.Fprintln(os.Stderr, "mailsink:", err)
		os.Exit(1)
	}
}

func run(addr string, watchStdin bool) error {
	srv, err := smtptest.New(smtptest.Options{Addr: addr})
	if err != nil {
		return err
	}
	defer srv.Stop()
	fmt.Printf("mailsink: SMTP on %s (SMTP_URL=%s): every mail is printed here\n", srv.Addr(), srv.URL())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}
	printed := 0
	for ctx.Err() == nil {
		// Wait returns at the next message, or after a second to look at
		// ctx again.
		msgs, err := srv.Wait(printed+1, time.Second)
		if err != nil {
			continue
		}
		for _, m := range msgs[printed:] {
			printed++
			fmt.Print(format(printed, m))
		}
	}
	return nil
}

// format renders one received message for the terminal.
func format(n int, m smtptest.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "----- mail %d, %s -----\n", n, time.Now().Format(time.TimeOnly))
	p, err := m.Parse()
	if err != nil {
		fmt.Fprintf(&b, "(cannot parse the message: %v)\nenvelope from %s to %s\n%s\n", err, m.From, strings.Join(m.To, ", "), m.Raw)
		return b.String()
	}
	from := m.From
	if p.From != nil {
		from = p.From.String()
	}
	var to []string
	for _, a := range p.To {
		to = append(to, a.String())
	}
	fmt.Fprintf(&b, "From:    %s\nTo:      %s\nSubject: %s\n\n", from, strings.Join(to, ", "), p.Subject)
	text := strings.TrimRight(p.Text, "\n")
	if text == "" {
		text = "(no text part)"
	}
	fmt.Fprintf(&b, "%s\n----- end of mail %d -----\n", text, n)
	return b.String()
}
