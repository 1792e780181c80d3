package proxy

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Helpers of this file carry a p2 prefix: other test files of the package are
// written at the same time and must not collide with them.

// p2CopyChannel copies a real channel into a fresh, writable temp dir, for tests
// that need upstream to change under the proxy.
func p2CopyChannel(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "channel")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// p2WriteFile writes path with an mtime an hour past the old one (or now): the fake
// upstream's Last-Modified is the mtime at one-second precision, and a rewrite in
// the same second would answer the proxy's conditional request with 304.
func p2WriteFile(t *testing.T, path string, data []byte) {
	t.Helper()
	mt := time.Now()
	if info, err := os.Stat(path); err == nil && info.ModTime().After(mt) {
		mt = info.ModTime()
	}
	mt = mt.Add(time.Hour)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
}

// p2EditRepodata decodes dir/subdir/repodata.json, lets edit change it, and writes
// it back (numbers kept exact).
func p2EditRepodata(t *testing.T, dir, subdir string, edit func(doc map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, subdir, "repodata.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	edit(doc)
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p2WriteFile(t, path, out)
}

// p2Section returns doc's "packages" or "packages.conda" map for filename.
func p2Section(doc map[string]any, filename string) map[string]any {
	key := "packages"
	if strings.HasSuffix(filename, ".conda") {
		key = "packages.conda"
	}
	m, _ := doc[key].(map[string]any)
	if m == nil {
		m = map[string]any{}
		doc[key] = m
	}
	return m
}

// p2Record is a repodata record that truly describes data.
func p2Record(name, version, build, subdir string, data []byte) map[string]any {
	m := md5.Sum(data)
	return map[string]any{
		"name": name, "version": version, "build": build, "build_number": 0,
		"depends": []string{}, "license": "MIT", "subdir": subdir, "timestamp": 1700000000000,
		"sha256": sha256hex(data), "md5": hex.EncodeToString(m[:]), "size": len(data),
	}
}

func p2Random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// p2ServedRecords decodes a served repodata.json into its records by filename.
func p2ServedRecords(t *testing.T, body []byte) map[string]json.RawMessage {
	t.Helper()
	var doc struct {
		Packages      map[string]json.RawMessage `json:"packages"`
		PackagesConda map[string]json.RawMessage `json:"packages.conda"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("served repodata is not JSON: %v\n%.300s", err, body)
	}
	out := map[string]json.RawMessage{}
	for k, v := range doc.Packages {
		out[k] = v
	}
	for k, v := range doc.PackagesConda {
		out[k] = v
	}
	return out
}

func p2SHA(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var r struct{ SHA256 string }
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r.SHA256
}

// p2Revalidate moves the clock past metadata_ttl, asks for the subdir's repodata so
// a background revalidation starts, and waits until it has run. The request marks
// the subdir refreshing before it answers, so waiting for the flag to drop is
// waiting for that revalidation.
func p2Revalidate(t *testing.T, h *harness, channel, subdir string) {
	t.Helper()
	h.clock.advance(11 * time.Minute)
	if r := h.get("/" + channel + "/" + subdir + "/repodata.json"); r.StatusCode != 200 {
		t.Fatalf("repodata past its TTL: %d %s", r.StatusCode, r.body)
	}
	sd := h.srv.channels[channel].subdir(subdir)
	waitFor(t, "the background revalidation", func() bool { return !sd.refreshing.Load() })
}

// p2FillsIdle reports whether no fill (download or file revalidation) is running.
func p2FillsIdle(h *harness) bool {
	return h.srv.fills.Idle()
}

const p2Shared = "zlib-1.2.11-h1de35cc_3.conda"

// SPEC "Several upstreams": the union of the records, the first upstream wins a
// filename, bytes come from the upstream whose record is served, and a failing
// upstream keeps its last good records in the union.
func TestSeveralUpstreams(t *testing.T) {
	a := newUpstream(t, formatRepo(t))
	aRecs := readRepodata(t, filepath.Join(formatRepo(t), "osx-64", "repodata.json"))

	bDir := p2CopyChannel(t, formatRepo(t))
	orig, err := os.ReadFile(filepath.Join(bDir, "osx-64", p2Shared))
	if err != nil {
		t.Fatal(err)
	}
	// B's copy of the shared filename is another, self-consistent file: if the proxy
	// served B's record or fetched B's bytes, the sha256 would say so.
	bShared := append(bytes.Clone(orig), "rebuilt by upstream B"...)
	p2WriteFile(t, filepath.Join(bDir, "osx-64", p2Shared), bShared)
	extra := p2Random(t, 5000)
	const extraName = "bonly-1.0-0.conda"
	p2WriteFile(t, filepath.Join(bDir, "osx-64", extraName), extra)
	p2EditRepodata(t, bDir, "osx-64", func(doc map[string]any) {
		conda := p2Section(doc, p2Shared)
		rec := p2Record("zlib", "1.2.11", "h1de35cc_3", "osx-64", bShared)
		conda[p2Shared] = rec
		conda[extraName] = p2Record("bonly", "1.0", "0", "osx-64", extra)
	})
	b := newUpstream(t, bDir)
	h := newHarness(t, channelYAML("", a.URL, b.URL))

	r := h.get("/fmt/osx-64/repodata.json")
	if r.StatusCode != 200 {
		t.Fatalf("repodata: %d %s", r.StatusCode, r.body)
	}
	var wantNames []string
	for fn := range aRecs {
		wantNames = append(wantNames, fn)
	}
	wantNames = append(wantNames, extraName)
	slices.Sort(wantNames)
	if got := filenames(t, r.body); !slices.Equal(got, wantNames) {
		t.Errorf("served osx-64 = %v, want the union %v", got, wantNames)
	}
	recs := p2ServedRecords(t, r.body)
	if got, want := p2SHA(t, recs[p2Shared]), aRecs[p2Shared].SHA256; got != want {
		t.Errorf("shared %s served with sha256 %s, want A's %s (first upstream wins)", p2Shared, got, want)
	}

	p := h.get("/fmt/osx-64/" + p2Shared)
	if p.StatusCode != 200 || sha256hex(p.body) != aRecs[p2Shared].SHA256 {
		t.Errorf("shared file: %d sha256 %s, want A's bytes %s", p.StatusCode, sha256hex(p.body), aRecs[p2Shared].SHA256)
	}
	if na, nb := a.count("/osx-64/"+p2Shared), b.count("/osx-64/"+p2Shared); na != 1 || nb != 0 {
		t.Errorf("shared file fetched %d times from A, %d from B; want 1 and 0", na, nb)
	}
	e := h.get("/fmt/osx-64/" + extraName)
	if e.StatusCode != 200 || !bytes.Equal(e.body, extra) {
		t.Errorf("B's own file: %d, %d bytes", e.StatusCode, len(e.body))
	}
	if na, nb := a.count("/osx-64/"+extraName), b.count("/osx-64/"+extraName); na != 0 || nb != 1 {
		t.Errorf("B's file fetched %d times from A, %d from B; want 0 and 1", na, nb)
	}

	// A goes down: its last good repodata stays in the union.
	a.status.Store(http.StatusServiceUnavailable)
	before := a.count("/osx-64/repodata.json")
	p2Revalidate(t, h, "fmt", "osx-64")
	if a.count("/osx-64/repodata.json") == before {
		t.Fatal("the revalidation did not ask A: the test proves nothing")
	}
	sd := h.srv.channels["fmt"].subdir("osx-64")
	sd.mu.Lock()
	failed := sd.lastErr != nil
	sd.mu.Unlock()
	if !failed {
		t.Error("revalidation with A answering 503 recorded no error")
	}
	r = h.get("/fmt/osx-64/repodata.json")
	if r.StatusCode != 200 {
		t.Fatalf("repodata with A down: %d", r.StatusCode)
	}
	if got := filenames(t, r.body); !slices.Equal(got, wantNames) {
		t.Errorf("with A down, served osx-64 = %v, want A's last good records and B's: %v", got, wantNames)
	}
	if got := p2SHA(t, p2ServedRecords(t, r.body)[p2Shared]); got != aRecs[p2Shared].SHA256 {
		t.Errorf("with A down, shared record has sha256 %s: B's record took A's place", got)
	}
}

// A kind: files channel is a plain pull-through of mutable files, cached like repodata.
func TestFilesChannel(t *testing.T) {
	dir := t.TempDir()
	const name = "Miniconda3-latest-Linux-x86_64.sh"
	v1 := append([]byte("#!/bin/sh\n# installer v1\n"), p2Random(t, 200<<10)...)
	p2WriteFile(t, filepath.Join(dir, name), v1)
	up := newUpstream(t, dir)
	yaml := "cache:\n  metadata_ttl: 10m\n  negative_ttl: 1m\n  memory: 16MiB\n" +
		"channels:\n  - name: inst\n    kind: files\n    upstreams:\n      - url: " + up.URL + "\n"
	h := newHarness(t, yaml)
	path := "/inst/" + name

	r := h.get(path)
	if r.StatusCode != 200 || !bytes.Equal(r.body, v1) || r.readErr != nil {
		t.Fatalf("first GET: %d, %d bytes, %v", r.StatusCode, len(r.body), r.readErr)
	}
	if r.ContentLength != int64(len(v1)) {
		t.Errorf("first GET: Content-Length %d, want %d", r.ContentLength, len(v1))
	}
	// A streamed miss cannot know the sha256 before the end; if it sends an ETag,
	// it must be the right one.
	if et := r.Header.Get("ETag"); et != "" && et != `"`+sha256hex(v1)+`"` {
		t.Errorf("first GET: ETag %s, want the sha256 %s", et, sha256hex(v1))
	}
	// The fill records the file's entry (sha256, Last-Modified) just after the last
	// byte went out: wait for it, or the next GET may join the finishing fill.
	waitFor(t, "the first fill to finish", func() bool { return p2FillsIdle(h) })
	r = h.get(path)
	if r.StatusCode != 200 || !bytes.Equal(r.body, v1) {
		t.Fatalf("second GET: %d", r.StatusCode)
	}
	if et := r.Header.Get("ETag"); et != `"`+sha256hex(v1)+`"` {
		t.Errorf("cached GET: ETag %q, want the sha256", et)
	}
	if r.ContentLength != int64(len(v1)) {
		t.Errorf("cached GET: Content-Length %d", r.ContentLength)
	}
	if n := up.count("/" + name); n != 1 {
		t.Errorf("upstream asked %d times within metadata_ttl, want 1", n)
	}

	// Upstream publishes a new installer under the same name.
	v2 := append([]byte("#!/bin/sh\n# installer v2\n"), p2Random(t, 150<<10)...)
	p2WriteFile(t, filepath.Join(dir, name), v2)
	h.clock.advance(11 * time.Minute)
	r = h.get(path)
	if r.StatusCode != 200 || (!bytes.Equal(r.body, v1) && !bytes.Equal(r.body, v2)) {
		t.Fatalf("stale GET: %d, %d bytes: neither the old nor the new file", r.StatusCode, len(r.body))
	}
	waitFor(t, "the file's revalidation", func() bool { return up.count("/"+name) == 2 && p2FillsIdle(h) })
	r = h.get(path)
	if r.StatusCode != 200 || !bytes.Equal(r.body, v2) {
		t.Errorf("after revalidation: %d, %d bytes, want the new %d", r.StatusCode, len(r.body), len(v2))
	}
	if et := r.Header.Get("ETag"); et != `"`+sha256hex(v2)+`"` {
		t.Errorf("after revalidation: ETag %q, want the new sha256", et)
	}

	// A missing file is 404, remembered for negative_ttl.
	for i := 0; i < 2; i++ {
		if m := h.get("/inst/Miniconda3-nope.sh"); m.StatusCode != 404 {
			t.Errorf("missing file, GET %d: %d, want 404", i, m.StatusCode)
		}
	}
	if n := up.count("/Miniconda3-nope.sh"); n != 1 {
		t.Errorf("missing file asked upstream %d times within negative_ttl, want 1", n)
	}

	addr := strings.TrimPrefix(h.http.URL, "http://")
	for _, target := range []string{"/inst/../etc/passwd", "/inst/sub/../../" + name, "/inst/%2e%2e/x"} {
		if got := rawRequest(t, addr, target); got != 400 {
			t.Errorf("%s: %d, want 400", target, got)
		}
	}

	// Upstream down: the cached file is still served, during and after a failed
	// revalidation.
	up.status.Store(http.StatusServiceUnavailable)
	h.clock.advance(11 * time.Minute)
	for i := 0; i < 2; i++ {
		r = h.get(path)
		if r.StatusCode != 200 || !bytes.Equal(r.body, v2) {
			t.Errorf("upstream down, GET %d: %d, %d bytes", i, r.StatusCode, len(r.body))
		}
		waitFor(t, "the failed revalidation", func() bool { return p2FillsIdle(h) })
	}
	if n := up.count("/" + name); n < 3 {
		t.Errorf("upstream asked %d times: the revalidation never ran", n)
	}
}

// Channel-level metadata is passed through; what upstream lacks is 404.
func TestChannelMetadataPassthrough(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	want, err := os.ReadFile(filepath.Join(formatRepo(t), "channeldata.json"))
	if err != nil {
		t.Fatal(err)
	}
	r := h.get("/fmt/channeldata.json")
	if r.StatusCode != 200 || !bytes.Equal(r.body, want) {
		t.Errorf("channeldata.json: %d, %d bytes, want upstream's %d", r.StatusCode, len(r.body), len(want))
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("channeldata.json: Content-Type %q", ct)
	}
	if r := h.get("/fmt/notices.json"); r.StatusCode != 404 {
		t.Errorf("notices.json absent upstream: %d, want 404", r.StatusCode)
	}
	if n := up.count("/notices.json"); n != 1 {
		t.Errorf("notices.json asked upstream %d times, want 1", n)
	}
}

// A package upstream removed stays downloadable once cached; keep_removed also
// keeps its record in the repodata.
func TestRemovedUpstreamStaysServed(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run("keep_removed="+map[bool]string{false: "false", true: "true"}[keep], func(t *testing.T) {
			dir := p2CopyChannel(t, formatRepo(t))
			up := newUpstream(t, dir)
			yaml := "cache:\n  metadata_ttl: 10m\n  negative_ttl: 1m\n  memory: 16MiB\n"
			if keep {
				yaml += "  keep_removed: true\n"
			}
			yaml += "channels:\n  - name: fmt\n    upstreams:\n      - url: " + up.URL + "\n"
			h := newHarness(t, yaml)
			origRepo := readRepodata(t, filepath.Join(dir, "osx-64", "repodata.json"))
			want := origRepo[p2Shared]
			first := h.get("/fmt/osx-64/repodata.json")
			origRecord := p2ServedRecords(t, first.body)[p2Shared]
			if r := h.get("/fmt/osx-64/" + p2Shared); r.StatusCode != 200 || sha256hex(r.body) != want.SHA256 {
				t.Fatalf("warm-up: %d", r.StatusCode)
			}
			// Upstream drops both records (only the .conda is cached) and the files.
			p2EditRepodata(t, dir, "osx-64", func(doc map[string]any) {
				delete(p2Section(doc, p2Shared), p2Shared)
				delete(p2Section(doc, zlibOSX), zlibOSX)
			})
			os.Remove(filepath.Join(dir, "osx-64", p2Shared))
			os.Remove(filepath.Join(dir, "osx-64", zlibOSX))
			p2Revalidate(t, h, "fmt", "osx-64")

			r := h.get("/fmt/osx-64/repodata.json")
			recs := p2ServedRecords(t, r.body)
			if _, ok := recs[zlibOSX]; ok {
				t.Errorf("%s, removed upstream and never cached, is still listed: the revalidation did not take", zlibOSX)
			}
			rec, listed := recs[p2Shared]
			switch {
			case !keep && listed:
				t.Errorf("keep_removed false: %s still listed after upstream removed it", p2Shared)
			case keep && !listed:
				t.Errorf("keep_removed true: cached %s dropped from the repodata", p2Shared)
			case keep:
				var got, wantRec map[string]any
				json.Unmarshal(rec, &got)
				json.Unmarshal(origRecord, &wantRec)
				if !reflect.DeepEqual(got, wantRec) {
					t.Errorf("kept record changed:\n got %s\nwant %s", rec, origRecord)
				}
			}
			p := h.get("/fmt/osx-64/" + p2Shared)
			if p.StatusCode != 200 || sha256hex(p.body) != want.SHA256 {
				t.Errorf("removed but cached package: %d sha256 %s", p.StatusCode, sha256hex(p.body))
			}
			if n := up.count("/osx-64/" + p2Shared); n != 1 {
				t.Errorf("removed package asked upstream %d times, want 1", n)
			}
		})
	}
}

// p2BigChannel writes a channel with linux-64 files of the given sizes and a
// repodata that truly describes them; it returns the dir and the files by name.
func p2BigChannel(t *testing.T, sizes ...int) (string, []string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{}
	var names []string
	conda := map[string]any{}
	for i, n := range sizes {
		name := "big" + itoa(i) + "-1.0-0.conda"
		data := p2Random(t, n)
		p2WriteFile(t, filepath.Join(dir, "linux-64", name), data)
		conda[name] = p2Record("big"+itoa(i), "1.0", "0", "linux-64", data)
		files[name] = data
		names = append(names, name)
	}
	doc := map[string]any{"info": map[string]any{"subdir": "linux-64"}, "packages": map[string]any{},
		"packages.conda": conda, "repodata_version": 1}
	raw, _ := json.Marshal(doc)
	p2WriteFile(t, filepath.Join(dir, "linux-64", "repodata.json"), raw)
	return dir, names, files
}

// p2Tick lets the wall clock move between two accesses, so their access times
// (nanoseconds in the store) differ even on a coarse clock.
func p2Tick() { time.Sleep(5 * time.Millisecond) }

// max_size holds through the proxy, and the least recently used package goes first.
func TestEvictionThroughProxy(t *testing.T) {
	const size = 400 << 10 // two fit under 1 MiB, three do not
	dir, names, files := p2BigChannel(t, size, size, size)
	up := newUpstream(t, dir)
	h := newHarness(t, channelYAML("  max_size: 1MiB\n", up.URL))
	get := func(name string) {
		t.Helper()
		r := h.get("/fmt/linux-64/" + name)
		if r.StatusCode != 200 || !bytes.Equal(r.body, files[name]) {
			t.Fatalf("%s: %d, %d bytes", name, r.StatusCode, len(r.body))
		}
		if used, _, limit := h.store.Usage(); used > 1<<20 || limit != 1<<20 {
			t.Errorf("after %s: usage %d, limit %d: over max_size 1MiB", name, used, limit)
		}
	}
	has := func(name string) bool { return h.store.Has(sha256hex(files[name])) }
	a, b, c := names[0], names[1], names[2]
	get(a)
	p2Tick()
	get(b)
	p2Tick()
	get(a) // a hit: a is now more recent than b
	p2Tick()
	get(c)
	if !has(a) || has(b) || !has(c) {
		t.Errorf("after a, b, a, c: cached a=%v b=%v c=%v; want b (least recently used) evicted", has(a), has(b), has(c))
	}
	p2Tick()
	get(b)
	if n := up.count("/linux-64/" + b); n != 2 {
		t.Errorf("evicted %s fetched %d times, want 2", b, n)
	}
	if has(a) || !has(b) || !has(c) {
		t.Errorf("after b again: cached a=%v b=%v c=%v; want a evicted", has(a), has(b), has(c))
	}
	if n := up.count("/linux-64/" + a); n != 1 {
		t.Errorf("%s fetched %d times, want 1 (the second GET was a hit)", a, n)
	}
}

// A file just fetched is the most recently used: eviction must never pick it, even
// when older blobs were used in the same second (access times are whole seconds).
func TestEvictionKeepsTheFileJustFetched(t *testing.T) {
	const size = 600 << 10 // any two exceed 1 MiB: every fill evicts
	dir, names, files := p2BigChannel(t, size, size, size)
	up := newUpstream(t, dir)
	h := newHarness(t, channelYAML("  max_size: 1MiB\n", up.URL))
	for round := 0; round < 3; round++ {
		for _, name := range names {
			r := h.get("/fmt/linux-64/" + name)
			if r.StatusCode != 200 || !bytes.Equal(r.body, files[name]) {
				t.Fatalf("%s: %d", name, r.StatusCode)
			}
			if !h.store.Has(sha256hex(files[name])) {
				used, n, _ := h.store.Usage()
				t.Fatalf("round %d: %s was evicted right after its fill (store holds %d blobs, %d bytes): "+
					"cache.Store.pickVictimsLocked breaks access-time ties at random and may pick the blob just added",
					round, name, n, used)
			}
		}
	}
}

// The operator's questions answered by /metrics, and the health endpoints.
func TestMetricsAndHealth(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	up.setCorrupt(func(p string, b []byte) []byte {
		if strings.HasPrefix(p, "/win-64/") && strings.HasSuffix(p, ".conda") {
			c := bytes.Clone(b)
			c[len(c)/2] ^= 0xff
			return c
		}
		return b
	})
	h := newHarness(t, channelYAML("auth:\n  tokens: [tok]\n", up.URL))
	want := readRepodata(t, filepath.Join(formatRepo(t), "linux-64", "repodata.json"))[zlibLinux]
	for i, c := range []struct {
		path string
		want int
	}{
		{"/t/tok/fmt/linux-64/" + zlibLinux, 200},             // miss
		{"/t/tok/fmt/linux-64/" + zlibLinux, 200},             // hit
		{"/t/tok/fmt/linux-64/nope-1.0-0.conda", 404},         // 404
		{"/fmt/linux-64/" + zlibLinux, 401},                   // no token
		{"/t/tok/fmt/win-64/zlib-1.2.11-h62dcd97_3.conda", 0}, // checksum failure: 502 or broken
	} {
		r := h.get(c.path)
		if c.want != 0 && r.StatusCode != c.want {
			t.Fatalf("request %d %s: %d, want %d", i, c.path, r.StatusCode, c.want)
		}
	}
	host := strings.TrimPrefix(up.URL, "http://")
	used, _, _ := h.store.Usage()
	for _, c := range []struct {
		sample string
		min    float64
	}{
		{`condaproxy_requests_total{channel="fmt",code="200",kind="package"}`, 2},
		{`condaproxy_requests_total{channel="fmt",code="404",kind="package"}`, 1},
		{`condaproxy_requests_total{channel="fmt",code="401",kind="package"}`, 1},
		{`condaproxy_cache_lookups_total{kind="package",result="hit"}`, 1},
		{`condaproxy_cache_lookups_total{kind="package",result="miss"}`, 2},
		{`condaproxy_cache_lookups_total{kind="repodata",result="miss"}`, 1},
		{`condaproxy_bytes_served_total{source="upstream"}`, float64(want.Size)},
		{`condaproxy_upstream_request_duration_seconds_count{code="200",host="` + host + `"}`, 2},
		{`condaproxy_checksum_failures_total{channel="fmt"}`, 1},
	} {
		if got := h.metric(c.sample); got < c.min {
			t.Errorf("%s = %v, want >= %v", c.sample, got, c.min)
		}
	}
	if got := h.metric(`condaproxy_bytes_served_total{source="disk"}`) + h.metric(`condaproxy_bytes_served_total{source="memory"}`); got < float64(want.Size) {
		t.Errorf("bytes served from the cache = %v, want >= %d (one hit)", got, want.Size)
	}
	if got := h.metric("condaproxy_cache_size_bytes"); got != float64(used) || used != want.Size {
		t.Errorf("condaproxy_cache_size_bytes = %v, store usage %d, want %d (the one good file)", got, used, want.Size)
	}
	body := string(h.get("/metrics").body)
	if !strings.Contains(body, `condaproxy_upstream_request_duration_seconds_bucket{code="200",host="`+host+`",le=`) {
		t.Error("no upstream latency histogram buckets with a host label")
	}

	if r := h.get("/healthz"); r.StatusCode != 200 {
		t.Errorf("/healthz: %d", r.StatusCode)
	}
	r := h.get("/readyz")
	var ready map[string]any
	if err := json.Unmarshal(r.body, &ready); err != nil || r.StatusCode != 200 || ready["ready"] != true {
		t.Errorf("/readyz: %d %s", r.StatusCode, r.body)
	}
}

// Upstream 5xx: retried, answered 502, never cached; upstream 404 on a listed file: 404.
func TestPackageUpstreamErrors(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	want := readRepodata(t, filepath.Join(formatRepo(t), "osx-64", "repodata.json"))[p2Shared]
	if r := h.get("/fmt/osx-64/repodata.json"); r.StatusCode != 200 {
		t.Fatalf("repodata: %d", r.StatusCode)
	}
	up.status.Store(http.StatusInternalServerError)
	if r := h.get("/fmt/osx-64/" + p2Shared); r.StatusCode != http.StatusBadGateway {
		t.Errorf("upstream 500: %d, want 502", r.StatusCode)
	}
	if n := up.count("/osx-64/" + p2Shared); n != 3 {
		t.Errorf("upstream saw %d attempts, want 3 (1 + 2 retries)", n)
	}
	if _, n, _ := h.store.Usage(); n != 0 {
		t.Errorf("%d blobs cached from a failing upstream", n)
	}
	up.status.Store(0)
	if r := h.get("/fmt/osx-64/" + p2Shared); r.StatusCode != 200 || sha256hex(r.body) != want.SHA256 {
		t.Errorf("after recovery: %d (a failure was cached?)", r.StatusCode)
	}

	dir := p2CopyChannel(t, formatRepo(t))
	if err := os.Remove(filepath.Join(dir, "osx-64", p2Shared)); err != nil {
		t.Fatal(err)
	}
	up2 := newUpstream(t, dir)
	h2 := newHarness(t, channelYAML("", up2.URL))
	if r := h2.get("/fmt/osx-64/" + p2Shared); r.StatusCode != 404 {
		t.Errorf("listed package missing upstream: %d, want 404", r.StatusCode)
	}
	if n := up2.count("/osx-64/" + p2Shared); n != 1 {
		t.Errorf("upstream 404 asked %d times, want 1 (a 404 is not retried)", n)
	}
}

// A hostile or broken upstream repodata never replaces anything: refused cold,
// and on a warm cache the last good copy keeps being served.
func TestHostileRepodataRefused(t *testing.T) {
	zstOf := func(t *testing.T, b []byte) []byte {
		var buf bytes.Buffer
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T, dir string)
	}{
		{"subdir says linux-64", func(t *testing.T, dir string) {
			p2EditRepodata(t, dir, "osx-64", func(doc map[string]any) {
				doc["info"] = map[string]any{"subdir": "linux-64"}
			})
		}},
		{"record key is a path", func(t *testing.T, dir string) {
			p2EditRepodata(t, dir, "osx-64", func(doc map[string]any) {
				p2Section(doc, "x.conda")["../../x.conda"] = p2Record("x", "1.0", "0", "osx-64", []byte("x"))
			})
		}},
		{"invalid JSON", func(t *testing.T, dir string) {
			p2WriteFile(t, filepath.Join(dir, "osx-64", "repodata.json"), []byte(`{"info": {"subdir": "osx-64"}, "packages": {"a`))
		}},
		{"zst of garbage", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "osx-64", "repodata.json"))
			p2WriteFile(t, filepath.Join(dir, "osx-64", "repodata.json.zst"), zstOf(t, []byte("<html>this is not repodata</html>")))
		}},
		{"zst that is not zstd", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "osx-64", "repodata.json"))
			p2WriteFile(t, filepath.Join(dir, "osx-64", "repodata.json.zst"), []byte("not zstd at all, just text"))
		}},
	}
	for _, c := range cases {
		t.Run(c.name+"/cold", func(t *testing.T) {
			dir := p2CopyChannel(t, formatRepo(t))
			c.mutate(t, dir)
			up := newUpstream(t, dir)
			h := newHarness(t, channelYAML("", up.URL))
			r := h.get("/fmt/osx-64/repodata.json")
			if r.StatusCode != http.StatusBadGateway {
				t.Errorf("hostile repodata on a cold cache: %d, want 502\n%.200s", r.StatusCode, r.body)
			}
			if p := h.get("/fmt/osx-64/" + p2Shared); p.StatusCode == 200 {
				t.Error("a package was served on a refused repodata")
			}
			if n := up.count("/osx-64/" + p2Shared); n != 0 {
				t.Errorf("a package was fetched on a refused repodata (%d times)", n)
			}
		})
		t.Run(c.name+"/warm", func(t *testing.T) {
			dir := p2CopyChannel(t, formatRepo(t))
			up := newUpstream(t, dir)
			h := newHarness(t, channelYAML("", up.URL))
			good := h.get("/fmt/osx-64/repodata.json")
			if good.StatusCode != 200 {
				t.Fatalf("warm-up: %d", good.StatusCode)
			}
			c.mutate(t, dir)
			p2Revalidate(t, h, "fmt", "osx-64")
			sd := h.srv.channels["fmt"].subdir("osx-64")
			sd.mu.Lock()
			refused := sd.lastErr != nil
			sd.mu.Unlock()
			if !refused {
				t.Error("the hostile repodata was accepted (no revalidation error)")
			}
			r := h.get("/fmt/osx-64/repodata.json")
			if r.StatusCode != 200 || !bytes.Equal(r.body, good.body) {
				t.Errorf("after a hostile revalidation: %d, body changed=%v; want the last good copy", r.StatusCode, !bytes.Equal(r.body, good.body))
			}
		})
	}
}

// Shutdown during a slow fill: the fill is abandoned cleanly, nothing partial kept.
func TestShutdownDuringFill(t *testing.T) {
	dir, names, files := p2BigChannel(t, 6<<20)
	up := newUpstream(t, dir)
	h := newHarness(t, channelYAML("", up.URL))
	if r := h.get("/fmt/linux-64/repodata.json"); r.StatusCode != 200 {
		t.Fatalf("repodata: %d", r.StatusCode)
	}
	up.chunked.Store(true) // 8 KiB every 2 ms: about 1.5 s for the file
	name := names[0]
	var wg sync.WaitGroup
	var got int
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp, err := http.Get(h.http.URL + "/fmt/linux-64/" + name)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got = len(b)
	}()
	// Observed through the fill's own lock: that orders the fill's start (and its
	// registration with Shutdown's WaitGroup) before the Shutdown below.
	waitFor(t, "the fill to start writing", h.srv.fills.Writing)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	h.srv.Shutdown(ctx)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v with a 50ms context", d)
	}
	wg.Wait()
	if got == len(files[name]) {
		t.Error("the client got the whole file from a fill cut off by Shutdown?")
	}
	entries, _ := os.ReadDir(filepath.Join(h.data, "tmp"))
	if len(entries) != 0 {
		t.Errorf("tmp/ after Shutdown: %v", entries)
	}
	if h.store.Has(sha256hex(files[name])) {
		t.Error("the cut-off file is in the store")
	}
	if _, n, _ := h.store.Usage(); n != 0 {
		t.Errorf("%d blobs in the store after an abandoned fill", n)
	}
	if _, ok := h.srv.pkgEntry(h.srv.channels["fmt"], "linux-64", name); ok {
		t.Error("the package index records the cut-off file")
	}
	var blobs []string
	filepath.WalkDir(filepath.Join(h.data, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			blobs = append(blobs, p)
		}
		return nil
	})
	if len(blobs) != 0 {
		t.Errorf("blob files on disk after an abandoned fill: %v", blobs)
	}
}

// A kind: files blob is evictable like any other. When it is gone and upstream has
// published a new file under the name, the refetch must not be labelled with the
// old file's validators: a cache in front of the proxy would keep the new bytes
// under the old ETag, and a conditional request would then be answered wrongly.
func TestFilesChannelRefetchAfterEviction(t *testing.T) {
	const size = 600 << 10 // any two blobs exceed max_size 1MiB
	pkgDir, pkgNames, _ := p2BigChannel(t, size)
	pkgs := newUpstream(t, pkgDir)
	instDir := t.TempDir()
	const name = "Miniconda3-latest-Linux-x86_64.sh"
	v1 := p2Random(t, size)
	p2WriteFile(t, filepath.Join(instDir, name), v1)
	inst := newUpstream(t, instDir)
	yaml := "cache:\n  max_size: 1MiB\n  metadata_ttl: 10m\n  negative_ttl: 1m\n  memory: 16MiB\n" +
		"channels:\n  - name: fmt\n    upstreams:\n      - url: " + pkgs.URL + "\n" +
		"  - name: inst\n    kind: files\n    upstreams:\n      - url: " + inst.URL + "\n"
	h := newHarness(t, yaml)
	if r := h.get("/inst/" + name); r.StatusCode != 200 || !bytes.Equal(r.body, v1) {
		t.Fatalf("first GET: %d", r.StatusCode)
	}
	waitFor(t, "the fill to finish", func() bool { return p2FillsIdle(h) })
	first := h.get("/inst/" + name)
	if first.Header.Get("ETag") != `"`+sha256hex(v1)+`"` {
		t.Fatalf("cached GET: ETag %q, want the sha256", first.Header.Get("ETag"))
	}
	p2Tick()
	if r := h.get("/fmt/linux-64/" + pkgNames[0]); r.StatusCode != 200 {
		t.Fatalf("package: %d", r.StatusCode)
	}
	if h.store.Has(sha256hex(v1)) {
		t.Fatal("the installer was not evicted: the test proves nothing")
	}
	v2 := p2Random(t, size)
	p2WriteFile(t, filepath.Join(instDir, name), v2)
	r := h.get("/inst/" + name)
	if r.StatusCode != 200 || !bytes.Equal(r.body, v2) {
		t.Fatalf("refetch after eviction: %d, %d bytes, new file=%v", r.StatusCode, len(r.body), bytes.Equal(r.body, v2))
	}
	if et := r.Header.Get("ETag"); et == first.Header.Get("ETag") {
		t.Errorf("refetched new bytes (sha256 %s) are labelled with the evicted file's ETag %s "+
			"(proxy/files.go serveMutable: the miss path's headers come from the stale fileEntry in Meta)", sha256hex(v2), et)
	}
	if lm := r.Header.Get("Last-Modified"); lm != "" && lm == first.Header.Get("Last-Modified") {
		t.Errorf("refetched new bytes keep the evicted file's Last-Modified %s", lm)
	}
}
