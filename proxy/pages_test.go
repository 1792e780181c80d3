package proxy

import (
	"net/http"
	"strings"
	"sync"
	"testing"
)

// browserAccept is what Chromium and Firefox send when they open a URL.
const browserAccept = "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"

// pageCalls records the calls of a fake Options.Pages.
type pageCalls struct {
	mu    sync.Mutex
	calls []string // "channel|subdir|prefix", then "|limited" when not readAll
}

func (p *pageCalls) render(w http.ResponseWriter, r *http.Request, channel, subdir, prefix string, readAll bool) {
	p.mu.Lock()
	c := channel + "|" + subdir + "|" + prefix
	if !readAll {
		c += "|limited"
	}
	p.calls = append(p.calls, c)
	p.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write([]byte("<p>page</p>"))
	}
}

func (p *pageCalls) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.calls
	p.calls = nil
	return c
}

func pagesHarness(t *testing.T, extra string) (*harness, *pageCalls) {
	up := newUpstream(t, formatRepo(t))
	pc := &pageCalls{}
	yaml := channelYAML(extra, up.URL) + "    platforms: [linux-64]\n" +
		"  - name: pkgs/main\n    upstreams:\n      - url: " + up.URL + "\n" +
		"  - name: inst\n    kind: files\n    upstreams:\n      - url: " + up.URL + "\n"
	h := newHarness(t, yaml, func(o *Options) { o.Pages = pc.render })
	return h, pc
}

func TestPagesForBrowsersOnly(t *testing.T) {
	h, pc := pagesHarness(t, "")
	for _, tc := range []struct{ path, call string }{
		{"/fmt/", "fmt||"},
		{"/fmt/linux-64/", "fmt|linux-64|"},
		{"/fmt/osx-64/", "fmt|osx-64|"}, // not served: the page answers its 404
		{"/pkgs/main/", "pkgs/main||"},
		{"/pkgs/main/noarch/", "pkgs/main|noarch|"},
		{"/inst/", "inst||"},
	} {
		r := h.get(tc.path, browserAccept)
		if r.StatusCode != 200 || string(r.body) != "<p>page</p>" || r.Header.Get("Vary") != "Accept" {
			t.Errorf("%s: %d %q Vary %q", tc.path, r.StatusCode, r.body, r.Header.Get("Vary"))
		}
		if got := pc.take(); len(got) != 1 || got[0] != tc.call {
			t.Errorf("%s: pages called %q, want %q", tc.path, got, tc.call)
		}
		if r := h.do(http.MethodHead, tc.path, browserAccept); r.StatusCode != 200 || len(r.body) != 0 {
			t.Errorf("HEAD %s: %d %q", tc.path, r.StatusCode, r.body)
		}
		pc.take()
	}
	// Without a slash: a relative redirect to the directory.
	for path, loc := range map[string]string{"/fmt": "fmt/", "/pkgs/main": "main/"} {
		req, _ := http.NewRequest(http.MethodGet, h.http.URL+path, nil)
		req.Header.Set("Accept", strings.TrimPrefix(browserAccept, "Accept: "))
		r, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != loc {
			t.Errorf("%s: %d Location %q, want 301 %q", path, r.StatusCode, r.Header.Get("Location"), loc)
		}
	}
	// Not a directory page: a bad subdir name, below a files channel, another
	// method, a file.
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/fmt/Linux_64/", 404},
		{"GET", "/inst/linux-64/", 404},
		{"POST", "/fmt/", 404}, // as before pages
		{"GET", "/fmt/linux-64/repodata.json", 200},
	} {
		r := h.do(tc.method, tc.path, browserAccept)
		if r.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, r.StatusCode, tc.status)
		}
	}
	if got := pc.take(); len(got) != 0 {
		t.Errorf("pages called for %q", got)
	}
}

// TestPagesLeaveClientsAlone: what conda clients send gets today's 404, byte for
// byte, with or without pages.
func TestPagesLeaveClientsAlone(t *testing.T) {
	h, pc := pagesHarness(t, "")
	plain := newHarness(t, h.yaml) // no Pages: today's answers
	for _, hdr := range [][]string{
		nil,
		{"Accept: */*", "User-Agent: conda/25.1.1 requests/2.32.3 CPython/3.12.8 Linux/6.1 ubuntu/24.04 glibc/2.39"},
		{"Accept: application/json"},
		{"Accept: */*", "User-Agent: mamba/2.0.5"},
		{"Accept: */*", "User-Agent: pixi/0.40.0"},
		{"Accept: text/*"},
		{"Accept: application/json, text/html;q=0.5"},
		{"Accept: text/html;q=0"},
	} {
		for _, path := range []string{"/fmt/", "/fmt", "/fmt/linux-64/", "/fmt/osx-64/", "/inst/"} {
			for _, m := range []string{"GET", "HEAD"} {
				got, want := h.do(m, path, hdr...), plain.do(m, path, hdr...)
				if got.StatusCode != 404 || got.StatusCode != want.StatusCode || string(got.body) != string(want.body) {
					t.Errorf("%s %s %q: %d %q, want %d %q", m, path, hdr, got.StatusCode, got.body, want.StatusCode, want.body)
				}
				for _, k := range []string{"Content-Type", "Cache-Control", "Vary", "Location", "Referrer-Policy"} {
					if got.Header.Get(k) != want.Header.Get(k) {
						t.Errorf("%s %s %q: %s %q, want %q", m, path, hdr, k, got.Header.Get(k), want.Header.Get(k))
					}
				}
			}
		}
	}
	if got := pc.take(); len(got) != 0 {
		t.Errorf("pages called for a client: %q", got)
	}
}

func TestPagesUnderToken(t *testing.T) {
	h, pc := pagesHarness(t, "auth:\n  tokens: [tok-5e1f]\n")
	r := h.get("/t/tok-5e1f/fmt/linux-64/", browserAccept)
	if r.StatusCode != 200 || r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("token page: %d Cache-Control %q Referrer-Policy %q", r.StatusCode, r.Header.Get("Cache-Control"), r.Header.Get("Referrer-Policy"))
	}
	if got := pc.take(); len(got) != 1 || got[0] != "fmt|linux-64|/t/tok-5e1f" {
		t.Errorf("pages called %q", got)
	}
	r = h.get("/t/tok-5e1f/pkgs/main/", browserAccept)
	if got := pc.take(); r.StatusCode != 200 || len(got) != 1 || got[0] != "pkgs/main||/t/tok-5e1f" {
		t.Errorf("pkgs/main: %d, pages called %q", r.StatusCode, got)
	}
	// A bearer token opens the page too; its URL has no prefix.
	r = h.get("/fmt/", browserAccept, "Authorization: Bearer tok-5e1f")
	if got := pc.take(); r.StatusCode != 200 || len(got) != 1 || got[0] != "fmt||" {
		t.Errorf("bearer: %d, pages called %q", r.StatusCode, got)
	}
	for _, path := range []string{"/t/wrong/fmt/", "/t/wrong/fmt/linux-64/", "/fmt/", "/fmt/linux-64/", "/t/wrong/fmt", "/fmt"} {
		if r := h.get(path, browserAccept); r.StatusCode != 401 {
			t.Errorf("%s: %d, want 401", path, r.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, h.http.URL+"/t/tok-5e1f/fmt", nil)
	req.Header.Set("Accept", "text/html")
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 301 || res.Header.Get("Location") != "fmt/" || res.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("token redirect: %d %q %q", res.StatusCode, res.Header.Get("Location"), res.Header.Get("Cache-Control"))
	}
	if got := pc.take(); len(got) != 0 {
		t.Errorf("pages called %q", got)
	}
}

// TestPagesScopedToken: a token scoped to the channel opens its page, told that
// the request may not read the admin view; one that opens every channel may.
func TestPagesScopedToken(t *testing.T) {
	h, pc := pagesHarness(t, "auth:\n  tokens: [tok-all, {token: tok-fmt, channels: [fmt]}]\n")
	for _, tc := range []struct{ path, hdr, call string }{
		{"/t/tok-fmt/fmt/", "", "fmt||/t/tok-fmt|limited"},
		{"/t/tok-fmt/fmt/linux-64/", "", "fmt|linux-64|/t/tok-fmt|limited"},
		{"/fmt/linux-64/", "Authorization: Bearer tok-fmt", "fmt|linux-64||limited"},
		{"/t/tok-all/fmt/linux-64/", "", "fmt|linux-64|/t/tok-all"},
		{"/fmt/", "Authorization: Bearer tok-all", "fmt||"},
	} {
		hdrs := []string{browserAccept}
		if tc.hdr != "" {
			hdrs = append(hdrs, tc.hdr)
		}
		r := h.get(tc.path, hdrs...)
		if got := pc.take(); r.StatusCode != 200 || len(got) != 1 || got[0] != tc.call {
			t.Errorf("%s %s: %d, pages called %q, want %q", tc.path, tc.hdr, r.StatusCode, got, tc.call)
		}
	}
	// Not its channel: 401, no page.
	if r := h.get("/t/tok-fmt/pkgs/main/", browserAccept); r.StatusCode != 401 || len(pc.take()) != 0 {
		t.Errorf("another channel with the scoped token: %d", r.StatusCode)
	}
}

func TestWantsHTML(t *testing.T) {
	for accept, want := range map[string]bool{
		"":                                  false,
		"*/*":                               false,
		"application/json":                  false,
		"text/*":                            false,
		"text/html":                         true,
		"TEXT/HTML":                         true,
		"text/html;q=0":                     false,
		"text/html;q=0.5, */*":              false,
		"application/json;q=0.1, text/html": true,
		strings.TrimPrefix(browserAccept, "Accept: "): true,
		"text/html;q=bad": false,
	} {
		h := http.Header{}
		if accept != "" {
			h.Set("Accept", accept)
		}
		if got := wantsHTML(h); got != want {
			t.Errorf("wantsHTML(%q) = %v, want %v", accept, got, want)
		}
	}
}
