// Command loadtest measures what the gateway's token check costs in front
// of Caddy's reverse_proxy. On one machine, in one go, it starts
//
//   - a throwaway PostgreSQL cluster (internal/pgtest),
//   - a stub document service on loopback (a small fixed JSON body),
//   - "plain caddy": the same binary serving a Caddyfile that is only
//     `reverse_proxy` to the stub, with the same upstream pool as the
//     project's Caddyfile (-idle-conns idle connections per host): the
//     baseline,
//   - "gateway": the binary serving the project's real Caddyfile, where
//     /api/documents/* goes through accounts_auth, then reverse_proxy to
//     the same stub, with a 4096-bit RS256 key,
//   - "caddy, 32 idle": plain caddy with Caddy's default pool of 32 idle
//     connections per host, which the gateway is also compared with,
//
// creates many distinct users directly in the database, signs an access
// token for each, and runs wrk against the targets in interleaved rounds,
// with the same Lua script (bench/tokens.lua) and the same tokens, so the
// client does the same work for every target. It prints, per target, the
// median requests/s, p50 and p99 latency over the rounds and the peak RSS,
// and the ratios gateway / plain caddy; it writes everything to
// OUT/results.json for bench/plot.
//
// wrk, the servers and the stub share the machine's cores, so anything
// else running on the machine skews the numbers. Before each run the
// machine must be idle (up to -quiet-wait), the CPU time every other
// process takes during a run is measured from /proc/stat, and a run
// disturbed by more than -quiet-max percent is repeated (-retries).
//
// After these full-load rounds, as many rounds at equal load (-paced-load)
// measure latency: every connection pauses after each answer, so that
// every target gets the same request rate, below saturation.
//
// With -variants, three more targets attribute the overhead: the token
// check alone in front of the proxy (accounts_strip_identity,
// accounts_auth, reverse_proxy, nothing else), the project's Caddyfile
// without its accounts_auth and accounts_upload_limit lines, and the
// project's Caddyfile without require_app (what the app check and the
// groups header cost).
//
// With -external NAME=URL, servers the benchmark does not start (the
// FastAPI + nginx stack the gateway replaces, say) are measured in the
// same rounds. Each gets its own users, registered and logged in through
// its API (POST /api/auth/register, POST /api/auth/login), and must answer
// GET /api/documents/x with 401 without a token and 200 with one.
//
// It is run by bench/load, which builds the binary and installs wrk; see
// bench/README.md. Every setting is a flag whose default comes from the
// environment (ROUNDS, DURATION, ...).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/internal/pgtest"
)

// The goal of the issue: the gateway keeps 95% of plain Caddy's
// throughput and adds at most half a millisecond to its p99.
const (
	goalThroughputRatio = 0.95
	goalP99DiffMS       = 0.5
)

// defaultPoolKey is the target of plain caddy with Caddy's default
// upstream pool.
const defaultPoolKey = "baseline_default_pool"

// docPath is the path requested of every target; on the gateway it is a
// document route, behind accounts_auth.
const docPath = "/api/documents/x"

// stubBody is the document service's answer: small and fixed, so that the
// measurement is about the proxy, not the upstream.
var stubBody = []byte(`{"id":"x","title":"Benchmark document","content":"A small fixed body from the stub document service."}` + "\n")

type options struct {
	bin         string
	caddyfile   string
	lua         string
	out         string
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	connections int
	threads     int
	users       int
	keyBits     int
	profile     bool
	keep        bool
	variants    bool
	idleConns   int
	pacedLoad   float64
	quietWait   time.Duration
	quietMax    float64
	retries     int
	// external: servers started by someone else, measured beside ours.
	external      []externalSpec
	externalUsers int
}

// externalSpec is a server under test that the benchmark does not start:
// its name, base URL and, when known, its processes (for CPU and RSS).
type externalSpec struct {
	name, url string
	pids      []int
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fatalf("%s=%q: want an integer", name, v)
		}
		return n
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if v == "0" {
			return 0
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			fatalf("%s=%q: want a duration such as 10s", name, v)
		}
		return d
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v := os.Getenv(name); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			fatalf("%s=%q: want a number", name, v)
		}
		return f
	}
	return def
}

func envBool(name string) bool {
	v := strings.ToLower(os.Getenv(name))
	return v != "" && v != "0" && v != "false" && v != "no"
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.bin, "bin", envOr("CADDY_BIN", "bench/out/caddy"), "the Caddy binary with the accounts modules (env CADDY_BIN)")
	flag.StringVar(&o.caddyfile, "caddyfile", "Caddyfile", "the project's Caddyfile, served by the gateway target")
	flag.StringVar(&o.lua, "lua", "bench/tokens.lua", "the wrk script that rotates tokens")
	flag.StringVar(&o.out, "out", envOr("OUT", "bench/out"), "directory for results.json, logs and profiles (env OUT)")
	flag.IntVar(&o.rounds, "rounds", envInt("ROUNDS", 5), "measured rounds; each runs wrk once per target (env ROUNDS)")
	flag.DurationVar(&o.duration, "duration", envDuration("DURATION", 10*time.Second), "length of one wrk run (env DURATION)")
	flag.DurationVar(&o.warmup, "warmup", envDuration("WARMUP", 3*time.Second), "wrk warm-up per target before the rounds (env WARMUP)")
	flag.IntVar(&o.connections, "connections", envInt("CONNECTIONS", 32), "wrk connections (env CONNECTIONS)")
	flag.IntVar(&o.threads, "threads", envInt("THREADS", 2), "wrk threads (env THREADS); keep 2 on a 2-core machine")
	flag.IntVar(&o.users, "users", envInt("USERS", 1000), "distinct users, one token each (env USERS)")
	flag.IntVar(&o.keyBits, "key-bits", envInt("KEY_BITS", 4096), "RSA key size of the token signing key (env KEY_BITS)")
	flag.BoolVar(&o.profile, "profile", envBool("PROFILE"), "after the rounds, take a CPU profile of each target under load (env PROFILE=1)")
	flag.BoolVar(&o.keep, "keep", envBool("KEEP"), "keep the temp dir (Caddyfiles, tokens, key) (env KEEP=1)")
	flag.BoolVar(&o.variants, "variants", envBool("VARIANTS"), "also measure the token check alone in front of the proxy, the project's Caddyfile without accounts_auth/accounts_upload_limit, and without require_app, to attribute the overhead (env VARIANTS=1)")
	flag.IntVar(&o.idleConns, "idle-conns", envInt("DOC_SERVICE_IDLE_CONNS", 128), "idle upstream connections per host kept by the gateway (the project's Caddyfile reads DOC_SERVICE_IDLE_CONNS) and by plain caddy (env DOC_SERVICE_IDLE_CONNS)")
	flag.Float64Var(&o.pacedLoad, "paced-load", envFloat("PACED_LOAD", 0.5), "after the throughput rounds, as many rounds at this part of plain caddy's throughput, paced alike for every target, for latency at equal load; 0 skips them (env PACED_LOAD)")
	flag.DurationVar(&o.quietWait, "quiet-wait", envDuration("QUIET_WAIT", 2*time.Minute), "before each run, wait up to this long for the machine to be idle; 0 does not wait (env QUIET_WAIT)")
	flag.Float64Var(&o.quietMax, "quiet-max", float64(envInt("QUIET_MAX", 10)), "CPU taken by other processes, in % of the machine, above which it is busy and a run is repeated (env QUIET_MAX)")
	flag.IntVar(&o.retries, "retries", envInt("RETRIES", 2), "how often a run disturbed by other processes is repeated (env RETRIES)")
	flag.Func("external", "another server to measure beside them, NAME=URL (repeatable; env EXTERNAL, space-separated); it must serve API.md: register, login, and GET "+docPath+" behind a token", func(v string) error {
		name, url, ok := strings.Cut(v, "=")
		if !ok || name == "" || !strings.HasPrefix(url, "http") {
			return fmt.Errorf("%q: want NAME=http://HOST:PORT", v)
		}
		o.external = append(o.external, externalSpec{name: name, url: strings.TrimSuffix(url, "/")})
		return nil
	})
	var pidSpecs []string
	flag.Func("external-pids", "NAME=PID,PID...: the processes of an external target, whose CPU time and peak RSS are then measured (repeatable; env EXTERNAL_PIDS, space-separated); without them its CPU counts as other processes'", func(v string) error {
		pidSpecs = append(pidSpecs, v)
		return nil
	})
	flag.IntVar(&o.externalUsers, "external-users", envInt("EXTERNAL_USERS", 100), "users registered on each external target, one token each (env EXTERNAL_USERS)")
	for _, env := range []string{"EXTERNAL", "EXTERNAL_PIDS"} {
		for _, v := range strings.Fields(os.Getenv(env)) {
			if err := flag.Set(strings.ToLower(strings.ReplaceAll(env, "_", "-")), v); err != nil {
				fatalf("%s: %v", env, err)
			}
		}
	}
	flag.Parse()
	for _, v := range pidSpecs {
		name, list, _ := strings.Cut(v, "=")
		i := slices.IndexFunc(o.external, func(e externalSpec) bool { return e.name == name })
		if i < 0 {
			fatalf("external-pids %q: no external target named %q", v, name)
		}
		for f := range strings.SplitSeq(list, ",") {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 0 {
				fatalf("external-pids %q: want NAME=PID,PID...", v)
			}
			o.external[i].pids = append(o.external[i].pids, pid)
		}
	}
	if o.rounds < 1 || o.connections < 1 || o.threads < 1 || o.users < 1 || o.externalUsers < 1 || o.retries < 0 {
		fatalf("rounds, connections, threads, users and external-users must be at least 1, retries at least 0")
	}
	if o.connections < o.threads {
		fatalf("wrk needs at least as many connections (%d) as threads (%d)", o.connections, o.threads)
	}
	if o.pacedLoad < 0 || o.pacedLoad >= 1 {
		fatalf("paced-load is a part of plain caddy's throughput: at least 0, below 1")
	}
	if o.duration < time.Second || o.warmup < time.Second {
		fatalf("duration and warmup must be at least 1s (wrk counts whole seconds)")
	}
	return o
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadtest: "+format+"\n", args...)
	os.Exit(2)
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "\033[1m==> "+format+"\033[0m\n", args...)
}

func warn(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "\033[1;33m!!! "+format+"\033[0m\n", args...)
}

func main() {
	o := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// target is one server under test.
type target struct {
	Key  string `json:"key"`
	Name string `json:"name"`
	URL  string `json:"url"`
	// auth: requests need a token (the gateway and its variants with
	// accounts_auth, and the external targets).
	auth bool
	// external: started by someone else (-external); no admin endpoint,
	// log or process of ours.
	external bool
	// tokens is the file of the tokens wrk sends, one a line.
	tokens string
	// pids are the server's processes: the Caddy we started, or those
	// given with -external-pids.
	pids  []int
	admin string
	proc  *exec.Cmd
	log   *os.File
}

// logHint points at the target's log, if it has one.
func (t *target) logHint() string {
	if t.log == nil {
		return "its own logs"
	}
	return t.log.Name()
}

// results is what results.json holds.
type results struct {
	Started time.Time         `json:"started"`
	Machine map[string]string `json:"machine"`
	Config  map[string]any    `json:"config"`
	// Targets: plain caddy first, the gateway second, then any variants.
	Targets []summary `json:"targets"`
	// Ratios of the gateway to plain caddy (with the gateway's upstream
	// pool), and to plain caddy with Caddy's default pool.
	Ratios            ratios  `json:"ratios"`
	RatiosDefaultPool *ratios `json:"ratios_vs_default_pool,omitempty"`
	Goal              struct {
		ThroughputMin float64 `json:"throughput_min"`
		P99MaxDiffMS  float64 `json:"p99_max_diff_ms"`
		// P99At says which p99 is judged: "equal load" (the paced
		// rounds) or, without them, "full load".
		P99At string `json:"p99_at"`
		// Met: both the medians and the per-round comparisons meet both
		// goals. Verdict is "met", "missed" (both miss one), or "unclear"
		// (they disagree: run more rounds).
		Met     bool   `json:"met"`
		Verdict string `json:"verdict"`
	} `json:"goal"`
	// DisturbedRuns counts measured runs during which other processes
	// took more than quiet_max percent of the machine (after retries).
	DisturbedRuns int               `json:"disturbed_runs"`
	Profiles      map[string]string `json:"profiles,omitempty"`
}

// ratios compare a target to plain caddy: ratios and differences of the
// medians over the rounds, and the median (and range) of the rounds'
// own ratios and differences ("paired": each round's runs are next to
// each other in time, so a slow minute of the machine weighs on both).
type ratios struct {
	Throughput          float64 `json:"throughput"`
	P50DiffMS           float64 `json:"p50_diff_ms"`
	P99DiffMS           float64 `json:"p99_diff_ms"`
	PairedThroughput    float64 `json:"paired_throughput"`
	PairedThroughputMin float64 `json:"paired_throughput_min"`
	PairedThroughputMax float64 `json:"paired_throughput_max"`
	PairedP99DiffMS     float64 `json:"paired_p99_diff_ms"`
	PairedP99DiffMin    float64 `json:"paired_p99_diff_ms_min"`
	PairedP99DiffMax    float64 `json:"paired_p99_diff_ms_max"`
	ServerCPU           float64 `json:"server_cpu"`
	NormServerCPU       float64 `json:"server_cpu_per_stub_cpu"`
	RSS                 float64 `json:"rss"`
	// At equal load (the paced rounds), when measured.
	PacedP50DiffMS       float64 `json:"paced_p50_diff_ms,omitempty"`
	PacedP99DiffMS       float64 `json:"paced_p99_diff_ms,omitempty"`
	PacedPairedP99DiffMS float64 `json:"paced_paired_p99_diff_ms,omitempty"`
	PacedPairedP99Min    float64 `json:"paced_paired_p99_diff_ms_min,omitempty"`
	PacedPairedP99Max    float64 `json:"paced_paired_p99_diff_ms_max,omitempty"`
	// PacedServerCPU is the median over the paced rounds of the
	// server's CPU per request against plain caddy's in the same round.
	PacedServerCPU float64 `json:"paced_server_cpu,omitempty"`
}

func run(ctx context.Context, o options) error {
	started := time.Now()
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk not found on PATH (apt-get install wrk; bench/load does it)")
	}
	for _, f := range []string{o.bin, o.caddyfile, o.lua} {
		if _, err := os.Stat(f); err != nil {
			return err
		}
	}
	lua, err := filepath.Abs(o.lua)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "caddy-accounts-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		say("temp dir %s is kept", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	// The database.
	say("starting a throwaway PostgreSQL cluster")
	cluster, err := pgtest.StartCluster()
	if err != nil {
		return err
	}
	defer cluster.Close()
	// Dropped with the cluster.
	dbURL, _, err := cluster.CreateDB(ctx, "accounts")
	if err != nil {
		return err
	}
	// The postmaster's process tree counts as the benchmark's own CPU use.
	postmaster := cluster.PID()

	// The signing key, and tokens of many distinct users.
	say("generating a %d-bit RSA key", o.keyBits)
	privPEM, _, err := accounts.GenerateKeyPair(o.keyBits)
	if err != nil {
		return err
	}
	keyFile := filepath.Join(tmp, "jwt-private.pem")
	if err := os.WriteFile(keyFile, []byte(privPEM), 0o600); err != nil {
		return err
	}
	say("creating %d users and signing their tokens", o.users)
	users, err := createUsers(ctx, dbURL, o.users)
	if err != nil {
		return err
	}
	tokens, err := signTokens(privPEM, users)
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(tmp, "tokens.txt")
	if err := os.WriteFile(tokenFile, []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
		return err
	}

	// The document service stub.
	stub, err := startStub()
	if err != nil {
		return err
	}
	defer stub.srv.Close()

	// The targets' Caddyfiles.
	src, err := os.ReadFile(o.caddyfile)
	if err != nil {
		return err
	}
	type spec struct {
		key, name string
		auth      bool
		// caddyfile makes the config from the listen and admin addresses;
		// nil: the project's Caddyfile with the environment.
		caddyfile func(site, admin string) string
		edit      func(string) (string, error) // of the project's Caddyfile
	}
	specs := []spec{
		{key: "baseline", name: "plain caddy", caddyfile: func(site, admin string) string {
			return fmt.Sprintf("# Plain Caddy: the baseline. Only reverse_proxy to the stub, with the\n# gateway's upstream pool.\n{\n\tadmin %s\n}\n\n%s {\n\treverse_proxy %s {\n\t\ttransport http {\n\t\t\tkeepalive_idle_conns_per_host %d\n\t\t}\n\t}\n}\n",
				admin, site, stub.addr, o.idleConns)
		}},
		{key: "gateway", name: "gateway", auth: true},
		{key: defaultPoolKey, name: "caddy, 32 idle", caddyfile: func(site, admin string) string {
			return fmt.Sprintf("# Plain Caddy with Caddy's default upstream pool (32 idle connections\n# per host).\n{\n\tadmin %s\n}\n\n%s {\n\treverse_proxy %s\n}\n", admin, site, stub.addr)
		}},
	}
	if o.variants {
		specs = append(specs,
			spec{key: "gateway_authonly", name: "gw auth only", auth: true, caddyfile: func(site, admin string) string {
				return fmt.Sprintf("# The token check alone in front of the proxy: no routes, no upload\n# limit, no proxy timeouts.\n{\n\tadmin %s\n\taccounts\n}\n\n%s {\n\taccounts_strip_identity\n\taccounts_auth\n\treverse_proxy %s\n}\n", admin, site, stub.addr)
			}},
			spec{key: "gateway_noauth", name: "gw no auth", edit: dropLines("accounts_auth @documents", "accounts_upload_limit @documents")},
			spec{key: "gateway_noapp", name: "gw no require_app", auth: true, edit: dropLines("require_app documents")})
	}
	for _, d := range []string{"settings", "frontend", "xdg-data", "xdg-config"} {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
			return err
		}
	}
	ports, err := freePorts(2 * len(specs))
	if err != nil {
		return err
	}
	var targets []*target
	for i, sp := range specs {
		t := &target{Key: sp.key, Name: sp.name, auth: sp.auth,
			URL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			admin: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		env := map[string]string{
			"XDG_DATA_HOME":   filepath.Join(tmp, "xdg-data"),
			"XDG_CONFIG_HOME": filepath.Join(tmp, "xdg-config"),
		}
		// The project's Caddyfile reads these; an accounts app configured
		// by a Caddyfile of its own too.
		for k, v := range map[string]string{
			"SITE_ADDRESS":           t.URL,
			"CADDY_ADMIN":            t.admin,
			"DOC_SERVICE":            stub.addr,
			"DOC_SERVICE_IDLE_CONNS": strconv.Itoa(o.idleConns),
			"DATABASE_URL":           dbURL,
			"JWT_PRIVATE_KEY_FILE":   keyFile,
			"JWT_ISSUER":             accounts.DefaultIssuer,
			"TOKEN_LIFETIME":         "8h",
			"SETTINGS_DIR":           filepath.Join(tmp, "settings"),
			"FRONTEND_DIR":           filepath.Join(tmp, "frontend"),
		} {
			env[k] = v
		}
		config := string(src)
		switch {
		case sp.caddyfile != nil:
			config = sp.caddyfile(t.URL, t.admin)
		case sp.edit != nil:
			if config, err = sp.edit(config); err != nil {
				return fmt.Errorf("%s: %w", sp.name, err)
			}
		}
		file := filepath.Join(tmp, "Caddyfile."+t.Key)
		if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
			return err
		}
		if err := startCaddy(o, t, file, env); err != nil {
			return err
		}
		defer stopCaddy(t)
		t.pids, t.tokens = []int{t.proc.Process.Pid}, tokenFile
		targets = append(targets, t)
	}
	baseline, gateway := targets[0], targets[1]
	say("plain caddy on %s, the gateway on %s, the document stub on %s", baseline.URL, gateway.URL, stub.addr)
	ownTargets := slices.Clone(targets)
	for i, e := range o.external {
		t := &target{Key: fmt.Sprintf("external%d", i+1), Name: e.name, URL: e.url, auth: true, external: true, pids: e.pids}
		say("%s: registering %d users at %s and logging them in", t.Name, o.externalUsers, t.URL)
		extTokens, err := externalTokens(ctx, t, o.externalUsers)
		if err != nil {
			return err
		}
		t.tokens = filepath.Join(tmp, "tokens."+t.Key+".txt")
		if err := os.WriteFile(t.tokens, []byte(strings.Join(extTokens, "\n")+"\n"), 0o600); err != nil {
			return err
		}
		if err := expectGuarded(ctx, t, map[string]string{"Authorization": "Bearer " + extTokens[0]}); err != nil {
			return err
		}
		say("priming %s with all %d of its tokens", t.Name, len(extTokens))
		if err := prime(ctx, t, extTokens); err != nil {
			return err
		}
		targets = append(targets, t)
	}
	for _, t := range ownTargets {
		// Up means: plain caddy proxies, the project's Caddyfile answers
		// its health check, and the token check alone refuses a request
		// without a token.
		ready, status := t.URL+"/api/health", http.StatusOK
		switch t.Key {
		case "baseline", defaultPoolKey:
			ready = t.URL + docPath
		case "gateway_authonly":
			ready, status = t.URL+docPath, http.StatusUnauthorized
		}
		if err := waitReady(ctx, t, ready, status); err != nil {
			return err
		}
	}

	// Does the gateway do its job? Then every token is verified once, so
	// that no measured request pays a first RSA verification.
	var withAuth []*target
	for _, t := range ownTargets {
		if t.auth {
			withAuth = append(withAuth, t)
		}
	}
	if err := preflight(ctx, baseline, withAuth, stub, users[0], tokens[0]); err != nil {
		return err
	}
	for _, t := range ownTargets {
		if t.auth {
			say("priming %s with all %d tokens", t.Name, len(tokens))
			if err := prime(ctx, t, tokens); err != nil {
				return err
			}
		}
	}

	m := &meter{o: o, targets: targets, postmaster: postmaster}
	// wrkArgs are the arguments of one wrk run against t.
	wrkArgs := func(t *target, threads, conns int, d time.Duration) []string {
		return []string{
			"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
			"-d", fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second)),
			"--latency", "-s", lua, t.URL, "--", t.tokens, docPath,
		}
	}
	for _, t := range targets {
		say("warming up %s for %s", t.Name, o.warmup)
		res, err := m.runWrk(ctx, t, wrkRun{args: wrkArgs(t, o.threads, o.connections, o.warmup)})
		if err != nil {
			return err
		}
		if res.Non2xx > 0 || res.SocketErrs > 0 {
			return fmt.Errorf("warm-up of %s: %d non-2xx responses, %d socket errors (see %s)", t.Name, res.Non2xx, res.SocketErrs, t.logHint())
		}
	}

	// Throughput: every connection sends its next request as soon as it
	// has the answer, so the machine runs flat out.
	runs, disturbed, err := m.rounds(ctx, "", false, func(t *target) wrkRun {
		return wrkRun{args: wrkArgs(t, o.threads, o.connections, o.duration)}
	})
	if err != nil {
		return err
	}
	// Latency at equal load: every target gets the same paced load, all at
	// the same time, together a part of what plain caddy managed alone. At
	// full load every target's latency is mostly queueing, and tracks its
	// throughput; paced, below saturation, it is the time each request
	// takes. Loaded side by side, the targets see the same machine in the
	// same instant, so their latencies and CPU costs compare round by
	// round even on a VM whose speed drifts.
	var paced map[string][]wrkResult
	delayMS := 0
	if o.pacedLoad > 0 {
		var rps []float64
		for _, r := range runs[baseline.Key] {
			rps = append(rps, r.RPS)
		}
		perTarget := o.pacedLoad * median(rps) / float64(len(targets))
		conns := max(1, o.connections/len(targets))
		delayMS = max(1, int(float64(conns)*1000/perTarget+0.5))
		say("latency at equal load: all %d targets at once, %d connections each, every one pausing %d ms after each answer (about %.0f req/s per target, %.0f%% of plain caddy's throughput in all)",
			len(targets), conns, delayMS, float64(conns)*1000/float64(delayMS), o.pacedLoad*100)
		threads := max(1, o.threads/len(targets))
		var d int
		paced, d, err = m.rounds(ctx, "equal load ", true, func(t *target) wrkRun {
			return wrkRun{args: wrkArgs(t, threads, conns, o.duration), delayMS: delayMS}
		})
		if err != nil {
			return err
		}
		disturbed += d
	}

	var out results
	out.Started = started.UTC().Truncate(time.Second)
	out.Machine = machineInfo()
	out.Config = map[string]any{
		"rounds": o.rounds, "duration": o.duration.String(), "warmup": o.warmup.String(),
		"connections": o.connections, "threads": o.threads, "users": o.users,
		"key_bits": o.keyBits, "path": docPath, "body_bytes": len(stubBody),
		"order":     "alternating: odd rounds in target order, even rounds reversed",
		"quiet_max": o.quietMax, "retries": o.retries,
	}
	if paced != nil {
		out.Config["paced_load"] = o.pacedLoad
		out.Config["paced_delay_ms"] = delayMS
		out.Config["paced_connections"] = max(1, o.connections/len(targets))
		out.Config["paced"] = "all targets at once, each with its own wrk"
	}
	for _, t := range targets {
		out.Targets = append(out.Targets, summarize(t, runs[t.Key], paced[t.Key]))
	}
	for i := range out.Targets {
		if i > 0 {
			r := ratiosOf(out.Targets[0], out.Targets[i])
			out.Targets[i].VsBaseline = &r
		}
	}
	out.Ratios = *out.Targets[1].VsBaseline
	for _, t := range out.Targets {
		if t.Key == defaultPoolKey {
			r := ratiosOf(t, out.Targets[1])
			out.RatiosDefaultPool = &r
		}
	}
	out.Goal.ThroughputMin = goalThroughputRatio
	out.Goal.P99MaxDiffMS = goalP99DiffMS
	g := out.Ratios
	// p99 is judged at equal load when that was measured.
	p99, pairedP99 := g.P99DiffMS, g.PairedP99DiffMS
	out.Goal.P99At = "full load"
	if paced != nil {
		p99, pairedP99 = g.PacedP99DiffMS, g.PacedPairedP99DiffMS
		out.Goal.P99At = "equal load"
	}
	byMedians := g.Throughput >= goalThroughputRatio && p99 <= goalP99DiffMS
	byRounds := g.PairedThroughput >= goalThroughputRatio && pairedP99 <= goalP99DiffMS
	out.Goal.Met = byMedians && byRounds
	switch {
	case out.Goal.Met:
		out.Goal.Verdict = "met"
	case !byMedians && !byRounds:
		out.Goal.Verdict = "missed"
	default:
		out.Goal.Verdict = "unclear"
	}
	out.DisturbedRuns = disturbed

	if o.profile {
		out.Profiles = map[string]string{}
		for _, t := range ownTargets {
			path, err := m.profile(ctx, t, wrkRun{args: wrkArgs(t, o.threads, o.connections, o.duration)})
			if err != nil {
				return err
			}
			out.Profiles[t.Key] = path
		}
	}

	js, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	resultsFile := filepath.Join(o.out, "results.json")
	if err := os.WriteFile(resultsFile, append(js, '\n'), 0o644); err != nil {
		return err
	}
	printTable(os.Stdout, &out)
	fmt.Printf("\nresults: %s\n", resultsFile)
	return nil
}

// rounds runs wrk ROUNDS times against every target. Alone, the targets
// take turns, in an order that alternates between rounds, so that a drift
// over time (thermal, page cache, a neighbour) weighs on every target
// alike; together, they are all loaded at the same time, so that the
// drift weighs on them equally within each round. It returns the runs of
// each target, by key, and how many were disturbed by other processes.
func (m *meter) rounds(ctx context.Context, label string, together bool, run func(*target) wrkRun) (map[string][]wrkResult, int, error) {
	runs := map[string][]wrkResult{}
	disturbed := 0
	for r := 1; r <= m.o.rounds; r++ {
		order := append([]*target(nil), m.targets...)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		batches := [][]*target{order}
		if !together {
			batches = nil
			for _, t := range order {
				batches = append(batches, []*target{t})
			}
		}
		for _, batch := range batches {
			res, err := m.measure(ctx, batch, run)
			if err != nil {
				return nil, 0, err
			}
			for _, t := range batch {
				res := res[t.Key]
				res.Round = r
				if res.OtherCPUPct > m.o.quietMax {
					disturbed++
				}
				say("%sround %d/%d %-12s %7.0f req/s  p50 %6.3f ms  p99 %6.3f ms  server CPU %5.1f µs/req  other CPU %4.1f%%%s",
					label, r, m.o.rounds, t.Name, res.RPS, res.P50MS, res.P99MS, res.ServerCPUUS, res.OtherCPUPct, problems(res, m.o.quietMax))
				runs[t.Key] = append(runs[t.Key], res)
			}
		}
	}
	return runs, disturbed, nil
}

// dropLines returns an edit of a Caddyfile that removes each line
// reading exactly want (blanks aside), or the directive want with its
// block, and fails if there is none.
func dropLines(want ...string) func(string) (string, error) {
	return func(src string) (string, error) {
		lines := strings.Split(src, "\n")
		for _, w := range want {
			kept := lines[:0:0]
			inBlock := false
			for _, l := range lines {
				t := strings.TrimSpace(l)
				switch {
				case inBlock:
					inBlock = t != "}"
				case t == w:
				case t == w+" {": // the directive with its block
					inBlock = true
				default:
					kept = append(kept, l)
				}
			}
			if len(kept) == len(lines) {
				return "", fmt.Errorf("the Caddyfile has no line %q to drop", w)
			}
			lines = kept
		}
		return strings.Join(lines, "\n"), nil
	}
}

func problems(r wrkResult, quietMax float64) string {
	var p []string
	if r.Non2xx > 0 || r.SocketErrs > 0 {
		p = append(p, fmt.Sprintf("%d non-2xx, %d socket errors", r.Non2xx, r.SocketErrs))
	}
	if r.OtherCPUPct > quietMax {
		p = append(p, "disturbed by other processes")
	}
	if len(p) == 0 {
		return ""
	}
	return "  !! " + strings.Join(p, "; ")
}
