package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	cfg, err := config.Load(writeFile(t, "c.yaml", yaml))
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, slog.New(slog.NewTextHandler(&testdata.Buffer{}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.handler)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.proxy.Shutdown(ctx)
		a.Close()
	})
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
