package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/caddyaccounts/gateway/internal/smtptest"
	"github.com/caddyaccounts/gateway/internal/testnet"
)

// The account pages (package ui, served by accounts_ui under /accounts/)
// in a real browser: headless Chromium driven through the DevTools
// protocol, against the real binary with its Caddyfile, a real
// PostgreSQL and an SMTP sink that catches the mails whose links the
// browser then opens. One browser process serves every scenario; each
// has a browser context (cookies) of its own.

// uiChromium is where Debian's chromium package puts the browser.
const uiChromium = "/usr/bin/chromium"

// uiTimeout bounds each step of a scenario (a navigation, a wait).
const uiTimeout = 20 * time.Second

// uiEnv is what the UI scenarios share.
type uiEnv struct {
	g       *Gateway
	sink    *smtptest.Server
	browser context.Context
	// shots is the directory of the screenshots.
	shots string

	mu sync.Mutex
	// requests are the URLs every tab requested; problems are what the
	// pages reported that a test must fail on (exceptions, CSP
	// violations).
	requests []string
	problems []string
	// tabs counts the tabs opened.
	tabs int
}

func TestUI(t *testing.T) {
	env := startUI(t)
	t.Run("CSP", env.testCSP)
	t.Run("flows", func(t *testing.T) {
		t.Run("RegisterVerifyProfileSessions", env.testRegisterVerifyProfileSessions)
		t.Run("ResetPassword", env.testResetPassword)
		t.Run("ExpiredSessionSignsInAndComesBack", env.testExpiredSession)
		t.Run("CrossOriginFormRefused", env.testCrossOriginForm)
		t.Run("Admin", env.testAdmin)
	})
	env.mu.Lock()
	defer env.mu.Unlock()
	n := 0
	for _, raw := range env.requests {
		u, err := url.Parse(raw)
		if err != nil {
			t.Errorf("a page requested %q, not a URL", raw)
			continue
		}
		switch u.Scheme {
		case "data", "blob", "about":
			continue
		}
		n++
		if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
			t.Errorf("a page requested %s: not a loopback origin", raw)
		}
	}
	if env.tabs > 0 && n < 10*env.tabs {
		t.Errorf("%d tabs made only %d requests; the recording is broken", env.tabs, n)
	}
	for _, p := range env.problems {
		t.Errorf("a page reported: %s", p)
	}
}

// startUI starts the mail sink, a gateway that mails through it (its
// links point at the gateway itself), and the browser.
func startUI(t *testing.T) *uiEnv {
	bin := uiChromium
	if _, err := os.Stat(bin); err != nil {
		if p, err := exec.LookPath("chromium"); err == nil {
			bin = p
		} else {
			t.Fatalf("the UI tests need Chromium at %s (Debian: apt-get install chromium; scripts/test installs it when run as root): %v", uiChromium, err)
		}
	}
	env := &uiEnv{sink: smtptest.Start(t, smtptest.Options{})}
	env.shots = os.Getenv("UI_SCREENSHOTS")
	if env.shots == "" {
		env.shots = filepath.Join("testdata", "screenshots")
	}
	if err := os.MkdirAll(env.shots, 0o755); err != nil {
		t.Fatal(err)
	}
	port, err := testnet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	self := "http://127.0.0.1:" + strconv.Itoa(port)
	env.g = startGateway(t, GatewayOptions{Port: port, Env: map[string]string{
		"SMTP_URL":   env.sink.URL(),
		"MAIL_FROM":  "Accounts <accounts@example.com>",
		"PUBLIC_URL": self,
	}})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("lang", "en-US"),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	env.browser = browser
	return env
}

// uiTab is one scenario's tab, in a browser context of its own.
type uiTab struct {
	t       *testing.T
	env     *uiEnv
	ctx     context.Context
	dialogs atomic.Int32
}

func (env *uiEnv) tab(t *testing.T) *uiTab {
	tab := &uiTab{t: t, env: env}
	env.mu.Lock()
	env.tabs++
	env.mu.Unlock()
	var ctxReady = make(chan struct{})
	ctx, cancel := chromedp.NewContext(env.browser, chromedp.WithNewBrowserContext(), chromedp.WithListener(func(ev any) {
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			env.mu.Lock()
			env.requests = append(env.requests, ev.Request.URL)
			env.mu.Unlock()
		case *page.EventJavascriptDialogOpening:
			tab.dialogs.Add(1)
			go func() {
				<-ctxReady
				_, _ = chromedp.Call(tab.ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
			}()
		case *runtime.EventExceptionThrown:
			env.problem(t.Name() + ": exception: " + ev.ExceptionDetails.Text + " " + exceptionDescription(ev))
		case *log.EventEntryAdded:
			if strings.Contains(ev.Entry.Text, "Content Security Policy") {
				env.problem(t.Name() + ": " + ev.Entry.Text)
			}
		}
	}))
	t.Cleanup(cancel)
	tab.ctx = ctx
	close(ctxReady)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	t.Cleanup(func() {
		if n := tab.dialogs.Load(); n != 0 {
			t.Errorf("%d JavaScript dialog(s) opened", n)
		}
	})
	return tab
}

func exceptionDescription(ev *runtime.EventExceptionThrown) string {
	if ev.ExceptionDetails.Exception != nil {
		return ev.ExceptionDetails.Exception.Description
	}
	return ""
}

func (env *uiEnv) problem(s string) {
	env.mu.Lock()
	env.problems = append(env.problems, s)
	env.mu.Unlock()
}

// do runs browser steps within uiTimeout.
func (tab *uiTab) do(steps ...chromedp.Action[chromedp.Void]) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, uiTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tab.t.Fatalf("browser at %s: %v\n--- page text:\n%s", tab.location(), err, tab.pageText())
	}
}

// eval returns the value of a JavaScript expression in the page.
func uiEval[T any](tab *uiTab, expr string) T {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, uiTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tab.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

func (tab *uiTab) location() string {
	ctx, cancel := context.WithTimeout(tab.ctx, 2*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("location.href"))
	return loc
}

func (tab *uiTab) pageText() string {
	ctx, cancel := context.WithTimeout(tab.ctx, 2*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
	return text
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// open loads a URL (a path is the gateway's).
func (tab *uiTab) open(u string) {
	tab.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = tab.env.g.URL + u
	}
	tab.do(chromedp.Navigate(u))
}

// waitFor waits until a JavaScript expression is true.
func (tab *uiTab) waitFor(expr string) {
	tab.t.Helper()
	tab.do(chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(20*time.Millisecond)))
}

// waitPath waits until the page is at path (with its query).
func (tab *uiTab) waitPath(path string) {
	tab.t.Helper()
	tab.waitFor("location.pathname + location.search === " + js(path))
}

// waitText waits until the element of a CSS selector has exactly text.
func (tab *uiTab) waitText(sel, text string) {
	tab.t.Helper()
	tab.waitFor(fmt.Sprintf("(document.querySelector(%s) || {}).textContent === %s", js(sel), js(text)))
}

// waitSomeText waits until one of the elements of a CSS selector has
// exactly text.
func (tab *uiTab) waitSomeText(sel, text string) {
	tab.t.Helper()
	tab.waitFor(fmt.Sprintf("Array.from(document.querySelectorAll(%s)).some((e) => e.textContent === %s)", js(sel), js(text)))
}

// fill types value into the input named name, replacing what it held.
func (tab *uiTab) fill(name, value string) {
	tab.t.Helper()
	css := fmt.Sprintf("main [name=%q]", name)
	tab.do(
		chromedp.WaitVisible(chromedp.CSS(css)),
		chromedp.Evaluate[chromedp.Void]("document.querySelector("+js(css)+").value = ''"),
		chromedp.SendKeys(chromedp.CSS(css), value),
	)
}

// click clicks the element of a CSS selector, once it is visible.
func (tab *uiTab) click(sel string) {
	tab.t.Helper()
	tab.do(chromedp.Click(chromedp.CSS(sel)))
}

// submit clicks the submit button of the page's form.
func (tab *uiTab) submit() {
	tab.t.Helper()
	tab.do(chromedp.Click(chromedp.CSS(`main button[type="submit"]`)))
}

// signIn signs in on the sign-in page, which must be open.
func (tab *uiTab) signIn(email, password string) {
	tab.t.Helper()
	tab.waitText("main h1", "Sign in")
	tab.fill("username", email)
	tab.fill("password", password)
	tab.submit()
}

// shoot writes screenshots of the page at a desktop and a phone width.
func (tab *uiTab) shoot(name string) {
	tab.t.Helper()
	for _, size := range []struct {
		suffix string
		w, h   int64
	}{{"phone", 390, 844}, {"desktop", 1280, 900}} {
		tab.do(chromedp.EmulateViewport(size.w, size.h))
		ctx, cancel := context.WithTimeout(tab.ctx, uiTimeout)
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		cancel()
		if err != nil {
			tab.t.Fatalf("screenshot %s: %v", name, err)
		}
		file := filepath.Join(tab.env.shots, name+"-"+size.suffix+".png")
		if err := os.WriteFile(file, png, 0o644); err != nil {
			tab.t.Fatal(err)
		}
	}
}

// mailLink waits for a mail to the address holding a link to the
// gateway's path with a #token= fragment, and returns the link.
func (env *uiEnv) mailLink(t *testing.T, to, path string) string {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(env.g.URL+path) + `#token=[A-Za-z0-9_-]+`)
	deadline := time.Now().Add(uiTimeout)
	for {
		for _, m := range env.sink.Messages() {
			for _, rcpt := range m.To {
				if strings.EqualFold(rcpt, to) {
					if link := re.FindString(uiMailText(t, m.Raw)); link != "" {
						return link
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail to %s with a link to %s within %v (%d mails caught)\n--- gateway output (tail):\n%s",
				to, path, uiTimeout, len(env.sink.Messages()), env.g.LogTail(3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// uiMailText returns the decoded text of every part of a mail.
func uiMailText(t *testing.T, raw []byte) string {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("a caught mail does not parse: %v", err)
	}
	var out strings.Builder
	var walk func(header map[string][]string, body io.Reader)
	walk = func(header map[string][]string, body io.Reader) {
		get := func(k string) string {
			if v := header[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		mediaType, params, _ := mime.ParseMediaType(get("Content-Type"))
		if strings.HasPrefix(mediaType, "multipart/") {
			mr := multipart.NewReader(body, params["boundary"])
			for {
				p, err := mr.NextRawPart()
				if err != nil {
					return
				}
				walk(p.Header, p)
			}
		}
		switch strings.ToLower(get("Content-Transfer-Encoding")) {
		case "quoted-printable":
			body = quotedprintable.NewReader(body)
		case "base64":
			body = base64.NewDecoder(base64.StdEncoding, body)
		}
		b, _ := io.ReadAll(body)
		out.Write(b)
		out.WriteString("\n")
	}
	walk(msg.Header, msg.Body)
	return out.String()
}

// uiSessionID returns the sid claim of an access token.
func uiSessionID(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.SID == "" {
		t.Fatalf("no sid in %s: %v", payload, err)
	}
	return claims.SID
}

// ---------------------------------------------------------------------
// The scenarios

// testCSP: every answer of accounts_ui carries the strict policy; the
// page paths get index.html uncached, the files a year's caching.
func (env *uiEnv) testCSP(t *testing.T) {
	const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
		"frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := hc.Get(env.g.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if got := res.Header.Get("Content-Security-Policy"); got != csp {
			t.Errorf("GET %s: Content-Security-Policy %q, want %q", path, got, csp)
		}
		return res, string(b)
	}
	var script string
	for _, p := range []string{"/accounts", "/accounts/", "/accounts/sign-in", "/accounts/verify-email", "/accounts/admin/users"} {
		res, body := get(p)
		if res.StatusCode != 200 || res.Header.Get("Cache-Control") != "no-cache" || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("GET %s: %d %v", p, res.StatusCode, res.Header)
		}
		m := regexp.MustCompile(`<script type="module" src="(/accounts/static/[0-9a-f]{16}/app\.js)"></script>`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("GET %s: no module script in\n%s", p, body)
		}
		script = m[1]
	}
	res, _ := get(script)
	if res.StatusCode != 200 || res.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" || res.Header.Get("ETag") == "" ||
		res.Header.Get("X-Frame-Options") != "DENY" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("GET %s: %d %v", script, res.StatusCode, res.Header)
	}
	// Compressed (encode), and revalidated by its ETag.
	for _, enc := range []string{"gzip", "identity"} {
		req, _ := http.NewRequest("GET", env.g.URL+script, nil)
		req.Header.Set("Accept-Encoding", enc)
		first, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		first.Body.Close()
		if got := first.Header.Get("Content-Encoding"); (enc == "gzip") != (got == "gzip") {
			t.Errorf("GET %s with Accept-Encoding %s: Content-Encoding %q", script, enc, got)
		}
		req.Header.Set("If-None-Match", first.Header.Get("ETag"))
		again, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		again.Body.Close()
		if again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with Accept-Encoding %s and If-None-Match %s: %d, want 304", script, enc, first.Header.Get("ETag"), again.StatusCode)
		}
	}
	if res, _ := get("/accounts/static/0000000000000000/app.js"); res.StatusCode != http.StatusNotFound {
		t.Errorf("another build's file: %d, want 404", res.StatusCode)
	}
	// The frontend keeps its own paths.
	res, err := hc.Get(env.g.URL + "/accountsx")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("Content-Security-Policy") != "frame-ancestors 'none'" {
		t.Errorf("GET /accountsx (the frontend's): Content-Security-Policy %q", res.Header.Get("Content-Security-Policy"))
	}
}

// The payload of the XSS check: it must show as text, and no dialog may
// open.
const uiScript = `<script>alert(1)</script>`

// testRegisterVerifyProfileSessions: register, open the link of the
// mail, sign in, edit the profile with markup in it, and revoke the
// other session.
func (env *uiEnv) testRegisterVerifyProfileSessions(t *testing.T) {
	t.Parallel()
	tab := env.tab(t)
	email, pw := uniqueEmail(t), randomPassword()

	tab.open("/accounts/register")
	tab.waitText("main h1", "Create an account")
	tab.shoot("register")
	tab.fill("email", email)
	tab.fill("password", pw)
	tab.fill("full_name", "Ada Example")
	tab.submit()
	tab.waitText("main h1", "Account created")

	link := env.mailLink(t, email, "/accounts/verify-email")
	tab.open(link)
	tab.waitFor(`(document.querySelector("main .notice") || {}).textContent === "Thank you: " + ` + js(email) + ` + " is confirmed."`)
	if loc := tab.location(); loc != env.g.URL+"/accounts/verify-email" {
		t.Errorf("after opening the link the address is %s: the token stays in the address bar", loc)
	}
	var verified bool
	querySQL(t, env.g.DatabaseURL, "SELECT email_verified FROM users WHERE email = $1", []any{email}, &verified)
	if !verified {
		t.Error("the link was opened, but the email is not verified")
	}

	tab.do(chromedp.Click(chromedp.CSS(`main a[href="/accounts/sign-in"]`)))
	tab.signIn(email, pw)
	tab.waitPath("/accounts/profile")
	tab.waitText("#profile-name", "Ada Example")
	tab.shoot("profile")

	tab.fill("full_name", uiScript)
	tab.fill("bio", uiScript+"\nsecond line")
	tab.submit()
	tab.waitText(`main p[role="status"]`, "Saved.")
	check := func() {
		t.Helper()
		tab.waitText("#profile-name", uiScript)
		tab.waitText("#profile-bio", uiScript+"\nsecond line")
		if n := uiEval[int](tab, "document.scripts.length"); n != 1 {
			t.Errorf("the page has %d script elements, want 1 (its own)", n)
		}
		if v := uiEval[string](tab, `document.querySelector('main [name="full_name"]').value`); v != uiScript {
			t.Errorf("the full name field holds %q", v)
		}
	}
	check()
	tab.do(chromedp.Reload())
	check()

	// A second session, from elsewhere: it is listed, and revoked from
	// the page.
	c := env.g.Client(t)
	other := c.Login(email, pw)
	sid := uiSessionID(t, other)
	tab.do(chromedp.Click(chromedp.CSS(`#nav a[href="/accounts/sessions"]`)))
	tab.waitPath("/accounts/sessions")
	tab.waitFor(`document.querySelectorAll("main li.card").length === 2`)
	tab.waitFor(fmt.Sprintf(`!!document.querySelector('[data-session-id=%s] button')`, js(sid)))
	tab.shoot("sessions")
	tab.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`[data-session-id=%q] button`, sid))))
	tab.waitText(`main p[role="status"]`, "Session revoked.")
	tab.waitFor(`document.querySelectorAll("main li.card").length === 1`)
	if n := uiEval[int](tab, fmt.Sprintf(`document.querySelectorAll('[data-session-id=%s]').length`, js(sid))); n != 0 {
		t.Error("the revoked session is still listed")
	}
	if s := uiEval[string](tab, `document.querySelector("main li.card .badge").textContent`); s != "this device" {
		t.Errorf("the remaining session is marked %q, want this device", s)
	}
	expectBearerError(t, c.Get("/api/users/me", other), "Could not validate credentials")
}

// testResetPassword: forgot password, the link of the mail, a new
// password; every old session is gone, the new password signs in.
func (env *uiEnv) testResetPassword(t *testing.T) {
	t.Parallel()
	tab := env.tab(t)
	c := env.g.Client(t)
	u, oldPW, oldToken := c.NewUser()

	tab.open("/accounts/sign-in")
	tab.signIn(u.Email, oldPW)
	tab.waitPath("/accounts/profile")

	tab.open("/accounts/forgot-password")
	tab.waitText("main h1", "Forgot your password?")
	tab.fill("email", u.Email)
	tab.submit()
	tab.waitText(`main p[role="status"]`, "If the address belongs to an account, a message is on its way")
	tab.shoot("forgot-password")

	tab.open(env.mailLink(t, u.Email, "/accounts/reset-password"))
	tab.waitText("main h1", "Choose a new password")
	if h := uiEval[string](tab, "location.hash"); h != "" {
		t.Errorf("the token stays in the address bar: %q", h)
	}
	// The API's 422 shows next to its field, in the API's words.
	tab.fill("new_password", "short")
	tab.fill("confirm", "short")
	tab.submit()
	tab.waitFor(`Array.from(document.querySelectorAll('[data-field="new_password"] .field-error span'), (s) => s.textContent).join("|") === ` +
		js("Password must be at least 8 characters long|Password must contain at least one uppercase letter|Password must contain at least one special character"))
	if v := uiEval[string](tab, `document.querySelector('[name="new_password"]').getAttribute("aria-invalid")`); v != "true" {
		t.Errorf("the refused field has aria-invalid=%q", v)
	}
	tab.shoot("reset-password")
	newPW := randomPassword()
	tab.fill("new_password", newPW)
	tab.fill("confirm", newPW)
	tab.submit()
	tab.waitText("main h1", "Password changed")

	expectBearerError(t, c.Get("/api/users/me", oldToken), "Could not validate credentials")
	expectBearerError(t, c.PostForm("/api/auth/login", url.Values{"username": {u.Email}, "password": {oldPW}}), "Incorrect email or password")
	// The browser's session is gone too: back to sign-in, and back here
	// after it.
	tab.open("/accounts/profile")
	tab.waitPath("/accounts/sign-in?next=%2Faccounts%2Fprofile")
	tab.signIn(u.Email, newPW)
	tab.waitPath("/accounts/profile")
	tab.waitText("main h1", "Profile")
}

// testExpiredSession: the session ends while the page is open; the next
// click leads to sign-in, and sign-in back to the page clicked.
func (env *uiEnv) testExpiredSession(t *testing.T) {
	t.Parallel()
	tab := env.tab(t)
	c := env.g.Client(t)
	u, pw, token := c.NewUser()

	tab.open("/accounts/sign-in")
	tab.waitText("main h1", "Sign in")
	tab.shoot("sign-in")
	tab.signIn(u.Email, pw)
	tab.waitPath("/accounts/profile")
	tab.do(chromedp.Click(chromedp.CSS(`#nav a[href="/accounts/sessions"]`)))
	tab.waitFor(`document.querySelectorAll("main li.card").length === 2`)

	expectStatus(t, c.PostJSON("/api/auth/logout-all", token, nil), http.StatusNoContent)
	tab.do(chromedp.Click(chromedp.CSS(`#nav a[href="/accounts/apps"]`)))
	tab.waitPath("/accounts/sign-in?next=%2Faccounts%2Fapps")
	tab.waitText("main .notice", "Your session has ended. Sign in to continue.")
	tab.signIn(u.Email, pw)
	tab.waitPath("/accounts/apps")
	tab.waitFor(`!!document.querySelector('[data-app="documents"]')`)
	tab.shoot("apps")

	// Change the password: the API's detail for a wrong one, then done.
	tab.do(chromedp.Click(chromedp.CSS(`#nav a[href="/accounts/password"]`)))
	tab.waitText("main h1", "Change password")
	newPW := randomPassword()
	tab.fill("current_password", "Wrong!pw1")
	tab.fill("new_password", newPW)
	tab.fill("confirm", newPW)
	tab.submit()
	tab.waitText("main .form-message", "Incorrect password")
	tab.fill("current_password", pw)
	tab.fill("new_password", newPW)
	tab.fill("confirm", newPW)
	tab.submit()
	tab.waitText(`main p[role="status"]`, "Password changed. Your other sessions have been signed out.")
	c.Login(u.Email, newPW)
}

// testCrossOriginForm: a page of another origin (another port of the
// same loopback host, so the browser sends the SameSite=Lax cookie)
// posts forms to the API; the API refuses them and the session survives.
func (env *uiEnv) testCrossOriginForm(t *testing.T) {
	t.Parallel()
	tab := env.tab(t)
	c := env.g.Client(t)
	u, pw, token := c.NewUser()

	tab.open("/accounts/sign-in")
	tab.signIn(u.Email, pw)
	tab.waitPath("/accounts/profile")

	newPW := randomPassword()
	pages := map[string]string{
		"/logout-all": `<form method="post" action="` + env.g.URL + `/api/auth/logout-all"></form>`,
		"/password": `<form method="post" enctype="text/plain" action="` + env.g.URL + `/api/users/me/password">` +
			`<input name='{"current_password":"` + pw + `","new_password":"` + newPW + `","x":"' value='"}'></form>`,
	}
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><title>elsewhere</title>%s<script>document.forms[0].submit()</script>", pages[r.URL.Path])
	}))
	t.Cleanup(evil.Close)
	if strings.HasPrefix(evil.URL, env.g.URL) || !strings.HasPrefix(evil.URL, "http://127.0.0.1:") {
		t.Fatalf("the other origin %s is not another port of 127.0.0.1", evil.URL)
	}
	for path, target := range map[string]string{"/logout-all": "/api/auth/logout-all", "/password": "/api/users/me/password"} {
		tab.open(evil.URL + path)
		tab.waitFor("location.href === " + js(env.g.URL+target))
		tab.waitFor(`document.body && document.body.innerText.trim() === ` + js(`{"detail":"Cross-origin request refused"}`))
	}
	// Still signed in, with the same password.
	tab.open("/accounts/sessions")
	tab.waitFor(`document.querySelectorAll("main li.card").length === 2`)
	tab.waitPath("/accounts/sessions")
	expectStatus(t, c.Get("/api/users/me", token), http.StatusOK)
	c.Login(u.Email, pw)
}

// The markup of the admin scenario's group name: it must show as text.
const uiMarkup = `<img src=x onerror=alert(1)>`

// testAdmin: an admin, in one browser context, creates a group (markup
// in its name), adds the user, closes the ai app and grants it through
// the group; the user's apps page, in another context, follows at once.
// Then the admin confirms the user's email, sends a reset link, filters
// the audit log, saves an AI key (shown masked only) and runs the
// connection test, reopens the app and deletes the group. The user
// meets "Admins only" on the admin pages.
func (env *uiEnv) testAdmin(t *testing.T) {
	t.Parallel()
	c := env.g.Client(t)
	adminEmail, adminPW := uniqueEmail(t), randomPassword()
	createAdmin(t, env.g.DatabaseURL, adminEmail, adminPW)
	u, pw, _ := c.NewUser()
	admin, user := env.tab(t), env.tab(t)
	userApps := func(aiListed bool) {
		t.Helper()
		user.do(chromedp.Reload())
		want := "!"
		if aiListed {
			want = "!!"
		}
		user.waitFor(`!!document.querySelector('[data-app="documents"]') && ` + want + `document.querySelector('[data-app="ai"]')`)
	}

	// The user: no admin link, and "Admins only" at an admin page.
	user.open("/accounts/sign-in")
	user.signIn(u.Email, pw)
	user.waitPath("/accounts/profile")
	if n := uiEval[int](user, `document.querySelectorAll('#nav a[href^="/accounts/admin"]').length`); n != 0 {
		t.Errorf("a user's navigation has %d admin links", n)
	}
	user.open("/accounts/admin/users")
	user.waitText("main h1", "Admins only")
	user.waitText("main p", "Only administrators may open this page.")
	user.open("/accounts/apps")
	userApps(true)

	// The admin signs in on the way to the groups and creates one.
	admin.open("/accounts/admin/groups")
	admin.waitPath("/accounts/sign-in?next=%2Faccounts%2Fadmin%2Fgroups")
	admin.signIn(adminEmail, adminPW)
	admin.waitPath("/accounts/admin/groups")
	admin.waitText("main h1", "Groups")
	admin.fill("name", uiMarkup)
	admin.fill("description", "Reviewers of the AI answers")
	admin.click(`form[aria-label="Create a group"] button[type="submit"]`)
	admin.waitFor(`location.pathname.startsWith("/accounts/admin/groups/")`)
	admin.waitText("#group-name", uiMarkup)
	groupID := strings.TrimPrefix(uiEval[string](admin, "location.pathname"), "/accounts/admin/groups/")

	// The user joins from a search.
	admin.fill("user_q", u.Email)
	admin.click(`.user-search button[type="submit"]`)
	admin.click(fmt.Sprintf(`.user-search li[data-user-id=%q] button`, u.ID))
	admin.waitFor(fmt.Sprintf(`!!document.querySelector('ul[aria-label="Members"] li[data-user-id=%s]')`, js(u.ID)))
	admin.waitSomeText(`main p[role="status"]`, "Added "+u.Email+".")

	// Closing ai takes it off the user's apps; the group's grant brings it back.
	admin.click(`nav.subnav a[href="/accounts/admin/apps"]`)
	admin.waitFor(`!!document.querySelector('li[data-app="ai"][data-open="true"]')`)
	// The API's 409 for an app the configuration requires, in its words.
	admin.click(`li[data-app="documents"] button[aria-label="Delete documents"]`)
	admin.waitText(`li[data-app="documents"] button[data-armed]`, "Click again to delete documents")
	admin.click(`li[data-app="documents"] button[data-armed]`)
	admin.waitText(`main .form-message:not([hidden])`, "App is required by the gateway's configuration")
	admin.click(`li[data-app="ai"] button[aria-label="Close ai"]`)
	admin.waitFor(`!!document.querySelector('li[data-app="ai"][data-open="false"]')`)
	userApps(false)
	admin.open("/accounts/admin/groups/" + groupID)
	admin.click(`li[data-app="ai"] button[aria-label="Grant ai"]`)
	admin.waitFor(`!!document.querySelector('li[data-app="ai"][data-granted="true"]')`)
	userApps(true)
	admin.waitText("#group-name", uiMarkup)
	if n := uiEval[int](admin, `document.querySelectorAll("img").length`); n != 0 {
		t.Errorf("the group's name made %d img elements", n)
	}
	admin.shoot("admin-group")

	// The user's account: the apps and why, email confirmed, a reset link.
	admin.open("/accounts/admin/users?q=" + url.QueryEscape(u.Email))
	card := fmt.Sprintf(`li[data-user-id=%q]`, u.ID)
	admin.waitText(".pager-info", "1–1 of 1")
	admin.click(card + " summary")
	admin.waitText(card+` li[data-app="ai"] .why`, "through group "+uiMarkup)
	admin.waitText(card+` li[data-app="documents"] .why`, "open to all")
	admin.click(card + ` input[name="email_verified"]`)
	admin.click(card + ` form[aria-label^="Account of"] button[type="submit"]`)
	admin.waitSomeText(card+` p[role="status"]`, "Saved.")
	admin.waitText(card+" p.device", u.Email+"confirmed")
	var verified bool
	querySQL(t, env.g.DatabaseURL, "SELECT email_verified FROM users WHERE id = $1", []any{u.ID}, &verified)
	if !verified {
		t.Error("the admin confirmed the email, but it is not verified")
	}
	admin.click(card + ` button.reset-link`)
	admin.waitSomeText(card+` p[role="status"]`, "A password reset link is on its way")
	env.mailLink(t, u.Email, "/accounts/reset-password")
	admin.shoot("admin-users")

	// The audit log, filtered by event.
	admin.click(`nav.subnav a[href="/accounts/admin/audit"]`)
	admin.fill("event", "group.create, group.member_add")
	admin.click(`form[role="search"] button[type="submit"]`)
	admin.waitPath("/accounts/admin/audit?event=group.create&event=group.member_add")
	// Only those events (the page shows the unfiltered log until the
	// filtered one is in).
	admin.waitFor(fmt.Sprintf(`!document.querySelector(".table-wrap[aria-busy]") && `+
		`!!document.querySelector('tr[data-event="group.create"] a[href$=%s]') && !!document.querySelector('tr[data-event="group.member_add"] a[href$=%s]')`,
		js("target_id="+groupID), js("target_id="+u.ID)))
	if others := uiEval[int](admin, `Array.from(document.querySelectorAll("tbody tr"), (r) => r.dataset.event).filter((e) => e !== "group.create" && e !== "group.member_add").length`); others != 0 {
		t.Errorf("the filtered log shows %d other events", others)
	}
	admin.shoot("admin-audit")

	// AI settings: the key is typed once and shown masked only; the test
	// of a loopback URL is refused by the gateway (nothing is sent).
	key := "sk-" + randomHex(16)
	admin.click(`nav.subnav a[href="/accounts/admin/settings"]`)
	admin.waitText("#ai-key", "API key: none")
	admin.fill("base_url", "http://127.0.0.1:9/v1")
	admin.fill("api_key", key)
	// A 422 shows at its field, and nothing is saved.
	admin.fill("temperature", "3")
	admin.click(`form[aria-label="AI provider"] button[type="submit"]`)
	admin.waitText(`[data-field="temperature"] .field-error span`, "Input should be less than or equal to 2")
	admin.waitText("#ai-key", "API key: none")
	admin.fill("temperature", "0.5")
	admin.click(`form[aria-label="AI provider"] button[type="submit"]`)
	masked := "API key: ****" + key[len(key)-4:]
	admin.waitText("#ai-key", masked)
	noKey := func() {
		t.Helper()
		if uiEval[bool](admin, "document.documentElement.outerHTML.includes("+js(key)+") || document.querySelector('[name=\"api_key\"]').value !== ''") {
			t.Error("the page holds the API key in clear after saving")
		}
	}
	noKey()
	admin.click(`#ai-test`)
	admin.waitText("#ai-test-result", "Destination not allowed: 127.0.0.1 is a loopback address")
	admin.do(chromedp.Reload())
	admin.waitText("#ai-key", masked)
	noKey()
	admin.shoot("admin-settings")

	// Reopen ai, and delete the group (a second click confirms).
	admin.click(`nav.subnav a[href="/accounts/admin/apps"]`)
	admin.click(`li[data-app="ai"] button[aria-label="Open ai"]`)
	admin.waitFor(`!!document.querySelector('li[data-app="ai"][data-open="true"]')`)
	admin.open("/accounts/admin/groups/" + groupID)
	admin.waitText("#group-name", uiMarkup)
	admin.click("#delete-group")
	admin.waitText("#delete-group[data-armed]", "Click again to delete")
	admin.click("#delete-group")
	admin.waitPath("/accounts/admin/groups")
	var groups int
	querySQL(t, env.g.DatabaseURL, "SELECT count(*) FROM groups WHERE id = $1", []any{groupID}, &groups)
	if groups != 0 {
		t.Error("the group was not deleted")
	}
}
