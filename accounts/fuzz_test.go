package accounts

// Fuzz targets: whatever a client (or a config file, or the database)
// sends, the code below the API neither panics nor answers 5xx, and what
// it accepts has the shape it promises. Seed corpora are committed under
// testdata/fuzz/<FuzzName>/; `go test ./accounts/` runs them as tests and
// `go test -run '^$' -fuzz '^FuzzName$' ./accounts/` explores further.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/argon2"

	"github.com/caddyaccounts/gateway/fastapi"
	"github.com/caddyaccounts/gateway/internal/smtptest"
	"github.com/caddyaccounts/gateway/settings"
)

// fuzzSecret is a password planted in seed bodies: no error response may
// ever contain it.
const fuzzSecret = "Secret!XYZ"

// fuzzRequest makes a POST request with the given body and Content-Type
// (none when contentType is empty). The header is set directly, so any
// bytes reach the code under test, as they could through a lenient proxy.
func fuzzRequest(path, contentType string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	if contentType != "" {
		r.Header["Content-Type"] = []string{contentType}
	}
	return r
}

// looksLikeUUID is an oracle independent of isUUID: 36 characters, dashes
// at 8, 13, 18 and 23, hexadecimal digits elsewhere.
func looksLikeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func FuzzVerifyToken(f *testing.F) {
	ti := newTestIssuer(f)
	key := testKey(f, 0)
	kid := KeyID(&key.PublicKey)
	tok, _, err := ti.Issue(testUser)
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	now := time.Now()
	valid := jwt.MapClaims{"sub": testUser.ID, "email": "a@b.co", "role": "admin", "iss": "caddy-accounts",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	signed := func(method jwt.SigningMethod, signKey any, header map[string]any, claims jwt.MapClaims) string {
		t := jwt.NewWithClaims(method, claims)
		for k, v := range header {
			t.Header[k] = v
		}
		s, err := t.SignedString(signKey)
		if err != nil {
			f.Fatal(err)
		}
		return s
	}

	f.Add(tok)
	f.Add(parts[0] + "." + parts[1])
	f.Add(tok[:len(tok)-7])
	f.Add(tok + ".")
	f.Add(tok + "." + parts[2])
	f.Add(".." + tok)
	f.Add(strings.ReplaceAll(tok, ".", ".."))
	f.Add(parts[0] + "." + parts[1] + "." + parts[2] + "=")
	f.Add(signed(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": kid}, valid))
	f.Add(signed(jwt.SigningMethodHS256, []byte(kid), map[string]any{"kid": kid}, valid))
	f.Add(signed(jwt.SigningMethodRS512, key, map[string]any{"kid": kid}, valid))
	f.Add(signed(jwt.SigningMethodRS256, key, nil, valid))
	f.Add(signed(jwt.SigningMethodRS256, testKey(f, 1), map[string]any{"kid": kid}, valid))
	for _, k := range []any{7, nil, []any{kid}, map[string]any{"kid": kid}, true, 1e308, ""} {
		f.Add(signed(jwt.SigningMethodRS256, key, map[string]any{"kid": k}, valid))
	}
	f.Add(b64url(`{"alg":"RS256","kid":"`+kid+`"}`) + "." + strings.Repeat("A", 1<<16) + "." + parts[2])
	f.Add(strings.Repeat("A", 1<<16) + "." + parts[1] + "." + parts[2])
	f.Add(b64url(`{"alg":"RS256","alg":"none"}`) + "." + parts[1] + "." + parts[2])
	f.Add(b64url(`{"alg":"RS256","kid":"`+kid+`","crit":["exp"]}`) + "." + parts[1] + "." + parts[2])
	f.Add(parts[0] + "." + b64url(`{"sub":["`+testUser.ID+`"],"exp":1e400,"iat":"x"}`) + "." + parts[2])
	f.Add("")
	f.Add("..")
	f.Add("not.a.jwt")

	f.Fuzz(func(t *testing.T, token string) {
		claims, err := ti.Verify(token)
		if err != nil {
			if claims != nil {
				t.Fatalf("Verify returned claims with error %v", err)
			}
			return
		}
		// Accepted: it must be an RS256 token of the test key, for a UUID
		// subject, of our issuer, with an expiry.
		if !looksLikeUUID(claims.Subject) {
			t.Fatalf("accepted a token whose subject %q is not a UUID", claims.Subject)
		}
		if claims.Issuer != "caddy-accounts" || claims.ExpiresAt == nil {
			t.Fatalf("accepted claims %+v", claims)
		}
		segs := strings.Split(token, ".")
		if len(segs) != 3 {
			t.Fatalf("accepted a token of %d segments", len(segs))
		}
		rawHeader, err := base64.RawURLEncoding.DecodeString(segs[0])
		if err != nil {
			t.Fatalf("accepted a token whose header is not base64url: %v", err)
		}
		var header map[string]any
		if err := json.Unmarshal(rawHeader, &header); err != nil || header["alg"] != "RS256" {
			t.Fatalf("accepted a token with header %s", rawHeader)
		}
		sig, err := base64.RawURLEncoding.DecodeString(segs[2])
		if err != nil {
			t.Fatalf("accepted a token whose signature is not base64url: %v", err)
		}
		digest := sha256.Sum256([]byte(segs[0] + "." + segs[1]))
		if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
			t.Fatalf("accepted a token not signed by the test key: %v", err)
		}
	})
}

func FuzzParseKeys(f *testing.F) {
	privPEM, pubPEM, err := GenerateKeyPair(2048)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(privPEM)
	f.Add(pubPEM)
	f.Add(`"` + strings.ReplaceAll(strings.TrimSpace(privPEM), "\n", `\n`) + `"`)
	f.Add("'" + pubPEM + "'")
	f.Add(EnvFile(privPEM, pubPEM))
	f.Add(privPEM[:len(privPEM)/2])
	f.Add("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
	f.Add("-----BEGIN RSA PUBLIC KEY-----\nMAA=\n-----END RSA PUBLIC KEY-----\n")
	f.Add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	f.Add(`\n`)
	f.Add("")

	f.Fuzz(func(t *testing.T, text string) {
		if k, err := ParsePrivateKey(text); err == nil {
			if k == nil || k.N.BitLen() < minRSABits {
				t.Fatalf("ParsePrivateKey accepted %v", k)
			}
		} else if k != nil {
			t.Fatalf("ParsePrivateKey returned a key with error %v", err)
		}
		if k, err := ParsePublicKey(text); err == nil {
			if k == nil || k.N.BitLen() < minRSABits {
				t.Fatalf("ParsePublicKey accepted %v", k)
			}
		} else if k != nil {
			t.Fatalf("ParsePublicKey returned a key with error %v", err)
		}
	})
}

// checkValidationError checks the entries of a 422 and that its body does
// not echo the planted secret when the input carried it as a value.
func checkValidationError(t *testing.T, ve *fastapi.ValidationError, input []byte) {
	t.Helper()
	if len(ve.Fields) == 0 {
		t.Fatal("empty fastapi.ValidationError returned as an error")
	}
	for _, fe := range ve.Fields {
		if fe.Type == "" || fe.Msg == "" || len(fe.Loc) == 0 || fe.Loc[0] != "body" {
			t.Fatalf("malformed entry %+v", fe)
		}
	}
	_, body, _ := fastapi.Status(ve)
	out, err := json.Marshal(body)
	if err != nil {
		t.Fatalf("error body does not marshal: %v", err)
	}
	// Field names are echoed in loc by design (extra_forbidden); values
	// never are.
	if bytes.Contains(input, []byte(fuzzSecret)) && !jsonKeysContain(input, fuzzSecret) && bytes.Contains(out, []byte(fuzzSecret)) {
		t.Fatalf("error body %s echoes the secret", out)
	}
}

// jsonKeysContain reports whether body is a JSON object one of whose keys
// (as decoded) contains s.
func jsonKeysContain(body []byte, s string) bool {
	var raw map[string]json.RawMessage
	if json.Unmarshal(body, &raw) != nil {
		return false
	}
	for k := range raw {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

func FuzzLoginForm(f *testing.F) {
	const form = "application/x-www-form-urlencoded"
	for _, s := range []struct{ body, ct string }{
		{"username=a%40b.co&password=" + fuzzSecret, form},
		{"username=a%40b.co&password=" + fuzzSecret + "&grant_type=password&scope=&client_id=x", form + "; charset=UTF-8"},
		{"username=a%40b.co&password=" + fuzzSecret + "&grant_type=client_credentials", form},
		{"username=&password=", form},
		{"username=a%zz&password=b", form},
		{"username=a;b&password=c", form},
		{"username=%00&password=%FF", form},
		{"username=a%40b.co&password=" + fuzzSecret, "application/json"},
		{"username=a%40b.co&password=" + fuzzSecret, ""},
		{"username=a%40b.co&password=" + fuzzSecret, "multipart/form-data; boundary=x"},
		{"", form},
		{"&&&===", form},
	} {
		f.Add([]byte(s.body), s.ct)
	}

	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		r := fuzzRequest("/", contentType, body)
		username, password, err := readLoginForm(httptest.NewRecorder(), r)
		if err == nil {
			if username == "" || password == "" {
				t.Fatalf("accepted an empty username %q or password %q", username, password)
			}
			return
		}
		status, _, _ := fastapi.Status(err)
		if status != http.StatusUnprocessableEntity && status != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d (%v), want 422 or 413", status, err)
		}
		var ve *fastapi.ValidationError
		if errors.As(err, &ve) {
			checkValidationError(t, ve, body)
		}
	})
}

func FuzzRegisterAndLoginHandlers(f *testing.F) {
	env := newTestEnv(f)
	h := env.svc.Handler()
	const form = "application/x-www-form-urlencoded"
	for _, s := range []struct{ reg, regCT, login, loginCT string }{
		{`{"email":"fuzz@example.com","password":"` + fuzzSecret + `"}`, "application/json",
			"username=fuzz%40example.com&password=" + fuzzSecret, form},
		{`{"email":"FUZZ@example.com","password":"` + fuzzSecret + `","full_name":"F"}`, "application/json",
			"username=+FUZZ%40example.com+&password=wrong", form},
		{`{"email":"fuzz2@example.com","password":"short","full_name":null,"role":"admin"}`, "application/json",
			"username=nobody%40example.com&password=x&grant_type=password", form},
		{`{"email":"fuzz3@example.com","password":"` + fuzzSecret + `","full_name":"` + strings.Repeat("é", 201) + `"}`, "application/json",
			"username=fuzz%40example.com", form},
		{`{"email":"a@b@c.co","password":"` + fuzzSecret + `"}`, "", "username=a&password=b", "text/plain"},
		{`{"email":"fuzz4@example.com","password":"` + fuzzSecret + `"} trailing`, "application/json", "", ""},
		{`{"email":"fuzz5@example.com","password":"` + fuzzSecret + `","full_name":"a\u0000b"}`, "application/json",
			"username=a%00b%40example.com&password=x", form},
		{`{"email":"fuzz6@example.com","password":"` + fuzzSecret + `","full_name":"\ud800"}`, "application/json",
			"username=%FF%40example.com&password=x", form},
		{"", "", "", form},
	} {
		f.Add([]byte(s.reg), s.regCT, []byte(s.login), s.loginCT)
	}

	f.Fuzz(func(t *testing.T, regBody []byte, regCT string, loginBody []byte, loginCT string) {
		env.logs.TakeAll() // keep only this input's log lines
		for _, req := range []struct {
			path, ct string
			body     []byte
		}{{"/api/auth/register", regCT, regBody}, {"/api/auth/login", loginCT, loginBody}} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, fuzzRequest(req.path, req.ct, req.body))
			res := w.Result()
			if res.StatusCode >= 500 {
				cause := ""
				if logged := env.logs.FilterMessage("request failed").TakeAll(); len(logged) > 0 {
					cause = fmt.Sprint(logged[len(logged)-1].ContextMap()["error"])
				}
				t.Errorf("POST %s: status %d, body %s; logged cause: %s", req.path, res.StatusCode, w.Body.Bytes(), cause)
				continue
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("POST %s: Content-Type %q", req.path, ct)
			}
			var v map[string]json.RawMessage
			if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
				t.Fatalf("POST %s: body %q is not a JSON object: %v", req.path, w.Body.Bytes(), err)
			}
			if res.StatusCode >= 300 {
				if _, ok := v["detail"]; !ok {
					t.Fatalf("POST %s: %d without detail: %s", req.path, res.StatusCode, w.Body.Bytes())
				}
				if bytes.Contains(req.body, []byte(fuzzSecret)) && !jsonKeysContain(req.body, fuzzSecret) &&
					bytes.Contains(w.Body.Bytes(), []byte(fuzzSecret)) {
					t.Fatalf("POST %s: error body echoes the secret: %s", req.path, w.Body.Bytes())
				}
			}
		}
	})
}

func FuzzCheckEmail(f *testing.F) {
	for _, s := range []string{"a@b.co", "First.Last+tag@example.com", "user@bücher.de", "u@xn--bcher-kva.de",
		"a b@c.co", "a@b@c.co", "a@b .co", "a@b.co ", "a@b.c\u00a0o", "a@b.c\u3000o", "a@\u0000.co",
		"a@b.co\n", "\xff@b.co", "a@b.\xff\xfe", "a@" + strings.Repeat("b", 250) + ".co", "\"a\"@b.co", "a@[127.0.0.1]",
		"u@exаmple.com", "u@ｅxample.com", "u@xn--exmple-4nf.com", "u@東京タワー.jp", "u@ab--cd.com"} {
		f.Add(s)
	}
	const prefix = "value is not a valid email address: "
	f.Fuzz(func(t *testing.T, email string) {
		msg := checkEmail(email)
		if again := checkEmail(email); again != msg {
			t.Fatalf("checkEmail(%q) not deterministic: %q then %q", email, msg, again)
		}
		if msg != "" {
			if !strings.HasPrefix(msg, prefix) {
				t.Fatalf("checkEmail(%q) = %q", email, msg)
			}
			return
		}
		if strings.Count(email, "@") != 1 || len(email) > maxEmailLen || !utf8.ValidString(email) {
			t.Fatalf("checkEmail accepted %q", email)
		}
		for _, r := range email {
			if unicode.IsSpace(r) || unicode.IsControl(r) {
				t.Fatalf("checkEmail accepted %q with %U", email, r)
			}
		}
		local, domain, _ := strings.Cut(email, "@")
		if local == "" || !strings.Contains(domain, ".") {
			t.Fatalf("checkEmail accepted %q", email)
		}
		// Every address registration accepts has a key (createUser).
		if key, err := emailKey(email); err != nil || key != strings.ToLower(key) {
			t.Fatalf("checkEmail accepted %q, whose key is %q, %v", email, key, err)
		}
	})
}

func FuzzPasswordPolicy(f *testing.F) {
	for _, s := range []string{"", "Secret!pw1", "secret!pw1", "Secretpw1", "Sh!1", "Te$tTest", "TEST!abcd",
		strings.Repeat("A!", 64), strings.Repeat("A!", 64) + "x", "Ωmega!!!!", "\xff\xfe\xfdABCDEFG", "İ!aaaaaaa", "Ｔｅｓｔ!Abcd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, password string) {
		broken := CheckPasswordPolicy(password)
		if again := CheckPasswordPolicy(password); !reflect.DeepEqual(broken, again) {
			t.Fatalf("CheckPasswordPolicy(%q) not deterministic: %q then %q", password, broken, again)
		}
		if len(broken) > 4 {
			t.Fatalf("CheckPasswordPolicy(%q) = %q", password, broken)
		}
		for _, msg := range broken {
			if msg == "" {
				t.Fatalf("CheckPasswordPolicy(%q) = %q", password, broken)
			}
		}
		if len(broken) > 0 {
			return
		}
		n := utf8.RuneCountInString(password)
		hasUpper := strings.IndexFunc(password, unicode.IsUpper) >= 0
		hasSpecial := strings.IndexFunc(password, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) >= 0
		if n < passwordMinLen || n > passwordMaxLen || !hasUpper || !hasSpecial || strings.Contains(strings.ToLower(password), "test") {
			t.Fatalf("CheckPasswordPolicy accepted %q", password)
		}
	})
}

// argon2Seeds are encoded hashes that the argon2 decoder and Verify get
// as seeds.
func argon2Seeds(f *testing.F, h *Hasher) []string {
	good, err := h.Hash(context.Background(), fuzzSecret)
	if err != nil {
		f.Fatal(err)
	}
	return []string{
		good,
		strings.Replace(good, "$v=19$", "$v=16$", 1),
		strings.Replace(good, "m=64,", "m=0,", 1),
		strings.Replace(good, "p=1$", "p=255$", 1),
		strings.Replace(good, "p=1$", "p=256$", 1),
		strings.Replace(good, "t=1,", "t=101,", 1),
		strings.Replace(good, "m=64,", "m=-1,", 1),
		strings.Replace(good, "m=64,", "m=4294967296,", 1),
		strings.Replace(good, "p=1$", "p=1,x=2$", 1),
		good + "$",
		good[:len(good)-10],
		"$argon2id$v=19$m=8,t=1,p=1$$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=8,t=1,p=1$c2FsdA$" + strings.Repeat("A", 87),
		"$argon2id$v=19$m=8,t=1,p=1$c2FsdA==$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$$$$$",
		"$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA",
		"$2b$04$C6UzMDM.H6dfI/f/IKxGhu9QOk1dOK9vTxe.wOnP2h7L7c.oDZb8K",
		"$2b$31$C6UzMDM.H6dfI/f/IKxGhu9QOk1dOK9vTxe.wOnP2h7L7c.oDZb8K",
		"$2y$+4$C6UzMDM.H6dfI/f/IKxGhu9QOk1dOK9vTxe.wOnP2h7L7c.oDZb8K",
		"$2a$04$short",
		"",
	}
}

func FuzzDecodeArgon2(f *testing.F) {
	for _, s := range argon2Seeds(f, newTestHasher(f, fastArgon2, 1)) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, encoded string) {
		p, salt, key, err := decodeArgon2(encoded)
		if err != nil {
			return
		}
		if p.MemoryKiB > 4<<20 || p.Iterations < 1 || p.Iterations > 100 || p.Parallelism < 1 || len(key) < 16 || len(key) > 64 {
			t.Fatalf("decodeArgon2(%q) accepted %+v, key of %d bytes", encoded, p, len(key))
		}
		// What was accepted survives re-encoding in the canonical form.
		b64 := base64.RawStdEncoding
		canon := "$argon2id$v=" + strconv.Itoa(argon2.Version) + "$m=" + strconv.FormatUint(uint64(p.MemoryKiB), 10) +
			",t=" + strconv.FormatUint(uint64(p.Iterations), 10) + ",p=" + strconv.Itoa(int(p.Parallelism)) +
			"$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key)
		p2, salt2, key2, err := decodeArgon2(canon)
		if err != nil || p2 != p || !bytes.Equal(salt, salt2) || !bytes.Equal(key, key2) {
			t.Fatalf("canonical form %q of %q does not decode the same: %v", canon, encoded, err)
		}
	})
}

// maxFuzzArgon2KiB bounds the argon2 memory × passes that FuzzVerifyHash
// lets Verify spend on one input (64 MiB). decodeArgon2 itself accepts
// m up to 4 GiB with t up to 100, so a stored hash can make one Verify
// allocate 4 GiB (a product bug, see the fuzz report); such inputs are
// skipped here rather than run.
const maxFuzzArgon2KiB = 64 << 10

// tooCostly reports whether Verify would spend more on encoded than a
// fuzz input may: argon2 beyond maxFuzzArgon2KiB, or bcrypt above cost 6.
func tooCostly(encoded string) bool {
	switch {
	case strings.HasPrefix(encoded, "$argon2id$"):
		p, _, _, err := decodeArgon2(encoded)
		if err != nil {
			return false
		}
		// argon2 rounds memory up to 8 KiB per lane.
		mem := max(uint64(p.MemoryKiB), 8*uint64(p.Parallelism))
		return mem*uint64(p.Iterations) > maxFuzzArgon2KiB
	case strings.HasPrefix(encoded, "$2a$"), strings.HasPrefix(encoded, "$2b$"), strings.HasPrefix(encoded, "$2y$"):
		// bcrypt reads the cost from bytes 4 and 5 with strconv.Atoi and
		// accepts up to 31 (2^31 rounds, hours of CPU).
		if len(encoded) < 6 {
			return false
		}
		cost, err := strconv.Atoi(encoded[4:6])
		return err == nil && cost > 6
	}
	return false
}

func FuzzVerifyHash(f *testing.F) {
	h := newTestHasher(f, fastArgon2, 1)
	for _, s := range argon2Seeds(f, h) {
		f.Add(fuzzSecret, s)
		f.Add("wrong", s)
	}
	f.Add("", "")
	f.Add(strings.Repeat("x", 100), "$2b$04$C6UzMDM.H6dfI/f/IKxGhu9QOk1dOK9vTxe.wOnP2h7L7c.oDZb8K")

	ctx := context.Background()
	f.Fuzz(func(t *testing.T, password, encoded string) {
		if tooCostly(encoded) {
			t.Skip("hash parameters too costly for a fuzz input")
		}
		rehash, err := h.Verify(ctx, password, encoded)
		if err != nil && rehash {
			t.Fatalf("Verify(%q) asked for a rehash with error %v", encoded, err)
		}
		// A fresh hash of the same password verifies, without rehash; a
		// different password does not.
		fresh, err := h.Hash(ctx, password)
		if err != nil {
			t.Fatal(err)
		}
		if rehash, err := h.Verify(ctx, password, fresh); err != nil || rehash {
			t.Fatalf("Verify(own hash) = %v, %v", rehash, err)
		}
		if _, err := h.Verify(ctx, password+"\x00", fresh); !errors.Is(err, ErrMismatch) {
			t.Fatalf("Verify(other password, own hash) = %v, want ErrMismatch", err)
		}
	})
}

// ---- Every JSON route with a body or a query ----

// anyOf turns a *string into a comparable any (nil or the string).
func anyOf(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// fuzzProvider is the AI provider of FuzzAPIRoutes: a RoundTripper that
// never reaches the network. By the length of the host it answers 200,
// 401 with a message that echoes the key, fails to connect with an
// error that holds the key, or redirects to another host. It records
// the last key it was sent.
type fuzzProvider struct {
	mu  sync.Mutex
	key string
}

func (p *fuzzProvider) lastKey() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.key
	p.key = ""
	return k
}

func (p *fuzzProvider) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	key := req.Header.Get("X-Api-Key")
	if key == "" {
		key = strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
	}
	p.mu.Lock()
	p.key = key
	p.mu.Unlock()
	answer := func(status int, body string, header http.Header) *http.Response {
		if header == nil {
			header = http.Header{}
		}
		header.Set("Content-Type", "application/json")
		return &http.Response{StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: header, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: req}
	}
	switch len(req.URL.Host) % 4 {
	case 0:
		return answer(http.StatusOK, `{"id":"chatcmpl-1","choices":[]}`, nil), nil
	case 1:
		msg, _ := json.Marshal("Incorrect API key provided: " + key)
		return answer(http.StatusUnauthorized, `{"error":{"message":`+string(msg)+`}}`, nil), nil
	case 2:
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("lookup %s with key %s: connection refused", req.URL.Host, key)}
	default:
		return answer(http.StatusFound, "", http.Header{"Location": {"http://elsewhere.invalid/"}}), nil
	}
}

// fuzzRoutes are the JSON routes with a body or a query, and those of
// groups and grants; a path that ends in "/" takes the fuzzed path
// segment, and one with "{}" takes the segment's "|"-separated parts
// in turn. A 4xx of a route marked whole changes nothing at all: no
// half-applied change.
var fuzzRoutes = []struct {
	method, path string
	whole        bool
}{
	{http.MethodPut, "/api/profile", false},
	{http.MethodPatch, "/api/admin/users/", false},
	{http.MethodGet, "/api/admin/users", false},
	{http.MethodGet, "/api/admin/audit", false},
	{http.MethodPatch, "/api/settings/ai", false},
	{http.MethodPost, "/api/settings/ai/test", false},
	{http.MethodPatch, "/api/settings/documents/limits", false},
	{http.MethodPost, "/api/auth/refresh", false},
	{http.MethodPost, "/api/users/me/password", false},
	{http.MethodDelete, "/api/users/me/sessions/", false},
	{http.MethodPut, "/api/admin/apps/", true},
	{http.MethodPost, "/api/admin/groups", true},
	{http.MethodPatch, "/api/admin/groups/", true},
	{http.MethodGet, "/api/admin/groups", true},
	{http.MethodPut, "/api/admin/groups/{}/members/{}", true},
	{http.MethodDelete, "/api/admin/groups/{}/members/{}", true},
	{http.MethodPut, "/api/admin/groups/{}/apps/{}", true},
	{http.MethodDelete, "/api/admin/users/{}/apps/{}", true},
	{http.MethodPut, "/api/admin/users/{}/apps/{}", true},
	{http.MethodDelete, "/api/admin/groups/", true},
	{http.MethodDelete, "/api/admin/apps/", true},
	{http.MethodPost, "/api/auth/verify-email", true},
	{http.MethodPost, "/api/auth/verify-email/resend", true},
	{http.MethodPost, "/api/auth/password-reset", true},
	{http.MethodPost, "/api/auth/password-reset/confirm", true},
}

// fuzzContentTypes are the Content-Types a FuzzAPIRoutes input picks
// from; a choice past the end sends the fuzzed string.
var fuzzContentTypes = []string{"application/json", "", "application/json; charset=utf-8",
	"application/merge-patch+json", "application/x-www-form-urlencoded", "text/plain"}

// checkErrorShape checks a 4xx body: FastAPI's {"detail": "..."}, or
// for a 422 {"detail": [{"type", "loc", "msg"}, ...]}.
func checkErrorShape(t *testing.T, what string, status int, body []byte) {
	t.Helper()
	var v map[string]json.RawMessage
	if err := json.Unmarshal(body, &v); err != nil || len(v) != 1 || v["detail"] == nil {
		t.Fatalf("%s: %d body %q is not {\"detail\": ...}", what, status, body)
	}
	var s string
	if json.Unmarshal(v["detail"], &s) == nil {
		if s == "" {
			t.Fatalf("%s: %d with an empty detail", what, status)
		}
		return
	}
	var entries []map[string]json.RawMessage
	if err := json.Unmarshal(v["detail"], &entries); err != nil || len(entries) == 0 || status != http.StatusUnprocessableEntity {
		t.Fatalf("%s: %d detail %s is neither a string nor a 422's list", what, status, v["detail"])
	}
	for _, e := range entries {
		var typ, msg string
		var loc []any
		if len(e) != 3 || json.Unmarshal(e["type"], &typ) != nil || typ == "" || json.Unmarshal(e["msg"], &msg) != nil || msg == "" ||
			json.Unmarshal(e["loc"], &loc) != nil || len(loc) == 0 {
			t.Fatalf("%s: malformed 422 entry %v", what, e)
		}
		for i, l := range loc {
			_, isString := l.(string)
			_, isNumber := l.(float64)
			if !isString && !(isNumber && i > 0) {
				t.Fatalf("%s: loc %v of a 422 entry", what, loc)
			}
		}
		if first := loc[0].(string); first != "body" && first != "query" && first != "path" {
			t.Fatalf("%s: loc %v of a 422 entry", what, loc)
		}
	}
}

func FuzzAPIRoutes(f *testing.F) {
	dir := f.TempDir()
	provider := &fuzzProvider{}
	env := newTestEnv(f, func(c *Config) {
		c.Settings = settings.Config{Dir: dir, AITestTransport: provider, AITestTimeout: 2 * time.Second}
		// With a mailer, the mail routes queue what they would send (no
		// sender runs: nothing is sent).
		c.Mail = testMailConfig(f, smtptest.Start(f, smtptest.Options{}))
		// Every input reaches the body: no rate limit.
		c.RateLimit = RateLimitConfig{IPRequests: -1, LoginFailures: -1}
		c.Sessions.RefreshTokenInBody = true
	})
	h := env.svc.Handler()
	ctx := context.Background()

	// The admin acts with a token of no session: no revocation of a
	// session (DELETE, password change) can end it.
	const adminPassword = "Admin!pw1"
	admin, _, err := env.svc.CreateAdmin(ctx, "fuzz-admin@example.com", adminPassword)
	if err != nil {
		f.Fatal(err)
	}
	token, _, err := env.svc.Tokens().Issue(admin)
	if err != nil {
		f.Fatal(err)
	}
	adminHash, err := env.svc.passwordHashOf(ctx, admin.ID)
	if err != nil {
		f.Fatal(err)
	}
	victim := env.register("fuzz-victim@example.com", "Secret!pw1")
	// A session of the admin to revoke, and its refresh token.
	r := env.do("POST", "/api/auth/login", "", formOf("username", admin.Email, "password", adminPassword))
	var login sessionTokenResponse
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &login) != nil || login.RefreshToken == "" {
		f.Fatalf("login: %d %s", r.Status, r.Body)
	}
	claims, err := env.svc.Tokens().Verify(login.AccessToken)
	if err != nil || claims.SessionID == "" {
		f.Fatalf("login token: %v %+v", err, claims)
	}
	sessionID := claims.SessionID
	var groupID string
	if err := env.db.QueryRow(ctx, "INSERT INTO groups (name) VALUES ('Fuzzers') RETURNING id::text").Scan(&groupID); err != nil {
		f.Fatal(err)
	}

	// Live link tokens of the victim, one per purpose, for the seeds of
	// the mail routes (made as the outbox's sender makes them).
	verifyToken := linkToken(env.svc.linkKey, newNonce())
	resetToken := linkToken(env.svc.linkKey, newNonce())
	if err := pgx.BeginFunc(ctx, env.db, func(tx pgx.Tx) error {
		if err := storeLinkToken(ctx, tx, victim.ID, purposeVerifyEmail, victim.Email, verifyToken, time.Hour); err != nil {
			return err
		}
		return storeLinkToken(ctx, tx, victim.ID, purposePasswordReset, victim.Email, resetToken, time.Hour)
	}); err != nil {
		f.Fatal(err)
	}

	// restore puts back what an accepted request may have changed that
	// later inputs depend on: the two users' role and active state, and
	// the admin's password.
	restore := func(t *testing.T) {
		for _, u := range []*User{admin, victim} {
			if _, err := env.db.Exec(ctx, "UPDATE users SET role = $2, is_active = $3, hashed_password = CASE WHEN id = $4 THEN $5 ELSE hashed_password END WHERE id = $1",
				u.ID, u.Role, u.IsActive, admin.ID, adminHash); err != nil {
				t.Fatal(err)
			}
			env.svc.cache.invalidate(u.ID)
		}
		// The group and the app that later inputs name, if one was deleted.
		if _, err := env.db.Exec(ctx, "INSERT INTO groups (id, name) VALUES ($1, 'Fuzzers') ON CONFLICT DO NOTHING", groupID); err != nil {
			t.Fatal(err)
		}
		if _, err := env.db.Exec(ctx, "INSERT INTO apps (key, name, open_to_all) VALUES ('ai', 'AI', true) ON CONFLICT DO NOTHING"); err != nil {
			t.Fatal(err)
		}
	}
	// state is everything a refused request must leave as it was. The
	// connection test's own audit event (settings.ai_test) is checked
	// apart: it must not hold the key.
	state := func(t *testing.T) string {
		var db string
		err := env.db.QueryRow(ctx, `SELECT concat_ws(E'\n',
			(SELECT json_agg(x ORDER BY x.id)::text FROM users x),
			(SELECT json_agg(x ORDER BY x.user_id)::text FROM profiles x),
			(SELECT json_agg(x ORDER BY x.id)::text FROM sessions x),
			(SELECT json_agg(x ORDER BY x.token_hash)::text FROM refresh_tokens x),
			(SELECT json_agg(x ORDER BY x.key)::text FROM apps x),
			(SELECT json_agg(x ORDER BY x.id)::text FROM groups x),
			(SELECT json_agg(x ORDER BY x.group_id, x.user_id)::text FROM group_members x),
			(SELECT json_agg(x ORDER BY x.user_id, x.app_key)::text FROM user_app_grants x),
			(SELECT json_agg(x ORDER BY x.group_id, x.app_key)::text FROM group_app_grants x),
			(SELECT json_agg(x ORDER BY x.token_hash)::text FROM email_tokens x),
			(SELECT json_agg(x ORDER BY x.id)::text FROM mail_outbox x),
			(SELECT count(*)::text FROM audit_events WHERE event <> 'settings.ai_test'))`).Scan(&db)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"ai.json", "documents.json"} {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			db += "\n" + string(b)
		}
		return db
	}

	type seed struct {
		route      uint8
		seg, query string
		ct         uint8
		body       string
	}
	const other = uint8(255) // the fuzzed Content-Type
	const unknownID = "0b5a3c1e-8c1f-4b7e-9a43-3f6c1d2e4f50"
	const aiKey = "sk-test-" + fuzzSecret + "-0123456789"
	seeds := []seed{
		// PUT /api/profile
		{0, "", "", 0, `{"full_name":"Fuzz Admin","phone":"+49 (30) 123-456","job_title":"Ops","department":"IT","bio":"b","avatar_url":"https://example.com/a.png"}`},
		{0, "", "", 0, `{"full_name":null,"phone":null,"avatar_url":null}`},
		{0, "", "", 0, `{"phone":"12","avatar_url":"javascript:alert(1)","bio":"` + strings.Repeat("x", 2001) + `"}`},
		{0, "", "", 0, `{"full_name":"a\u0000b","phone":"+1 234 567 ext 8","avatar_url":"http://h:99999/"}`},
		{0, "", "", 0, `{"user_id":"` + unknownID + `","updated_at":"2020-01-01T00:00:00Z","role":"admin"}`},
		{0, "", "", 0, `{"full_name":1,"bio":["x"],"department":{"a":1},"job_title":true}`},
		{0, "", "", 0, "{\"full_name\":\"\xff\"}"},
		{0, "", "", 4, "full_name=x"},
		{0, "", "", 0, `[]`},
		{0, "", "", other, `{}`},
		// PATCH /api/admin/users/{id}
		{1, victim.ID, "", 0, `{"role":"admin","is_active":true}`},
		{1, victim.ID, "", 0, `{"role":"user","is_active":"no"}`},
		{1, strings.ToUpper(victim.ID), "", 0, `{"is_active":0}`},
		{1, "{" + victim.ID + "}", "", 0, `{"is_active":1.0}`},
		{1, "urn:uuid:" + victim.ID, "", 0, `{"role":null,"is_active":null}`},
		{1, strings.ReplaceAll(victim.ID, "-", ""), "", 0, `{"is_active":2,"role":"root"}`},
		{1, admin.ID, "", 0, `{"is_active":false}`},
		{1, admin.ID, "", 0, `{"role":"user"}`},
		{1, unknownID, "", 0, `{"role":"user"}`},
		{1, "not-a-uuid", "", 0, `{"email":"x@y.co","hashed_password":"x"}`},
		{1, "not-a-uuid", "", 0, `{"role":`},
		{1, "ü" + victim.ID[2:], "", 5, `{}`},
		{1, "", "", 0, `{}`},
		{1, "..", "", 0, `{}`},
		{1, "a/b%c", "", 0, `{}`},
		// GET /api/admin/users
		{2, "", "skip=0&limit=10&q=FUZZ&role=admin&is_active=yes", 1, ""},
		{2, "", "limit=0&skip=-1&role=root&is_active=maybe", 1, ""},
		{2, "", "limit=1001&skip=99999999999999999999999", 1, ""},
		{2, "", "limit=1_0&skip=+5.00&q=%25_%5C", 1, ""},
		{2, "", "q=%00&limit=%zz&limit=5&skip", 1, ""},
		{2, "", "q=%FF%FE+x&limit=" + strings.Repeat("9", 4301), 1, ""},
		{2, "", "&&=&a=b=c;d", 1, ""},
		// GET /api/admin/audit
		{3, "", "event=register&event=login.success&actor_id=" + admin.ID + "&since=2020-01-01T00:00:00Z&until=2100-01-01T00:00:00%2B01:00", 1, ""},
		{3, "", "since=2020-01-01&until=yesterday&actor_id=nope&target_id={" + victim.ID + "}", 1, ""},
		{3, "", "event=%00&event=&target_id=urn:uuid:" + victim.ID, 1, ""},
		{3, "", "since=0000-01-01T00:00:00Z&until=9999-12-31T23:59:59.999999999-23:59", 1, ""},
		{3, "", "since=2025-01-01T00:00:00.000000001Z&skip=1&limit=1000", 1, ""},
		// PATCH /api/settings/ai
		{4, "", "", 0, `{"provider":"anthropic","model":"claude-3-5-haiku-latest","base_url":"https://llm.example.com/v1","api_key":" ` + aiKey + `\n","temperature":0.5,"max_tokens":2048}`},
		{4, "", "", 0, `{"base_url":null,"api_key":"","temperature":0,"max_tokens":1}`},
		{4, "", "", 0, `{"api_key":"****0123"}`},
		{4, "", "", 0, `{"provider":"OpenAI","model":"","base_url":"ftp://x","api_key":"has space","temperature":2.5,"max_tokens":1.5}`},
		{4, "", "", 0, `{"model":null,"temperature":1e400,"max_tokens":200001,"base_url":"https://u:p@h/?q#f"}`},
		{4, "", "", 0, `{"model":"` + strings.Repeat("m", 201) + `","api_key":"` + strings.Repeat("k", 1001) + `","base_url":"http://:80"}`},
		{4, "", "", 0, `{"temperature":null,"max_tokens":null,"provider":null,"id":1}`},
		// POST /api/settings/ai/test
		{5, "", "", 1, ""},
		{5, "", "", 0, "null"},
		{5, "", "", 0, `{"api_key":"` + aiKey + `","base_url":"http://127.0.0.1:1"}`},
		{5, "", "", 0, `{"provider":"anthropic","api_key":"` + aiKey + `"}`},
		{5, "", "", 0, `{"api_key":"` + aiKey + `","base_url":"http://abcd"}`},
		{5, "", "", 0, `{"api_key":"` + aiKey + `","base_url":"https://llm.example/v1/"}`},
		{5, "", "", 0, `{"api_key":"short","model":"m","base_url":"http://[::1]:8080/x"}`},
		{5, "", "", 0, `{"api_key":"****","temperature":-1}`},
		// PATCH /api/settings/documents/limits
		{6, "", "", 0, `{"max_pdf_size_mb":50}`},
		{6, "", "", 0, `{"max_pdf_size_mb":0}`},
		{6, "", "", 0, `{"max_pdf_size_mb":1025}`},
		{6, "", "", 0, `{"max_pdf_size_mb":"10"}`},
		{6, "", "", 0, `{"max_pdf_size_mb":null}`},
		{6, "", "", 0, `{"max_pdf_size_mb":10.0,"updated_at":null}`},
		{6, "", "", 0, `{"max_pdf_size_mb":1e3}`},
		{6, "", "", 0, `{"max_pdf_size_mb":9007199254740993}`},
		{6, "", "", 0, `{}`},
		// POST /api/auth/refresh
		{7, "", "", 0, `{"refresh_token":"` + login.RefreshToken + `"}`},
		{7, "", "", 0, `{"refresh_token":""}`},
		{7, "", "", 0, `{"refresh_token":null}`},
		{7, "", "", 1, ""},
		{7, "", "", 0, "null"},
		{7, "", "", 0, `{"refresh_token":"x","access_token":"y"}`},
		{7, "", "", 4, "refresh_token=x"},
		// DELETE /api/users/me/sessions/{session_id}, before the password
		// change that ends every session
		{9, sessionID, "", 1, ""},
		{9, unknownID, "", 1, ""},
		{9, "{" + unknownID + "}", "", 1, ""},
		{9, "not-a-uuid", "", 1, ""},
		{9, "", "", 1, ""},
		{9, "\xff", "", 1, ""},
		{9, "../../profile", "", 0, `{}`},
		// POST /api/users/me/password
		{8, "", "", 0, `{"current_password":"wrong","new_password":"New!pass1"}`},
		{8, "", "", 0, `{"current_password":"` + adminPassword + `","new_password":"` + adminPassword + `"}`},
		{8, "", "", 0, `{"current_password":"` + adminPassword + `","new_password":"Other!pw2"}`},
		{8, "", "", 0, `{"current_password":"x","new_password":"short"}`},
		{8, "", "", 0, `{"current_password":null,"new_password":"Test!Test1"}`},
		{8, "", "", 0, `{"current_password":"x","new_password":"New!pass1\u0000","user_id":"` + victim.ID + `"}`},
		// PUT /api/admin/apps/{key}
		{10, "wiki", "", 0, `{"name":" Wiki ","description":"d","open_to_all":true}`},
		{10, "documents", "", 0, `{"name":"Documents","open_to_all":1}`},
		{10, "Wiki", "", 0, `{"name":"","description":null}`},
		{10, "a-" + strings.Repeat("b", 62), "", 0, `{"name":"` + strings.Repeat("n", 101) + `"}`},
		{10, "", "", 0, `{"name":"x"}`},
		{10, "w\x00", "", 0, `{"name":"a\u0000"}`},
		// POST /api/admin/groups
		{11, "", "", 0, `{"name":"Team","description":"d"}`},
		{11, "", "", 0, `{"name":"FUZZERS"}`},
		{11, "", "", 0, `{"name":"  ","members":[]}`},
		{11, "", "", 0, `{"name":null,"description":5}`},
		// PATCH /api/admin/groups/{id}
		{12, groupID, "", 0, `{"name":"Fuzz","description":null}`},
		{12, groupID, "", 0, `{"name":"` + strings.Repeat("é", 101) + `"}`},
		{12, unknownID, "", 0, `{"name":"x"}`},
		{12, "nope", "", 0, `{"id":"x"}`},
		// GET /api/admin/groups
		{13, "", "q=fu%25&skip=1&limit=5", 1, ""},
		{13, "", "q=%00&limit=0", 1, ""},
		// PUT and DELETE /api/admin/groups/{id}/members/{user_id}
		{14, groupID + "|" + victim.ID, "", 1, ""},
		{14, groupID + "|" + victim.ID, "", 0, `{"role":"owner"}`},
		{14, groupID + "|" + unknownID, "", 1, ""},
		{14, unknownID + "|" + victim.ID, "", 1, ""},
		{14, strings.ToUpper(groupID) + "|{" + victim.ID + "}", "", 1, ""},
		{14, "nope|" + victim.ID, "", 1, ""},
		{14, groupID + "|", "", 1, ""},
		{15, groupID + "|" + victim.ID, "", 1, ""},
		{15, groupID + "|" + victim.ID, "", 1, ""},
		{15, groupID + "|not-a-uuid", "", 1, ""},
		// PUT /api/admin/groups/{id}/apps/{key}
		{16, groupID + "|documents", "", 1, ""},
		{16, groupID + "|no-such-app", "", 1, ""},
		{16, groupID + "|Bad Key", "", 1, ""},
		{16, groupID + "|" + strings.Repeat("a", 65), "", 1, ""},
		{16, unknownID + "|ai", "", 1, ""},
		// DELETE and PUT /api/admin/users/{id}/apps/{key}
		{18, victim.ID + "|documents", "", 1, ""},
		{17, victim.ID + "|documents", "", 1, ""},
		{17, victim.ID + "|ai", "", 1, ""},
		{18, unknownID + "|documents", "", 1, ""},
		{18, victim.ID + "|a\x00", "", 1, ""},
		{18, "urn:uuid:" + victim.ID + "|ai|extra", "", 1, ""},
		// DELETE /api/admin/apps/{key} and /api/admin/groups/{id}
		{20, "no-such-app", "", 1, ""},
		{20, "Bad", "", 1, ""},
		{19, unknownID, "", 1, ""},
		{19, "nope", "", 1, ""},
		{20, "ai", "", 1, ""},
		{19, groupID, "", 1, ""},
		// POST /api/auth/verify-email and /password-reset/confirm: the
		// victim's live tokens, planted below, and what is not one
		{21, "", "", 0, `{"token":"` + verifyToken + `"}`},
		{21, "", "", 0, `{"token":"` + resetToken + `"}`},
		{21, "", "", 0, `{"token":"` + verifyToken + `=","user_id":"` + victim.ID + `"}`},
		{21, "", "", 0, `{"token":null}`},
		{21, "", "", 0, `{"token":["x"]}`},
		{21, "", "", 0, "{\"token\":\"\xff\"}"},
		{24, "", "", 0, `{"token":"` + resetToken + `","new_password":"Reset!pw9"}`},
		{24, "", "", 0, `{"token":"` + verifyToken + `","new_password":"Reset!pw9"}`},
		{24, "", "", 0, `{"token":"` + resetToken + `","new_password":"weak"}`},
		{24, "", "", 0, `{"token":"` + strings.Repeat("A", 43) + `","new_password":"` + fuzzSecret + `"}`},
		{24, "", "", 0, `{"token":"","new_password":"Test!Test1","email":"x@y.co"}`},
		{24, "", "", 4, "token=x&new_password=Reset!pw9"},
		// POST /api/auth/verify-email/resend and /password-reset
		{22, "", "", 0, `{"email":"fuzz-victim@example.com"}`},
		{22, "", "", 0, `{"email":" FUZZ-VICTIM@EXAMPLE.COM "}`},
		{22, "", "", 0, `{"email":"nobody@example.com"}`},
		{23, "", "", 0, `{"email":"fuzz-admin@example.com"}`},
		{23, "", "", 0, `{"email":"a\r\nBcc: x@y.co"}`},
		{23, "", "", 0, `{"email":"x@ｅxample.com","token":"t"}`},
		{23, "", "", 0, `{"email":"` + strings.Repeat("a", 300) + `@example.com"}`},
		{23, "", "", 0, `{"email":5}`},
	}
	for _, s := range seeds {
		f.Add(s.route, s.seg, s.query, s.ct, "application/json; charset=\"utf-8\"", []byte(s.body))
	}
	f.Add(uint8(0), "", "", other, "application/json; charset", []byte(`{}`))
	f.Add(uint8(4), "", "", other, "APPLICATION/JSON", []byte(`{"model":"m"}`))
	f.Add(uint8(6), "", "", other, "application/problem+json; q=1", []byte(`{"max_pdf_size_mb":2}`))

	f.Fuzz(func(t *testing.T, route uint8, seg, query string, ctChoice uint8, contentType string, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		path := rt.path
		if strings.HasSuffix(path, "/") {
			path += url.PathEscape(seg)
		}
		parts := strings.Split(seg, "|")
		for i := 0; strings.Contains(path, "{}"); i++ {
			part := ""
			if i < len(parts) {
				part = parts[i]
			}
			path = strings.Replace(path, "{}", url.PathEscape(part), 1)
		}
		ct := contentType
		if int(ctChoice) < len(fuzzContentTypes) {
			ct = fuzzContentTypes[ctChoice]
		}
		req := httptest.NewRequest(rt.method, path, bytes.NewReader(body))
		req.URL.RawQuery = query
		if ct != "" {
			req.Header["Content-Type"] = []string{ct}
		}
		req.Header.Set("Authorization", "Bearer "+token)
		what := rt.method + " " + path + "?" + query

		mutating := rt.method != http.MethodGet
		var before string
		if mutating {
			before = state(t)
		}
		env.logs.TakeAll()
		provider.lastKey()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		status := w.Code

		switch {
		case status >= 500:
			cause := ""
			if logged := env.logs.FilterMessage("request failed").TakeAll(); len(logged) > 0 {
				cause = fmt.Sprint(logged[len(logged)-1].ContextMap()["error"])
			}
			t.Fatalf("%s: status %d, body %s; logged cause: %s", what, status, w.Body.Bytes(), cause)
		case status >= 400:
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("%s: %d with Content-Type %q", what, status, ct)
			}
			checkErrorShape(t, what, status, w.Body.Bytes())
		case status == http.StatusNoContent:
			if w.Body.Len() != 0 {
				t.Fatalf("%s: 204 with a body %q", what, w.Body.Bytes())
			}
		case status >= 300:
			// Only ServeMux's redirect of a path segment that is not
			// canonical ("..", "."): nothing ran.
			if !strings.HasSuffix(rt.path, "/") {
				t.Fatalf("%s: %d", what, status)
			}
		default:
			if !json.Valid(w.Body.Bytes()) || w.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("%s: %d body %q", what, status, w.Body.Bytes())
			}
		}

		// What a 200 from the settings routes shows of the key.
		if rt.path == "/api/settings/ai" && status == http.StatusOK {
			var got struct {
				APIKey    *string `json:"api_key"`
				APIKeySet bool    `json:"api_key_set"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.APIKey != nil && (!strings.HasPrefix(*got.APIKey, "****") || len(*got.APIKey) > 8) || got.APIKeySet != (got.APIKey != nil) {
				t.Fatalf("%s: api_key shown as %v (set %v)", what, anyOf(got.APIKey), got.APIKeySet)
			}
		}
		if rt.path == "/api/settings/ai/test" {
			// The settings scrub every 8-character piece of the key.
			if key := provider.lastKey(); status == http.StatusOK && len(key) >= 8 {
				var res struct {
					Message string `json:"message"`
				}
				if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
					t.Fatal(err)
				}
				msg := res.Message
				for _, prefix := range []string{"Connection failed: ", "Provider answered 401: "} {
					msg = strings.TrimPrefix(msg, prefix)
				}
				if strings.Contains(msg, key) {
					t.Fatalf("%s: the key is in the message %q", what, res.Message)
				}
			}
			var leaked int
			if err := env.db.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE event = 'settings.ai_test' AND strpos(details::text, $1) > 0`,
				fuzzSecret).Scan(&leaked); err != nil || leaked != 0 {
				t.Fatalf("%s: %d settings.ai_test audit events hold the key (%v)", what, leaked, err)
			}
		}

		if mutating {
			after := state(t)
			// A refused body changes nothing; the connection test saves
			// nothing, whatever it answers.
			if (status == http.StatusUnprocessableEntity || rt.whole && status >= 400 || rt.path == "/api/settings/ai/test") && after != before {
				t.Fatalf("%s: %d %s, but the state changed:\n%s\n->\n%s", what, status, w.Body.Bytes(), before, after)
			}
			if status < 300 {
				restore(t)
			}
		}
	})
}

// FuzzConsumeLinkToken sends arbitrary tokens to the two routes that use
// a link token (POST /api/auth/verify-email, /password-reset/confirm):
// never a 5xx; a 200 only for a live token of the route's purpose, and
// then only once; every other token a 400 "Invalid or expired token"
// that leaves the tokens, the users and their sessions as they were.
func FuzzConsumeLinkToken(f *testing.F) {
	env := newTestEnv(f, func(c *Config) { c.RateLimit = RateLimitConfig{IPRequests: -1, LoginFailures: -1} })
	h := env.svc.Handler()
	ctx := context.Background()
	owner := env.register("fuzz-link@example.com", "Secret!pw1")
	moved := env.register("fuzz-moved@example.com", "Secret!pw1")
	inactive := env.register("fuzz-inactive@example.com", "Secret!pw1")
	env.exec("UPDATE users SET is_active = false WHERE id = $1", inactive.ID)

	// Tokens as the outbox's sender makes them, from fixed nonces, so
	// that the seeds name them in every fuzzing worker.
	token := func(name string) string {
		nonce := sha256.Sum256([]byte(name))
		return linkToken(env.svc.linkKey, nonce[:])
	}
	verifyToken, resetToken := token("verify"), token("reset")
	live := map[string]string{verifyToken: purposeVerifyEmail, resetToken: purposePasswordReset}
	// Tokens that look right but are dead: expired, sent to the user's
	// former address, of an inactive user, used.
	expired, former, ofInactive, used := token("expired"), token("former"), token("inactive"), token("used")
	store := func(tx pgx.Tx, u *User, purpose, email, tok string, ttl time.Duration) error {
		return storeLinkToken(ctx, tx, u.ID, purpose, email, tok, ttl)
	}
	// plant puts every token and the owner back as at the start.
	plant := func(tb testing.TB) {
		err := pgx.BeginFunc(ctx, env.db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "DELETE FROM email_tokens"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE users SET email_verified = false WHERE id = $1", owner.ID); err != nil {
				return err
			}
			for _, err := range []error{
				store(tx, owner, purposeVerifyEmail, owner.Email, verifyToken, time.Hour),
				store(tx, owner, purposePasswordReset, owner.Email, resetToken, time.Hour),
				store(tx, moved, purposeVerifyEmail, "fuzz-former@example.com", former, time.Hour),
				store(tx, moved, purposePasswordReset, moved.Email, expired, -time.Second),
				store(tx, inactive, purposePasswordReset, inactive.Email, ofInactive, time.Hour),
				store(tx, inactive, purposeVerifyEmail, inactive.Email, used, time.Hour),
			} {
				if err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, "UPDATE email_tokens SET used_at = now() WHERE token_hash = $1", tokenHash(used))
			return err
		})
		if err != nil {
			tb.Fatal(err)
		}
		env.svc.cache.invalidate(owner.ID)
	}
	plant(f)
	state := func(t *testing.T) string {
		var s string
		if err := env.db.QueryRow(ctx, `SELECT concat_ws(E'\n',
			(SELECT json_agg(x ORDER BY x.token_hash)::text FROM email_tokens x),
			(SELECT json_agg(x ORDER BY x.id)::text FROM users x),
			(SELECT json_agg(x ORDER BY x.id)::text FROM sessions x),
			(SELECT count(*)::text FROM audit_events))`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	for _, tok := range []string{verifyToken, resetToken, expired, former, ofInactive, used} {
		f.Add(uint8(0), tok)
		f.Add(uint8(1), tok)
	}
	flipped := []byte(resetToken)
	flipped[10] ^= 1
	for _, tok := range []string{
		verifyToken[:42], verifyToken + "A", resetToken + "=", " " + resetToken, strings.ToUpper(verifyToken),
		string(flipped), strings.NewReplacer("-", "+", "_", "/").Replace(resetToken), url.QueryEscape(resetToken + "/"),
		resetToken[:21] + "\x00" + resetToken[22:], "", strings.Repeat("A", 43), strings.Repeat("A", 1<<16), "é" + verifyToken[2:],
	} {
		f.Add(uint8(1), tok)
	}

	const detail = `{"detail":"Invalid or expired token"}`
	f.Fuzz(func(t *testing.T, route uint8, tok string) {
		path, purpose := "/api/auth/verify-email", purposeVerifyEmail
		body := map[string]string{"token": tok}
		if route%2 == 1 {
			path, purpose = "/api/auth/password-reset/confirm", purposePasswordReset
			body["new_password"] = "Reset!pw9"
		}
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		send := func() *httptest.ResponseRecorder {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, fuzzRequest(path, "application/json", raw))
			return w
		}
		before := state(t)
		env.logs.TakeAll()
		w := send()
		switch {
		case w.Code >= 500:
			cause := ""
			if logged := env.logs.FilterMessage("request failed").TakeAll(); len(logged) > 0 {
				cause = fmt.Sprint(logged[len(logged)-1].ContextMap()["error"])
			}
			t.Fatalf("POST %s %q: %d %s; logged cause: %s", path, tok, w.Code, w.Body.Bytes(), cause)
		case w.Code == http.StatusOK:
			if live[tok] != purpose {
				t.Fatalf("POST %s accepted %q, which is no live %s token: %s", path, tok, purpose, w.Body.Bytes())
			}
			// Once only.
			if again := send(); again.Code != http.StatusBadRequest || again.Body.String() != detail {
				t.Fatalf("POST %s: a second use of a token: %d %s", path, again.Code, again.Body.Bytes())
			}
			plant(t)
			return
		case live[tok] == purpose:
			t.Fatalf("POST %s refused a live token: %d %s", path, w.Code, w.Body.Bytes())
		case w.Code == http.StatusUnprocessableEntity && strings.ContainsRune(tok, 0):
			// NUL is refused as in every JSON string.
			checkErrorShape(t, path, w.Code, w.Body.Bytes())
		case w.Code != http.StatusBadRequest || w.Body.String() != detail:
			t.Fatalf("POST %s %q: %d %s, want 400 %s", path, tok, w.Code, w.Body.Bytes(), detail)
		}
		if after := state(t); after != before {
			t.Fatalf("POST %s %q: %d, but the state changed:\n%s\n->\n%s", path, tok, w.Code, before, after)
		}
	})
}
