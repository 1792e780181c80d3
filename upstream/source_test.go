package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/condaproxy/condaproxy/config"
)

func TestResolve(t *testing.T) {
	src := source(t, "https://conda.example.org/t/tok/chan/")
	for rel, want := range map[string]string{
		"noarch/repodata.json":  "https://conda.example.org/t/tok/chan/noarch/repodata.json",
		"file:/etc/hostname":    "https://conda.example.org/t/tok/chan/file:/etc/hostname",
		"https:/evil.example/x": "https://conda.example.org/t/tok/chan/https:/evil.example/x",
		"a?b#c%d e":             "https://conda.example.org/t/tok/chan/a%3Fb%23c%25d%20e",
		"x/pkg-1.0+g1_0.conda":  "https://conda.example.org/t/tok/chan/x/pkg-1.0+g1_0.conda",
		"..a/b..":               "https://conda.example.org/t/tok/chan/..a/b..",
	} {
		u, err := src.Resolve(rel)
		if err != nil {
			t.Errorf("%q: %v", rel, err)
			continue
		}
		if u.String() != want {
			t.Errorf("%q resolved to %s, want %s", rel, u, want)
		}
		if u.RawQuery != "" || u.Fragment != "" || u.Host != "conda.example.org" {
			t.Errorf("%q escaped its path: %#v", rel, u)
		}
	}
	for _, rel := range []string{"", "/etc/passwd", "a//b", "a/", "./a", "a/./b", "..", "../x", "a/../../x",
		`a\b`, `..\x`, "a\x00b", "a\nb", "a\x7fb", "a\u0085b", "//evil.example/x"} {
		if u, err := src.Resolve(rel); !errors.Is(err, ErrBadPath) {
			t.Errorf("%q: %v %v, want ErrBadPath", rel, u, err)
		}
	}
	// An escaped '/' in the base stays one segment.
	enc := source(t, "https://h.example/a%2Fb/c")
	if u, _ := enc.Resolve("d e"); u.String() != "https://h.example/a%2Fb/c/d%20e" {
		t.Errorf("escaped base: %s", u)
	}
	if _, err := (Source{}).Resolve("x"); !errors.Is(err, ErrBadPath) {
		t.Errorf("no base: %v", err)
	}
}

// A client path that looks like a URL stays a path below the upstream: it used to
// be taken as an absolute URL, and file:/... read local files.
func TestGetNeverLeavesTheUpstream(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("LOCAL SECRET"), 0o644)
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.EscapedPath())
		mu.Unlock()
		http.NotFound(w, r)
	}))
	defer srv.Close()
	c := New(Options{Retries: -1})
	ctx := context.Background()
	rel := "file:" + filepath.ToSlash(secret)
	resp, err := c.Get(ctx, source(t, srv.URL+"/chan"), rel, Conditional{})
	if resp != nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("http upstream served %q for %s", b, rel)
	}
	mu.Lock()
	defer mu.Unlock()
	if !errors.Is(err, ErrNotFound) || len(paths) != 1 || paths[0] != "/chan/"+rel {
		t.Errorf("got %v after requests %q, want a 404 for /chan/%s", err, paths, rel)
	}

	// A file:// upstream: the same name is looked up inside the tree, and a
	// climbing path is refused before any file is opened.
	tree := t.TempDir()
	fsrc := source(t, (&url.URL{Scheme: "file", Path: tree}).String())
	for _, rel := range []string{rel, "file://" + filepath.ToSlash(secret)} {
		if resp, err := c.Get(ctx, fsrc, rel, Conditional{}); resp != nil || !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrBadPath) {
			t.Errorf("file upstream, %s: %+v %v", rel, resp, err)
			if resp != nil && resp.Body != nil {
				resp.Body.Close()
			}
		}
	}
	up, _ := filepath.Rel(tree, secret)
	if resp, err := c.Get(ctx, fsrc, filepath.ToSlash(up), Conditional{}); !errors.Is(err, ErrBadPath) {
		t.Errorf("file upstream, %s: %+v %v, want ErrBadPath", up, resp, err)
	}
}

func TestAllows(t *testing.T) {
	src, err := NewSource(config.Upstream{URL: "https://Conda.Example.org/t/tok/chan",
		Hosts: []string{"CDN.example.net", "mirror.example.org:8443", "[::1]:9000"}})
	if err != nil {
		t.Fatal(err)
	}
	check := func(src Source, raw string, ok bool) {
		t.Helper()
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		err = src.Allows(u)
		if ok && err != nil {
			t.Errorf("%s: %v, want allowed", raw, err)
		}
		if !ok && !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v, want ErrRefused", raw, err)
		}
	}
	for raw, ok := range map[string]bool{
		"https://conda.example.org/t/tok/chan/x": true,
		"https://CONDA.example.org:443/other/x":  true,
		"https://conda.example.org./x":           true,
		"https://cdn.example.net/x":              true,
		"https://cdn.example.net:443/x":          true,
		"https://mirror.example.org:8443/x":      true,
		"https://[::1]:9000/x":                   true,
		"http://conda.example.org/x":             false, // downgrade
		"http://cdn.example.net/x":               false, // downgrade
		"https://conda.example.org:8443/x":       false,
		"https://cdn.example.net:444/x":          false,
		"https://mirror.example.org/x":           false,
		"https://sub.conda.example.org/x":        false,
		"https://evil.example/x":                 false,
		"https:///x":                             false,
		"file:///etc/passwd":                     false,
		"ftp://conda.example.org/x":              false,
		"mailto:x@conda.example.org":             false,
	} {
		check(src, raw, ok)
	}
	plain := source(t, "http://h.example:80/chan")
	check(plain, "https://h.example/chan/x", true) // an upgrade on the same host
	check(plain, "http://h.example/x", true)
	check(plain, "http://h.example:8080/x", false)

	dir := t.TempDir()
	fsrc := source(t, (&url.URL{Scheme: "file", Path: dir}).String())
	for raw, ok := range map[string]bool{
		"file://" + dir + "/noarch/x.conda": true,
		"file://" + dir:                     true,
		"file://localhost" + dir + "/x":     true,
		"file://" + dir + "x/y":             false, // a sibling sharing the prefix
		"file://" + dir + "/../y":           false,
		"file://" + dir + "/a/../../y":      false,
		"file:///etc/passwd":                false,
		"file://host" + dir + "/x":          false,
		"http://127.0.0.1/x":                false,
	} {
		check(fsrc, raw, ok)
	}

	u, _ := url.Parse("https://evil.example/t/SEKRET/x")
	if err := src.Allows(u); err == nil || strings.Contains(err.Error(), "SEKRET") || !strings.Contains(err.Error(), "evil.example/t/***/x") {
		t.Errorf("refusal %q should name the URL, redacted", err)
	}
	if err := (Source{}).Allows(u); !errors.Is(err, ErrRefused) {
		t.Errorf("no source: %v", err)
	}
}

func TestPackageBase(t *testing.T) {
	src, _ := NewSource(config.Upstream{URL: "https://conda.example.org/chan", Hosts: []string{"cdn.example.net"}})
	for baseURL, want := range map[string]string{
		"":                              "https://conda.example.org/chan/linux-64/",
		"https://cdn.example.net/pkgs":  "https://cdn.example.net/pkgs/",
		"https://cdn.example.net/pkgs/": "https://cdn.example.net/pkgs/",
		"../pkgs":                       "https://conda.example.org/chan/pkgs/",
		"./":                            "https://conda.example.org/chan/linux-64/",
		"/elsewhere/":                   "https://conda.example.org/elsewhere/",
		"//cdn.example.net/p":           "https://cdn.example.net/p/",
	} {
		u, err := src.PackageBase("linux-64", baseURL)
		if err != nil || u.String() != want {
			t.Errorf("base_url %q: %v %v, want %s", baseURL, u, err, want)
		}
	}
	for _, baseURL := range []string{"https://evil.example/", "http://conda.example.org/chan/", "file:///etc/",
		"https://cdn.example.net/p?x=1", "https://cdn.example.net/p#f", "https://u:p@cdn.example.net/",
		"ftp://conda.example.org/", "javascript:alert(1)", "%zz"} {
		if u, err := src.PackageBase("linux-64", baseURL); !errors.Is(err, ErrRefused) {
			t.Errorf("base_url %q: %v %v, want ErrRefused", baseURL, u, err)
		}
	}
	if _, err := src.PackageBase("../x", ""); !errors.Is(err, ErrBadPath) {
		t.Errorf("bad subdir: %v", err)
	}
	if _, err := (Source{}).PackageBase("noarch", ""); err == nil {
		t.Error("a source without base has a package base")
	}

	dir := t.TempDir()
	fsrc := source(t, (&url.URL{Scheme: "file", Path: dir}).String())
	if u, err := fsrc.PackageBase("noarch", "../pkgs"); err != nil || u.Path != dir+"/pkgs/" {
		t.Errorf("file base_url inside the tree: %v %v", u, err)
	}
	for _, baseURL := range []string{"../../", "file:///etc/", "https://conda.example.org/"} {
		if u, err := fsrc.PackageBase("noarch", baseURL); !errors.Is(err, ErrRefused) {
			t.Errorf("file upstream, base_url %q: %v %v, want ErrRefused", baseURL, u, err)
		}
	}
}

// GetURL guards by itself: a URL the source does not allow is never asked for.
func TestGetURLRefuses(t *testing.T) {
	var asked atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		io.WriteString(w, "x")
	}))
	defer other.Close()
	own := httptest.NewServer(http.NotFoundHandler())
	defer own.Close()
	c := New(Options{Retries: -1})
	u, _ := url.Parse(other.URL + "/f")
	if resp, err := c.GetURL(context.Background(), source(t, own.URL), u, Conditional{}); !errors.Is(err, ErrRefused) {
		t.Errorf("another host: %+v %v, want ErrRefused", resp, err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("x"), 0o644)
	fu := &url.URL{Scheme: "file", Path: secret}
	if resp, err := c.GetURL(context.Background(), source(t, own.URL), fu, Conditional{}); !errors.Is(err, ErrRefused) {
		t.Errorf("file URL below an http upstream: %+v %v, want ErrRefused", resp, err)
	}
	tree := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	if resp, err := c.GetURL(context.Background(), source(t, tree), fu, Conditional{}); !errors.Is(err, ErrRefused) {
		t.Errorf("file URL outside the tree: %+v %v, want ErrRefused", resp, err)
	}
	if asked.Load() != 0 {
		t.Errorf("the other host was asked %d times", asked.Load())
	}
	withHost, _ := NewSource(config.Upstream{URL: own.URL, Hosts: []string{u.Host}})
	resp, err := c.GetURL(context.Background(), withHost, u, Conditional{})
	if err != nil {
		t.Fatalf("configured host: %v", err)
	}
	resp.Body.Close()
}

func TestNewSource(t *testing.T) {
	hosts := []string{"cdn.example.net"}
	src, err := NewSource(config.Upstream{URL: "https://h.example/chan/?x#y", Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	hosts[0] = "changed"
	if len(src.Hosts) != 1 || src.Hosts[0] != "cdn.example.net" || src.Base.RawQuery != "" || src.Base.Fragment != "" {
		t.Errorf("source %+v", src)
	}
	for _, raw := range []string{"ftp://h.example/x", "https:///x", "http://h.example/t/SEKRET/%zz", "javascript:x"} {
		if _, err := NewSource(config.Upstream{URL: raw}); err == nil || strings.Contains(err.Error(), "SEKRET") {
			t.Errorf("%s: %v", raw, err)
		}
	}
}
