package settings

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Providers, defaults and bounds of the AI settings (API.md).
const (
	providerOpenAI    = "openai"
	providerAnthropic = "anthropic"

	defaultAIProvider    = providerOpenAI
	defaultAIModel       = "gpt-4o-mini"
	defaultAITemperature = 0.7
	defaultAIMaxTokens   = 1024
	maxAIModelLen        = 200
	maxAIBaseURLLen      = 2048
	maxAIKeyLen          = 1000
	maxAITokens          = 200000
	maxAITemperature     = 2
)

// aiSettings is ai.json (see the package doc).
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
	case a.Provider != providerOpenAI && a.Provider != providerAnthropic:
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
		if json.Unmarshal(raw, &s) != nil || (s != providerOpenAI && s != providerAnthropic) {
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

// GetAI serves GET /api/settings/ai: the AI settings, the key masked.
func (s *Settings) GetAI(w http.ResponseWriter, r *http.Request, actorID string) error {
	a, err := s.ai.load()
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, aiResponse(a))
	return nil
}

// PatchAI serves PATCH /api/settings/ai: any subset of the fields (see
// the package doc), answered with the masked settings.
func (s *Settings) PatchAI(w http.ResponseWriter, r *http.Request, actorID string) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	patch := readAIPatch(body)
	if err := body.Finish(); err != nil {
		return err
	}
	var changed []string
	a, err := s.ai.update(r.Context(), func(cur aiSettings) (aiSettings, bool) {
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
	s.changed(r, actorID, aiSettingsName, changed)
	fastapi.WriteJSON(w, http.StatusOK, aiResponse(a))
	return nil
}
