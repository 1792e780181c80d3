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
	"sync/atomic"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/config"
)

func source(t *testing.T, raw string) Source {
	t.Helper()
	s, err := NewSource(config.Upstream{URL: raw})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGetStatuses(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		switch r.URL.Path {
		case "/ok":
			if r.Header.Get("If-None-Match") == `"v1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("ETag", `"v1"`)
			io.WriteString(w, "hello")
		case "/gone":
			w.WriteHeader(http.StatusGone)
		case "/forbidden":
			w.WriteHeader(http.StatusForbidden)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := New(Options{Backoff: time.Millisecond})
	src := source(t, srv.URL)
	ctx := context.Background()

	resp, err := c.Get(ctx, src, "ok", Conditional{})
	if err != nil || resp.Status != 200 || resp.ETag != `"v1"` {
		t.Fatalf("200: %+v %v", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello" || resp.Size != 5 {
		t.Errorf("body %q size %d", body, resp.Size)
	}
	if resp, err := c.Get(ctx, src, "ok", Conditional{ETag: `"v1"`}); err != nil || resp.Status != 304 || resp.Body != nil {
		t.Errorf("conditional: %+v %v", resp, err)
	}
	for _, p := range []string{"missing", "gone"} {
		before := calls.Load()
		if _, err := c.Get(ctx, src, p, Conditional{}); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", p, err)
		}
		if n := calls.Load() - before; n != 1 {
			t.Errorf("%s asked %d times; a 404 is not retried", p, n)
		}
	}
	before := calls.Load()
	_, err = c.Get(ctx, src, "forbidden", Conditional{})
	var ue *Error
	if !errors.As(err, &ue) || ue.Status != 403 || calls.Load()-before != 1 {
		t.Errorf("403: %v after %d calls, want *Error 403, not retried", err, calls.Load()-before)
	}
}

// 5xx and 429 are retried with backoff, then returned; a recovery in between wins.
func TestRetries(t *testing.T) {
	var calls atomic.Int32
	failFor := int32(2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if n <= failFor {
			w.WriteHeader([]int{http.StatusServiceUnavailable, http.StatusTooManyRequests}[n%2])
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	c := New(Options{Retries: 3, Backoff: time.Millisecond})
	resp, err := c.Get(context.Background(), source(t, srv.URL), "x", Conditional{})
	if err != nil || calls.Load() != 3 {
		t.Fatalf("recovery after 2 failures: %v after %d calls", err, calls.Load())
	}
	resp.Body.Close()

	calls.Store(0)
	failFor = 100
	_, err = c.Get(context.Background(), source(t, srv.URL), "x", Conditional{})
	var ue *Error
	if !errors.As(err, &ue) || calls.Load() != 4 {
		t.Errorf("always failing: %v after %d calls, want *Error after 1+3", err, calls.Load())
	}
}

// No error or log line ever carries an upstream token or password.
func TestSecretsRedacted(t *testing.T) {
	c := New(Options{Retries: -1, HeaderTimeout: time.Second})
	src, err := NewSource(config.Upstream{URL: "http://127.0.0.1:1/t/SEKRET/chan", Username: "u", Password: "PASSWORD"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(context.Background(), src, "noarch/repodata.json", Conditional{})
	if err == nil {
		t.Fatal("a closed port answered")
	}
	if s := err.Error(); strings.Contains(s, "SEKRET") || strings.Contains(s, "PASSWORD") || !strings.Contains(s, "/t/***/") {
		t.Errorf("error %q leaks a secret or names no redacted URL", s)
	}
	if s := src.String(); strings.Contains(s, "SEKRET") {
		t.Errorf("Source.String %q", s)
	}
}

// Basic auth goes to the upstream's host, never to another host a base_url names.
func TestBasicAuthOnlyToItsHost(t *testing.T) {
	var gotAuth atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization"))
		io.WriteString(w, "x")
	}))
	defer other.Close()
	own := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "bob" || p != "pw" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "x")
	}))
	defer own.Close()
	otherURL, _ := url.Parse(other.URL)
	src, _ := NewSource(config.Upstream{URL: own.URL, Username: "bob", Password: "pw", Hosts: []string{otherURL.Host}})
	c := New(Options{})
	if resp, err := c.Get(context.Background(), src, "f", Conditional{}); err != nil {
		t.Fatalf("own host: %v", err)
	} else {
		resp.Body.Close()
	}
	base, err := src.PackageBase("noarch", other.URL+"/pkgs/")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := Join(base, "f")
	resp, err := c.GetURL(context.Background(), src, u, Conditional{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if a, ok := gotAuth.Load().(string); !ok || a != "" {
		t.Errorf("credentials sent to a base_url host: %q (asked: %v)", a, ok)
	}
}

func TestFileUpstream(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "noarch"), 0o755)
	os.WriteFile(filepath.Join(dir, "noarch", "repodata.json"), []byte("{}"), 0o644)
	src := source(t, (&url.URL{Scheme: "file", Path: dir}).String())
	c := New(Options{})
	resp, err := c.Get(context.Background(), src, "noarch/repodata.json", Conditional{})
	if err != nil || resp.Status != 200 || resp.Size != 2 || resp.LastModified == "" {
		t.Fatalf("file: %+v %v", resp, err)
	}
	resp.Body.Close()
	again, err := c.Get(context.Background(), src, "noarch/repodata.json", Conditional{LastModified: resp.LastModified})
	if err != nil || again.Status != 304 {
		t.Errorf("unchanged file: %+v %v, want 304", again, err)
	}
	for _, p := range []string{"noarch/missing.json", "noarch"} {
		if _, err := c.Get(context.Background(), src, p, Conditional{}); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", p, err)
		}
	}
}

// A redirect target (a CDN) is told nothing the upstream's own host was: no
// Referer, which would carry the /t/<token>/ path, and no credentials, even on the
// same host name at another port (net/http would forward them there).
func TestRedirectLeaksNothing(t *testing.T) {
	type seen struct{ referer, auth string }
	var got atomic.Pointer[seen]
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(&seen{r.Header.Get("Referer"), r.Header.Get("Authorization")})
		io.WriteString(w, "pkg")
	}))
	defer cdn.Close()
	own := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "bob" || p != "pw" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/t/SEKRET/chan/moved":
			http.Redirect(w, r, "/t/SEKRET/chan/here", http.StatusFound)
		case "/t/SEKRET/chan/here":
			io.WriteString(w, "here")
		default:
			http.Redirect(w, r, cdn.URL+"/pkg", http.StatusFound)
		}
	}))
	defer own.Close()
	c := New(Options{Retries: -1})
	for _, src := range []Source{
		func() Source {
			s, _ := NewSource(config.Upstream{URL: own.URL + "/t/SEKRET/chan", Username: "bob", Password: "pw"})
			return s
		}(),
		source(t, strings.Replace(own.URL, "http://", "http://bob:pw@", 1)+"/t/SEKRET/chan"),
	} {
		got.Store(nil)
		resp, err := c.Get(context.Background(), src, "noarch/x.conda", Conditional{})
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		s := got.Load()
		if string(b) != "pkg" || s == nil {
			t.Fatalf("%s: %q, the redirect target was not asked", src, b)
		}
		if s.referer != "" || s.auth != "" {
			t.Errorf("%s: the redirect target got Referer %q, Authorization %q", src, s.referer, s.auth)
		}
		// A redirect on the upstream's own host keeps the credentials.
		resp, err = c.Get(context.Background(), src, "moved", Conditional{})
		if err != nil {
			t.Fatalf("%s, redirect on its own host: %v", src, err)
		}
		resp.Body.Close()
	}
}

// Redirects go to http(s) only, never from https down to http.
func TestRedirectRefusals(t *testing.T) {
	var plainAsked atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainAsked.Add(1)
		io.WriteString(w, "x")
	}))
	defer plain.Close()
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/down":
			http.Redirect(w, r, plain.URL+"/x", http.StatusFound)
		case "/file":
			http.Redirect(w, r, "file:///etc/hostname", http.StatusFound)
		}
	}))
	defer tls.Close()
	c := New(Options{Retries: -1, Transport: tls.Client().Transport})
	src := source(t, tls.URL)
	for _, rel := range []string{"down", "file"} {
		resp, err := c.Get(context.Background(), src, rel, Conditional{})
		var ue *Error
		if !errors.As(err, &ue) || resp != nil {
			t.Errorf("%s: %+v %v, want *Error", rel, resp, err)
		}
	}
	if plainAsked.Load() != 0 {
		t.Error("followed a redirect from https down to http")
	}
}
