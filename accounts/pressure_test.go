package accounts

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

const (
	// pressureLogins is how many logins TestLoginUnderPressure sends at
	// once.
	pressureLogins = 200
	// pressureHashBound is the test service's HashConcurrency: the
	// default (GOMAXPROCS) of the 2-core target machine, fixed so that
	// the memory bound does not depend on the machine running the test.
	pressureHashBound = 2
	// pressureSlack is the heap allowed beyond the hashes' share: request
	// and connection buffers of 200 clients, the database pool, the
	// garbage collector's timing.
	pressureSlack = 32 << 20
)

// TestLoginUnderPressure sends 200 logins at once over loopback HTTP, to
// 200 distinct accounts, with production argon2id parameters (19 MiB per
// hash). The hash semaphore must keep the memory to about 19 MiB × the
// hash concurrency bound, not × 200 (3.8 GiB), and every login must
// succeed: queued logins wait for a hashing slot instead of failing.
//
// All clients come from 127.0.0.1, so the per-address limit of
// /api/auth/* (60 a minute by default) would answer most of them 429 and
// the test would measure the limiter, not hashing. The limit is raised
// above the test's request count instead of turned off, so its database
// query still runs on every login as in production. Distinct accounts
// keep the per-account limit out of the way too (it counts attempts per
// account name; a successful login resets it).
//
// The access tokens are signed with the harness's 2048-bit test key;
// BenchmarkLoginHandler measures logins with the production 4096-bit key.
func TestLoginUnderPressure(t *testing.T) {
	// The bound below assumes the default GC pacing.
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	env := newTestEnv(t, func(c *Config) {
		c.Argon2 = DefaultArgon2Params
		c.HashConcurrency = pressureHashBound
		c.RateLimit.IPRequests = 10 * pressureLogins
	})
	hash, err := env.svc.hasher.Hash(t.Context(), "Secret!pw1")
	if err != nil {
		t.Fatal(err)
	}
	users := insertUsers(t, env.db, "pressure", pressureLogins, hash)

	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: pressureLogins},
		Timeout:   2 * time.Minute,
	}
	defer client.CloseIdleConnections()

	// The baseline: the live heap before the logins.
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)

	// Sample the heap and the hashes in flight until the logins are done.
	var (
		peakHeap, peakSys uint64
		peakHashing       int
		samples           int
	)
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		// runtime.ReadMemStats stops the world, which every millisecond
		// or two visibly slows the logins down. These metrics are the
		// same quantities, read without stopping it: HeapInuse = heap
		// objects + unused heap slots, Sys = total.
		m := []metrics.Sample{
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/memory/classes/heap/unused:bytes"},
			{Name: "/memory/classes/total:bytes"},
		}
		for {
			metrics.Read(m)
			heap := m[0].Value.Uint64() + m[1].Value.Uint64()
			peakHeap, peakSys = max(peakHeap, heap), max(peakSys, m[2].Value.Uint64())
			peakHashing = max(peakHashing, len(env.svc.hasher.slots))
			samples++
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	type result struct {
		status  int
		body    string
		err     error
		latency time.Duration
	}
	results := make([]result, pressureLogins)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			form := url.Values{"username": {u.Email}, "password": {"Secret!pw1"}}
			<-start
			t0 := time.Now()
			res, err := client.Post(env.srv.URL+"/api/auth/login", "application/x-www-form-urlencoded",
				strings.NewReader(form.Encode()))
			if err != nil {
				results[i] = result{err: err}
				return
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			results[i] = result{status: res.StatusCode, body: string(body), err: err, latency: time.Since(t0)}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	close(stopSampling)
	<-sampled

	statuses := map[int]int{}
	var latencies []time.Duration
	for i, r := range results {
		if r.err != nil {
			t.Errorf("login %d: %v", i, r.err)
			continue
		}
		statuses[r.status]++
		latencies = append(latencies, r.latency)
		if r.status != http.StatusOK {
			t.Errorf("login %d: %d %s", i, r.status, r.body)
		}
	}
	for _, e := range env.logs.FilterLevelExact(zap.ErrorLevel).All() {
		t.Errorf("error logged: %s %v", e.Message, e.ContextMap())
	}
	slices.Sort(latencies)

	mib := func(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	argon2Mem := uint64(DefaultArgon2Params.MemoryKiB) << 10
	hashes := pressureHashBound * argon2Mem
	growth := peakHeap - min(peakHeap, base.HeapInuse)
	// With GOGC=100 the heap may grow to twice what the last collection
	// found live: the base heap, the hashes in flight when it started,
	// and the hash buffers allocated while it was marking (counted live
	// by the collector; with the CPUs busy hashing, about as many again).
	bound := 2*(2*hashes+base.HeapInuse) + pressureSlack
	unbounded := pressureLogins * argon2Mem
	t.Logf("%d logins in %s: %.1f logins/s; latency p50 %s, p99 %s, max %s; statuses %v",
		pressureLogins, elapsed.Round(time.Millisecond), float64(pressureLogins)/elapsed.Seconds(),
		pct(latencies, 50), pct(latencies, 99), pct(latencies, 100), statuses)
	t.Logf("heap in use: base %s, peak %s (growth %s; bound %s = 2 × (2 × %d × %s argon2 + base) + %s; 200 unbounded hashes: %s)",
		mib(base.HeapInuse), mib(peakHeap), mib(growth), mib(bound), pressureHashBound, mib(argon2Mem),
		mib(pressureSlack), mib(unbounded))
	t.Logf("memory from the OS (Sys): base %s, peak %s; hashes in flight, peak sampled: %d (bound %d); %d samples",
		mib(base.Sys), mib(peakSys), peakHashing, pressureHashBound, samples)

	if peakHeap > bound {
		t.Errorf("peak heap in use %s is above %s: hashing memory is not bounded by the hash concurrency", mib(peakHeap), mib(bound))
	}
	if growth > unbounded/10 {
		t.Errorf("heap grew by %s, not far below %s (200 concurrent hashes)", mib(growth), mib(unbounded))
	}
	if peakHashing > pressureHashBound {
		t.Errorf("%d hashes ran at once, bound %d", peakHashing, pressureHashBound)
	}
}

// pct returns the p-th percentile of sorted durations.
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, (len(sorted)*p+99)/100-1)
	return sorted[max(i, 0)].Round(time.Millisecond)
}
