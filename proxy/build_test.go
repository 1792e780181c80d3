package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// TestBigBuildsOneAtATime: a build of a big document waits while another big
// build runs (their memory would add up), and a small one never waits.
func TestBigBuildsOneAtATime(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	// Another big build is running.
	h.srv.bigBuild <- struct{}{}

	// The zlib channel's linux-64 is small: it is built at once.
	if r := h.get("/fmt/linux-64/repodata.json"); r.StatusCode != 200 {
		t.Fatalf("small build behind a big one: %d %s", r.StatusCode, r.body)
	}

	old := bigBuildBytes
	bigBuildBytes = 1 // every document is big from here on
	t.Cleanup(func() { bigBuildBytes = old })
	answered := make(chan resp, 1)
	go func() { answered <- h.get("/fmt/noarch/repodata.json") }()
	select {
	case r := <-answered:
		t.Fatalf("a big build ran beside another: answered %d before it was let in", r.StatusCode)
	case <-time.After(300 * time.Millisecond):
	}
	<-h.srv.bigBuild // the other build ends
	select {
	case r := <-answered:
		if r.StatusCode != 200 {
			t.Fatalf("big build once let in: %d %s", r.StatusCode, r.body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting big build never ran")
	}
	if n := len(h.srv.bigBuild); n != 0 {
		t.Fatalf("the big build kept its place after it ended (%d held)", n)
	}
}

// TestRefreshPrewarmsForms: a refresh that changes the answer makes the forms
// clients asked of the old one (.zst here) before the swap, so the first .zst
// client after it does not wait for a compression; the form it gets is the new
// answer's.
func TestRefreshPrewarmsForms(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(formatRepo(t))); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "linux-64", "repodata.json.zst")) // upstream's plain JSON is the one to change
	up := newUpstream(t, dir)
	h := newHarness(t, channelYAML("", up.URL))
	const path = "/fmt/linux-64/repodata.json"
	if r := h.get(path + ".zst"); r.StatusCode != 200 {
		t.Fatalf(".zst: %d", r.StatusCode)
	}
	sd := h.srv.channels["fmt"].subdir("linux-64")
	first := sd.cur.Load()

	// Upstream drops one record: a different answer, with a newer date.
	file := filepath.Join(dir, "linux-64", "repodata.json")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	dropped := false
	for _, sec := range []string{"packages", "packages.conda"} {
		if m, ok := doc[sec].(map[string]any); ok && len(m) > 0 && !dropped {
			for fn := range m {
				delete(m, fn)
				dropped = true
				break
			}
		}
	}
	b, _ = json.Marshal(doc)
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	os.Chtimes(file, later, later)
	h.clock.advance(h.cfg.Cache.MetadataTTL.D() + time.Second)
	h.get(path) // stale: served, and a background refresh starts
	waitFor(t, "the refreshed answer", func() bool { return sd.cur.Load() != first })
	now := sd.cur.Load()
	now.mu.Lock()
	zst, made := now.variants["zst"]
	now.mu.Unlock()
	if !made {
		t.Fatal("the new answer was published without the .zst the old one had: the first .zst client waits for it")
	}
	r := h.get(path + ".zst")
	if r.StatusCode != 200 || sha256hex(r.body) != zst.SHA {
		t.Fatalf(".zst after the swap: %d, sha %s, want the prewarmed %s", r.StatusCode, sha256hex(r.body), zst.SHA)
	}
	zr, err := zstd.NewReader(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if j := h.get(path); !bytes.Equal(plain, j.body) {
		t.Fatal("the prewarmed .zst is not the new answer's JSON")
	}
}

// TestExplainUnmapsDocuments: explaining a package maps the stored upstream
// documents and must unmap them; a leaked map per ask would keep replaced
// documents' disk blocks and run into the process's map limit.
func TestExplainUnmapsDocuments(t *testing.T) {
	maps := func() int {
		b, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Skip("no /proc/self/maps here")
		}
		return strings.Count(string(b), "/files/raw-")
	}
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	if r := h.get("/fmt/linux-64/repodata.json"); r.StatusCode != 200 {
		t.Fatalf("repodata: %d", r.StatusCode)
	}
	before := maps()
	for i := 0; i < 20; i++ {
		if _, err := h.srv.Explain(context.Background(), "fmt", "linux-64", "zlib"); err != nil {
			t.Fatal(err)
		}
	}
	if after := maps(); after > before {
		t.Fatalf("%d mappings of stored repodata after 20 explanations, %d before", after, before)
	}
}
