package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeBackend answers from fixed data and records what it was asked.
type fakeBackend struct {
	mu      sync.Mutex
	syncs   [][]string
	purges  []string
	pkgArgs string
	running map[string]bool
}

func (f *fakeBackend) Channels(context.Context) []ChannelInfo {
	return []ChannelInfo{{Name: "fmt", Kind: "conda", Upstreams: []string{"https://x/t/***/fmt"}, Platforms: []string{}}}
}

func (f *fakeBackend) Subdirs(context.Context, string) ([]string, error) {
	return []string{"noarch"}, nil
}

func (f *fakeBackend) Packages(_ context.Context, ch, sub, q string, _ bool, offset, limit int) (PackagePage, error) {
	f.mu.Lock()
	f.pkgArgs = fmt.Sprintf("%s %s %q %d %d", ch, sub, q, offset, limit)
	f.mu.Unlock()
	switch ch {
	case "nochan":
		return PackagePage{}, fmt.Errorf("%w: no conda channel %q", ErrNotFound, ch)
	case "bad":
		return PackagePage{}, fmt.Errorf("%w: subdir", ErrInvalid)
	case "down":
		return PackagePage{}, fmt.Errorf("upstream https://x/fmt: HTTP 503")
	case "panic":
		panic("the backend failed")
	}
	return PackagePage{Total: 1, Offset: offset, Limit: limit,
		Packages: []Package{{Filename: "a-1-0.conda", Name: "a", Version: "1", Build: "0", Size: 3, Served: true}}}, nil
}

func (f *fakeBackend) Explain(_ context.Context, ch, sub, pkg string) ([]Explanation, error) {
	if ch == "nochan" {
		return nil, fmt.Errorf("%w: no conda channel", ErrNotFound)
	}
	return []Explanation{{Filename: pkg, Served: false, Rule: "license_blacklist: GPL", Detail: "GPL"}}, nil
}

func (f *fakeBackend) Stats(context.Context) Stats {
	return Stats{CacheBytes: 1, Hits: 2, Misses: 1, BytesBySource: map[string]int64{"disk": 4}}
}

func (f *fakeBackend) StartSync(channels []string) (Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range channels {
		if c == "nochan" {
			return Job{}, fmt.Errorf("%w: no conda channel %q", ErrNotFound, c)
		}
		if f.running[c] {
			return Job{}, fmt.Errorf("%w for channel %q (job j1)", ErrBusy, c)
		}
	}
	for _, c := range channels {
		f.running[c] = true
	}
	f.syncs = append(f.syncs, channels)
	return Job{ID: "j1", Channels: channels, State: "running"}, nil
}

func (f *fakeBackend) Job(id string) (Job, bool) {
	if id == "j1" {
		return Job{ID: "j1", State: "done"}, true
	}
	return Job{}, false
}

func (f *fakeBackend) Jobs() []Job { return nil }

func (f *fakeBackend) Purge(_ context.Context, ch, sub, fn string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch == "nochan" {
		return fmt.Errorf("%w: no conda channel", ErrNotFound)
	}
	f.purges = append(f.purges, ch+"/"+sub+"/"+fn)
	return nil
}

const (
	adminTok  = "s3cret-admin-token"
	clientTok = "client-token-1"
)

func newAPI(t *testing.T, adminToken string, clientTokens bool) (http.Handler, *fakeBackend) {
	t.Helper()
	fb := &fakeBackend{running: map[string]bool{}}
	o := Options{Gatherer: prometheus.NewRegistry(), Backend: fb, AdminToken: adminToken, Logger: slog.New(slog.DiscardHandler)}
	if clientTokens {
		o.CanRead = func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+clientTok }
	}
	return New(o), fb
}

type call struct {
	method, path, body string
	remote             string // default: a non-loopback address
	host               string // default: httptest's example.com
	token              string
	header             map[string]string
}

// do runs c and returns the status and the decoded JSON body. Every answer under
// /api/ must be JSON, and every error {"error": "..."} alone.
func do(t *testing.T, h http.Handler, c call) (int, any) {
	t.Helper()
	var body *strings.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	} else {
		body = strings.NewReader("")
	}
	r := httptest.NewRequest(c.method, c.path, body)
	r.RemoteAddr = c.remote
	if c.host != "" {
		r.Host = c.host
	}
	if r.RemoteAddr == "" {
		r.RemoteAddr = "192.0.2.7:40000"
	}
	if c.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		r.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: Content-Type %q, want JSON; body %q", c.method, c.path, ct, w.Body.String())
	}
	if strings.Contains(w.Body.String(), adminTok) || strings.Contains(w.Body.String(), clientTok) {
		t.Fatalf("%s %s: a token in the answer: %s", c.method, c.path, w.Body.String())
	}
	var v any
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("%s %s: not JSON: %q", c.method, c.path, w.Body.String())
	}
	if w.Code >= 400 {
		m, ok := v.(map[string]any)
		msg, _ := m["error"].(string)
		if !ok || len(m) != 1 || msg == "" {
			t.Fatalf("%s %s: %d with body %s; want {\"error\": \"...\"}", c.method, c.path, w.Code, w.Body.String())
		}
	}
	return w.Code, v
}

func errText(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["error"].(string)
	return s
}

func TestAPIReadsAndStatuses(t *testing.T) {
	h, fb := newAPI(t, "", false)
	for _, tc := range []struct {
		path   string
		status int
		want   string // in the error text
	}{
		{"/api/v1/channels", 200, ""},
		{"/api/v1/stats", 200, ""},
		{"/api/v1/jobs", 200, ""},
		{"/api/v1/jobs/j1", 200, ""},
		{"/api/v1/jobs/nope", 404, "no such job"},
		{"/api/v1/packages?channel=fmt&subdir=linux-64&q=zl", 200, ""},
		{"/api/v1/packages?channel=fmt", 400, "subdir"},
		{"/api/v1/packages?channel=nochan&subdir=linux-64", 404, "no conda channel"},
		{"/api/v1/packages?channel=bad&subdir=linux-64", 400, ""},
		{"/api/v1/packages?channel=down&subdir=linux-64", 502, "503"},
		{"/api/v1/packages?channel=fmt&subdir=linux-64&limit=x", 400, "limit"},
		{"/api/v1/packages?channel=fmt&subdir=linux-64&offset=-1", 400, "offset"},
		{"/api/v1/explain?channel=fmt&subdir=linux-64&package=libgcc-ng", 200, ""},
		{"/api/v1/explain?channel=fmt&subdir=linux-64", 400, "package"},
		{"/api/v1/explain?channel=nochan&subdir=linux-64&package=x", 404, ""},
		{"/api/v1/nosuchcall", 404, "no such API call"},
		{"/api/v2/channels", 404, "no such API call"},
	} {
		code, v := do(t, h, call{method: "GET", path: tc.path})
		if code != tc.status || !strings.Contains(errText(v), tc.want) {
			t.Errorf("GET %s: %d %v, want %d with %q", tc.path, code, v, tc.status, tc.want)
		}
	}
	// The JSON shapes of the reads.
	_, v := do(t, h, call{method: "GET", path: "/api/v1/channels"})
	if l, ok := v.([]any); !ok || len(l) != 1 || l[0].(map[string]any)["upstreams"] == nil {
		t.Errorf("channels: %v", v)
	}
	_, v = do(t, h, call{method: "GET", path: "/api/v1/jobs"})
	if l, ok := v.([]any); !ok || len(l) != 0 {
		t.Errorf("jobs with none: %v, want []", v)
	}
	_, v = do(t, h, call{method: "GET", path: "/api/v1/explain?channel=fmt&subdir=linux-64&package=libgcc-ng"})
	if l, ok := v.([]any); !ok || len(l) != 1 || l[0].(map[string]any)["rule"] != "license_blacklist: GPL" {
		t.Errorf("explain: %v", v)
	}
	// Paging: default 50, at most 500.
	for q, want := range map[string]string{
		"":                     `fmt linux-64 "" 0 50`,
		"&limit=0":             `fmt linux-64 "" 0 50`,
		"&limit=10&offset=20":  `fmt linux-64 "" 20 10`,
		"&limit=100000&q=zlib": `fmt linux-64 "zlib" 0 500`,
	} {
		code, v := do(t, h, call{method: "GET", path: "/api/v1/packages?channel=fmt&subdir=linux-64" + q})
		fb.mu.Lock()
		got := fb.pkgArgs
		fb.mu.Unlock()
		if code != 200 || got != want {
			t.Errorf("packages%s: %d, backend asked %s, want %s", q, code, got, want)
		}
		if m, _ := v.(map[string]any); m["packages"] == nil || m["total"] == nil {
			t.Errorf("packages%s: %v", q, v)
		}
	}
	// A write call asked with the wrong method.
	if code, v := do(t, h, call{method: "GET", path: "/api/v1/sync"}); code != 405 {
		t.Errorf("GET /api/v1/sync: %d %v, want 405", code, v)
	}
	if code, v := do(t, h, call{method: "POST", path: "/api/v1/channels", remote: "127.0.0.1:1"}); code != 405 {
		t.Errorf("POST /api/v1/channels: %d %v, want 405", code, v)
	}
}

func TestAPIWrites(t *testing.T) {
	h, fb := newAPI(t, adminTok, false)
	startSync := func(c call) (int, any) {
		c.method, c.path = "POST", "/api/v1/sync"
		return do(t, h, c)
	}
	if code, v := startSync(call{body: `{"channels":["fmt"]}`}); code != 401 || !strings.Contains(errText(v), "admin token") {
		t.Errorf("sync without a token: %d %v, want 401", code, v)
	}
	// An admin token is set: loopback alone is not enough.
	if code, _ := startSync(call{body: `{"channels":["fmt"]}`, remote: "127.0.0.1:5000"}); code != 401 {
		t.Errorf("sync from loopback without the token: %d, want 401", code)
	}
	if code, _ := startSync(call{body: `{"channels":["fmt"]}`, token: "wrong"}); code != 401 {
		t.Errorf("sync with a wrong token: %d, want 401", code)
	}
	if code, _ := startSync(call{body: `{"channels":["fmt"]}`, token: adminTok[:len(adminTok)-1]}); code != 401 {
		t.Errorf("sync with a prefix of the token: %d, want 401", code)
	}
	code, v := startSync(call{body: `{"channels":["fmt"]}`, token: adminTok})
	if m, _ := v.(map[string]any); code != 202 || m["id"] != "j1" {
		t.Errorf("sync with the admin token: %d %v, want 202 {id: j1}", code, v)
	}
	if code, v := startSync(call{body: `{"channels":["fmt"]}`, token: adminTok}); code != 409 || !strings.Contains(errText(v), `"fmt"`) {
		t.Errorf("second sync of fmt: %d %v, want 409 naming the channel", code, v)
	}
	if code, _ := startSync(call{body: `{"channels":["nochan"]}`, token: adminTok}); code != 404 {
		t.Errorf("sync of an unknown channel: %d, want 404", code)
	}
	if code, _ := startSync(call{body: `{"channels":`, token: adminTok}); code != 400 {
		t.Errorf("sync with bad JSON: %d, want 400", code)
	}
	if code, _ := startSync(call{body: `{"channels":[""]}`, token: adminTok}); code != 400 {
		t.Errorf("sync of an empty name: %d, want 400", code)
	}
	// No body: every channel.
	if code, _ := startSync(call{token: adminTok}); code != 202 {
		t.Errorf("sync with no body: %d, want 202", code)
	}
	purge := func(body, tok string) (int, any) {
		return do(t, h, call{method: "POST", path: "/api/v1/purge", body: body, token: tok})
	}
	if code, _ := purge(`{"channel":"fmt","subdir":"linux-64"}`, ""); code != 401 {
		t.Errorf("purge without a token: %d, want 401", code)
	}
	if code, _ := purge(`{"channel":"fmt","subdir":"linux-64"}`, adminTok); code != 200 {
		t.Errorf("purge of repodata: %d, want 200", code)
	}
	if code, _ := purge(`{"channel":"fmt","subdir":"linux-64","filename":"a-1-0.conda"}`, adminTok); code != 200 {
		t.Errorf("purge of a file: %d, want 200", code)
	}
	for _, body := range []string{`{}`, `{"channel":"fmt","filename":"a-1-0.conda"}`, `[1]`} {
		if code, _ := purge(body, adminTok); code != 400 {
			t.Errorf("purge %s: %d, want 400", body, code)
		}
	}
	if code, _ := purge(`{"channel":"nochan"}`, adminTok); code != 404 {
		t.Errorf("purge of an unknown channel: %d, want 404", code)
	}
	fb.mu.Lock()
	if len(fb.syncs) != 2 || len(fb.purges) != 2 || fb.purges[1] != "fmt/linux-64/a-1-0.conda" {
		t.Errorf("the backend saw syncs %v, purges %v", fb.syncs, fb.purges)
	}
	fb.mu.Unlock()
	// The admin token may read as well, even where client tokens guard reads.
	h2, _ := newAPI(t, adminTok, true)
	if code, _ := do(t, h2, call{method: "GET", path: "/api/v1/channels", token: adminTok}); code != 200 {
		t.Errorf("read with the admin token: %d, want 200", code)
	}
	// ...but a client token does not write.
	if code, _ := do(t, h2, call{method: "POST", path: "/api/v1/sync", token: clientTok}); code != 401 {
		t.Errorf("sync with a client token: %d, want 401", code)
	}
}

// With no admin token, writes come from loopback only, asked for by a loopback
// name, and never from another site's page in the operator's browser.
// (writeguard_test.go has the whole matrix over real TCP.)
func TestAPILoopbackRule(t *testing.T) {
	h, _ := newAPI(t, "", false)
	for _, tc := range []struct {
		remote, host string
		want         int
		says         string
	}{
		{"127.0.0.1:5000", "127.0.0.1:8080", 200, ""},
		{"[::1]:5000", "localhost:8080", 200, ""},
		{"[::1]:5000", "[::1]:8080", 200, ""},
		{"192.0.2.7:5000", "127.0.0.1:8080", 401, "loopback"},
		{"[2001:db8::1]:80", "localhost", 401, "loopback"},
		{"bogus", "localhost", 401, "loopback"},
		// Loopback peer, but a name only a DNS-rebinding page would use.
		{"127.0.0.1:5000", "example.com", 403, "Host"},
	} {
		code, v := do(t, h, call{method: "POST", path: "/api/v1/purge", body: `{"channel":"fmt"}`, remote: tc.remote, host: tc.host})
		if code != tc.want {
			t.Errorf("purge from %s to %s: %d %v, want %d", tc.remote, tc.host, code, v, tc.want)
		}
		if !strings.Contains(errText(v), tc.says) {
			t.Errorf("purge from %s to %s: %q does not say %q", tc.remote, tc.host, errText(v), tc.says)
		}
	}
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Origin": "https://evil.example"},
		{"Origin": "null"},
		{"X-Forwarded-For": "192.0.2.7"},
	} {
		code, v := do(t, h, call{method: "POST", path: "/api/v1/purge", body: `{"channel":"fmt"}`, remote: "127.0.0.1:5000", host: "localhost:8080", header: hdr})
		if code != 403 {
			t.Errorf("purge from loopback with %v: %d %v, want 403", hdr, code, v)
		}
	}
	// The page itself (same origin) writes.
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost:8080"},
		{"Origin": "http://localhost:8080"},
	} {
		if code, v := do(t, h, call{method: "POST", path: "/api/v1/purge", body: `{"channel":"fmt"}`, remote: "127.0.0.1:5000", host: "localhost:8080", header: hdr}); code != 200 {
			t.Errorf("purge from the page with %v: %d %v, want 200", hdr, code, v)
		}
	}
}

// With client tokens (auth.tokens), reads need one: 401 with the JSON shape.
func TestAPIReadsNeedAClientToken(t *testing.T) {
	h, _ := newAPI(t, "", true)
	for _, p := range []string{"/api/v1/channels", "/api/v1/stats", "/api/v1/jobs",
		"/api/v1/packages?channel=fmt&subdir=linux-64", "/api/v1/explain?channel=fmt&subdir=linux-64&package=x"} {
		if code, v := do(t, h, call{method: "GET", path: p}); code != 401 {
			t.Errorf("GET %s without a token: %d %v, want 401", p, code, v)
		}
		if code, _ := do(t, h, call{method: "GET", path: p, token: "wrong"}); code != 401 {
			t.Errorf("GET %s with a wrong token: %d, want 401", p, code)
		}
		if code, v := do(t, h, call{method: "GET", path: p, token: clientTok}); code != 200 {
			t.Errorf("GET %s with a client token: %d %v, want 200", p, code, v)
		}
	}
	// Loopback does not stand in for a client token on reads.
	if code, _ := do(t, h, call{method: "GET", path: "/api/v1/channels", remote: "127.0.0.1:1"}); code != 401 {
		t.Errorf("read from loopback without a token: %d, want 401", code)
	}
	// Health and metrics stay open.
	r := httptest.NewRequest("GET", "/healthz", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Errorf("/healthz: %d", w.Code)
	}
}

// With no Backend, only health and metrics: the API is not there.
func TestAPIAbsentWithoutBackend(t *testing.T) {
	h := New(Options{Gatherer: prometheus.NewRegistry()})
	r := httptest.NewRequest("GET", "/api/v1/channels", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 404 {
		t.Errorf("/api/v1/channels with no backend: %d, want 404", w.Code)
	}
}
