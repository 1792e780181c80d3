package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// closureTree writes a small channel: noarch app (a pkg_list root) needs dep1,
// which only linux-64 has; linux-armv7l (not one of the common subdirs) has
// tool, another root, which needs helper, a noarch package; and junk nobody
// needs. channeldata lists subdirs (none when nil).
func closureTree(t *testing.T, subdirs []string) string {
	t.Helper()
	dir := t.TempDir()
	rec := func(sub, name string, deps ...string) (string, map[string]any) {
		fn := name + "-1.0-0.tar.bz2"
		return fn, map[string]any{"name": name, "version": "1.0", "build": "0", "build_number": 0,
			"depends": append([]string{}, deps...), "subdir": sub, "size": 10,
			"sha256": sha256hex([]byte(sub + fn)), "timestamp": 1700000000000}
	}
	write := func(sub string, recs ...[]string) {
		pk := map[string]any{}
		for _, r := range recs {
			fn, v := rec(sub, r[0], r[1:]...)
			pk[fn] = v
		}
		b, _ := json.Marshal(map[string]any{"info": map[string]any{"subdir": sub}, "repodata_version": 1,
			"packages": pk, "packages.conda": map[string]any{}})
		os.MkdirAll(filepath.Join(dir, sub), 0o755)
		if err := os.WriteFile(filepath.Join(dir, sub, "repodata.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("noarch", []string{"app", "dep1 >=1"}, []string{"helper"}, []string{"junk"})
	write("linux-64", []string{"dep1"}, []string{"junk"})
	write("linux-armv7l", []string{"tool", "helper"}, []string{"junk"})
	if subdirs != nil {
		writeChannelData(t, dir, subdirs)
	}
	return dir
}

func writeChannelData(t *testing.T, dir string, subdirs []string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"channeldata_version": 1, "packages": map[string]any{}, "subdirs": subdirs})
	p := filepath.Join(dir, "channeldata.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// A new modification time, so a conditional request sees the change.
	at := time.Now().Add(time.Duration(len(b)) * time.Second)
	os.Chtimes(p, at, at)
}

func servedNamesOf(t *testing.T, h *harness, sub string) string {
	t.Helper()
	r := h.get("/fmt/" + sub + "/repodata.json")
	if r.StatusCode != 200 {
		t.Fatalf("%s: %d %s", sub, r.StatusCode, r.body)
	}
	var names []string
	for _, rec := range fltRecords(t, r.body) {
		names = append(names, rec.Name)
	}
	return strings.Join(sortedCopy(names), ",")
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

const closureKeys = "pkg_list: [app, tool]\ninclude_dependencies: true"

// A mirror tool's config (pkg_list, include_dependencies, no platforms): the
// closure runs over the subdirs upstream's channeldata.json lists, together:
// noarch app pulls in linux-64 dep1; tool, a root in linux-armv7l (listed, but
// not a common subdir), pulls in noarch helper once upstream lists it, at the
// next revalidation.
func TestClosureOverUpstreamSubdirs(t *testing.T) {
	dir := closureTree(t, []string{"noarch", "linux-64"})
	up := newUpstream(t, dir)
	h := newHarness(t, fltYAML(up.URL, closureKeys))
	if got := servedNamesOf(t, h, "noarch"); got != "app" {
		t.Errorf("noarch serves %s, want app", got)
	}
	if got := servedNamesOf(t, h, "linux-64"); got != "dep1" {
		t.Errorf("linux-64 serves %q, want dep1 (needed by the noarch root app)", got)
	}
	if n := up.count("/linux-armv7l/repodata.json"); n != 0 {
		t.Errorf("linux-armv7l, which upstream does not list, was fetched %d times", n)
	}
	// SyncSubdirs answers the same list.
	subs, err := h.srv.SyncSubdirs(t.Context(), "fmt")
	if err != nil || strings.Join(subs, ",") != "noarch,linux-64" {
		t.Errorf("SyncSubdirs = %v, %v", subs, err)
	}

	// Upstream adds linux-armv7l: its root tool now needs noarch helper.
	writeChannelData(t, dir, []string{"noarch", "linux-64", "linux-armv7l"})
	h.clock.advance(11 * time.Minute)
	h.get("/fmt/noarch/repodata.json") // stale: revalidated behind
	waitFor(t, "noarch rebuilt with linux-armv7l's roots", func() bool {
		return servedNamesOf(t, h, "noarch") == "app,helper"
	})
	if got := servedNamesOf(t, h, "linux-armv7l"); got != "tool" {
		t.Errorf("linux-armv7l serves %q, want tool", got)
	}
	subs, _ = h.srv.SyncSubdirs(t.Context(), "fmt")
	if strings.Join(subs, ",") != "noarch,linux-64,linux-armv7l" {
		t.Errorf("SyncSubdirs after the change = %v", subs)
	}
}

// No channeldata.json upstream: an http upstream is taken to have the common
// subdirs (linux-armv7l is not one of them, so tool is no root anyone sees
// from noarch); a file:// tree is looked at: its directories with a
// repodata.json.
func TestClosureWithoutChannelData(t *testing.T) {
	dir := closureTree(t, nil)
	up := newUpstream(t, dir)
	h := newHarness(t, fltYAML(up.URL, closureKeys))
	if got := servedNamesOf(t, h, "noarch"); got != "app" {
		t.Errorf("http upstream without channeldata: noarch serves %s, want app", got)
	}
	if got := servedNamesOf(t, h, "linux-64"); got != "dep1" {
		t.Errorf("http upstream without channeldata: linux-64 serves %q, want dep1", got)
	}
	if n := up.count("/osx-arm64/repodata.json"); n != 1 {
		t.Errorf("osx-arm64 (a common subdir) asked %d times, want 1", n)
	}

	fileURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(dir)}).String()
	h2 := newHarness(t, fltYAML(fileURL, closureKeys))
	if got := servedNamesOf(t, h2, "noarch"); got != "app,helper" {
		t.Errorf("file:// tree: noarch serves %q, want app,helper (tool in its linux-armv7l is a root)", got)
	}
	subs, err := h2.srv.SyncSubdirs(t.Context(), "fmt")
	if got := fmt.Sprint(subs); err != nil || got != "[noarch linux-64 linux-armv7l]" {
		t.Errorf("SyncSubdirs of the file:// tree = %s, %v", got, err)
	}
}

// A failing upstream does not take the channel down: with two upstreams, one
// answering 5xx with no copy of its channeldata.json, the other's list is used
// (and the closure runs); only when no upstream gives a list is it an error.
func TestSubdirsFailingUpstream(t *testing.T) {
	dir := closureTree(t, []string{"noarch", "linux-64", "linux-armv7l"})
	good := newUpstream(t, dir)
	bad := newUpstream(t, t.TempDir())
	bad.status.Store(503)
	yaml := strings.Replace(fltYAML(good.URL, closureKeys), "      - url: "+good.URL+"\n",
		"      - url: "+good.URL+"\n      - url: "+bad.URL+"\n", 1)
	h := newHarness(t, yaml)
	subs, err := h.srv.SyncSubdirs(t.Context(), "fmt")
	if got := fmt.Sprint(subs); err != nil || got != "[noarch linux-64 linux-armv7l]" {
		t.Errorf("SyncSubdirs with one upstream failing = %s, %v", got, err)
	}
	if got := servedNamesOf(t, h, "noarch"); got != "app,helper" {
		t.Errorf("noarch serves %q, want app,helper", got)
	}

	good.status.Store(503)
	h2 := newHarness(t, yaml)
	if subs, err := h2.srv.SyncSubdirs(t.Context(), "fmt"); err == nil {
		t.Errorf("SyncSubdirs with every upstream failing = %v, want an error", subs)
	}
}

// A channeldata.json with no (or an empty) subdirs says nothing: the upstream
// is taken to have the common subdirs, as one without channeldata.json.
func TestSubdirsEmptyChannelData(t *testing.T) {
	for _, body := range []string{`{"channeldata_version": 1, "packages": {}, "subdirs": []}`, `{"channeldata_version": 1, "packages": {}}`} {
		dir := closureTree(t, nil)
		os.WriteFile(filepath.Join(dir, "channeldata.json"), []byte(body), 0o644)
		up := newUpstream(t, dir)
		h := newHarness(t, fltYAML(up.URL, closureKeys))
		subs, err := h.srv.SyncSubdirs(t.Context(), "fmt")
		if err != nil || !strings.Contains(fmt.Sprint(subs), "linux-64") || !strings.Contains(fmt.Sprint(subs), "osx-arm64") {
			t.Errorf("%s: SyncSubdirs = %v, %v, want the common subdirs", body, subs, err)
		}
		if got := servedNamesOf(t, h, "linux-64"); got != "dep1" {
			t.Errorf("%s: linux-64 serves %q, want dep1", body, got)
		}
	}
}

// The subdirs taken from one upstream are bounded: only names conda knows
// (config.KnownSubdirs), each once, whatever upstream lists.
func TestSubdirsBounded(t *testing.T) {
	list := []string{"linux-64", "linux-64", "noarch"}
	for i := range 5000 {
		list = append(list, fmt.Sprintf("linux-x%d", i))
	}
	dir := closureTree(t, list)
	up := newUpstream(t, dir)
	h := newHarness(t, fltYAML(up.URL, closureKeys))
	ch, _ := h.srv.condaChannel("fmt")
	got, err := h.srv.upstreamSubdirs(t.Context(), ch, 0, true)
	if err != nil || fmt.Sprint(got) != "[linux-64 noarch]" {
		t.Errorf("upstreamSubdirs = %d names (%.80v), %v, want [linux-64 noarch]", len(got), fmt.Sprint(got), err)
	}
}

// expiringCtx is a context the test expires by hand: Err is
// context.DeadlineExceeded once expire is called (no clock in the test).
type expiringCtx struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func newExpiringCtx(parent context.Context) *expiringCtx {
	return &expiringCtx{Context: parent, done: make(chan struct{})}
}

func (c *expiringCtx) expire()               { c.once.Do(func() { close(c.done) }) }
func (c *expiringCtx) Done() <-chan struct{} { return c.done }
func (c *expiringCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// The caller's deadline (the page's cap, a sync job's) passing while an
// upstream is asked is no upstream failure: the list is not known, so it is an
// error, never the other upstreams' partial list answered as the whole.
func TestSubdirsDeadlineIsFatal(t *testing.T) {
	dir := closureTree(t, []string{"noarch", "linux-64"})
	good := newUpstream(t, dir)
	hit := make(chan struct{}, 1)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hit <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(slow.Close)
	yaml := strings.Replace(fltYAML(good.URL, closureKeys), "      - url: "+good.URL+"\n",
		"      - url: "+good.URL+"\n      - url: "+slow.URL+"\n", 1)
	h := newHarness(t, yaml)
	t.Cleanup(func() { close(release) }) // before the harness stops: its fill is still asking
	ch, _ := h.srv.condaChannel("fmt")
	ctx := newExpiringCtx(t.Context())
	type result struct {
		subs []string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		subs, err := h.srv.channelSubdirs(ctx, ch, true)
		res <- result{subs, err}
	}()
	select {
	case <-hit:
	case r := <-res:
		t.Fatalf("channelSubdirs returned %v, %v before the slow upstream was asked", r.subs, r.err)
	}
	ctx.expire()
	r := <-res
	if r.err == nil || !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("channelSubdirs past the caller's deadline = %v, %v; want context.DeadlineExceeded", r.subs, r.err)
	}
}
