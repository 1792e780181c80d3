package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// failingBackend is webBackend whose package reads fail as an upstream does.
type failingBackend struct{ *webBackend }

func (failingBackend) Packages(context.Context, string, string, string, bool, int, int) (PackagePage, error) {
	return PackagePage{}, errors.New("GET https://conda.example.org/main/linux-64/repodata.json: 503 Service Unavailable")
}

type dirEnv struct {
	render func(w http.ResponseWriter, r *http.Request, channel, subdir, prefix string, readAll bool)
	be     *webBackend
	// limited: the request may not read the admin view (a scoped token).
	limited bool
}

func newDirEnv(t *testing.T, o Options, failing bool) dirEnv {
	t.Helper()
	be := newWebBackend()
	webClock = func() time.Time { return webT0 }
	t.Cleanup(func() { webClock = time.Now })
	o.Backend = be
	if failing {
		o.Backend = failingBackend{be}
	}
	o.Logger = slog.New(slog.DiscardHandler)
	return dirEnv{render: ChannelPages(o), be: be}
}

// get renders channel/subdir at target (the path and query the browser asked
// for) with prefix.
func (e dirEnv) get(t *testing.T, method, target, channel, subdir, prefix string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.Host = "proxy.test:8080"
	rec := httptest.NewRecorder()
	e.render(rec, req, channel, subdir, prefix, !e.limited)
	return rec.Result(), rec.Body.String()
}

func TestDirPageChannel(t *testing.T) {
	e := newDirEnv(t, Options{ClientTokens: true}, false)
	res, body := e.get(t, "GET", "/t/tok-1/main/", "main", "", "/t/tok-1")
	if res.StatusCode != 200 || res.Header.Get("Referrer-Policy") != "no-referrer" || res.Header.Get("Cache-Control") != "no-store" ||
		!strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("%d %v", res.StatusCode, res.Header)
	}
	webWant(t, "channel page", body,
		`<a href="linux-64/">linux-64</a>`, `<a href="noarch/">noarch</a>`,
		"channels:\n  - http://proxy.test:8080/t/tok-1/main\n",
		"channel_alias: http://proxy.test:8080/t/tok-1\nchannels:\n  - main\n",
		`<code class="upstream">https://conda.example.org/main</code>`)
	if strings.Contains(body, "&lt;token&gt;") {
		t.Errorf("the placeholder form shown to a browser that used a token")
	}
	webNoExternalURLs(t, "channel page", body)

	// Reached with a bearer token (no prefix): the placeholder form too;
	// behind public_url: its origin and path.
	e = newDirEnv(t, Options{ClientTokens: true, PublicURL: "https://conda.example.com/mirror/"}, false)
	_, body = e.get(t, "GET", "/main/", "main", "", "")
	webWant(t, "channel page", body,
		"channels:\n  - https://conda.example.com/mirror/main\n",
		"channels:\n  - https://conda.example.com/mirror/t/&lt;token&gt;/main\n")

	// A files channel.
	_, body = e.get(t, "GET", "/tools/", "tools", "", "")
	webWant(t, "files page", body, "files channel", "https://conda.example.com/mirror/tools/&lt;path&gt;")
	if strings.Contains(body, "channels:") {
		t.Errorf("a files channel offers a .condarc snippet")
	}
}

func TestDirPageSubdir(t *testing.T) {
	e := newDirEnv(t, Options{}, false)
	res, body := e.get(t, "GET", "/main/linux-64/", "main", "linux-64", "")
	if res.StatusCode != 200 {
		t.Fatalf("%d\n%s", res.StatusCode, body)
	}
	webWant(t, "subdir page", body, "1–50 of 122 records",
		`<a href="./zlib-1.2.000-h0_0.conda"><code>zlib-1.2.000-h0_0.conda</code></a>`,
		`<a href="repodata.json">repodata.json</a>`, `<a href="repodata.json.zst">`, `<a href="../">main</a>`,
		`<a rel="next" href="?page=2">`, `<a href="?page=3">3</a>`)
	if n := strings.Count(body, "<tr data-filename="); n != pageSize {
		t.Errorf("%d rows, want %d", n, pageSize)
	}
	// Hidden: the rule, the explain link (no client tokens: the page is open),
	// no link to the file.
	row := webRow(t, body, "libgcc-ng-8.2.0-hdf63c60_1.tar.bz2")
	webWant(t, "hidden row", row, `data-state="hidden"`, `<span class="rule">license_blacklist: GPL</span>`, `href="/ui/explain?`)
	if strings.Contains(row, `href="./`) {
		t.Errorf("hidden row links its file: %s", row)
	}
	// Hostile names are text.
	if strings.Contains(body, "<script>alert") {
		t.Errorf("a record's name is markup:\n%s", body)
	}
	webWant(t, "subdir page", body, "&lt;script&gt;alert(1)&lt;/script&gt;")

	// Paging and the filter; both bounded.
	_, body = e.get(t, "GET", "/main/linux-64/?q=zlib&page=3", "main", "linux-64", "")
	webWant(t, "page 3", body, "101–120 of 120 records matching “zlib”", `value="zlib"`,
		`<a rel="prev" href="?page=2&amp;q=zlib">`, `<a href="?q=zlib">1</a>`)
	if strings.Contains(body, `rel="next"`) {
		t.Errorf("last page has a next link")
	}
	_, body = e.get(t, "GET", "/main/linux-64/?page=2", "main", "linux-64", "")
	webWant(t, "page 2", body, `<a rel="prev" href="./">`, `<a href="./">1</a>`)
	_, _ = e.get(t, "GET", "/main/linux-64/?page=99999999999", "main", "linux-64", "")
	if last := e.be.calls[len(e.be.calls)-1]; last != fmt.Sprintf("main linux-64  %d 50", (1_000_000-1)*pageSize) {
		t.Errorf("page not bounded: %s", last)
	}
	if res, _ := e.get(t, "GET", "/main/linux-64/?q="+strings.Repeat("a", 201), "main", "linux-64", ""); res.StatusCode != 400 {
		t.Errorf("a long filter: %d, want 400", res.StatusCode)
	}

	// A subdir the channel does not serve: 404, as a page.
	res, body = e.get(t, "GET", "/main/osx-64/", "main", "osx-64", "")
	if res.StatusCode != 404 || !strings.Contains(body, "<h1>404 not found</h1>") {
		t.Errorf("unserved subdir: %d\n%s", res.StatusCode, body)
	}

	// HEAD: headers only.
	res, body = e.get(t, "HEAD", "/main/linux-64/", "main", "linux-64", "")
	if res.StatusCode != 200 || body != "" || res.Header.Get("Content-Length") == "" {
		t.Errorf("HEAD: %d %q %v", res.StatusCode, body, res.Header)
	}

	// Under client tokens the explain page needs a Basic password: no link.
	e = newDirEnv(t, Options{ClientTokens: true}, false)
	_, body = e.get(t, "GET", "/t/x/main/linux-64/", "main", "linux-64", "/t/x")
	if strings.Contains(body, "/ui/explain") {
		t.Errorf("explain link under client tokens")
	}
}

func TestDirPageUpstreamFails(t *testing.T) {
	e := newDirEnv(t, Options{}, true)
	res, body := e.get(t, "GET", "/main/linux-64/", "main", "linux-64", "")
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("%d, want 502", res.StatusCode)
	}
	webWant(t, "502 page", body, "502 upstream failed", "main/linux-64 from upstream failed", "503 Service Unavailable")
}

// TestDirPageScoped: a request that may not read the admin view (a token scoped
// to the channel) gets what a conda client gets: served records only, no rule,
// no cached state, no upstream. The admin token, or a full token, gets it all.
func TestDirPageScoped(t *testing.T) {
	e := newDirEnv(t, Options{ClientTokens: true, AdminToken: "adm-9f2c"}, false)
	e.limited = true
	res, body := e.get(t, "GET", "/t/scoped/main/", "main", "", "/t/scoped")
	if res.StatusCode != 200 {
		t.Fatalf("%d\n%s", res.StatusCode, body)
	}
	webWant(t, "scoped channel page", body, `<a href="linux-64/">linux-64</a>`, "channels:\n  - http://proxy.test:8080/t/scoped/main\n")
	if strings.Contains(body, "conda.example.org") || strings.Contains(body, `class="upstream"`) {
		t.Errorf("scoped channel page names the upstream:\n%s", body)
	}

	_, body = e.get(t, "GET", "/t/scoped/main/linux-64/", "main", "linux-64", "/t/scoped")
	webWant(t, "scoped subdir page", body, "1–50 of 121 records", `<a href="./zlib-1.2.000-h0_0.conda">`)
	for _, bad := range []string{"libgcc", "hidden", "license_blacklist", "cached", "<th>State</th>", "/ui/explain"} {
		if strings.Contains(body, bad) {
			t.Errorf("scoped subdir page shows %q:\n%s", bad, body)
		}
	}
	if last := e.be.calls[len(e.be.calls)-1]; last != "main linux-64  0 50 served" {
		t.Errorf("scoped listing asked %q, want the served records only", last)
	}
	// The filter counts served records only.
	_, body = e.get(t, "GET", "/t/scoped/main/linux-64/?q=gcc", "main", "linux-64", "/t/scoped")
	webWant(t, "scoped filter", body, "No record matches “gcc”.")

	// With the admin token (as a bearer): the admin view.
	req := httptest.NewRequest("GET", "/main/linux-64/", nil)
	req.Host = "proxy.test:8080"
	req.Header.Set("Authorization", "Bearer adm-9f2c")
	rec := httptest.NewRecorder()
	e.render(rec, req, "main", "linux-64", "", false)
	webWant(t, "admin-token subdir page", rec.Body.String(), "1–50 of 122 records", "<th>Cached</th>")

	// A token that opens every channel: the admin view too.
	e.limited = false
	_, body = e.get(t, "GET", "/t/full/main/linux-64/?q=gcc", "main", "linux-64", "/t/full")
	webWant(t, "full subdir page", body, `data-state="hidden"`, "license_blacklist: GPL", "<th>Cached</th>")
	_, body = e.get(t, "GET", "/t/full/main/", "main", "", "/t/full")
	webWant(t, "full channel page", body, `<code class="upstream">https://conda.example.org/main</code>`)
}

// TestDirPageScopedUpstreamFails: the 502 does not quote the upstream's error
// (it names the upstream) to a scoped token.
func TestDirPageScopedUpstreamFails(t *testing.T) {
	e := newDirEnv(t, Options{ClientTokens: true}, true)
	e.limited = true
	res, body := e.get(t, "GET", "/t/scoped/main/linux-64/", "main", "linux-64", "/t/scoped")
	if res.StatusCode != http.StatusBadGateway || strings.Contains(body, "conda.example.org") {
		t.Errorf("%d\n%s", res.StatusCode, body)
	}
}

// TestDirPageSubdirs: the channel page lists the Backend's subdirs (the proxy's
// own list: upstream's channeldata.json for a channel with no platforms), and
// when that fails or takes too long, a guess said to be one.
func TestDirPageSubdirs(t *testing.T) {
	e := newDirEnv(t, Options{}, false)
	e.be.subdirs = []string{"noarch", "linux-armv7l"}
	_, body := e.get(t, "GET", "/main/", "main", "", "")
	webWant(t, "channel page", body, `<a href="linux-armv7l/">linux-armv7l</a>`, `<a href="noarch/">noarch</a>`)
	if strings.Contains(body, `href="linux-64/"`) || strings.Contains(body, `id="guessed"`) {
		t.Errorf("channel page: not the Backend's list:\n%s", body)
	}

	e.be.subdirs, e.be.subdirsErr = []string{"noarch", "win-64"}, errors.New("GET https://conda.example.org/main/channeldata.json: 503")
	_, body = e.get(t, "GET", "/main/", "main", "", "")
	webWant(t, "guessed", body, `<a href="win-64/">win-64</a>`, `id="guessed"`, "a guess", "channeldata.json: 503")
	e.limited = true
	_, body = e.get(t, "GET", "/main/", "main", "", "")
	webWant(t, "guessed, scoped", body, `<a href="win-64/">win-64</a>`, "a guess")
	if strings.Contains(body, "conda.example.org") {
		t.Errorf("the scoped page quotes the upstream's error:\n%s", body)
	}
	e.limited = false

	// No guess from the Backend: the platforms and noarch.
	e.be.subdirs = nil
	_, body = e.get(t, "GET", "/main/", "main", "", "")
	webWant(t, "no guess", body, `<a href="linux-64/">linux-64</a>`, `<a href="noarch/">noarch</a>`, "a guess")

	// A silent upstream: the page does not wait past subdirsWait.
	old := subdirsWait
	subdirsWait = 50 * time.Millisecond
	t.Cleanup(func() { subdirsWait = old })
	e.be.subdirsErr, e.be.subdirsBlock = nil, true
	start := time.Now()
	res, body := e.get(t, "GET", "/main/", "main", "", "")
	if res.StatusCode != 200 || time.Since(start) > 5*time.Second {
		t.Fatalf("%d after %s", res.StatusCode, time.Since(start))
	}
	webWant(t, "timed out", body, `<a href="osx-arm64/">osx-arm64</a>`, "a guess")
}
