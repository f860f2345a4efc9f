// Package testnet hands out TCP ports on 127.0.0.1 for the servers that
// tests and benchmarks start as processes of their own (gateways,
// PostgreSQL), which must be told a port before they bind it.
package testnet

import (
	"errors"
	"net"
	"sync"
)

// handedOut are the ports FreePort has returned in this process.
var handedOut sync.Map // int -> struct{}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that it has never returned before in this process. Once closed, a port
// can come back from the kernel at once; and Caddy binds with
// SO_REUSEPORT, so two servers given the same port would both start and
// share its connections. Hence each port is handed out once.
//
// Another process may still take the port before the server binds it:
// callers retry a start that fails with "address already in use".
func FreePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := handedOut.LoadOrStore(port, struct{}{}); !taken {
			return port, nil
		}
	}
	return 0, errors.New("testnet: the kernel keeps giving ports already handed out")
}
