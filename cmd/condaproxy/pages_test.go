package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/internal/testdata"
)

// browserAccept is what Chromium sends when it opens a URL.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"

type pageResp struct {
	status int
	header http.Header
	body   string
}

// page asks the app for path with accept ("" for none), following no redirect.
func page(t *testing.T, base, method, path, accept string) pageResp {
	t.Helper()
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return pageResp{res.StatusCode, res.Header, string(b)}
}

// tokenOnlyInSnippets fails when the client token shows anywhere but in a URL
// below /t/ of the proxy (the .condarc snippets), or when an upstream secret
// shows at all.
func tokenOnlyInSnippets(t *testing.T, what, body, base string) {
	t.Helper()
	for _, s := range []string{upTok, admTok} {
		if strings.Contains(body, s) {
			t.Errorf("%s: a secret (%s) in the page", what, s)
		}
	}
	rest := strings.ReplaceAll(body, base+"/t/"+cliTok, "")
	rest = strings.ReplaceAll(rest, strings.TrimPrefix(base, "http://")+"/t/"+cliTok, "")
	if strings.Contains(rest, cliTok) {
		t.Errorf("%s: the client token outside the snippets:\n%s", what, body)
	}
}

func TestChannelPagesOnTheRealApp(t *testing.T) {
	ta := startTestApp(t)
	base := ta.srv.URL
	tp := "/t/" + cliTok

	// The channel's page: subdirs as relative links, the snippets with the URL
	// opened, token included; no cache keeps it, no Referer carries it.
	r := page(t, base, "GET", tp+"/fmt/", browserAccept)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("channel page: %d %s\n%s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Referrer-Policy") != "no-referrer" ||
		r.header.Get("Content-Security-Policy") == "" || r.header.Get("Vary") != "Accept" {
		t.Errorf("channel page headers: %v", r.header)
	}
	for _, want := range []string{
		`<a href="linux-64/">linux-64</a>`, `<a href="noarch/">noarch</a>`,
		"channels:\n  - " + base + tp + "/fmt\n",
		"channel_alias: " + base + tp + "\nchannels:\n  - fmt\n",
		"/t/" + config.Mask + "</code>", // the upstream, redacted
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("channel page lacks %q:\n%s", want, r.body)
		}
	}
	if strings.Contains(r.body, `href="osx-64/"`) {
		t.Errorf("channel page links a subdir it does not serve")
	}
	tokenOnlyInSnippets(t, "channel page", r.body, base)

	// The subdir's listing: served records link to their file, hidden ones
	// show their rule, the repodata files are links.
	r = page(t, base, "GET", tp+"/fmt/linux-64/", browserAccept)
	if r.status != 200 || r.header.Get("Cache-Control") != "no-store" || r.header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("subdir page: %d %v\n%s", r.status, r.header, r.body)
	}
	for _, want := range []string{
		`<a href="./` + zlibConda + `"><code>` + zlibConda + `</code></a>`,
		`<tr data-filename="` + libgcc + `" data-state="hidden">`,
		`<span class="rule">license_blacklist: GPL</span>`,
		`<a href="repodata.json">`, `<a href="current_repodata.json">`, `<a href="repodata_shards.msgpack.zst">`,
		`<a href="../">fmt</a>`, "1–3 of 3 records",
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("subdir page lacks %q:\n%s", want, r.body)
		}
	}
	if strings.Contains(r.body, `href="./`+libgcc) || strings.Contains(r.body, "/ui/explain") {
		t.Errorf("subdir page links a hidden file, or the token-less explain page:\n%s", r.body)
	}
	tokenOnlyInSnippets(t, "subdir page", r.body, base)

	// Its links work from where the browser is: the package and the repodata.
	pageURL, _ := url.Parse(base + tp + "/fmt/linux-64/")
	for _, href := range []string{"./" + zlibConda, "repodata.json", "../"} {
		u, _ := pageURL.Parse(href)
		accept := "*/*"
		if href == "../" {
			accept = browserAccept
		}
		if got := page(t, base, "GET", u.Path, accept); got.status != 200 {
			t.Errorf("link %s from the subdir page (%s): %d", href, u.Path, got.status)
		}
	}

	// The filter, and a HEAD.
	r = page(t, base, "GET", tp+"/fmt/linux-64/?q=zlib", browserAccept)
	if r.status != 200 || !strings.Contains(r.body, "1–2 of 2 records matching “zlib”") || strings.Contains(r.body, libgcc) {
		t.Errorf("filtered: %d\n%s", r.status, r.body)
	}
	if h := page(t, base, "HEAD", tp+"/fmt/linux-64/", browserAccept); h.status != 200 || h.body != "" ||
		!strings.HasPrefix(h.header.Get("Content-Type"), "text/html") {
		t.Errorf("HEAD: %d %q %v", h.status, h.body, h.header)
	}
	if r := page(t, base, "GET", tp+"/fmt/linux-64/?q="+strings.Repeat("z", 300), browserAccept); r.status != 400 {
		t.Errorf("a 300-character filter: %d, want 400", r.status)
	}

	// A subdir outside the platforms: 404 as for conda, as a page.
	r = page(t, base, "GET", tp+"/fmt/osx-64/", browserAccept)
	if r.status != 404 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(r.body, "404") {
		t.Errorf("subdir outside the platforms: %d %s\n%s", r.status, r.header.Get("Content-Type"), r.body)
	}

	// The files channel: a page too. Without the slash: a redirect that keeps
	// the prefix.
	if r := page(t, base, "GET", tp+"/inst/", browserAccept); r.status != 200 || !strings.Contains(r.body, "files channel") {
		t.Errorf("files channel page: %d\n%s", r.status, r.body)
	}
	if r := page(t, base, "GET", tp+"/fmt", browserAccept); r.status != 301 || r.header.Get("Location") != "fmt/" {
		t.Errorf("no slash: %d %q", r.status, r.header.Get("Location"))
	}

	// Tokens: a wrong one, none.
	for _, p := range []string{"/t/wrong-tok/fmt/", "/t/wrong-tok/fmt/linux-64/", "/fmt/", "/fmt/linux-64/"} {
		if r := page(t, base, "GET", p, browserAccept); r.status != 401 {
			t.Errorf("%s: %d, want 401", p, r.status)
		}
	}

	// conda clients: today's answers.
	for _, accept := range []string{"", "*/*", "application/json"} {
		for _, p := range []string{tp + "/fmt/", tp + "/fmt/linux-64/", tp + "/fmt", tp + "/inst/"} {
			r := page(t, base, "GET", p, accept)
			if r.status != 404 || r.body != "404 not found\n" || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Errorf("%s, Accept %q: %d %q", p, accept, r.status, r.body)
			}
		}
	}
}

// TestChannelPagesEscape: what upstream names is text on the page, never markup.
func TestChannelPagesEscape(t *testing.T) {
	dir := t.TempDir()
	const evil = `evil-1.0<script>alert(1)<script>-x"y'<b>_0.conda`
	doc := `{"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {` +
		`"` + strings.ReplaceAll(evil, `"`, `\"`) + `": {"name": "evil", "version": "<script>alert(2)</script>",` +
		` "build": "<img src=x onerror=alert(3)>", "build_number": 0, "depends": [], "subdir": "linux-64", "size": 12,` +
		` "sha256": "` + strings.Repeat("a", 64) + `", "md5": "` + strings.Repeat("b", 32) + `"}}}`
	for _, sub := range []string{"linux-64", "noarch"} {
		os.MkdirAll(filepath.Join(dir, sub), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "linux-64", "repodata.json"), []byte(doc), 0o644)
	os.WriteFile(filepath.Join(dir, "noarch", "repodata.json"), []byte(`{"info": {"subdir": "noarch"}, "packages": {}}`), 0o644)
	up := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(up.Close)
	yaml := "data: " + filepath.Join(t.TempDir(), "data") + "\n" +
		"channels:\n  - name: evil\n    platforms: [linux-64]\n    upstreams:\n      - url: " + up.URL + "\n"
	srv := serveApp(t, yaml, slog.NewTextHandler(&testdata.Buffer{}, nil))
	r := page(t, srv.URL, "GET", "/evil/linux-64/", browserAccept)
	if r.status != 200 || !strings.Contains(r.body, "1–1 of 1 records") {
		t.Fatalf("%d\n%s", r.status, r.body)
	}
	for _, bad := range []string{"<script>alert", "<b>", `x"y`, "<img"} {
		if strings.Contains(r.body, bad) {
			t.Errorf("the page holds upstream's %q unescaped:\n%s", bad, r.body)
		}
	}
	if !strings.Contains(r.body, "1.0&lt;script&gt;alert(1)&lt;script&gt;") {
		t.Errorf("the version is not shown escaped:\n%s", r.body)
	}
}

// startPagesApp runs the app with one full client token (cliTok), one scoped
// to its channels (scopedTok) and the admin token, on two channels of
// conda_format_repo (served below /t/<upTok>/): fmt, of linux-64 with GPL
// hidden, and all, with no platforms.
func startPagesApp(t *testing.T) string {
	const channels = "  - name: fmt\n    platforms: [linux-64]\n    license_blacklist: [GPL]\n" +
		"    upstreams:\n      - url: UPSTREAM\n" +
		"  - name: all\n    upstreams:\n      - url: UPSTREAM\n"
	t.Helper()
	up := newCountingUpstream(t)
	yaml := "data: " + filepath.Join(t.TempDir(), "data") + "\n" +
		"auth:\n  tokens: [" + cliTok + ", {token: " + scopedTok + ", channels: [fmt, all]}]\n  admin_token: " + admTok + "\n" +
		"channels:\n" + strings.ReplaceAll(channels, "UPSTREAM", up.URL+"/t/"+upTok)
	srv := serveApp(t, yaml, slog.NewTextHandler(&testdata.Buffer{}, nil))
	return srv.URL
}

// scopedTok opens fmt (and all) only.
const scopedTok = "scoped-tok-5d07"

// pageAs is page with a bearer token.
func pageAs(t *testing.T, base, path, token string) pageResp {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", browserAccept)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return pageResp{res.StatusCode, res.Header, string(b)}
}

// TestChannelPagesScopedToken: a token scoped to the channel gets what a conda
// client of it gets, not what /api/v1 and /ui refuse it: no hidden record, no
// rule, no cached state, no upstream. Hidden means hidden everywhere. A token
// that opens every channel gets the full page.
func TestChannelPagesScopedToken(t *testing.T) {
	base := startPagesApp(t)
	// What /api/v1 answers the scoped token: 401.
	if r := pageAs(t, base, "/api/v1/channels", scopedTok); r.status != 401 {
		t.Fatalf("the scoped token reads /api/v1: %d", r.status)
	}
	limited := []pageResp{
		page(t, base, "GET", "/t/"+scopedTok+"/fmt/linux-64/", browserAccept),
		pageAs(t, base, "/fmt/linux-64/", scopedTok),
	}
	for i, r := range limited {
		if r.status != 200 || !strings.Contains(r.body, `<a href="./`+zlibConda+`">`) || !strings.Contains(r.body, "1–2 of 2 records") {
			t.Errorf("scoped %d: %d\n%s", i, r.status, r.body)
		}
		for _, bad := range []string{libgcc, "hidden", "license_blacklist", "GPL", "cached", "<th>State</th>"} {
			if strings.Contains(r.body, bad) {
				t.Errorf("scoped %d: the subdir page shows %q:\n%s", i, bad, r.body)
			}
		}
	}
	// The filter counts served records only.
	if r := page(t, base, "GET", "/t/"+scopedTok+"/fmt/linux-64/?q=libgcc", browserAccept); r.status != 200 ||
		!strings.Contains(r.body, "No record matches") {
		t.Errorf("scoped filter for a hidden record: %d\n%s", r.status, r.body)
	}
	for i, r := range []pageResp{
		page(t, base, "GET", "/t/"+scopedTok+"/fmt/", browserAccept),
		pageAs(t, base, "/fmt/", scopedTok),
	} {
		if r.status != 200 || !strings.Contains(r.body, `<a href="linux-64/">linux-64</a>`) {
			t.Errorf("scoped channel page %d: %d\n%s", i, r.status, r.body)
		}
		if strings.Contains(r.body, `class="upstream"`) || strings.Contains(r.body, "/t/"+config.Mask) {
			t.Errorf("scoped channel page %d names the upstream:\n%s", i, r.body)
		}
	}

	// The full token: hidden rows with their rule, the cached state, the
	// upstream (redacted).
	r := page(t, base, "GET", "/t/"+cliTok+"/fmt/linux-64/", browserAccept)
	for _, want := range []string{`<tr data-filename="` + libgcc + `" data-state="hidden">`, "license_blacklist: GPL", "<th>Cached</th>", "1–3 of 3 records"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("full subdir page lacks %q:\n%s", want, r.body)
		}
	}
	r = pageAs(t, base, "/fmt/", cliTok)
	if !strings.Contains(r.body, `class="upstream"`) {
		t.Errorf("full channel page names no upstream:\n%s", r.body)
	}
}

// TestChannelPageSubdirsFromUpstream: a channel with no platforms lists the
// subdirs its upstream's channeldata.json lists (conda_format_repo: win-32
// among them, linux-aarch64 not), the proxy's one list, not a second guess.
func TestChannelPageSubdirsFromUpstream(t *testing.T) {
	base := startPagesApp(t)
	r := page(t, base, "GET", "/t/"+cliTok+"/all/", browserAccept)
	if r.status != 200 {
		t.Fatalf("%d\n%s", r.status, r.body)
	}
	for _, sd := range []string{"noarch", "linux-64", "osx-64", "win-32", "win-64"} {
		if !strings.Contains(r.body, `<a href="`+sd+`/">`+sd+`</a>`) {
			t.Errorf("channel page lacks %s:\n%s", sd, r.body)
		}
	}
	for _, sd := range []string{"linux-aarch64", "osx-arm64", "linux-ppc64le"} {
		if strings.Contains(r.body, `href="`+sd+`/"`) {
			t.Errorf("channel page lists %s, which upstream does not have:\n%s", sd, r.body)
		}
	}
	if strings.Contains(r.body, `id="guessed"`) {
		t.Errorf("the channel's own list is said to be a guess:\n%s", r.body)
	}
	// The same on /ui for the admin.
	r = pageAs(t, base, "/ui/channels/all", admTok)
	if r.status != 200 || !strings.Contains(r.body, `<option value="win-32">`) || strings.Contains(r.body, `<option value="linux-aarch64">`) {
		t.Errorf("/ui channel page: %d\n%s", r.status, r.body)
	}
}
