package settings

import "testing"

func TestScrubSecret(t *testing.T) {
	const key = "sk-abcdefghijklmnop"
	for in, want := range map[string]string{
		"key " + key + " refused":   "key **** refused",
		"prefix sk-abcdefgh***mnop": "prefix ****",
		`"sk-abcdefgh..."`:          `"****"`,
		"nothing secret here":       "nothing secret here",
		"abcdefg is only 7":         "abcdefg is only 7",
	} {
		if got := scrubSecret(in, key); got != want {
			t.Errorf("scrub(%q) = %q, want %q", in, got, want)
		}
	}
	if got := scrubSecret("short abc", "abc"); got != "short ****" {
		t.Errorf("short key: %q", got)
	}
}

func TestAIOrigin(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, c := range []struct {
		cfg  aiSettings
		want string
	}{
		{aiSettings{Provider: providerOpenAI}, "https://api.openai.com"},
		{aiSettings{Provider: providerAnthropic}, "https://api.anthropic.com"},
		{aiSettings{Provider: providerOpenAI, BaseURL: s("https://API.OpenAI.com:443/v1/")}, "https://api.openai.com"},
		{aiSettings{Provider: providerOpenAI, BaseURL: s("http://llm:80/x")}, "http://llm"},
		{aiSettings{Provider: providerOpenAI, BaseURL: s("http://llm:8080")}, "http://llm:8080"},
		{aiSettings{Provider: providerOpenAI, BaseURL: s("https://llm:80")}, "https://llm:80"},
		{aiSettings{Provider: providerOpenAI, BaseURL: s("http://[FD00::1]:11434/v1")}, "http://[fd00::1]:11434"},
		{aiSettings{Provider: providerAnthropic, BaseURL: s("http://127.0.0.1:8080/proxy")}, "http://127.0.0.1:8080"},
	} {
		if got := aiOrigin(c.cfg); got != c.want {
			t.Errorf("%s %v: %q, want %q", c.cfg.Provider, valueOr(c.cfg.BaseURL, "null"), got, c.want)
		}
	}
}
