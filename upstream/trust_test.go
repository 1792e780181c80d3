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
	"testing"

	"github.com/condaproxy/condaproxy/config"
)

// A redirect from an upstream must not lead the proxy into its own network: an
// internal address (loopback here, a metadata service in a cloud) is reached
// only for a host the configuration names for that upstream.
func TestRedirectToInternalAddressRefused(t *testing.T) {
	internalSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "INTERNAL SECRET")
	}))
	defer internalSrv.Close()
	target, _ := url.Parse(internalSrv.URL)
	_, port, _ := strings.Cut(target.Host, ":")
	for _, loc := range []string{
		"http://localhost:" + port + "/latest/meta-data/", // a name for loopback
		"http://[::1]:" + port + "/x",
		"http://127.0.0.2:" + port + "/x", // another loopback address than the upstream's
		"http://169.254.169.254/latest/meta-data/",
	} {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, loc, http.StatusFound)
		}))
		src, _ := NewSource(config.Upstream{URL: up.URL + "/chan"})
		c := New(Options{Retries: -1})
		resp, err := c.Get(context.Background(), src, "x.conda", Conditional{})
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Errorf("redirect to %s followed: %q", loc, b)
		} else if !errors.Is(err, errInternal) && !strings.Contains(err.Error(), "refused") {
			t.Errorf("redirect to %s: %v, want a refusal", loc, err)
		}
		up.Close()
	}
	// The upstream's own host, and a host its config lists, may be internal.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internalSrv.URL+"/x", http.StatusFound)
	}))
	defer up.Close()
	src, _ := NewSource(config.Upstream{URL: up.URL + "/chan"}) // 127.0.0.1, as internalSrv
	resp, err := New(Options{Retries: -1}).Get(context.Background(), src, "x.conda", Conditional{})
	if err != nil {
		t.Fatalf("redirect to the upstream's own host: %v", err)
	}
	resp.Body.Close()
}

// A symbolic link inside a file:// upstream's tree that points out of it is not
// followed: the tree's files only.
func TestFileUpstreamSymlinkOut(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("LOCAL-SECRET"), 0o600)
	tree := t.TempDir()
	os.Symlink(outside, filepath.Join(tree, "notices.json"))
	os.WriteFile(filepath.Join(tree, "real.json"), []byte("{}"), 0o644)
	os.Symlink("real.json", filepath.Join(tree, "inside.json")) // relative: os.Root follows it
	src, _ := NewSource(config.Upstream{URL: "file://" + tree})
	c := New(Options{})
	if resp, err := c.Get(context.Background(), src, "notices.json", Conditional{}); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Errorf("a link out of the tree was followed: %q", b)
	}
	resp, err := c.Get(context.Background(), src, "inside.json", Conditional{})
	if err != nil {
		t.Fatalf("a link within the tree: %v", err)
	}
	resp.Body.Close()
}

// Metric labels name only hosts the configuration names: redirects to ever new
// hosts all count as "other".
func TestLabelsBounded(t *testing.T) {
	src, _ := NewSource(config.Upstream{URL: "https://conda.example.org/c", Hosts: []string{"cdn.example.org"}})
	for host, want := range map[string]string{
		"conda.example.org": "conda.example.org", "CDN.example.org.": "cdn.example.org.",
		"evil.example": "other", "evil.example:8443": "other", "conda.example.org:444": "conda.example.org:444",
	} {
		if got := src.label(host); got != want {
			t.Errorf("label(%q) = %q, want %q", host, got, want)
		}
	}
}
