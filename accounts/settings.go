package accounts

// Settings: the files ai.json and documents.json in one directory (a
// Docker volume in production), which the feature services read, and the
// routes under /api/settings that edit them.
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

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

// DefaultSettingsDir is the settings directory when Config.SettingsDir is
// empty: "settings", relative to the working directory (the caddymodule
// app uses the same default, after $SETTINGS_DIR).
const DefaultSettingsDir = "settings"

// Names, modes and limits of the settings files.
const (
	aiSettingsName        = "ai.json"
	documentsSettingsName = "documents.json"
	aiSettingsMode        = 0o600
	documentsSettingsMode = 0o644
	settingsDirMode       = 0o750
	// maxSettingsFileBytes bounds what is read of a settings file; a
	// larger one is corrupt.
	maxSettingsFileBytes = 1 << 20
	// settingsLockWait bounds the wait for another writer's lock.
	settingsLockWait = 10 * time.Second
)

// Providers, defaults and bounds of the AI settings (API.md).
const (
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"

	defaultAIProvider    = ProviderOpenAI
	defaultAIModel       = "gpt-4o-mini"
	defaultAITemperature = 0.7
	defaultAIMaxTokens   = 1024
	maxAIModelLen        = 200
	maxAIBaseURLLen      = 2048
	maxAIKeyLen          = 1000
	maxAITokens          = 200000
	maxAITemperature     = 2

	defaultMaxPDFSizeMB = 25
	maxMaxPDFSizeMB     = 1024
)

// aiSettings is ai.json (see the on-disk format above).
type aiSettings struct {
	Provider    string     `json:"provider"`
	Model       string     `json:"model"`
	BaseURL     *string    `json:"base_url"`
	APIKey      *string    `json:"api_key"`
	Temperature float64    `json:"temperature"`
	MaxTokens   int        `json:"max_tokens"`
	UpdatedAt   *time.Time `json:"updated_at"`
}

func defaultAISettings() aiSettings {
	return aiSettings{
		Provider:    defaultAIProvider,
		Model:       defaultAIModel,
		Temperature: defaultAITemperature,
		MaxTokens:   defaultAIMaxTokens,
	}
}

// check validates ai.json as read from disk. The reason names the field,
// never its value (the key must not reach a log).
func (a *aiSettings) check() error {
	// A hand-written "" means none.
	if a.BaseURL != nil && *a.BaseURL == "" {
		a.BaseURL = nil
	}
	if a.APIKey != nil && *a.APIKey == "" {
		a.APIKey = nil
	}
	switch {
	case a.Provider != ProviderOpenAI && a.Provider != ProviderAnthropic:
		return errors.New(`field "provider": not "openai" or "anthropic"`)
	case a.Model == "" || utf8.RuneCountInString(a.Model) > maxAIModelLen:
		return errors.New(`field "model": empty or too long`)
	case a.BaseURL != nil && checkAIBaseURL(*a.BaseURL) != nil:
		return errors.New(`field "base_url": not an absolute http(s) URL`)
	case a.APIKey != nil && checkAIKey(*a.APIKey) != "":
		return errors.New(`field "api_key": too long or not printable ASCII without spaces`)
	case math.IsNaN(a.Temperature) || a.Temperature < 0 || a.Temperature > maxAITemperature:
		return errors.New(`field "temperature": not within 0..2`)
	case a.MaxTokens < 1 || a.MaxTokens > maxAITokens:
		return errors.New(`field "max_tokens": not within 1..200000`)
	}
	return nil
}

// documentsSettings is documents.json (see the on-disk format above).
type documentsSettings struct {
	MaxPDFSizeMB int        `json:"max_pdf_size_mb"`
	UpdatedAt    *time.Time `json:"updated_at"`
}

func defaultDocumentsSettings() documentsSettings {
	return documentsSettings{MaxPDFSizeMB: defaultMaxPDFSizeMB}
}

func (d *documentsSettings) check() error {
	if d.MaxPDFSizeMB < 1 || d.MaxPDFSizeMB > maxMaxPDFSizeMB {
		return errors.New(`field "max_pdf_size_mb": not within 1..1024`)
	}
	return nil
}

// settingsStore holds the settings files of one directory.
type settingsStore struct {
	dir       string
	ai        *settingsFile[aiSettings]
	documents *settingsFile[documentsSettings]

	// aiTestTimeout bounds POST /api/settings/ai/test (default 15s).
	aiTestTimeout time.Duration
	// aiTransport sends the provider test requests (New gives it the
	// configured aiDestinationPolicy).
	aiTransport http.RoundTripper
}

// newSettingsStore returns the store of dir (default DefaultSettingsDir).
func newSettingsStore(dir string) *settingsStore {
	if dir == "" {
		dir = DefaultSettingsDir
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return &settingsStore{
		dir: dir,
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
		aiTestTimeout: defaultAITestTimeout,
		aiTransport:   newAITransport(aiDestinationPolicy{}),
	}
}

// settingsFile is one settings file: its reads (cached by the file's
// identity and mtime) and its serialized, atomic read-modify-writes.
type settingsFile[T any] struct {
	dir, name string
	mode      os.FileMode
	defaults  func() T
	check     func(*T) error

	mu    sync.Mutex // serializes this process's writers
	cache atomic.Pointer[settingsCache[T]]
}

// settingsCache is the parsed content of a file version.
type settingsCache[T any] struct {
	key   fileKey
	value T
	err   error
}

// fileKey identifies a version of a file: a rename gives a new inode, an
// edit in place a new mtime or size.
type fileKey struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

func fileKeyOf(fi os.FileInfo) fileKey {
	k := fileKey{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.dev, k.ino = uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // Dev's type differs between platforms
	}
	return k
}

func (f *settingsFile[T]) path() string { return filepath.Join(f.dir, f.name) }

// Errors of the settings files. Their causes name files and fields, never
// values.
func (f *settingsFile[T]) corrupt(reason string) *fastapi.Error {
	return &fastapi.Error{
		Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("Settings file %s is corrupt; fix or remove it", f.name),
		Err:    fmt.Errorf("settings file %s: %s", f.path(), reason),
	}
}

func (f *settingsFile[T]) unavailable(op string, err error) *fastapi.Error {
	return &fastapi.Error{
		Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("Settings file %s could not be %s", f.name, op),
		Err:    fmt.Errorf("settings file %s: %w", f.path(), err),
	}
}

// load returns the file's current content: the defaults when it does not
// exist. It costs one stat(2) when the file has not changed since it was
// last read, by this process or any other.
func (f *settingsFile[T]) load() (T, error) {
	fi, err := os.Stat(f.path())
	if errors.Is(err, os.ErrNotExist) {
		return f.defaults(), nil
	}
	if err != nil {
		var zero T
		return zero, f.unavailable("read", err)
	}
	if c := f.cache.Load(); c != nil && c.key == fileKeyOf(fi) {
		return c.value, c.err
	}
	return f.read()
}

// read reads and parses the file, bypassing the cache, and caches what it
// found under the identity of the very file it read.
func (f *settingsFile[T]) read() (T, error) {
	var zero T
	file, err := os.Open(f.path())
	if errors.Is(err, os.ErrNotExist) {
		return f.defaults(), nil
	}
	if err != nil {
		return zero, f.unavailable("read", err)
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return zero, f.unavailable("read", err)
	}
	if !fi.Mode().IsRegular() {
		return zero, f.corrupt("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(file, maxSettingsFileBytes+1))
	if err != nil {
		return zero, f.unavailable("read", err)
	}
	c := &settingsCache[T]{key: fileKeyOf(fi)}
	c.value, err = f.decode(data)
	if err != nil {
		c.value, c.err = zero, err
	}
	f.cache.Store(c)
	return c.value, c.err
}

// decode parses a file's content strictly: one JSON object with fields of
// the right types and values in range, onto the defaults.
func (f *settingsFile[T]) decode(data []byte) (T, error) {
	var zero T
	if len(data) > maxSettingsFileBytes {
		return zero, f.corrupt("larger than 1 MiB")
	}
	if !utf8.Valid(data) {
		return zero, f.corrupt("not UTF-8")
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return zero, f.corrupt("not a JSON object")
	}
	v := f.defaults()
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(&v); err != nil {
		return zero, f.corrupt(describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return zero, f.corrupt("data after the JSON object")
	}
	if err := f.check(&v); err != nil {
		return zero, f.corrupt(err.Error())
	}
	return v, nil
}

// describeJSONError says where JSON is broken without quoting it.
func describeJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q: not a valid %s", te.Field, te.Type)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated JSON"
	}
	return "invalid JSON"
}

// update applies change to the file's current content under the process
// mutex and the directory's file lock, and writes the result atomically
// when change reports a difference. A corrupt file is returned as an
// error and never overwritten.
func (f *settingsFile[T]) update(ctx context.Context, change func(cur T) (next T, changed bool)) (T, error) {
	var zero T
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.MkdirAll(f.dir, settingsDirMode); err != nil {
		return zero, f.unavailable("saved", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(f.dir, "."+f.name+".lock"))
	if err != nil {
		return zero, f.unavailable("saved", err)
	}
	defer unlock()
	cur, err := f.read()
	if err != nil {
		return zero, err
	}
	next, changed := change(cur)
	if !changed {
		return cur, nil
	}
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return zero, f.unavailable("saved", err)
	}
	key, err := writeFileAtomic(f.dir, f.name, append(data, '\n'), f.mode)
	if err != nil {
		return zero, f.unavailable("saved", err)
	}
	f.cache.Store(&settingsCache[T]{key: key, value: next})
	return next, nil
}

// writeFileAtomic replaces dir/name with data: temporary file in dir,
// fsync, rename, fsync of dir. It returns the new file's identity.
func writeFileAtomic(dir, name string, data []byte, mode os.FileMode) (key fileKey, err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return key, err
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// Chmod, unlike the create mode, is not narrowed by the umask.
	if err := tmp.Chmod(mode); err != nil {
		return key, err
	}
	if _, err := tmp.Write(data); err != nil {
		return key, err
	}
	if err := tmp.Sync(); err != nil {
		return key, err
	}
	fi, err := tmp.Stat()
	if err != nil {
		return key, err
	}
	if err := tmp.Close(); err != nil {
		return key, err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return key, err
	}
	renamed = true
	// The rename is durable once the directory is synced. It has happened
	// either way, so a failure here is not reported as a failed write.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return fileKeyOf(fi), nil
}

// lockFile takes an exclusive flock(2) on path, waiting at most
// settingsLockWait or until ctx ends, and returns its release.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	deadline := time.Now().Add(settingsLockWait)
	wait := time.Millisecond
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(fd, syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("locking %s: still held by another writer after %s", path, settingsLockWait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// MaxUploadBytes returns the current upload limit of the document service
// (max_pdf_size_mb of documents.json × 1 MiB) for the gateway's edge check.
// It is cheap enough for every request: one stat(2) while the file is
// unchanged, and a change by PATCH or by another process applies to the
// next call. A corrupt or unreadable documents.json gives an *fastapi.Error with
// status 503, ready for WriteError.
func (s *Service) MaxUploadBytes() (int64, error) {
	d, err := s.settings.documents.load()
	if err != nil {
		return 0, err
	}
	return int64(d.MaxPDFSizeMB) << 20, nil
}

// ---- AI settings routes ----

// aiSettingsResponse is the body of GET and PATCH /api/settings/ai: the
// settings with the key masked (maskAIKey).
type aiSettingsResponse struct {
	Provider    string     `json:"provider"`
	Model       string     `json:"model"`
	BaseURL     *string    `json:"base_url"`
	APIKey      *string    `json:"api_key"`
	APIKeySet   bool       `json:"api_key_set"`
	Temperature float64    `json:"temperature"`
	MaxTokens   int        `json:"max_tokens"`
	UpdatedAt   *time.Time `json:"updated_at"`
}

func aiResponse(a aiSettings) aiSettingsResponse {
	return aiSettingsResponse{
		Provider:    a.Provider,
		Model:       a.Model,
		BaseURL:     a.BaseURL,
		APIKey:      maskAIKey(a.APIKey),
		APIKeySet:   a.APIKey != nil,
		Temperature: a.Temperature,
		MaxTokens:   a.MaxTokens,
		UpdatedAt:   a.UpdatedAt,
	}
}

// minKeyLenForHint is the shortest key whose mask shows its last 4
// characters: a shorter key is masked as "****" alone, so that the mask
// never reveals a large part of it.
const minKeyLenForHint = 12

// maskPrefix starts every masked key.
const maskPrefix = "****"

// maskAIKey is how the API shows a key: "****" and its last 4 characters
// for keys of 12 characters or more, "****" alone for shorter ones, null
// for none.
func maskAIKey(key *string) *string {
	if key == nil {
		return nil
	}
	mask := maskPrefix
	if r := []rune(*key); len(r) >= minKeyLenForHint {
		mask += string(r[len(r)-4:])
	}
	return &mask
}

// aiPatch is a body of PATCH /api/settings/ai or POST /api/settings/ai/test:
// any subset of the fields. A nil pointer is an absent field.
type aiPatch struct {
	provider, model *string
	// baseURL and apiKey: set says the field was sent; a nil value is a
	// null (or "") that clears it.
	baseURLSet, apiKeySet bool
	baseURL, apiKey       *string
	temperature           *float64
	maxTokens             *int64
}

// readAIPatch reads the AI fields of body, collecting 422 entries in
// pydantic's shapes. No submitted value is ever echoed back.
func readAIPatch(body *fastapi.Object) aiPatch {
	var p aiPatch
	if raw, ok := body.OptionalRaw("provider"); ok {
		var s string
		if json.Unmarshal(raw, &s) != nil || (s != ProviderOpenAI && s != ProviderAnthropic) {
			body.Add("enum", "Input should be 'openai' or 'anthropic'", "provider")
		} else {
			p.provider = &s
		}
	}
	if v, ok := body.OptionalString("model"); ok {
		n := 0
		if v != nil {
			n = utf8.RuneCountInString(*v)
		}
		switch {
		case v == nil:
			// null (a non-string already has its entry).
			if !body.Failed("model") {
				body.Add("string_type", fastapi.MsgString, "model")
			}
		case n == 0:
			body.Add("string_too_short", "String should have at least 1 character", "model")
		case n > maxAIModelLen:
			body.Add("string_too_long", fmt.Sprintf("String should have at most %d characters", maxAIModelLen), "model")
		default:
			p.model = v
		}
	}
	if v, ok := body.OptionalString("base_url"); ok {
		p.baseURLSet = true
		switch {
		case v == nil || *v == "":
			// null or "" clears it: the provider's default URL.
		default:
			if fe := checkAIBaseURL(*v); fe != nil {
				body.Add(fe.Type, fe.Msg, "base_url")
			} else {
				p.baseURL = v
			}
		}
	}
	if v, ok := body.OptionalString("api_key"); ok {
		p.apiKeySet = true
		if v != nil {
			// A pasted key often carries a stray space or newline.
			k := strings.TrimSpace(*v)
			switch {
			case k == "":
			case utf8.RuneCountInString(k) > maxAIKeyLen:
				body.Add("string_too_long", fmt.Sprintf("String should have at most %d characters", maxAIKeyLen), "api_key")
			default:
				if msg := checkAIKey(k); msg != "" {
					body.Fail("api_key", msg)
				} else {
					p.apiKey = &k
				}
			}
		}
	}
	if v, ok := body.OptionalNumber("temperature"); ok && v != nil {
		switch {
		case *v < 0:
			body.Add("greater_than_equal", "Input should be greater than or equal to 0", "temperature")
		case *v > maxAITemperature:
			body.Add("less_than_equal", "Input should be less than or equal to 2", "temperature")
		default:
			p.temperature = v
		}
	}
	if v, ok := body.OptionalInt("max_tokens"); ok && v != nil {
		switch {
		case *v < 1:
			body.Add("greater_than_equal", "Input should be greater than or equal to 1", "max_tokens")
		case *v > maxAITokens:
			body.Add("less_than_equal", fmt.Sprintf("Input should be less than or equal to %d", maxAITokens), "max_tokens")
		default:
			p.maxTokens = v
		}
	}
	return p
}

// checkAIKey returns why key cannot be an API key (it goes into an HTTP
// header), or "".
func checkAIKey(key string) string {
	if len(key) > maxAIKeyLen {
		return "API key is too long"
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return "API key must be printable ASCII without spaces"
		}
	}
	return ""
}

// checkAIBaseURL validates a provider base URL: absolute http(s), with a
// host, and nothing the request path could not be appended to. Messages
// are pydantic's for HttpUrl where it has one.
func checkAIBaseURL(s string) *fastapi.FieldError {
	if len(s) > maxAIBaseURLLen*4 || utf8.RuneCountInString(s) > maxAIBaseURLLen {
		return &fastapi.FieldError{Type: "string_too_long", Msg: fmt.Sprintf("String should have at most %d characters", maxAIBaseURLLen)}
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return &fastapi.FieldError{Type: "url_parsing", Msg: "Input should be a valid URL, invalid URL"}
	case u.Scheme == "":
		return &fastapi.FieldError{Type: "url_parsing", Msg: "Input should be a valid URL, relative URL without a base"}
	case u.Scheme != "http" && u.Scheme != "https":
		return &fastapi.FieldError{Type: "url_scheme", Msg: "URL scheme should be 'http' or 'https'"}
	case u.Host == "" || u.Hostname() == "":
		return &fastapi.FieldError{Type: "url_parsing", Msg: "Input should be a valid URL, empty host"}
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return &fastapi.FieldError{Type: "value_error", Msg: fastapi.ValueErrorPrefix + "Base URL must not contain credentials, a query or a fragment"}
	}
	return nil
}

// apply returns cur with the patch applied, and the names of the fields
// that changed. An api_key equal to cur's mask keeps the stored key.
func (p aiPatch) apply(cur aiSettings) (aiSettings, []string) {
	next := cur
	var changed []string
	if p.provider != nil && *p.provider != cur.Provider {
		next.Provider = *p.provider
		changed = append(changed, "provider")
	}
	if p.model != nil && *p.model != cur.Model {
		next.Model = *p.model
		changed = append(changed, "model")
	}
	if p.baseURLSet && !equalStringPtr(p.baseURL, cur.BaseURL) {
		next.BaseURL = p.baseURL
		changed = append(changed, "base_url")
	}
	if p.apiKeySet {
		// The current mask, or anything mask-shaped (a mask from before
		// another admin replaced the key), keeps the stored key: no real
		// key starts with "****".
		keep := p.apiKey != nil && strings.HasPrefix(*p.apiKey, maskPrefix)
		if !keep && !equalStringPtr(p.apiKey, cur.APIKey) {
			next.APIKey = p.apiKey
			changed = append(changed, "api_key")
		}
	}
	if p.temperature != nil && *p.temperature != cur.Temperature {
		next.Temperature = *p.temperature
		changed = append(changed, "temperature")
	}
	if p.maxTokens != nil && int(*p.maxTokens) != cur.MaxTokens {
		next.MaxTokens = int(*p.maxTokens)
		changed = append(changed, "max_tokens")
	}
	return next, changed
}

func equalStringPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// handleGetAISettings serves GET /api/settings/ai (admin).
func (s *Service) handleGetAISettings(w http.ResponseWriter, r *http.Request, p *Principal) error {
	a, err := s.settings.ai.load()
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, aiResponse(a))
	return nil
}

// handlePatchAISettings serves PATCH /api/settings/ai (admin): any subset
// of provider, model, base_url, api_key, temperature and max_tokens.
// Absent fields are unchanged; base_url and api_key are cleared by null or
// ""; an api_key equal to the current mask keeps the stored key (so a form
// can send back what GET showed), and so does any value starting with
// "****" (a stale mask: no real key starts so). A sent key is trimmed of
// surrounding white space. Bounds and 422 types: provider "enum", model
// 1..200 characters, base_url an absolute http(s) URL ≤ 2048, api_key
// printable ASCII ≤ 1000, temperature 0..2, max_tokens integer 1..200000;
// unknown fields "extra_forbidden". A PATCH that changes nothing does not
// write the file (updated_at stays). 200 → the masked settings.
func (s *Service) handlePatchAISettings(w http.ResponseWriter, r *http.Request, p *Principal) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	patch := readAIPatch(body)
	if err := body.Finish(); err != nil {
		return err
	}
	var changed []string
	a, err := s.settings.ai.update(r.Context(), func(cur aiSettings) (aiSettings, bool) {
		var next aiSettings
		next, changed = patch.apply(cur)
		if len(changed) == 0 {
			return cur, false
		}
		now := time.Now().UTC()
		next.UpdatedAt = &now
		return next, true
	})
	if err != nil {
		return err
	}
	s.settingsChanged(r, p, aiSettingsName, changed)
	fastapi.WriteJSON(w, http.StatusOK, aiResponse(a))
	return nil
}

// settingsChanged logs and audits a settings write: which fields, never
// their values.
func (s *Service) settingsChanged(r *http.Request, p *Principal, file string, fields []string) {
	if len(fields) == 0 {
		return
	}
	sort.Strings(fields)
	s.log.Info("settings changed", zap.String("file", file), zap.Strings("fields", fields), zap.String("user_id", p.User.ID))
	s.audit(r, EventSettingsChange, p.User.ID, "", map[string]any{"file": file, "fields": fields})
}

// ---- Document limits routes ----

// documentLimits is the body of the /api/settings/documents/limits routes.
type documentLimits struct {
	MaxPDFSizeMB int `json:"max_pdf_size_mb"`
}

// handleGetDocumentLimits serves GET /api/settings/documents/limits (any
// signed-in user).
func (s *Service) handleGetDocumentLimits(w http.ResponseWriter, r *http.Request, p *Principal) error {
	d, err := s.settings.documents.load()
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, documentLimits{MaxPDFSizeMB: d.MaxPDFSizeMB})
	return nil
}

// handlePatchDocumentLimits serves PATCH /api/settings/documents/limits
// (admin): {"max_pdf_size_mb": 1..1024}, required. 200 → the new limits.
func (s *Service) handlePatchDocumentLimits(w http.ResponseWriter, r *http.Request, p *Principal) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	size, present := body.OptionalInt("max_pdf_size_mb")
	switch {
	case !present:
		body.Add("missing", fastapi.MsgMissing, "max_pdf_size_mb")
	case size == nil:
	case *size < 1:
		body.Add("greater_than_equal", "Input should be greater than or equal to 1", "max_pdf_size_mb")
	case *size > maxMaxPDFSizeMB:
		body.Add("less_than_equal", fmt.Sprintf("Input should be less than or equal to %d", maxMaxPDFSizeMB), "max_pdf_size_mb")
	}
	if err := body.Finish(); err != nil {
		return err
	}
	var changed []string
	d, err := s.settings.documents.update(r.Context(), func(cur documentsSettings) (documentsSettings, bool) {
		if cur.MaxPDFSizeMB == int(*size) {
			return cur, false
		}
		changed = []string{"max_pdf_size_mb"}
		now := time.Now().UTC()
		return documentsSettings{MaxPDFSizeMB: int(*size), UpdatedAt: &now}, true
	})
	if err != nil {
		return err
	}
	s.settingsChanged(r, p, documentsSettingsName, changed)
	fastapi.WriteJSON(w, http.StatusOK, documentLimits{MaxPDFSizeMB: d.MaxPDFSizeMB})
	return nil
}
