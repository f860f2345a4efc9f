package settings

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

// The provider connection test: POST /api/settings/ai/test.
const (
	// DefaultAITestTimeout bounds the whole test request (API.md: 15 s).
	DefaultAITestTimeout = 15 * time.Second
	defaultOpenAIBaseURL = "https://api.openai.com/v1"
	// defaultAnthropicBaseURL has no /v1: the path below adds it.
	defaultAnthropicBaseURL = "https://api.anthropic.com"
	anthropicVersion        = "2023-06-01"
	// aiTestPrompt is the one short user message sent.
	aiTestPrompt = "ping"
	// maxProviderBody bounds what is read of a provider's answer.
	maxProviderBody = 64 << 10
	// maxAITestMessageLen bounds the provider text quoted in a message.
	maxAITestMessageLen = 200
	// maxAITestRedirects bounds same-origin redirects followed.
	maxAITestRedirects = 3
)

// aiTestResult is the body of POST /api/settings/ai/test.
type aiTestResult struct {
	// OK is true when the provider answered 2xx.
	OK bool `json:"ok"`
	// StatusCode is the provider's HTTP status, or null when none came.
	StatusCode *int `json:"status_code"`
	// LatencyMS is how long the request took, in milliseconds (0 when
	// none was sent).
	LatencyMS int64 `json:"latency_ms"`
	// Model is the model that was tested.
	Model string `json:"model"`
	// Message says what happened, for a person; it never holds the key.
	Message string `json:"message"`

	// outcome is the audited summary (aiTestOutcome*).
	outcome string
}

// Outcomes of a connection test, as the settings.ai_test audit event
// records them.
const (
	aiTestOutcomeOK = "ok"
	// aiTestOutcomeProviderError: the provider answered, not 2xx.
	aiTestOutcomeProviderError = "provider_error"
	aiTestOutcomeTimeout       = "timeout"
	aiTestOutcomeFailed        = "connection_failed"
	// aiTestOutcomeRefused: the destination is not allowed (nothing sent).
	aiTestOutcomeRefused = "destination_refused"
	aiTestOutcomeNoKey   = "no_key"
	// aiTestOutcomeKeyOrigin: the stored key was to go to another origin
	// (422, nothing sent).
	aiTestOutcomeKeyOrigin = "stored_key_origin_refused"
)

// Where the key of a connection test comes from.
const (
	aiKeyNone   = "none"
	aiKeyStored = "stored"
	aiKeyBody   = "body"
)

// msgStoredKeyOrigin is the 422 of a test that would send the stored key
// to another origin than the stored base URL's.
const msgStoredKeyOrigin = "The stored API key is only sent to the stored base URL's scheme, host and port; " +
	"to test another one, send its key in api_key"

// TestAIConnection serves POST /api/settings/ai/test: one short request to
// the provider, by the rules in the package doc.
func (s *Settings) TestAIConnection(w http.ResponseWriter, r *http.Request, actorID string) error {
	patch, err := readOptionalAIPatch(w, r)
	if err != nil {
		return err
	}
	cur, err := s.ai.load()
	if err != nil {
		return err
	}
	cfg, _ := patch.apply(cur)
	keySource := aiTestKeySource(patch, cfg)
	origin := aiOrigin(cfg)
	if keySource == aiKeyStored && (origin == "" || origin != aiOrigin(cur)) {
		s.log.Warn("AI provider connection test refused: the stored key would go to another origin",
			zap.String("origin", origin), zap.String("user_id", actorID))
		s.auditAITest(r, actorID, cfg.Provider, origin, keySource, aiTestResult{outcome: aiTestOutcomeKeyOrigin})
		var v fastapi.ValidationError
		v.Add("value_error", fastapi.ValueErrorPrefix+msgStoredKeyOrigin, "body", "api_key")
		return &v
	}
	res := s.testAI(r.Context(), cfg)
	fields := []zap.Field{
		zap.String("provider", cfg.Provider), zap.String("model", cfg.Model),
		zap.String("origin", origin), zap.String("key", keySource),
		zap.Bool("ok", res.OK), zap.String("outcome", res.outcome), zap.Int64("latency_ms", res.LatencyMS),
		zap.String("user_id", actorID),
	}
	if res.StatusCode != nil {
		fields = append(fields, zap.Int("status_code", *res.StatusCode))
	}
	s.log.Info("AI provider connection test", fields...)
	s.auditAITest(r, actorID, cfg.Provider, origin, keySource, res)
	fastapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

// auditAITest records a connection test: who, to which origin, with
// which key (where it came from, never the key) and the outcome.
func (s *Settings) auditAITest(r *http.Request, actorID, provider, origin, keySource string, res aiTestResult) {
	s.audit(r, EventAITest, actorID, map[string]any{
		"provider":    provider,
		"origin":      origin,
		"key":         keySource,
		"outcome":     res.outcome,
		"status_code": res.StatusCode,
	})
}

// aiTestKeySource says where the key of a test of cfg comes from: none,
// the body (a new key the admin typed), or the stored settings (no
// api_key, or a mask of the stored one).
func aiTestKeySource(patch aiPatch, cfg aiSettings) string {
	switch {
	case cfg.APIKey == nil || *cfg.APIKey == "":
		return aiKeyNone
	case patch.apiKeySet && patch.apiKey != nil && !strings.HasPrefix(*patch.apiKey, maskPrefix):
		return aiKeyBody
	}
	return aiKeyStored
}

// aiOrigin is the origin the requests of cfg go to: scheme, host and
// port of its base URL (or of the provider's default URL), lower case,
// the port left out when it is the scheme's default. Two URLs have the
// same origin exactly when their aiOrigin is the same; "" for a URL that
// does not parse.
func aiOrigin(cfg aiSettings) string {
	def := defaultOpenAIBaseURL
	if cfg.Provider == providerAnthropic {
		def = defaultAnthropicBaseURL
	}
	u, err := url.Parse(valueOr(cfg.BaseURL, def))
	if err != nil || u.Hostname() == "" {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port := u.Port(); port != "" {
		n, err := strconv.Atoi(port)
		if err != nil {
			return ""
		}
		if !(scheme == "http" && n == 80) && !(scheme == "https" && n == 443) {
			host += ":" + strconv.Itoa(n)
		}
	}
	return scheme + "://" + host
}

// readOptionalAIPatch reads the optional body of the test route: none,
// empty or null is no override.
func readOptionalAIPatch(w http.ResponseWriter, r *http.Request) (aiPatch, error) {
	raw, err := fastapi.ReadBody(w, r)
	if err != nil {
		return aiPatch{}, err
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" {
		return aiPatch{}, nil
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return aiPatch{}, err
	}
	patch := readAIPatch(body)
	return patch, body.Finish()
}

// testAI sends the test request for cfg and describes the outcome.
func (s *Settings) testAI(ctx context.Context, cfg aiSettings) aiTestResult {
	res := aiTestResult{Model: cfg.Model}
	if cfg.APIKey == nil || *cfg.APIKey == "" {
		res.Message = "No API key configured"
		res.outcome = aiTestOutcomeNoKey
		return res
	}
	key := *cfg.APIKey
	timeout := s.aiTestTimeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := newAIPingRequest(ctx, cfg, key)
	if err != nil {
		res.Message = "Connection failed: " + scrubSecret(err.Error(), key)
		res.outcome = aiTestOutcomeFailed
		return res
	}
	client := &http.Client{Transport: s.aiTransport, CheckRedirect: sameOriginRedirects}
	start := time.Now()
	resp, err := client.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxProviderBody))
		resp.Body.Close()
		if err == nil || resp.StatusCode < 200 || resp.StatusCode > 299 {
			// A failure while reading an error's text leaves the status.
			err = nil
		}
	}
	res.LatencyMS = time.Since(start).Milliseconds()
	if err != nil {
		var refused *destinationError
		switch {
		case errors.As(err, &refused):
			res.outcome = aiTestOutcomeRefused
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			res.outcome = aiTestOutcomeTimeout
			res.Message = "Timed out after " + timeout.String()
			return res
		default:
			res.outcome = aiTestOutcomeFailed
		}
		res.Message = scrubSecret(failureMessage(err, req.URL.Hostname(), req.URL.Host), key)
		return res
	}
	status := resp.StatusCode
	res.StatusCode = &status
	res.outcome = aiTestOutcomeProviderError
	switch {
	case status >= 200 && status <= 299:
		res.OK = true
		res.outcome = aiTestOutcomeOK
		res.Message = "Connection OK"
	case status >= 300 && status <= 399:
		res.Message = fmt.Sprintf("Provider answered %d: redirect to another host not followed", status)
	default:
		text := providerErrorText(body, key)
		if text == "" {
			text = http.StatusText(status)
		}
		res.Message = fmt.Sprintf("Provider answered %d", status)
		if text != "" {
			res.Message += ": " + text
		}
	}
	return res
}

// newAIPingRequest builds the minimal chat request of cfg's provider.
func newAIPingRequest(ctx context.Context, cfg aiSettings, key string) (*http.Request, error) {
	messages := []map[string]string{{"role": "user", "content": aiTestPrompt}}
	var endpoint string
	var payload any
	switch cfg.Provider {
	case providerAnthropic:
		endpoint = strings.TrimRight(valueOr(cfg.BaseURL, defaultAnthropicBaseURL), "/") + "/v1/messages"
		payload = struct {
			Model     string              `json:"model"`
			MaxTokens int                 `json:"max_tokens"`
			Messages  []map[string]string `json:"messages"`
		}{cfg.Model, 1, messages}
	default:
		endpoint = strings.TrimRight(valueOr(cfg.BaseURL, defaultOpenAIBaseURL), "/") + "/chat/completions"
		payload = struct {
			Model     string              `json:"model"`
			Messages  []map[string]string `json:"messages"`
			MaxTokens int                 `json:"max_tokens"`
		}{cfg.Model, messages, 1}
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(data))
	if err != nil {
		return nil, errors.New("invalid base URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if cfg.Provider == providerAnthropic {
		req.Header.Set("x-api-key", key)
		req.Header.Set("anthropic-version", anthropicVersion)
	} else {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return req, nil
}

func valueOr(p *string, def string) string {
	if p == nil || *p == "" {
		return def
	}
	return *p
}

// sameOriginRedirects follows a redirect only to the same scheme, host and
// port as the original request: the key travels in a header that Go would
// pass on to any host (x-api-key is not one it knows to drop).
func sameOriginRedirects(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	if req.URL.Scheme != first.Scheme || !strings.EqualFold(req.URL.Host, first.Host) || len(via) > maxAITestRedirects {
		return http.ErrUseLastResponse
	}
	return nil
}

// providerErrorText extracts a provider's error message from its answer:
// {"error": {"message": ...}} (OpenAI, Anthropic), {"error": "..."},
// {"message": ...} or {"detail": "..."}, else the text itself. The key is
// scrubbed before the text is shortened to 200 characters.
func providerErrorText(body []byte, key string) string {
	text := string(body)
	var v struct {
		Error   json.RawMessage `json:"error"`
		Message any             `json:"message"`
		Detail  any             `json:"detail"`
	}
	if json.Unmarshal(body, &v) == nil {
		var nested struct {
			Message string `json:"message"`
		}
		var s string
		switch {
		case json.Unmarshal(v.Error, &nested) == nil && nested.Message != "":
			text = nested.Message
		case json.Unmarshal(v.Error, &s) == nil && s != "":
			text = s
		case isNonEmptyString(v.Message):
			text = v.Message.(string)
		case isNonEmptyString(v.Detail):
			text = v.Detail.(string)
		}
	}
	text = strings.ToValidUTF8(text, "")
	text = strings.Join(strings.Fields(text), " ")
	return truncateRunes(scrubSecret(text, key), maxAITestMessageLen)
}

func isNonEmptyString(v any) bool {
	s, ok := v.(string)
	return ok && s != ""
}

// secretFragmentLen is the length of the pieces of a key that are looked
// for in provider text: a provider may echo part of a key ("sk-proj-abc…").
const secretFragmentLen = 8

// scrubSecret removes secret from text: every occurrence of it, and every
// word that holds any 8-character piece of it, become "****".
func scrubSecret(text, secret string) string {
	if secret == "" {
		return text
	}
	text = strings.ReplaceAll(text, secret, maskPrefix)
	if len(secret) < secretFragmentLen {
		return text
	}
	pieces := make(map[string]struct{}, len(secret))
	for i := 0; i+secretFragmentLen <= len(secret); i++ {
		pieces[secret[i:i+secretFragmentLen]] = struct{}{}
	}
	words := strings.FieldsFunc(text, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '"' || r == '\'' })
	for _, word := range words {
		for i := 0; i+secretFragmentLen <= len(word); i++ {
			if _, ok := pieces[word[i:i+secretFragmentLen]]; ok {
				text = strings.ReplaceAll(text, word, maskPrefix)
				break
			}
		}
	}
	return text
}

// truncateRunes cuts s to at most n characters.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}
