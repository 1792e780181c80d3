package admin

// The write guard over real TCP. The server listens on 127.0.0.1, so every peer
// is loopback, and the requests carry what a browser, a reverse proxy or a
// DNS-rebinding page would send: their Host, Origin, Sec-Fetch-Site and
// forwarding headers. Each write goes both ways a write can come: the API
// (POST /api/v1/purge, JSON) and the page's form (POST /ui/sync).

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// lockedBuffer is a log sink the server's goroutines write to while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// liveAdmin is New(o) served over TCP on 127.0.0.1.
type liveAdmin struct {
	url    string // http://127.0.0.1:PORT
	addr   string // 127.0.0.1:PORT
	port   string
	fb     *fakeBackend
	logs   *lockedBuffer
	client *http.Client
}

func newLiveAdmin(t *testing.T, o Options) *liveAdmin {
	t.Helper()
	fb := &fakeBackend{running: map[string]bool{}}
	logs := &lockedBuffer{}
	if o.Backend == nil {
		o.Backend = fb
	}
	o.Gatherer = prometheus.NewRegistry()
	o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := httptest.NewServer(New(o))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	return &liveAdmin{
		url: srv.URL, addr: addr, port: port, fb: fb, logs: logs,
		client: &http.Client{
			Transport: &http.Transport{Proxy: nil}, // straight to 127.0.0.1, whatever the environment says
			// The form answers 303: the test looks at that answer itself.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// liveReq is one request to a liveAdmin.
type liveReq struct {
	method, path string
	body         string            // JSON for the API, a urlencoded form for /ui/
	host         string            // the Host header; "" = the listener's address
	header       map[string]string // Origin, Sec-Fetch-Site, X-Forwarded-For...
}

// send runs req and returns its status, body and headers. No answer may carry a
// secret of the tests.
func (l *liveAdmin) send(t *testing.T, req liveReq) (int, string, http.Header) {
	t.Helper()
	r, err := http.NewRequest(req.method, l.url+req.path, strings.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	if req.host != "" {
		r.Host = req.host
	}
	switch {
	case req.body == "":
	case strings.HasPrefix(req.path, "/api/"):
		r.Header.Set("Content-Type", "application/json")
	default:
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	res, err := l.client.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", req.method, req.path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, secret := range []string{adminTok, clientTok} {
		if strings.Contains(string(b), secret) {
			t.Errorf("%s %s: the answer shows a token: %s", req.method, req.path, b)
		}
	}
	return res.StatusCode, string(b), res.Header
}

// writeWays are the two ways a write comes: the API and the page's form. Each
// answers its own success status.
var writeWays = []struct {
	name string
	req  func(header map[string]string, host, token string) liveReq
	ok   int
}{
	{"API purge", func(h map[string]string, host, token string) liveReq {
		h = cloneHeader(h)
		if token != "" {
			h["Authorization"] = "Bearer " + token
		}
		return liveReq{method: "POST", path: "/api/v1/purge", body: `{"channel":"fmt"}`, host: host, header: h}
	}, http.StatusOK},
	{"form sync", func(h map[string]string, host, token string) liveReq {
		form := url.Values{"channel": {""}}
		if token != "" {
			form.Set("admin_token", token)
		}
		h = cloneHeader(h)
		if h["Origin"] == "" && h["Sec-Fetch-Site"] == "" {
			// What the page's own form post says at the least: the form is for
			// a browser (TestFormWritesComeFromABrowser).
			h["Sec-Fetch-Site"] = "same-origin"
		}
		return liveReq{method: "POST", path: "/ui/sync", body: form.Encode(), host: host, header: h}
	}, http.StatusSeeOther},
}

func cloneHeader(h map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[k] = v
	}
	return out
}

// writes is how many writes reached the backend.
func (l *liveAdmin) writes() int {
	l.fb.mu.Lock()
	defer l.fb.mu.Unlock()
	return len(l.fb.syncs) + len(l.fb.purges)
}

// With no admin token, loopback trust holds only for a request that is local
// in every respect: loopback peer (always, here), a loopback Host or
// public_url's host, no proxy in between, and no other site's page behind it.
func TestLoopbackTrustOverTCP(t *testing.T) {
	l := newLiveAdmin(t, Options{PublicURL: "https://proxy.example:8443/conda"})
	own := "http://" + l.addr
	for _, tc := range []struct {
		name   string
		host   string // "" = 127.0.0.1:PORT
		header map[string]string
		status int    // 0: allowed
		says   string // in the refusal's text
	}{
		// Allowed: a script or a browser on the proxy's own host.
		{name: "loopback address", host: ""},
		{name: "localhost with port", host: "localhost:" + l.port},
		{name: "localhost without port", host: "localhost"},
		{name: "localhost, other case, trailing dot", host: "LocalHost.:" + l.port},
		{name: "127/8", host: "127.1.2.3:80"},
		{name: "[::1] with port", host: "[::1]:" + l.port},
		{name: "[::1] without port", host: "[::1]"},
		{name: "public_url's host", host: "proxy.example:8443"},
		{name: "public_url's host, other case, no port", host: "PROXY.example"},
		{name: "typed or bookmarked", header: map[string]string{"Sec-Fetch-Site": "none"}},
		{name: "the page itself", header: map[string]string{"Origin": own, "Sec-Fetch-Site": "same-origin"}},
		{name: "the page, older browser", header: map[string]string{"Origin": own}},
		{name: "the page under public_url", host: "proxy.example:8443",
			header: map[string]string{"Origin": "https://proxy.example:8443", "Sec-Fetch-Site": "same-origin"}},

		// DNS rebinding: the attacker's name resolves to 127.0.0.1, so the browser
		// sees its own origin and says same-origin; only Host gives it away.
		{name: "DNS rebinding", host: "evil.example:" + l.port, status: 403, says: "Host",
			header: map[string]string{"Origin": "http://evil.example:" + l.port, "Sec-Fetch-Site": "same-origin"}},
		{name: "foreign Host, no browser headers", host: "evil.example", status: 403, says: "Host"},
		{name: "0.0.0.0", host: "0.0.0.0:" + l.port, status: 403, says: "Host"},
		{name: "a name under localhost's", host: "localhost.evil.example", status: 403, says: "Host"},
		{name: "a name under public_url's", host: "proxy.example.evil.example:8443", status: 403, says: "Host"},

		// A reverse proxy or sidecar on the same host connects from loopback on
		// behalf of someone else, and says so.
		{name: "X-Forwarded-For", header: map[string]string{"X-Forwarded-For": "203.0.113.9"}, status: 403, says: "X-Forwarded-For"},
		{name: "Forwarded", header: map[string]string{"Forwarded": "for=203.0.113.9;proto=https"}, status: 403, says: "Forwarded"},
		{name: "X-Real-IP", header: map[string]string{"X-Real-IP": "203.0.113.9"}, status: 403, says: "X-Real-IP"},
		{name: "forwarded from loopback still forwarded", header: map[string]string{"X-Forwarded-For": "127.0.0.1"}, status: 403, says: "X-Forwarded-For"},
		// Those of other proxies, CDNs and meshes, each alone.
		{name: "X-Forwarded-Port", header: map[string]string{"X-Forwarded-Port": "443"}, status: 403, says: "X-Forwarded-Port"},
		{name: "X-Forwarded-Server", header: map[string]string{"X-Forwarded-Server": "edge"}, status: 403, says: "X-Forwarded-Server"},
		{name: "X-Forwarded-Prefix", header: map[string]string{"X-Forwarded-Prefix": "/conda"}, status: 403, says: "X-Forwarded-Prefix"},
		{name: "X-Forwarded-Client-Cert", header: map[string]string{"X-Forwarded-Client-Cert": "By=spiffe://x;Hash=00"}, status: 403, says: "X-Forwarded-Client-Cert"},
		{name: "X-Envoy-External-Address", header: map[string]string{"X-Envoy-External-Address": "203.0.113.9"}, status: 403, says: "X-Envoy-External-Address"},
		{name: "True-Client-IP", header: map[string]string{"True-Client-IP": "203.0.113.9"}, status: 403, says: "True-Client-IP"},
		{name: "CF-Connecting-IP", header: map[string]string{"CF-Connecting-IP": "203.0.113.9"}, status: 403, says: "CF-Connecting-IP"},
		{name: "X-Original-Forwarded-For", header: map[string]string{"X-Original-Forwarded-For": "203.0.113.9"}, status: 403, says: "X-Original-Forwarded-For"},
		{name: "X-Client-IP", header: map[string]string{"X-Client-IP": "203.0.113.9"}, status: 403, says: "X-Client-IP"},
		{name: "X-Cluster-Client-IP", header: map[string]string{"X-Cluster-Client-IP": "203.0.113.9"}, status: 403, says: "X-Cluster-Client-IP"},

		// Another site's page in a browser on the proxy's host.
		{name: "cross-site Origin", header: map[string]string{"Origin": "http://evil.example"}, status: 403, says: "Origin"},
		{name: "opaque Origin", header: map[string]string{"Origin": "null"}, status: 403, says: "Origin"},
		{name: "Origin on another port", header: map[string]string{"Origin": "http://127.0.0.1:1"}, status: 403, says: "Origin"},
		{name: "Origin with another scheme", header: map[string]string{"Origin": "https://" + l.addr}, status: 403, says: "Origin"},
		{name: "Sec-Fetch-Site cross-site", header: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: 403, says: "Sec-Fetch-Site"},
		{name: "Sec-Fetch-Site same-site", header: map[string]string{"Sec-Fetch-Site": "same-site"}, status: 403, says: "Sec-Fetch-Site"},
		{name: "same-origin claim, foreign Origin", header: map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"}, status: 403, says: "Origin"},
	} {
		for _, way := range writeWays {
			before := l.writes()
			status, body, _ := l.send(t, way.req(tc.header, tc.host, ""))
			want := tc.status
			if want == 0 {
				want = way.ok
			}
			if status != want {
				t.Errorf("%s, %s: %d, want %d\n%s", tc.name, way.name, status, want, body)
				continue
			}
			if tc.status == 0 {
				continue
			}
			if l.writes() != before {
				t.Errorf("%s, %s: refused with %d, but the backend acted", tc.name, way.name, status)
			}
			if !strings.Contains(body, tc.says) {
				t.Errorf("%s, %s: the refusal does not name %q:\n%s", tc.name, way.name, tc.says, body)
			}
		}
	}
}

// With an admin token, a script with the token writes from anywhere, through
// any proxy; a browser writes only from this proxy's own page, even with the token.
func TestAdminTokenOverTCP(t *testing.T) {
	l := newLiveAdmin(t, Options{AdminToken: adminTok, PublicURL: "https://proxy.example"})
	own := "http://" + l.addr
	for _, tc := range []struct {
		name   string
		host   string
		token  string
		header map[string]string
		status int // 0: allowed
		says   string
	}{
		{name: "a script from anywhere", host: "condaproxy.internal:8080", token: adminTok},
		{name: "a script through a reverse proxy", host: "proxy.example", token: adminTok,
			header: map[string]string{"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}},
		{name: "the page itself", token: adminTok, header: map[string]string{"Origin": own, "Sec-Fetch-Site": "same-origin"}},
		{name: "the page behind a proxy that rewrites Host", host: "10.1.2.3:8080", token: adminTok,
			header: map[string]string{"Origin": "https://proxy.example", "Sec-Fetch-Site": "same-origin", "X-Forwarded-For": "203.0.113.9"}},

		{name: "no token, from loopback", status: 401, says: "admin token"},
		{name: "a wrong token", token: "wrong", status: 401, says: "admin token"},
		{name: "the token and more", token: adminTok + "x", status: 401, says: "admin token"},
		{name: "the token from another site's page", token: adminTok,
			header: map[string]string{"Origin": "http://evil.example"}, status: 403, says: "Origin"},
		{name: "the token, Sec-Fetch-Site cross-site", token: adminTok,
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: 403, says: "Sec-Fetch-Site"},
		{name: "the token, Sec-Fetch-Site same-site", token: adminTok,
			header: map[string]string{"Sec-Fetch-Site": "same-site"}, status: 403, says: "Sec-Fetch-Site"},
		{name: "the token, opaque Origin", token: adminTok, header: map[string]string{"Origin": "null"}, status: 403, says: "Origin"},
	} {
		for _, way := range writeWays {
			before := l.writes()
			status, body, hdr := l.send(t, way.req(tc.header, tc.host, tc.token))
			want := tc.status
			if want == 0 {
				want = way.ok
			}
			if status != want {
				t.Errorf("%s, %s: %d, want %d\n%s", tc.name, way.name, status, want, body)
				continue
			}
			if status == way.ok {
				continue
			}
			if l.writes() != before {
				t.Errorf("%s, %s: refused with %d, but the backend acted", tc.name, way.name, status)
			}
			if !strings.Contains(body, tc.says) {
				t.Errorf("%s, %s: the refusal does not name %q:\n%s", tc.name, way.name, tc.says, body)
			}
			if status == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("%s, %s: 401 with WWW-Authenticate %q, want a Bearer challenge", tc.name, way.name, hdr.Get("WWW-Authenticate"))
			}
		}
	}
}

// Nothing admin logs carries a credential: not the admin token sent as a bearer
// token or typed into the form, not a client token, not even when a handler
// panics with the request in hand.
func TestLogsCarryNoToken(t *testing.T) {
	l := newLiveAdmin(t, Options{AdminToken: adminTok, CanRead: func(r *http.Request) bool {
		return r.Header.Get("Authorization") == "Bearer "+clientTok
	}})
	for _, way := range writeWays {
		// Refused with the right token (cross-site), and with near misses of it.
		l.send(t, way.req(map[string]string{"Origin": "http://evil.example"}, "", adminTok))
		l.send(t, way.req(nil, "", adminTok+"x"))
		l.send(t, way.req(nil, "", adminTok[:len(adminTok)-1]))
		l.send(t, way.req(map[string]string{"Sec-Fetch-Site": "cross-site", "Cookie": "t=" + adminTok}, "evil.example", adminTok))
	}
	// A handler that panics, with credentials everywhere a request carries them.
	status, body, _ := l.send(t, liveReq{method: "GET", path: "/api/v1/packages?channel=panic&subdir=linux-64",
		header: map[string]string{"Authorization": "Bearer " + clientTok, "Cookie": "t=" + adminTok, "Proxy-Authorization": "Bearer " + adminTok}})
	if status != http.StatusInternalServerError || !strings.Contains(body, `"error"`) {
		t.Errorf("a panicking API call: %d %s, want 500 with the JSON error shape", status, body)
	}
	logs := l.logs.String()
	if !strings.Contains(logs, "refused") || !strings.Contains(logs, "panic") {
		t.Fatalf("the refusals and the panic were not logged at all, so this test proves nothing:\n%s", logs)
	}
	for _, secret := range []string{adminTok, clientTok, adminTok[:len(adminTok)-1]} {
		if strings.Contains(logs, secret) {
			t.Errorf("a log line carries a token (%q):\n%s", secret, logs)
		}
	}
	// The refusals' hint "Authorization: Bearer <admin_token>" names no credential.
	if strings.Contains(strings.ToLower(strings.ReplaceAll(logs, "Authorization: Bearer <admin_token>", "")), "authorization") {
		t.Errorf("a log line carries an Authorization header:\n%s", logs)
	}
}

// The page's form is for a browser only: a post carrying neither Origin nor
// Sec-Fetch-Site, as an older browser's cross-site form post does, is refused
// whatever it carries (the admin token, loopback trust), and the backend never
// sees it. Either header alone, from the page, is enough.
func TestFormWritesComeFromABrowser(t *testing.T) {
	for _, adminToken := range []string{"", adminTok} {
		l := newLiveAdmin(t, Options{AdminToken: adminToken})
		form := url.Values{"channel": {""}, "admin_token": {adminTok}}.Encode()
		post := func(h map[string]string) (int, string) {
			status, body, _ := l.send(t, liveReq{method: "POST", path: "/ui/sync", body: form, header: h})
			return status, body
		}
		for _, h := range []map[string]string{
			nil,
			{"Authorization": "Bearer " + adminTok},
			{"Content-Type": "text/plain"},
			{"Referer": l.url + "/"},
		} {
			status, body := post(h)
			if status != http.StatusForbidden || !strings.Contains(body, "browser") {
				t.Errorf("admin token %q: form post with %v and no Origin or Sec-Fetch-Site: %d, want 403 saying why\n%s", adminToken, h, status, body)
			}
		}
		if n := l.writes(); n != 0 {
			t.Fatalf("admin token %q: %d refused form posts reached the backend", adminToken, n)
		}
		if !strings.Contains(l.logs.String(), "write refused") {
			t.Errorf("admin token %q: the refusals were not logged", adminToken)
		}
		for _, h := range []map[string]string{
			{"Origin": l.url},
			{"Sec-Fetch-Site": "same-origin"},
		} {
			if status, body := post(h); status != http.StatusSeeOther {
				t.Errorf("admin token %q: form post from the page with %v: %d, want 303\n%s", adminToken, h, status, body)
			}
		}
	}
}

// The API's writes take a JSON body declared so: no cross-site form can send
// one without a CORS preflight, which the API does not answer. Whatever else
// comes (a form's text/plain or urlencoded body that reads as JSON, no type at
// all) is refused 415 before the backend sees it, with the token or with
// loopback trust. A write with no body and no type (curl -X POST) goes on.
func TestAPIWritesAreJSON(t *testing.T) {
	for _, adminToken := range []string{"", adminTok} {
		l := newLiveAdmin(t, Options{AdminToken: adminToken})
		send := func(ctype, body string) (int, string) {
			t.Helper()
			r, _ := http.NewRequest("POST", l.url+"/api/v1/purge", strings.NewReader(body))
			if ctype != "" {
				r.Header.Set("Content-Type", ctype)
			}
			if adminToken != "" {
				r.Header.Set("Authorization", "Bearer "+adminToken)
			}
			res, err := l.client.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			return res.StatusCode, string(b)
		}
		const js = `{"channel":"fmt"}`
		for _, tc := range []struct{ ctype, body string }{
			{"text/plain", js},
			{"text/plain; charset=utf-8", js},
			{"application/x-www-form-urlencoded", `{"channel":"fmt","x":"=1"}`},
			{"application/x-www-form-urlencoded", ""},
			{"multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n" + js + "\r\n--x--\r\n"},
			{"application/jsonx", js},
			{"application/json-seq", js},
			{"", js},
		} {
			status, body := send(tc.ctype, tc.body)
			if status != http.StatusUnsupportedMediaType || !strings.Contains(body, "Content-Type: application/json") {
				t.Errorf("admin token %q: purge with Content-Type %q: %d %s, want 415 naming application/json", adminToken, tc.ctype, status, body)
			}
		}
		if n := l.writes(); n != 0 {
			t.Fatalf("admin token %q: %d refused writes reached the backend", adminToken, n)
		}
		for _, ctype := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON"} {
			if status, body := send(ctype, js); status != http.StatusOK {
				t.Errorf("admin token %q: purge with Content-Type %q: %d %s, want 200", adminToken, ctype, status, body)
			}
		}
		if status, body := send("", ""); status != http.StatusBadRequest || !strings.Contains(body, "channel is required") {
			t.Errorf("admin token %q: purge with no body and no type: %d %s, want it read (400: no channel)", adminToken, status, body)
		}
	}
}
