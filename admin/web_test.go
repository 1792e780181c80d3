package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// webBackend is a fake Backend: one conda channel "main" whose linux-64 holds
// 120 zlib builds (served), one hidden libgcc-ng and one record with a hostile
// name; a "files" channel; one running job.
type webBackend struct {
	mu      sync.Mutex
	records []Package
	calls   []string // Packages calls: "channel subdir q offset limit"
	started [][]string
	busy    bool
	// subdirs and subdirsErr are what Subdirs answers; nil: noarch and the
	// channel's platforms.
	subdirs    []string
	subdirsErr error
	// subdirsBlock: Subdirs waits for its context's end, as a silent upstream.
	subdirsBlock bool
}

func newWebBackend() *webBackend {
	b := &webBackend{}
	for i := range 120 {
		fn := fmt.Sprintf("zlib-1.2.%03d-h0_0.conda", i)
		b.records = append(b.records, Package{Filename: fn, Name: "zlib", Version: fmt.Sprintf("1.2.%d", i),
			Build: "h0_0", Size: 100_000 + int64(i), Served: true, Cached: i == 0})
	}
	b.records = append(b.records,
		Package{Filename: "libgcc-ng-8.2.0-hdf63c60_1.tar.bz2", Name: "libgcc-ng", Version: "8.2.0",
			Build: "hdf63c60_1", Size: -1, Reason: "license_blacklist: GPL"},
		Package{Filename: "<script>alert(1)</script>-1-0.conda", Name: "<script>alert(1)</script>",
			Version: "1", Build: "0", Size: 10, Served: true},
	)
	slices.SortFunc(b.records, func(x, y Package) int { return strings.Compare(x.Filename, y.Filename) })
	return b
}

var webT0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func (b *webBackend) Channels(context.Context) []ChannelInfo {
	return []ChannelInfo{
		{Name: "main", Kind: "conda", Upstreams: []string{"https://conda.example.org/main"},
			Platforms: []string{"linux-64"}, PackagesCached: 1, BytesCached: 100_000,
			LastRefresh: webT0.Add(-3 * time.Minute), UpstreamOK: true},
		{Name: "tools", Kind: "files", Upstreams: []string{"https://files.example.org/"}},
	}
}

func (b *webBackend) Subdirs(ctx context.Context, channel string) ([]string, error) {
	b.mu.Lock()
	block := b.subdirsBlock
	b.mu.Unlock()
	if block {
		<-ctx.Done()
		return []string{"noarch", "linux-64", "osx-arm64"}, ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subdirs != nil || b.subdirsErr != nil {
		return slices.Clone(b.subdirs), b.subdirsErr
	}
	if channel != "main" {
		return nil, fmt.Errorf("%w: no conda channel", ErrNotFound)
	}
	return []string{"noarch", "linux-64"}, nil
}

func (b *webBackend) Packages(_ context.Context, channel, subdir, q string, servedOnly bool, offset, limit int) (PackagePage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	call := fmt.Sprintf("%s %s %s %d %d", channel, subdir, q, offset, limit)
	if servedOnly {
		call += " served"
	}
	b.calls = append(b.calls, call)
	if channel != "main" || subdir != "linux-64" {
		return PackagePage{}, fmt.Errorf("%w: %s/%s", ErrNotFound, channel, subdir)
	}
	var match []Package
	for _, r := range b.records {
		if strings.Contains(r.Filename, q) && (r.Served || !servedOnly) {
			match = append(match, r)
		}
	}
	p := PackagePage{Total: len(match), Offset: offset, Limit: limit}
	if offset < len(match) {
		p.Packages = match[offset:min(offset+limit, len(match))]
	}
	return p, nil
}

func (b *webBackend) Explain(_ context.Context, channel, subdir, pkg string) ([]Explanation, error) {
	if channel != "main" {
		return nil, fmt.Errorf("%w: no channel %q", ErrNotFound, channel)
	}
	if strings.HasPrefix(pkg, "libgcc-ng") {
		return []Explanation{{Filename: "libgcc-ng-8.2.0-hdf63c60_1.tar.bz2", Rule: "license_blacklist: GPL", Detail: "license GPL"}}, nil
	}
	return nil, nil
}

func (b *webBackend) Stats(context.Context) Stats {
	return Stats{CacheBytes: 3 << 30, CacheLimit: 10 << 30, CacheFiles: 42, Hits: 90, Misses: 10, HitRatio: 0.9,
		BytesBySource: map[string]int64{"cache": 5 << 30, "upstream": 1 << 20}, UpstreamErrors: 2}
}

func (b *webBackend) StartSync(channels []string) (Job, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.busy {
		return Job{}, fmt.Errorf("%w: job j1 syncs main", ErrBusy)
	}
	b.started = append(b.started, channels)
	return Job{ID: "j2", Channels: channels, State: "running", Started: webT0}, nil
}

func (b *webBackend) Job(id string) (Job, bool) {
	for _, j := range b.Jobs() {
		if j.ID == id {
			return j, true
		}
	}
	return Job{}, false
}

func (b *webBackend) Jobs() []Job {
	return []Job{
		{ID: "j1", Channels: []string{"main"}, State: "running", Started: webT0.Add(-time.Minute), Files: 10, Done: 4,
			Bytes: 1000, BytesDone: 400, Fetched: 3, Present: 1},
		{ID: "j0", State: "done", Started: webT0.Add(-time.Hour), Finished: webT0.Add(-50 * time.Minute), Files: 2, Done: 2},
	}
}

func (b *webBackend) Purge(context.Context, string, string, string) error { return nil }

type webEnv struct {
	h  http.Handler
	be *webBackend
}

func newWebEnv(t *testing.T, o Options) webEnv {
	t.Helper()
	be := newWebBackend()
	webClock = func() time.Time { return webT0 }
	t.Cleanup(func() { webClock = time.Now })
	o.Backend = be
	o.Gatherer = prometheus.NewRegistry()
	o.Logger = slog.New(slog.DiscardHandler)
	return webEnv{h: New(o), be: be}
}

// do runs one request from remote (loopback when "") to Host proxy.test:8080
// (hdr["Host"] sets another) and returns the response and its body.
func (e webEnv) do(t *testing.T, method, target string, body string, hdr map[string]string, remote string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	req.Host = "proxy.test:8080"
	if remote != "" {
		req.RemoteAddr = remote
	} else {
		req.RemoteAddr = "127.0.0.1:5555"
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	res := rec.Result()
	return res, rec.Body.String()
}

func (e webEnv) get(t *testing.T, target string) string {
	t.Helper()
	res, body := e.do(t, http.MethodGet, target, "", nil, "")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", target, res.StatusCode, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("GET %s: Content-Type %q", target, ct)
	}
	return body
}

func webWant(t *testing.T, what, body string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(body, s) {
			t.Errorf("%s lacks %q", what, s)
		}
	}
}

// rowOf is the <tr> of filename in a results table.
func webRow(t *testing.T, body, filename string) string {
	t.Helper()
	i := strings.Index(body, `<tr data-filename="`+filename+`"`)
	if i < 0 {
		t.Fatalf("no row for %s", filename)
	}
	j := strings.Index(body[i:], "</tr>")
	return body[i : i+j]
}

var webExternalRef = regexp.MustCompile(`(?i)(src|href|action)\s*=\s*"?\s*(https?:)?//`)

// noExternalURLs: no attribute points off the proxy, and the only absolute URLs in
// the text are the .condarc snippet's (this host) and the upstreams' addresses
// shown as text.
func webNoExternalURLs(t *testing.T, what, body string) {
	t.Helper()
	if m := webExternalRef.FindString(body); m != "" {
		t.Errorf("%s links outside the proxy: %q", what, m)
	}
	rest := body
	for _, ok := range []string{"http://proxy.test:8080/", "https://conda.example.org/main", "https://files.example.org/"} {
		rest = strings.ReplaceAll(rest, ok, "")
	}
	if i := strings.Index(rest, "http://"); i >= 0 {
		t.Errorf("%s has an absolute URL: %q", what, rest[i:min(len(rest), i+60)])
	}
	if i := strings.Index(rest, "https://"); i >= 0 {
		t.Errorf("%s has an absolute URL: %q", what, rest[i:min(len(rest), i+60)])
	}
}

func TestWebOverview(t *testing.T) {
	// proxy.test:8080 is the proxy's public_url: a loopback browser there may write.
	e := newWebEnv(t, Options{PublicURL: "http://proxy.test:8080/"})
	res, body := e.do(t, http.MethodGet, "/", "", nil, "")
	if res.StatusCode != 200 {
		t.Fatalf("GET /: %d", res.StatusCode)
	}
	webWant(t, "overview", body,
		`href="/ui/channels/main"`, "https://conda.example.org/main", `<span class="badge ok">ok</span>`,
		"3 min ago", "3.0 GiB", "of 10.0 GiB", `<meter id="cache-meter"`, `value="0.3000"`, "90.0 %",
		"cache", "5.0 GiB", "upstream", // bytes by source
		`href="/ui/jobs/j1"`, `<progress max="10" value="4">`, "running", "done",
		`data-live="2"`, // the JS live update of a running job
		`action="/ui/sync"`, `name="channel"`, `<option value="main">main</option>`)
	if strings.Contains(body, `<option value="tools">`) {
		t.Error("the sync form offers a files channel")
	}
	if strings.Contains(body, "admin_token") {
		t.Error("no admin token configured, but the form asks for one")
	}
	webNoExternalURLs(t, "overview", body)
	for k, want := range map[string]string{
		"Cache-Control":           "no-store",
		"Content-Security-Policy": "default-src 'none'",
		"X-Frame-Options":         "DENY",
	} {
		if got := res.Header.Get(k); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	// Not on loopback and no admin token: no form, a note instead.
	_, body = e.do(t, http.MethodGet, "/", "", nil, "192.0.2.1:4000")
	if strings.Contains(body, `action="/ui/sync"`) {
		t.Error("a remote browser without an admin token configured is offered the sync form")
	}
	// On loopback but under a name that is neither loopback nor public_url's: the
	// form would be refused, so it is not offered.
	_, body = e.do(t, http.MethodGet, "/", "", map[string]string{"Host": "rebound.example:8080"}, "")
	if strings.Contains(body, `action="/ui/sync"`) {
		t.Error("a page asked for under a foreign Host is offered the sync form")
	}
	if got := res.Header.Get("Referrer-Policy"); got != "same-origin" {
		t.Errorf("Referrer-Policy %q, want same-origin: under no-referrer the form's posts say Origin: null", got)
	}
}

func TestWebChannelSearchAndPaging(t *testing.T) {
	e := newWebEnv(t, Options{})
	// Before a subdir is chosen: the subdirs, the snippet, no search.
	body := e.get(t, "/ui/channels/main")
	webWant(t, "channel page", body,
		`href="/ui/channels/main?subdir=linux-64"`, `href="/ui/channels/main?subdir=noarch"`,
		"channels:\n  - http://proxy.test:8080/main\n", `id="q"`, `id="subdir"`)
	if strings.Contains(body, "/t/") {
		t.Error("a token snippet without client tokens configured")
	}
	if len(e.be.calls) != 0 {
		t.Errorf("Packages called before a subdir was chosen: %v", e.be.calls)
	}

	body = e.get(t, "/ui/channels/main?subdir=linux-64&q=1.2")
	webWant(t, "page 1", body, "1–50 of 120 records", `<span class="current" aria-current="page">1</span>`,
		`href="/ui/channels/main?page=2&amp;q=1.2&amp;subdir=linux-64"`, // page links keep q
		`href="/ui/channels/main?page=3&amp;q=1.2&amp;subdir=linux-64"`, `rel="next"`)
	if strings.Contains(body, `rel="prev"`) {
		t.Error("page 1 has a previous link")
	}
	row := webRow(t, body, "zlib-1.2.000-h0_0.conda")
	webWant(t, "zlib row", row, `data-state="served"`, `<span class="badge ok">served</span>`, ">cached<", "97.7 KiB")
	row = webRow(t, body, "zlib-1.2.001-h0_0.conda")
	webWant(t, "zlib row", row, "not cached")
	webNoExternalURLs(t, "channel page", body)

	body = e.get(t, "/ui/channels/main?subdir=linux-64&q=1.2&page=3")
	webWant(t, "page 3", body, "101–120 of 120", `rel="prev" href="/ui/channels/main?page=2&amp;q=1.2&amp;subdir=linux-64"`)
	if strings.Contains(body, `rel="next"`) {
		t.Error("the last page has a next link")
	}
	if got := e.be.calls[len(e.be.calls)-1]; got != "main linux-64 1.2 100 50" {
		t.Errorf("Packages call %q, want offset 100 limit 50", got)
	}

	body = e.get(t, "/ui/channels/main?subdir=linux-64&q=libgcc")
	row = webRow(t, body, "libgcc-ng-8.2.0-hdf63c60_1.tar.bz2")
	webWant(t, "libgcc row", row, `data-state="hidden"`, `<span class="badge bad">hidden</span>`,
		`<span class="rule">license_blacklist: GPL</span>`,
		`href="/ui/explain?channel=main&amp;package=libgcc-ng-8.2.0-hdf63c60_1.tar.bz2&amp;subdir=linux-64"`, "—")
	if strings.Contains(body, `class="pager"`) {
		t.Error("one page of results has page links")
	}

	body = e.get(t, "/ui/channels/main?subdir=linux-64&q=nothing-like-this")
	webWant(t, "no match", body, "No record in linux-64 matches")

	// The files channel has no package search.
	body = e.get(t, "/ui/channels/tools?subdir=linux-64")
	if strings.Contains(body, `id="results"`) || strings.Contains(body, `id="q"`) {
		t.Error("a files channel shows a package search")
	}
	if res, _ := e.do(t, http.MethodGet, "/ui/channels/nope", "", nil, ""); res.StatusCode != 404 {
		t.Errorf("unknown channel: %d, want 404", res.StatusCode)
	}
}

func TestWebEscapesHostileNames(t *testing.T) {
	e := newWebEnv(t, Options{})
	body := e.get(t, "/ui/channels/main?subdir=linux-64&q="+url.QueryEscape("<script>"))
	if strings.Contains(body, "<script>alert") {
		t.Fatal("a package name reached the page unescaped")
	}
	webWant(t, "hostile row", body, "&lt;script&gt;alert(1)&lt;/script&gt;-1-0.conda")
	// The query itself, echoed in the search field and page text.
	if strings.Contains(body, `value="<script>"`) {
		t.Error("the query is echoed unescaped")
	}
	// Hosts come from the request: escaped too.
	req := httptest.NewRequest(http.MethodGet, "/ui/channels/main", nil)
	req.Host = `evil"><script>x</script>`
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if strings.Contains(rec.Body.String(), "<script>x") {
		t.Error("the Host header reached the page unescaped")
	}
}

func TestWebTokenSnippetUsesPlaceholder(t *testing.T) {
	e := newWebEnv(t, Options{ClientTokens: true, CanRead: func(r *http.Request) bool {
		return r.Header.Get("Authorization") == "Bearer s3cret"
	}})
	_, body := e.do(t, http.MethodGet, "/ui/channels/main", "", map[string]string{"Authorization": webBasic("", "s3cret")}, "")
	webWant(t, "token snippet", body, "http://proxy.test:8080/t/&lt;token&gt;/main")
	if strings.Contains(body, "s3cret") {
		t.Error("the page shows the token")
	}
}

func webBasic(user, pass string) string {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

func TestWebAuth(t *testing.T) {
	var seen []string
	e := newWebEnv(t, Options{
		AdminToken: "adm1n",
		CanRead: func(r *http.Request) bool {
			seen = append(seen, r.Header.Get("Authorization"))
			return r.Header.Get("Authorization") == "Bearer s3cret"
		},
	})
	for _, p := range []string{"/", "/ui/channels/main?subdir=linux-64", "/ui/explain?channel=main&subdir=linux-64&package=zlib", "/ui/jobs/j1"} {
		res, body := e.do(t, http.MethodGet, p, "", nil, "")
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", p, res.StatusCode)
		}
		if got := res.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="condaproxy"`) {
			t.Errorf("GET %s: WWW-Authenticate %q, want Basic", p, got)
		}
		if strings.Contains(body, "zlib") {
			t.Errorf("GET %s without a token shows data", p)
		}
		res, _ = e.do(t, http.MethodGet, p, "", map[string]string{"Authorization": webBasic("x", "wrong")}, "")
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d, want 401", p, res.StatusCode)
		}
		for _, a := range []string{webBasic("anyone", "s3cret"), webBasic("s3cret", ""), "Bearer s3cret", webBasic("", "adm1n")} {
			res, _ = e.do(t, http.MethodGet, p, "", map[string]string{"Authorization": a}, "")
			if res.StatusCode != http.StatusOK {
				t.Errorf("GET %s with %q: %d, want 200", p, a, res.StatusCode)
			}
		}
	}
	if !slices.Contains(seen, "Bearer s3cret") {
		t.Errorf("CanRead never saw the Basic password as a bearer token: %v", seen)
	}
	// Static files are open: the 401 page uses them.
	if res, _ := e.do(t, http.MethodGet, "/static/style.css", "", nil, ""); res.StatusCode != 200 {
		t.Errorf("GET /static/style.css: %d", res.StatusCode)
	}
}

func TestWebSync(t *testing.T) {
	// The page's reader, in a browser: its form posts say they come from the page.
	rd := map[string]string{"Authorization": webBasic("", "s3cret"), "Sec-Fetch-Site": "same-origin"}
	e := newWebEnv(t, Options{
		AdminToken: "adm1n",
		CanRead:    func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer s3cret" },
	})
	// The form asks for the admin token.
	_, body := e.do(t, http.MethodGet, "/", "", rd, "")
	webWant(t, "overview", body, `type="password" name="admin_token"`, "admin token")

	for _, form := range []string{"channel=main", "channel=main&admin_token=wrong", "channel=main&admin_token=s3cret"} {
		res, _ := e.do(t, http.MethodPost, "/ui/sync", form, rd, "")
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST /ui/sync %q: %d, want 401", form, res.StatusCode)
		}
	}
	// The token in the URL does not count: only the body.
	res, _ := e.do(t, http.MethodPost, "/ui/sync?admin_token=adm1n", "channel=main", rd, "")
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /ui/sync with the token in the URL: %d, want 401", res.StatusCode)
	}
	if len(e.be.started) != 0 {
		t.Fatalf("syncs started without the admin token: %v", e.be.started)
	}
	res, _ = e.do(t, http.MethodPost, "/ui/sync", "channel=main&admin_token=adm1n", rd, "192.0.2.1:4000")
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/jobs/j2" {
		t.Fatalf("POST /ui/sync with the admin token: %d %q, want 303 to /ui/jobs/j2", res.StatusCode, res.Header.Get("Location"))
	}
	if len(e.be.started) != 1 || !slices.Equal(e.be.started[0], []string{"main"}) {
		t.Errorf("StartSync calls %v, want [[main]]", e.be.started)
	}
	// All channels: no channel field, or an empty one.
	res, _ = e.do(t, http.MethodPost, "/ui/sync", "channel=&admin_token=adm1n", rd, "")
	if res.StatusCode != http.StatusSeeOther || len(e.be.started) != 2 || e.be.started[1] != nil {
		t.Errorf("sync of all: %d, calls %v", res.StatusCode, e.be.started)
	}
	// A cross-site form post is refused.
	res, _ = e.do(t, http.MethodPost, "/ui/sync", "channel=main&admin_token=adm1n",
		map[string]string{"Authorization": rd["Authorization"], "Origin": "http://evil.example"}, "")
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST: %d, want 403", res.StatusCode)
	}
	// Busy: 409 with the message.
	e.be.busy = true
	res, body = e.do(t, http.MethodPost, "/ui/sync", "channel=main&admin_token=adm1n", rd, "")
	if res.StatusCode != http.StatusConflict || !strings.Contains(body, "job j1 syncs main") {
		t.Errorf("busy: %d %s", res.StatusCode, body)
	}
}

func TestWebSyncLoopbackOnly(t *testing.T) {
	e := newWebEnv(t, Options{})
	local := map[string]string{"Host": "localhost:8080", "Origin": "http://localhost:8080", "Sec-Fetch-Site": "same-origin"}
	if res, _ := e.do(t, http.MethodPost, "/ui/sync", "channel=main", local, "192.0.2.1:4000"); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("remote POST without an admin token configured: %d, want 401", res.StatusCode)
	}
	if res, _ := e.do(t, http.MethodPost, "/ui/sync", "channel=main", local, "[::1]:4000"); res.StatusCode != http.StatusSeeOther {
		t.Errorf("loopback POST from the page at localhost: %d, want 303", res.StatusCode)
	}
	// proxy.test is not public_url here: a loopback peer asking for it is refused.
	res, body := e.do(t, http.MethodPost, "/ui/sync", "channel=main", map[string]string{"Sec-Fetch-Site": "same-origin"}, "[::1]:4000")
	if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "Host") {
		t.Errorf("loopback POST to Host proxy.test:8080: %d, want 403 naming the Host\n%s", res.StatusCode, body)
	}
}

func TestWebJobAndExplain(t *testing.T) {
	e := newWebEnv(t, Options{})
	body := e.get(t, "/ui/jobs/j1")
	webWant(t, "running job", body, `<meta http-equiv="refresh" content="2">`, `<progress max="10" value="4">`, "4 / 10 files")
	body = e.get(t, "/ui/jobs/j0")
	if strings.Contains(body, `http-equiv="refresh"`) {
		t.Error("a finished job's page still refreshes")
	}
	if res, _ := e.do(t, http.MethodGet, "/ui/jobs/nope", "", nil, ""); res.StatusCode != 404 {
		t.Errorf("unknown job: %d", res.StatusCode)
	}
	body = e.get(t, "/ui/explain?channel=main&subdir=linux-64&package=libgcc-ng")
	row := webRow(t, body, "libgcc-ng-8.2.0-hdf63c60_1.tar.bz2")
	webWant(t, "explain", row, "hidden", "license_blacklist: GPL", "license GPL")
	webNoExternalURLs(t, "explain", body)
	if res, _ := e.do(t, http.MethodGet, "/ui/explain?channel=nope&subdir=linux-64&package=x", "", nil, ""); res.StatusCode != 404 {
		t.Errorf("explain of an unknown channel: %d, want 404", res.StatusCode)
	}
}

func TestWebStatic(t *testing.T) {
	e := newWebEnv(t, Options{})
	body := e.get(t, "/")
	m := regexp.MustCompile(`href="(/static/style\.css\?v=[0-9a-f]{16})"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no versioned stylesheet link")
	}
	res, css := e.do(t, http.MethodGet, m[1], "", nil, "")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/css") ||
		!strings.Contains(res.Header.Get("Cache-Control"), "max-age=31536000") || !strings.Contains(css, "--accent") {
		t.Errorf("stylesheet: %d %v", res.StatusCode, res.Header)
	}
	if strings.Contains(css, "http") || strings.Contains(css, "@import") {
		t.Error("the stylesheet refers to something outside the proxy")
	}
	res, _ = e.do(t, http.MethodGet, "/static/style.css", "", map[string]string{"If-None-Match": res.Header.Get("ETag")}, "")
	if res.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET: %d, want 304", res.StatusCode)
	}
	if res, _ := e.do(t, http.MethodGet, "/static/nope.js", "", nil, ""); res.StatusCode != 404 {
		t.Errorf("missing static file: %d", res.StatusCode)
	}
}

// TestWebChannelSubdirs: /ui's channel page offers the Backend's subdirs (the
// proxy's list), or its guess said to be one.
func TestWebChannelSubdirs(t *testing.T) {
	e := newWebEnv(t, Options{})
	e.be.subdirs = []string{"noarch", "linux-armv7l"}
	body := e.get(t, "/ui/channels/main")
	webWant(t, "channel page", body, `href="/ui/channels/main?subdir=linux-armv7l"`, `<option value="linux-armv7l">`)
	if strings.Contains(body, `id="guessed"`) {
		t.Errorf("the channel's own list said to be a guess")
	}
	e.be.subdirsErr = errors.New("upstream 503")
	body = e.get(t, "/ui/channels/main")
	webWant(t, "guessed", body, `href="/ui/channels/main?subdir=linux-armv7l"`, `id="guessed"`, "a guess")
}
