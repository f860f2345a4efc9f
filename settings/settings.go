// Package settings holds the settings of the feature services: the files
// ai.json and documents.json in one directory (a Docker volume in
// production), which the feature services read; the handlers of the
// routes under /api/settings that edit them; the AI provider connection
// test; and the upload limit that the gateway enforces in front of the
// document service.
//
// It knows nothing of accounts or of who may do what: a handler takes the
// caller's id, the caller checks roles before it calls one (the routes
// and roles are docs/API.md's), and audit events go through the Auditor
// that New is given. Handlers return errors in the fastapi package's
// shapes.
//
// # On-disk format
//
// Both files are one JSON object, UTF-8, indented, with a final newline.
// A missing file means "all defaults"; a missing or null field means that
// field's default. Fields the gateway does not know are ignored when read
// and dropped on the next write. Times are RFC 3339 UTC.
//
// ai.json (mode 0600: it holds a credential in clear, because the AI
// service needs it):
//
//	provider     string  "openai" or "anthropic"; default "openai"
//	model        string  model name, 1..200 characters; default "gpt-4o-mini"
//	base_url     string  absolute http(s) URL of the provider's API (no
//	             null    credentials, query or fragment), or null (or "")
//	                     for the provider's own: https://api.openai.com/v1,
//	                     https://api.anthropic.com; default null
//	api_key      string  the provider's API key in clear (printable ASCII,
//	             null    no spaces, at most 1000 characters), or null (or
//	                     "") for none; default null
//	temperature  number  sampling temperature, 0..2; default 0.7
//	max_tokens   int     completion token limit, 1..200000; default 1024
//	updated_at   string  when the gateway last wrote the file, or null
//	             null    (never written by the gateway); default null
//
// documents.json (mode 0644):
//
//	max_pdf_size_mb  int     largest upload the gateway lets through to
//	                         the document service, in MiB, 1..1024;
//	                         default 25
//	updated_at       string  when the gateway last wrote the file, or null
//
// # Writes
//
// The directory is created (0750) on the first write. Each write goes to
// a temporary file in the same directory (".<name>.tmp-*"), is fsynced,
// renamed over the file, and the directory is fsynced: a reader sees the
// old file or the new one, never a torn one. A read-modify-write holds a
// mutex in the process and an exclusive flock(2) on ".<name>.lock" in the
// directory, so that several gateway processes sharing the directory do
// not lose each other's updates (Linux; the lock files are never removed).
// A read costs one stat(2) while the file is unchanged (the parsed content
// is cached by the file's identity, size and mtime), and sees a change by
// another process at once.
//
// # Corrupt files
//
// A file that is not a JSON object of the fields above with the right
// types and in-range values (a hand edit gone wrong) is never guessed at
// and never overwritten: GET and PATCH answer 503 {"detail": "Settings file
// ai.json is corrupt; fix or remove it"} (503, not 500, because an operator
// can fix it without a new release, and not 409 because the client's
// request is not at fault), and the cause (field and position, never a
// value) is logged. Removing the file restores the defaults. A file that
// cannot be read, or written (directory not writable, disk full, another
// writer holding the lock for 10 s), gives 503 {"detail": "Settings file
// ai.json could not be read"} or "... could not be saved", the cause logged.
//
// # Editing the AI settings
//
// PATCH /api/settings/ai takes any subset of provider, model, base_url,
// api_key, temperature and max_tokens. Absent fields are unchanged;
// base_url and api_key are cleared by null or ""; an api_key equal to the
// current mask keeps the stored key (so a form can send back what GET
// showed), and so does any value starting with "****" (a stale mask: no
// real key starts so). A sent key is trimmed of surrounding white space.
// Bounds and 422 types: provider "enum", model 1..200 characters,
// base_url an absolute http(s) URL ≤ 2048, api_key printable ASCII ≤ 1000,
// temperature 0..2, max_tokens integer 1..200000; unknown fields
// "extra_forbidden". A PATCH that changes nothing does not write the file
// (updated_at stays). Every answer shows the key masked: "****" and its
// last 4 characters for keys of 12 characters or more, "****" alone for
// shorter ones. A change is logged and audited (EventChange) by field
// name, never by value.
//
// # The connection test
//
// POST /api/settings/ai/test takes an optional body with the fields of
// PATCH, merged onto the stored settings for this test only (nothing is
// saved); an empty body, no body or null tests the stored settings. It
// sends one minimal chat request (one user message "ping", max_tokens 1)
// and answers 200 with the outcome, whatever the provider said:
//
//   - OpenAI-compatible: POST {base_url}/chat/completions (default base
//     https://api.openai.com/v1), "Authorization: Bearer <key>", body
//     {"model", "messages": [{"role": "user", "content": "ping"}],
//     "max_tokens": 1}.
//   - Anthropic: POST {base_url}/v1/messages (default base
//     https://api.anthropic.com), "x-api-key: <key>",
//     "anthropic-version: 2023-06-01", body {"model", "max_tokens": 1,
//     "messages": [...]}.
//
// The stored key is only ever sent to the origin (scheme, host, port) of
// the stored base URL (or of the stored provider's default URL): a test
// of another origin must bring its key in api_key, else 422 on
// body.api_key and nothing is sent.
//
// Messages: "Connection OK" (2xx); "Provider answered <status>: <the
// provider's error message, at most 200 characters>"; "Timed out after
// 15s"; "Destination not allowed: <host> resolves to <a loopback
// address...>"; "Connection failed: <reason>"; "No API key configured"
// (nothing sent). The key is scrubbed from every provider text and error
// before use, and is never in the response or a log line. Redirects are
// followed only to the same scheme, host and port (at most 3); another
// one is reported as the provider's answer, not followed. Every test
// that passes validation is audited (EventAITest), without the key.
//
// # Destinations of the connection test
//
// An admin chooses the test's URL, so the gateway must not become a way
// into itself or its host: the test's connections are checked when they
// are dialled, after DNS resolution (a name that resolves, or later
// re-resolves, to a refused address is caught too), against these rules:
//
//   - refused: loopback (127.0.0.0/8, ::1), unspecified and "this
//     network" (0.0.0.0/8, ::), link-local (169.254.0.0/16, fe80::/10:
//     the cloud metadata service at 169.254.169.254), multicast
//     (224.0.0.0/4, ff00::/8), the broadcast address 255.255.255.255 and
//     the cloud metadata addresses outside those (fd00:ec2::254,
//     100.100.100.200); IPv4-mapped IPv6 (::ffff:a.b.c.d) and NAT64
//     (64:ff9b::/96) forms of these too;
//   - allowed: everything else, private networks included (10.0.0.0/8,
//     172.16.0.0/12, 192.168.0.0/16, fc00::/7: a self-hosted model server
//     next to the gateway is a real use);
//   - the networks of Config.AITestAllow are allowed whatever the rules
//     above say (127.0.0.1/32 for a model server on the gateway's host).
//
// The test never uses a proxy from the environment (HTTP_PROXY), which
// would dial on the gateway's behalf unchecked.
//
// # The upload limit
//
// LimitUpload refuses a request whose body is over max_pdf_size_mb of
// documents.json before any of it goes further. A declared Content-Length
// is checked at once. A body of unknown length (chunked) is first spooled
// to a temporary file, as nginx does, so that an oversized one is refused
// before the upstream sees a byte; the returned request then reads the
// file, with its length set. Memory use is constant whatever the size. An
// encoded body (Content-Encoding other than identity) is refused with 415,
// since the limit could not be judged on it: a 48 KB gzip can hold 50 MB.
package settings

import (
	"net/http"
	"path/filepath"
	"sort"
	"time"

	"go.uber.org/zap"
)

// DefaultDir is the settings directory when Config.Dir is empty:
// "settings", relative to the working directory.
const DefaultDir = "settings"

// Audit events of the settings, as an Auditor gets them.
const (
	// EventChange is a write of a settings file; its details are the file
	// and the names of the fields that changed.
	EventChange = "settings.change"
	// EventAITest is a connection test; its details are the provider, the
	// origin, where the key came from and the outcome.
	EventAITest = "settings.ai_test"
)

// Auditor records an audit event of request r, done by the user actorID.
// details never hold a secret.
type Auditor func(r *http.Request, event, actorID string, details map[string]any)

// Config holds the options of a Settings. Zero values mean the defaults.
type Config struct {
	// Dir is the directory of ai.json and documents.json. Default:
	// DefaultDir; it is created (0750) on the first write.
	Dir string
	// AITestAllow are networks ("127.0.0.1/32", a CIDR or one address)
	// that the connection test may connect to although its policy refuses
	// them (loopback, link-local, ...: see the package doc). Default: none.
	AITestAllow []string
	// AITestTimeout bounds a connection test (default
	// DefaultAITestTimeout).
	AITestTimeout time.Duration
	// AITestTransport, when set, sends the connection test's requests in
	// place of the transport that checks every connection against the
	// destination policy; it is used as it is, unchecked (tests give one
	// that reaches no network). Default: nil, the checked transport.
	AITestTransport http.RoundTripper
}

// Settings is the settings files of one directory and their routes. It
// is safe for concurrent use, and several processes may share the
// directory.
type Settings struct {
	ai        *settingsFile[aiSettings]
	documents *settingsFile[documentsSettings]

	aiTestTimeout time.Duration
	aiTransport   http.RoundTripper

	audit Auditor
	log   *zap.Logger
}

// New returns the settings of cfg.Dir. audit records the settings events
// (nil: none) and log gets what changed and the causes of errors (nil:
// nothing is logged).
func New(cfg Config, audit Auditor, log *zap.Logger) (*Settings, error) {
	policy, err := newAIDestinationPolicy(cfg.AITestAllow)
	if err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir == "" {
		dir = DefaultDir
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if audit == nil {
		audit = func(*http.Request, string, string, map[string]any) {}
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Settings{
		ai: &settingsFile[aiSettings]{
			dir: dir, name: aiSettingsName, mode: aiSettingsMode,
			defaults: defaultAISettings,
			check:    func(a *aiSettings) error { return a.check() },
		},
		documents: &settingsFile[documentsSettings]{
			dir: dir, name: documentsSettingsName, mode: documentsSettingsMode,
			defaults: defaultDocumentsSettings,
			check:    func(d *documentsSettings) error { return d.check() },
		},
		aiTestTimeout: cfg.AITestTimeout,
		aiTransport:   cfg.AITestTransport,
		audit:         audit,
		log:           log,
	}
	if s.aiTestTimeout <= 0 {
		s.aiTestTimeout = DefaultAITestTimeout
	}
	if s.aiTransport == nil {
		s.aiTransport = newAITransport(policy)
	}
	return s, nil
}

// changed logs and audits a settings write: which fields, never their
// values.
func (s *Settings) changed(r *http.Request, actorID, file string, fields []string) {
	if len(fields) == 0 {
		return
	}
	sort.Strings(fields)
	s.log.Info("settings changed", zap.String("file", file), zap.Strings("fields", fields), zap.String("user_id", actorID))
	s.audit(r, EventChange, actorID, map[string]any{"file": file, "fields": fields})
}
