package testnet

import (
	"net"
	"strconv"
	"sync"
	"testing"
)

// TestFreePortNeverTwice: ports are distinct across many calls, from
// several goroutines at once, even though each is closed (and so free
// for the kernel to give again) before the next call; and each can be
// bound on 127.0.0.1.
func TestFreePortNeverTwice(t *testing.T) {
	const workers, each = 8, 50
	var mu sync.Mutex
	seen := map[int]bool{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				port, err := FreePort()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[port] {
					t.Errorf("port %d handed out twice", port)
				}
				seen[port] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != workers*each {
		t.Fatalf("%d distinct ports, want %d", len(seen), workers*each)
	}

	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("binding the port FreePort gave: %v", err)
	}
	l.Close()
}
