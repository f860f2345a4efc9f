package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// wrkResult is one wrk run, parsed, with the CPU time spent meanwhile.
type wrkResult struct {
	Round      int     `json:"round"`
	Requests   int64   `json:"requests"`
	RPS        float64 `json:"rps"`
	P50MS      float64 `json:"p50_ms"`
	P75MS      float64 `json:"p75_ms"`
	P90MS      float64 `json:"p90_ms"`
	P99MS      float64 `json:"p99_ms"`
	MaxMS      float64 `json:"max_ms"`
	Non2xx     int64   `json:"non_2xx"`
	SocketErrs int64   `json:"socket_errors"`
	// CPU time per request of the Caddy process under test, of wrk, of
	// this process (which is mostly the stub), and of PostgreSQL.
	ServerCPUUS float64 `json:"server_cpu_us_per_req"`
	WrkCPUUS    float64 `json:"wrk_cpu_us_per_req"`
	StubCPUUS   float64 `json:"stub_cpu_us_per_req"`
	DBCPUUS     float64 `json:"db_cpu_us_per_req"`
	// OtherCPUPct is the CPU time every other process on the machine took
	// during the run, in percent of the machine (all CPUs).
	OtherCPUPct float64 `json:"other_cpu_pct"`
	// Attempts is 1, or more when disturbed runs were repeated.
	Attempts int `json:"attempts"`
}

// summary is one target's results over the rounds.
type summary struct {
	Key  string `json:"key"`
	Name string `json:"name"`
	// External: a server the benchmark did not start (-external), with
	// an upstream of its own, not the stub.
	External   bool        `json:"external,omitempty"`
	Rounds     []wrkResult `json:"rounds"`
	MedianRPS  float64     `json:"median_rps"`
	MinRPS     float64     `json:"min_rps"`
	MaxRPS     float64     `json:"max_rps"`
	MedianP50  float64     `json:"median_p50_ms"`
	MedianP99  float64     `json:"median_p99_ms"`
	MedianCPU  float64     `json:"median_server_cpu_us_per_req"`
	MaxOther   float64     `json:"max_other_cpu_pct"`
	PeakRSSKiB int64       `json:"peak_rss_kib"`
	// MedianNormCPU is the median over the rounds of the server's CPU per
	// request divided by the stub's: the stub does the same work for every
	// request of every target, so this cost is less sensitive to the
	// machine slowing down as a whole (which the VM here does by ±15%).
	MedianNormCPU float64 `json:"median_server_cpu_per_stub_cpu"`
	// The paced rounds (latency at equal load), when measured.
	Paced          []wrkResult `json:"paced_rounds,omitempty"`
	PacedMedianRPS float64     `json:"paced_median_rps,omitempty"`
	PacedMedianP50 float64     `json:"paced_median_p50_ms,omitempty"`
	PacedMedianP99 float64     `json:"paced_median_p99_ms,omitempty"`
	PacedMedianCPU float64     `json:"paced_median_server_cpu_us_per_req,omitempty"`
	VsBaseline     *ratios     `json:"vs_baseline,omitempty"`
}

// processesKnown reports whether the target's processes were measured:
// not so for an external target without -external-pids, whose CPU time
// and RSS are unknown.
func (s summary) processesKnown() bool { return s.PeakRSSKiB > 0 }

// userHZ is the unit of /proc CPU times (USER_HZ, 100 on Linux).
const userHZ = 100

// cpuTicks returns the user+system CPU time of a process in USER_HZ ticks.
func cpuTicks(pid int) int64 {
	f := procStat(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// procStat returns the fields of /proc/PID/stat after "pid (comm)": the
// state is [0], the parent's PID [1], utime [11] and stime [12].
func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return nil
	}
	return strings.Fields(string(b[i+2:]))
}

// treeTicks is the CPU time of a process and its children (PostgreSQL's
// postmaster and its backends).
func treeTicks(root int) int64 {
	if root <= 0 {
		return 0
	}
	total := cpuTicks(root)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == root {
			continue
		}
		if f := procStat(pid); len(f) >= 13 && f[1] == strconv.Itoa(root) {
			total += cpuTicks(pid)
		}
	}
	return total
}

// machineTicks returns the busy and the total CPU time of the machine
// (all CPUs) from /proc/stat. Steal time counts as neither busy nor ours.
func machineTicks() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var v [8]int64
	for i := 0; i < 8 && i+1 < len(f); i++ {
		v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	busy = v[0] + v[1] + v[2] + v[5] + v[6]
	total = busy + v[3] + v[4] + v[7]
	return busy, total
}

// meter runs wrk and accounts for the CPU time of everything involved.
type meter struct {
	o          options
	targets    []*target
	postmaster int
}

// ownTicks is the CPU time of the benchmark's own processes except wrk:
// every Caddy (and the known processes of external targets), this
// process (the stub) and PostgreSQL.
func (m *meter) ownTicks() (servers map[string]int64, self, db int64) {
	servers = map[string]int64{}
	for _, t := range m.targets {
		for _, pid := range t.pids {
			servers[t.Key] += cpuTicks(pid)
		}
	}
	return servers, cpuTicks(os.Getpid()), treeTicks(m.postmaster)
}

// wrkRun is one invocation of wrk: its arguments, and for a paced run the
// pause of every connection between an answer and its next request
// (bench/tokens.lua reads it from TOKENS_DELAY_MS).
type wrkRun struct {
	args    []string
	delayMS int // 0: the next request as soon as the answer is in
}

// runWrk runs wrk against t and parses its report, measuring the CPU time
// of the server, wrk, the stub, the database and every other process.
func (m *meter) runWrk(ctx context.Context, t *target, w wrkRun) (wrkResult, error) {
	res, err := m.runTogether(ctx, []*target{t}, func(*target) wrkRun { return w })
	return res[t.Key], err
}

// runTogether runs one wrk per target, all at the same time, and parses
// their reports. The CPU times are taken over the same window: each
// server's and wrk's per request of its own target, the stub's and the
// database's per request of all targets, and every other process's in
// percent of the machine.
func (m *meter) runTogether(ctx context.Context, targets []*target, run func(*target) wrkRun) (map[string]wrkResult, error) {
	servers0, self0, db0 := m.ownTicks()
	busy0, total0 := machineTicks()
	cmds := make([]*exec.Cmd, len(targets))
	outs := make([]*bytes.Buffer, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		w := run(t)
		cmd := exec.CommandContext(ctx, "wrk", w.args...)
		if w.delayMS > 0 {
			cmd.Env = append(os.Environ(), "TOKENS_DELAY_MS="+strconv.Itoa(w.delayMS))
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmds[i], outs[i] = cmd, &stdout
		wg.Go(func() {
			if err := cmd.Run(); err != nil {
				errs[i] = fmt.Errorf("wrk %s: %w\n%s%s", strings.Join(w.args, " "), err, stdout.String(), stderr.String())
			}
		})
	}
	wg.Wait()
	busy1, total1 := machineTicks()
	servers1, self1, db1 := m.ownTicks()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	results := make(map[string]wrkResult, len(targets))
	var requests, wrkTicks int64
	for i, t := range targets {
		res, err := parseWrk(outs[i].String())
		if err != nil {
			return nil, fmt.Errorf("wrk against %s: %w\n%s", t.Name, err, outs[i].String())
		}
		cpu := cmds[i].ProcessState.UserTime() + cmds[i].ProcessState.SystemTime()
		wrkTicks += int64(cpu * userHZ / time.Second)
		if res.Requests > 0 {
			res.ServerCPUUS = float64(servers1[t.Key]-servers0[t.Key]) * 1e6 / userHZ / float64(res.Requests)
			res.WrkCPUUS = float64(cpu.Microseconds()) / float64(res.Requests)
		}
		requests += res.Requests
		res.Attempts = 1
		results[t.Key] = res
	}
	var serversAll int64
	for k := range servers1 {
		serversAll += servers1[k] - servers0[k]
	}
	own := serversAll + (self1 - self0) + (db1 - db0) + wrkTicks
	other := 0.0
	if total1 > total0 {
		other = max(0, float64(busy1-busy0-own)) / float64(total1-total0) * 100
	}
	for k, res := range results {
		res.OtherCPUPct = other
		if requests > 0 {
			res.StubCPUUS = float64(self1-self0) * 1e6 / userHZ / float64(requests)
			res.DBCPUUS = float64(db1-db0) * 1e6 / userHZ / float64(requests)
		}
		results[k] = res
	}
	return results, nil
}

// measure runs wrk against the targets, all at the same time, once the
// machine is quiet, and again (up to retries times) when other processes
// took more than quietMax of the machine during the run; it keeps the
// least disturbed run.
func (m *meter) measure(ctx context.Context, targets []*target, run func(*target) wrkRun) (map[string]wrkResult, error) {
	var best map[string]wrkResult
	bestOther := 0.0
	for attempt := 1; attempt <= m.o.retries+1; attempt++ {
		if err := m.waitQuiet(ctx); err != nil {
			return nil, err
		}
		res, err := m.runTogether(ctx, targets, run)
		if err != nil {
			return nil, err
		}
		other := res[targets[0].Key].OtherCPUPct
		if attempt == 1 || other < bestOther {
			best, bestOther = res, other
		}
		for k, r := range best {
			r.Attempts = attempt
			best[k] = r
		}
		if other <= m.o.quietMax {
			break
		}
		if attempt <= m.o.retries {
			warn("%s: other processes took %.0f%% of the machine during the run; repeating it", names(targets), other)
		}
	}
	return best, nil
}

// names lists the targets' names.
func names(targets []*target) string {
	var n []string
	for _, t := range targets {
		n = append(n, t.Name)
	}
	return strings.Join(n, " + ")
}

// waitQuiet waits until the machine has been idle (busy below quietMax)
// for two seconds in a row, for at most quietWait.
func (m *meter) waitQuiet(ctx context.Context) error {
	if m.o.quietWait <= 0 {
		return nil
	}
	deadline := time.Now().Add(m.o.quietWait)
	quiet, warned := 0, false
	busy0, total0 := machineTicks()
	for quiet < 2 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		busy1, total1 := machineTicks()
		pct := 0.0
		if total1 > total0 {
			pct = float64(busy1-busy0) / float64(total1-total0) * 100
		}
		busy0, total0 = busy1, total1
		if pct <= m.o.quietMax {
			quiet++
			continue
		}
		quiet = 0
		if time.Now().After(deadline) {
			warn("the machine is still busy (%.0f%% CPU) after waiting %s; measuring anyway", pct, m.o.quietWait)
			return nil
		}
		if !warned {
			warn("the machine is busy (%.0f%% CPU by other processes); waiting up to %s for it to be idle", pct, m.o.quietWait)
			warned = true
		}
	}
	return nil
}

// parseWrk reads wrk's --latency report:
//
//	  Latency Distribution
//	     50%  412.00us
//	     99%    1.61ms
//	  271434 requests in 10.00s, 69.37MB read
//	  Non-2xx or 3xx responses: 3
//	Requests/sec:  27138.74
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveRPS, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "Requests/sec:" && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, err
			}
			r.RPS, haveRPS = v, true
		case len(f) == 2 && strings.HasSuffix(f[0], "%"):
			ms, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			switch f[0] {
			case "50%":
				r.P50MS, have50 = ms, true
			case "75%":
				r.P75MS = ms
			case "90%":
				r.P90MS = ms
			case "99%":
				r.P99MS, have99 = ms, true
			}
		case f[0] == "Latency" && len(f) >= 4:
			r.MaxMS, _ = parseWrkDuration(f[3])
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.Requests, _ = strconv.ParseInt(f[0], 10, 64)
		case strings.HasPrefix(sc.Text(), "  Non-2xx or 3xx responses:"):
			r.Non2xx, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
		case f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.SocketErrs += n
			}
		}
	}
	if !haveRPS || !have50 || !have99 {
		return r, errors.New("could not find Requests/sec and the 50%/99% latency lines (was --latency passed?)")
	}
	return r, nil
}

// parseWrkDuration reads wrk's durations ("412.00us", "1.61ms", "2.00s",
// "1.00m") as milliseconds.
func parseWrkDuration(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1e3}, {"m", 60e3}, {"h", 3600e3}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk duration %q: %w", s, err)
			}
			return v * u.ms, nil
		}
	}
	return 0, fmt.Errorf("wrk duration %q: unknown unit", s)
}

// peakRSS is the sum of the peak resident set sizes of t's processes, in
// KiB (0: none known).
func (t *target) peakRSS() int64 {
	var sum int64
	for _, pid := range t.pids {
		sum += peakRSS(pid)
	}
	return sum
}

// peakRSS reads the peak resident set size (VmHWM) of a process in KiB.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// column is one number of every run.
func column(rs []wrkResult, f func(wrkResult) float64) []float64 {
	v := make([]float64, 0, len(rs))
	for _, r := range rs {
		v = append(v, f(r))
	}
	return v
}

func summarize(t *target, rs, paced []wrkResult) summary {
	col := func(f func(wrkResult) float64) []float64 { return column(rs, f) }
	rps := col(func(r wrkResult) float64 { return r.RPS })
	s := summary{
		Key: t.Key, Name: t.Name, External: t.external, Rounds: rs,
		MedianRPS: median(rps),
		MinRPS:    slices.Min(rps),
		MaxRPS:    slices.Max(rps),
		MedianP50: median(col(func(r wrkResult) float64 { return r.P50MS })),
		MedianP99: median(col(func(r wrkResult) float64 { return r.P99MS })),
		MedianCPU: median(col(func(r wrkResult) float64 { return r.ServerCPUUS })),
		MedianNormCPU: median(col(func(r wrkResult) float64 {
			if r.StubCPUUS == 0 {
				return 0
			}
			return r.ServerCPUUS / r.StubCPUUS
		})),
		MaxOther:   slices.Max(col(func(r wrkResult) float64 { return r.OtherCPUPct })),
		PeakRSSKiB: t.peakRSS(),
	}
	if len(paced) > 0 {
		s.Paced = paced
		s.PacedMedianRPS = median(column(paced, func(r wrkResult) float64 { return r.RPS }))
		s.PacedMedianP50 = median(column(paced, func(r wrkResult) float64 { return r.P50MS }))
		s.PacedMedianP99 = median(column(paced, func(r wrkResult) float64 { return r.P99MS }))
		s.PacedMedianCPU = median(column(paced, func(r wrkResult) float64 { return r.ServerCPUUS }))
		s.MaxOther = max(s.MaxOther, slices.Max(column(paced, func(r wrkResult) float64 { return r.OtherCPUPct })))
	}
	return s
}

// ratiosOf compares a target to the baseline.
func ratiosOf(base, s summary) ratios {
	r := ratios{
		Throughput: s.MedianRPS / base.MedianRPS,
		P50DiffMS:  s.MedianP50 - base.MedianP50,
		P99DiffMS:  s.MedianP99 - base.MedianP99,
	}
	if base.MedianCPU > 0 {
		r.ServerCPU = s.MedianCPU / base.MedianCPU
	}
	if base.MedianNormCPU > 0 {
		r.NormServerCPU = s.MedianNormCPU / base.MedianNormCPU
	}
	// The same round's runs are next to each other in time: compare them
	// pairwise too.
	var tp, p99 []float64
	for i := range min(len(base.Rounds), len(s.Rounds)) {
		if b := base.Rounds[i]; b.RPS > 0 {
			tp = append(tp, s.Rounds[i].RPS/b.RPS)
			p99 = append(p99, s.Rounds[i].P99MS-b.P99MS)
		}
	}
	if len(tp) > 0 {
		r.PairedThroughput = median(tp)
		r.PairedThroughputMin, r.PairedThroughputMax = slices.Min(tp), slices.Max(tp)
		r.PairedP99DiffMS = median(p99)
		r.PairedP99DiffMin, r.PairedP99DiffMax = slices.Min(p99), slices.Max(p99)
	}
	if base.PeakRSSKiB > 0 {
		r.RSS = float64(s.PeakRSSKiB) / float64(base.PeakRSSKiB)
	}
	if len(base.Paced) > 0 && len(s.Paced) > 0 {
		r.PacedP50DiffMS = s.PacedMedianP50 - base.PacedMedianP50
		r.PacedP99DiffMS = s.PacedMedianP99 - base.PacedMedianP99
		// The paced runs of a round ran at the same time: compare the
		// server's CPU per request within each round.
		var d, cpu []float64
		for i := range min(len(base.Paced), len(s.Paced)) {
			d = append(d, s.Paced[i].P99MS-base.Paced[i].P99MS)
			if b := base.Paced[i].ServerCPUUS; b > 0 {
				cpu = append(cpu, s.Paced[i].ServerCPUUS/b)
			}
		}
		r.PacedServerCPU = median(cpu)
		r.PacedPairedP99DiffMS = median(d)
		r.PacedPairedP99Min, r.PacedPairedP99Max = slices.Min(d), slices.Max(d)
	}
	return r
}

// profile runs wrk against t once more while taking a CPU profile through
// Caddy's admin endpoint (/debug/pprof/profile).
func (m *meter) profile(ctx context.Context, t *target, w wrkRun) (string, error) {
	seconds := max(int(m.o.duration/time.Second)-2, 1)
	say("profiling %s under load for %ds", t.Name, seconds)
	path := filepath.Join(m.o.out, t.Key+".cpu.pprof")
	type got struct {
		body []byte
		err  error
	}
	ch := make(chan got, 1)
	go func() {
		time.Sleep(time.Second) // let wrk ramp up
		client := &http.Client{Timeout: time.Duration(seconds+30) * time.Second}
		resp, err := client.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", t.admin, seconds))
		if err != nil {
			ch <- got{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s: %s", resp.Status, b)
		}
		ch <- got{b, err}
	}()
	if err := m.waitQuiet(ctx); err != nil {
		return "", err
	}
	if _, err := m.runWrk(ctx, t, w); err != nil {
		return "", err
	}
	g := <-ch
	if g.err != nil {
		return "", fmt.Errorf("profiling %s: %w", t.Name, g.err)
	}
	return path, os.WriteFile(path, g.body, 0o644)
}

func machineInfo() map[string]string {
	m := map[string]string{
		"cpus":   strconv.Itoa(runtime.NumCPU()),
		"go":     runtime.Version(),
		"goarch": runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("wrk", "-v").CombinedOutput(); len(out) > 0 {
		_ = err // wrk -v exits 1
		m["wrk"] = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	return m
}

func printTable(w io.Writer, r *results) {
	fmt.Fprintf(w, "\n%d rounds × %s, wrk -t%v -c%v, %v users, %v-bit RS256, %s CPUs (%s)\n\n",
		r.Config["rounds"], r.Config["duration"], r.Config["threads"], r.Config["connections"],
		r.Config["users"], r.Config["key_bits"], r.Machine["cpus"], r.Machine["cpu"])
	width := 12
	for _, t := range r.Targets {
		width = max(width, len(t.Name))
	}
	fmt.Fprintf(w, "%-*s %9s %13s %7s %7s %8s %9s %7s %7s %19s %7s %6s\n", width,
		"target", "req/s", "(min–max)", "p50 ms", "p99 ms", "CPU µs", "peak RSS",
		"× req/s", "Δp99", "paired × (min–max)", "× CPU", "other")
	for _, t := range r.Targets {
		ratio, diff, paired, cpu := "", "", "", ""
		if v := t.VsBaseline; v != nil {
			ratio = fmt.Sprintf("×%.3f", v.Throughput)
			diff = fmt.Sprintf("%+.2f", v.P99DiffMS)
			paired = fmt.Sprintf("×%.3f (%.2f–%.2f)", v.PairedThroughput, v.PairedThroughputMin, v.PairedThroughputMax)
			cpu = fmt.Sprintf("×%.2f", v.NormServerCPU)
			if t.External { // its upstream is not the stub
				cpu = fmt.Sprintf("×%.2f", v.ServerCPU)
			}
		}
		cpuUS, rss := fmt.Sprintf("%.1f", t.MedianCPU), fmt.Sprintf("%.0f MiB", float64(t.PeakRSSKiB)/1024)
		if !t.processesKnown() {
			cpuUS, rss, cpu = "—", "—", ""
		}
		fmt.Fprintf(w, "%-*s %9.0f %6.0f–%-6.0f %7.2f %7.2f %8s %9s %7s %7s %19s %7s %5.0f%%\n", width,
			t.Name, t.MedianRPS, t.MinRPS, t.MaxRPS, t.MedianP50, t.MedianP99, cpuUS,
			rss, ratio, diff, paired, cpu, t.MaxOther)
	}
	paced := len(r.Targets[0].Paced) > 0
	if paced {
		fmt.Fprintf(w, "\nat equal load, all targets at once: %v connections each, every one pausing %v ms after each answer (%.0f%% of plain caddy's throughput in all)\n\n",
			r.Config["paced_connections"], r.Config["paced_delay_ms"], r.Config["paced_load"].(float64)*100)
		fmt.Fprintf(w, "%-*s %9s %7s %7s %8s %7s %7s %22s %7s\n", width,
			"target", "req/s", "p50 ms", "p99 ms", "CPU µs", "Δp50", "Δp99", "paired Δp99 (min–max)", "× CPU")
		for _, t := range r.Targets {
			d50, d99, paired, cpu := "", "", "", ""
			if v := t.VsBaseline; v != nil {
				d50 = fmt.Sprintf("%+.3f", v.PacedP50DiffMS)
				d99 = fmt.Sprintf("%+.3f", v.PacedP99DiffMS)
				paired = fmt.Sprintf("%+.3f (%+.2f–%+.2f)", v.PacedPairedP99DiffMS, v.PacedPairedP99Min, v.PacedPairedP99Max)
				cpu = fmt.Sprintf("×%.2f", v.PacedServerCPU)
			}
			cpuUS := fmt.Sprintf("%.1f", t.PacedMedianCPU)
			if !t.processesKnown() {
				cpuUS, cpu = "—", ""
			}
			fmt.Fprintf(w, "%-*s %9.0f %7.3f %7.3f %8s %7s %7s %22s %7s\n", width,
				t.Name, t.PacedMedianRPS, t.PacedMedianP50, t.PacedMedianP99, cpuUS, d50, d99, paired, cpu)
		}
	}
	g := r.Ratios
	verdict := func(ok, sure bool) string {
		switch {
		case !sure:
			return "UNCLEAR: the rounds disagree, run more rounds"
		case ok:
			return "ok"
		}
		return "MISSED"
	}
	tpOK := g.Throughput >= r.Goal.ThroughputMin
	// Sure when both estimates fall on the same side of the goal.
	tpSure := (g.PairedThroughput >= r.Goal.ThroughputMin) == tpOK
	fmt.Fprintf(w, "\ngateway / plain caddy:\n")
	fmt.Fprintf(w, "  throughput        ×%.3f (medians), ×%.3f (median of the rounds' ratios, %.3f–%.3f); goal ≥ %.2f: %s\n",
		g.Throughput, g.PairedThroughput, g.PairedThroughputMin, g.PairedThroughputMax, r.Goal.ThroughputMin, verdict(tpOK, tpSure))
	p99Line := func(label string, diff, paired, lo, hi float64, judged bool) {
		goal := "not judged: at full load p99 is queueing, and follows throughput"
		if judged {
			ok := diff <= r.Goal.P99MaxDiffMS
			goal = fmt.Sprintf("goal ≤ +%.1f ms: %s", r.Goal.P99MaxDiffMS, verdict(ok, (paired <= r.Goal.P99MaxDiffMS) == ok))
		}
		fmt.Fprintf(w, "  %-17s %+.3f ms (medians), %+.3f ms (median of the rounds' differences, %+.2f–%+.2f); %s\n",
			label, diff, paired, lo, hi, goal)
	}
	p99Line("p99, full load", g.P99DiffMS, g.PairedP99DiffMS, g.PairedP99DiffMin, g.PairedP99DiffMax, !paced)
	if paced {
		p99Line("p99, equal load", g.PacedP99DiffMS, g.PacedPairedP99DiffMS, g.PacedPairedP99Min, g.PacedPairedP99Max, true)
	}
	fmt.Fprintf(w, "  p50 %+.3f ms; server CPU per request ×%.2f (×%.2f relative to the stub's); peak RSS ×%.2f\n",
		g.P50DiffMS, g.ServerCPU, g.NormServerCPU, g.RSS)
	if paced {
		fmt.Fprintf(w, "  at equal load: p50 %+.3f ms; server CPU per request ×%.2f\n", g.PacedP50DiffMS, g.PacedServerCPU)
	}
	if d := r.RatiosDefaultPool; d != nil {
		fmt.Fprintf(w, "  against caddy with its default pool (32 idle connections per host): throughput ×%.3f (medians), ×%.3f (paired, %.3f–%.3f); server CPU per request ×%.2f\n",
			d.Throughput, d.PairedThroughput, d.PairedThroughputMin, d.PairedThroughputMax, d.NormServerCPU)
	}
	// The other targets against the same goals, in short.
	if len(r.Targets) > 2 {
		fmt.Fprintln(w)
	}
	for _, t := range r.Targets[2:] {
		v := t.VsBaseline
		tpOK := v.Throughput >= r.Goal.ThroughputMin
		p99, paired := v.P99DiffMS, v.PairedP99DiffMS
		if paced {
			p99, paired = v.PacedP99DiffMS, v.PacedPairedP99DiffMS
		}
		p99OK := p99 <= r.Goal.P99MaxDiffMS
		fmt.Fprintf(w, "%s / plain caddy: throughput ×%.3f, ×%.3f paired: %s; p99 at %s %+.3f ms, %+.3f ms paired: %s\n",
			t.Name, v.Throughput, v.PairedThroughput, verdict(tpOK, (v.PairedThroughput >= r.Goal.ThroughputMin) == tpOK),
			r.Goal.P99At, p99, paired, verdict(p99OK, (paired <= r.Goal.P99MaxDiffMS) == p99OK))
	}
	if r.DisturbedRuns > 0 {
		fmt.Fprintf(w, "\n!! %d measured run(s) were disturbed by other processes (other > %v%% even after retries): the numbers are not trustworthy; run again on an idle machine.\n",
			r.DisturbedRuns, r.Config["quiet_max"])
	}
}
