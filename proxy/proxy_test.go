package proxy

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/condaproxy/condaproxy/internal/testdata"
)

const zlibLinux = "zlib-1.2.11-h7b6447c_3.conda"
const zlibOSX = "zlib-1.2.11-h1de35cc_3.tar.bz2"

// filenames decodes a served repodata body and lists its record filenames.
func filenames(t *testing.T, body []byte) []string {
	t.Helper()
	var doc struct {
		Info          map[string]any             `json:"info"`
		Packages      map[string]json.RawMessage `json:"packages"`
		PackagesConda map[string]json.RawMessage `json:"packages.conda"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("served repodata is not JSON: %v", err)
	}
	if _, ok := doc.Info["base_url"]; ok {
		t.Errorf("served repodata keeps info.base_url: %v", doc.Info["base_url"])
	}
	var out []string
	for k := range doc.Packages {
		out = append(out, k)
	}
	for k := range doc.PackagesConda {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func decode(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var r io.Reader
	switch enc {
	case "zst":
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	case "bz2":
		r = bzip2.NewReader(bytes.NewReader(b))
	case "gz":
		gr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r = gr
	default:
		return b
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decode %s: %v", enc, err)
	}
	return out
}

// Every repodata form is made from one record set, on the real channels.
func TestRepodataFormsAgree(t *testing.T) {
	cases := []struct {
		dir, subdir string
	}{
		{formatRepo(t), "linux-64"},
		{formatRepo(t), "win-64"},
		{testdata.Path(t, "cf-subchannel-py39"), "linux-64"},
		{testdata.Path(t, "cf-subchannel-py39"), "noarch"},
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.dir)+"/"+c.subdir, func(t *testing.T) {
			up := newUpstream(t, c.dir)
			h := newHarness(t, channelYAML("", up.URL))
			want := readRepodata(t, filepath.Join(c.dir, c.subdir, "repodata.json"))
			var wantNames []string
			for fn := range want {
				wantNames = append(wantNames, fn)
			}
			slices.Sort(wantNames)
			forms := []struct{ path, enc, accept, ctype string }{
				{"repodata.json", "", "identity", "application/json"},
				{"repodata.json", "gz", "gzip, deflate", "application/json"},
				{"repodata.json.zst", "zst", "", "application/zstd"},
				{"repodata.json.bz2", "bz2", "", "application/x-bzip2"},
			}
			for _, f := range forms {
				r := h.get("/fmt/"+c.subdir+"/"+f.path, "Accept-Encoding: "+f.accept)
				if r.StatusCode != 200 {
					t.Fatalf("%s: %d %s", f.path, r.StatusCode, r.body)
				}
				if got := r.Header.Get("Content-Type"); got != f.ctype {
					t.Errorf("%s: Content-Type %q, want %q", f.path, got, f.ctype)
				}
				if f.enc == "gz" && r.Header.Get("Content-Encoding") != "gzip" {
					t.Errorf("gzip form without Content-Encoding")
				}
				if got := filenames(t, decode(t, f.enc, r.body)); !slices.Equal(got, wantNames) {
					t.Errorf("%s (%s): %d records, want %d", f.path, f.enc, len(got), len(wantNames))
				}
				if r.Header.Get("ETag") == "" || r.Header.Get("Last-Modified") == "" || r.Header.Get("Cache-Control") != "public, max-age=600" {
					t.Errorf("%s: headers %v", f.path, r.Header)
				}
				if strings.Contains(string(decode(t, f.enc, r.body)), up.URL) {
					t.Errorf("%s: served repodata names the upstream URL", f.path)
				}
			}
			// current_repodata: the newest version of each name, every build of it.
			r := h.get("/fmt/" + c.subdir + "/current_repodata.json")
			cur := filenames(t, r.body)
			newest := map[string]string{}
			for _, fn := range cur {
				rec := want[fn]
				if v, ok := newest[rec.Name]; ok && v != rec.Version {
					t.Errorf("current_repodata holds two versions of %s: %s and %s", rec.Name, v, rec.Version)
				}
				newest[rec.Name] = rec.Version
			}
			names := map[string]bool{}
			for _, rec := range want {
				names[rec.Name] = true
			}
			if len(newest) != len(names) {
				t.Errorf("current_repodata has %d names, repodata %d", len(newest), len(names))
			}
			for fn, rec := range want {
				if newest[rec.Name] == rec.Version && !slices.Contains(cur, fn) {
					t.Errorf("current_repodata lacks %s, a build of the newest %s", fn, rec.Name)
				}
			}
		})
	}
}

func TestRepodataConditional(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	r := h.get("/fmt/linux-64/repodata.json")
	etag, lm := r.Header.Get("ETag"), r.Header.Get("Last-Modified")
	if got := h.get("/fmt/linux-64/repodata.json", "If-None-Match: "+etag); got.StatusCode != 304 {
		t.Errorf("If-None-Match: %d, want 304", got.StatusCode)
	}
	if got := h.get("/fmt/linux-64/repodata.json", "If-Modified-Since: "+lm); got.StatusCode != 304 {
		t.Errorf("If-Modified-Since: %d, want 304", got.StatusCode)
	}
	if got := h.get("/fmt/linux-64/repodata.json", `If-None-Match: "other"`); got.StatusCode != 200 {
		t.Errorf("stale If-None-Match: %d, want 200", got.StatusCode)
	}
	// One upstream fetch served all of it: .zst asked first, then .json.
	if n := up.countPrefix("/linux-64/repodata.json"); n != 2 {
		t.Errorf("upstream repodata requests = %d (%v), want 2 (.zst 404, .json)", n, up.requests())
	}
	// A revalidation past the TTL asks upstream conditionally and, on 304, keeps
	// the answer's validators.
	h.clock.advance(11 * time.Minute)
	h.get("/fmt/linux-64/repodata.json")
	waitFor(t, "revalidation", func() bool { return up.count("/linux-64/repodata.json") == 2 })
	waitFor(t, "refresh done", func() bool {
		sd := h.srv.channels["fmt"].subdir("linux-64")
		return !sd.refreshing.Load()
	})
	r2 := h.get("/fmt/linux-64/repodata.json")
	if r2.Header.Get("ETag") != etag || r2.Header.Get("Last-Modified") != lm {
		t.Errorf("unchanged upstream changed the answer's validators: %v", r2.Header)
	}
	if r2.Header.Get("X-Condaproxy-Stale") != "" {
		t.Error("fresh answer marked stale")
	}
}

// CEP-15 base_url: packages come from where upstream says, clients only see the proxy.
func TestBaseURLFollowedNotServed(t *testing.T) {
	cdn := newUpstream(t, formatRepo(t))
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "linux-64"), 0o755)
	raw, _ := os.ReadFile(filepath.Join(formatRepo(t), "linux-64", "repodata.json"))
	raw = bytes.Replace(raw, []byte(`"subdir": "linux-64"`), []byte(`"subdir": "linux-64", "base_url": "`+cdn.URL+`/linux-64/"`), 1)
	os.WriteFile(filepath.Join(dir, "linux-64", "repodata.json"), raw, 0o644)
	up := newUpstream(t, dir)
	// The CDN is another host: the config must name it for base_url to reach it.
	cdnHost := strings.TrimPrefix(cdn.URL, "http://")
	yaml := "cache:\n  memory: 16MiB\nchannels:\n  - name: fmt\n    upstreams:\n      - url: " + up.URL + "\n        hosts: [\"" + cdnHost + "\"]\n"
	h := newHarness(t, yaml)
	r := h.get("/fmt/linux-64/repodata.json")
	if bytes.Contains(r.body, []byte(cdn.URL)) || bytes.Contains(r.body, []byte("base_url")) {
		t.Errorf("served repodata points past the proxy:\n%s", r.body[:200])
	}
	p := h.get("/fmt/linux-64/" + zlibLinux)
	if p.StatusCode != 200 || cdn.count("/linux-64/"+zlibLinux) != 1 || up.count("/linux-64/"+zlibLinux) != 0 {
		t.Errorf("package: %d; cdn asked %d, upstream asked %d", p.StatusCode, cdn.count("/linux-64/"+zlibLinux), up.count("/linux-64/"+zlibLinux))
	}
}

// A hostile repodata's base_url naming a host the config does not list is not
// followed: packages come from below the upstream itself, and the named host
// never hears from the proxy.
func TestBaseURLToUnlistedHostRefused(t *testing.T) {
	evil := newUpstream(t, formatRepo(t))
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "linux-64"), 0o755)
	raw, _ := os.ReadFile(filepath.Join(formatRepo(t), "linux-64", "repodata.json"))
	for _, base := range []string{evil.URL + "/linux-64/", "file:///etc/"} {
		t.Run(base, func(t *testing.T) {
			doc := bytes.Replace(raw, []byte(`"subdir": "linux-64"`), []byte(`"subdir": "linux-64", "base_url": "`+base+`"`), 1)
			os.WriteFile(filepath.Join(dir, "linux-64", "repodata.json"), doc, 0o644)
			up := newUpstream(t, dir)
			h := newHarness(t, channelYAML("", up.URL))
			p := h.get("/fmt/linux-64/" + zlibLinux)
			if evil.countPrefix("/") != 0 {
				t.Errorf("the host base_url named was asked %d times", evil.countPrefix("/"))
			}
			// The upstream has no packages below it here: a 404, never the other host's bytes.
			if p.StatusCode != 404 || up.count("/linux-64/"+zlibLinux) != 1 {
				t.Errorf("package: %d, upstream asked %d", p.StatusCode, up.count("/linux-64/"+zlibLinux))
			}
		})
	}
}

func TestPackageMissThenHit(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	want := readRepodata(t, filepath.Join(formatRepo(t), "linux-64", "repodata.json"))[zlibLinux]
	for i := 0; i < 2; i++ {
		r := h.get("/fmt/linux-64/" + zlibLinux)
		if r.StatusCode != 200 || r.readErr != nil {
			t.Fatalf("GET %d: %d %v", i, r.StatusCode, r.readErr)
		}
		if got := sha256hex(r.body); got != want.SHA256 || int64(len(r.body)) != want.Size {
			t.Fatalf("GET %d: sha256 %s size %d, want %s %d", i, got, len(r.body), want.SHA256, want.Size)
		}
		if r.ContentLength != want.Size || r.Header.Get("ETag") != `"`+want.SHA256+`"` ||
			r.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
			t.Errorf("GET %d headers: %v", i, r.Header)
		}
	}
	if v := h.metric(`condaproxy_bytes_served_total{source="upstream"}`); v != float64(want.Size) {
		t.Errorf("bytes from upstream = %v, want %d", v, want.Size)
	}
	// A 100 KiB package is past the memory tier (64 KiB): hits go out from disk,
	// with sendfile, as nginx would.
	if v := h.metric(`condaproxy_bytes_served_total{source="disk"}`); v < float64(want.Size) {
		t.Errorf("bytes from disk = %v, want >= %d", v, want.Size)
	}
	// Small repodata answers are kept in memory (ristretto admits asynchronously).
	waitFor(t, "a hit from memory", func() bool {
		if r := h.get("/fmt/noarch/repodata.json"); r.StatusCode != 200 {
			t.Fatalf("hot GET: %d %s", r.StatusCode, r.body)
		}
		return h.metric(`condaproxy_bytes_served_total{source="memory"}`) > 0
	})
	if n := up.count("/linux-64/" + zlibLinux); n != 1 {
		t.Errorf("upstream package requests = %d, want 1", n)
	}
	if got := h.get("/fmt/linux-64/"+zlibLinux, `If-None-Match: "`+want.SHA256+`"`); got.StatusCode != 304 {
		t.Errorf("If-None-Match sha256: %d, want 304", got.StatusCode)
	}
	// HEAD of a cold file answers from the record, without a download.
	head := h.do(http.MethodHead, "/fmt/win-64/zlib-1.2.11-h62dcd97_3.conda")
	if head.StatusCode != 200 || head.ContentLength != 112305 || up.count("/win-64/zlib-1.2.11-h62dcd97_3.conda") != 0 {
		t.Errorf("cold HEAD: %d len %d, upstream asked %d", head.StatusCode, head.ContentLength, up.count("/win-64/zlib-1.2.11-h62dcd97_3.conda"))
	}
	// A filename the repodata does not list is 404, without asking upstream.
	if r := h.get("/fmt/linux-64/nope-1.0-0.conda"); r.StatusCode != 404 || up.count("/linux-64/nope-1.0-0.conda") != 0 {
		t.Errorf("unlisted package: %d", r.StatusCode)
	}
	if v := h.metric(`condaproxy_requests_total{channel="fmt",code="200",kind="package"}`); v < 2 {
		t.Errorf("requests metric = %v", v)
	}
}

// Many clients on one missing file: one upstream fetch, every client the whole file.
func TestConcurrentMissOneFetch(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	up.chunked.Store(true) // slow enough that the clients overlap the fill
	h := newHarness(t, channelYAML("", up.URL))
	want := readRepodata(t, filepath.Join(formatRepo(t), "win-64", "repodata.json"))["zlib-1.2.11-h62dcd97_3.tar.bz2"]
	h.get("/fmt/win-64/repodata.json")
	const clients = 40
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			hdr := []string{}
			if i%4 == 3 {
				hdr = append(hdr, "Range: bytes=100-")
			}
			req, _ := http.NewRequest("GET", h.http.URL+"/fmt/win-64/zlib-1.2.11-h62dcd97_3.tar.bz2", nil)
			for _, kv := range hdr {
				k, v, _ := strings.Cut(kv, ": ")
				req.Header.Set(k, v)
			}
			r, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer r.Body.Close()
			body, err := io.ReadAll(r.Body)
			if err != nil {
				errs <- fmt.Errorf("client %d: %v", i, err)
				return
			}
			if len(hdr) > 0 {
				if r.StatusCode != 206 || int64(len(body)) != want.Size-100 {
					errs <- fmt.Errorf("client %d: range %d, %d bytes", i, r.StatusCode, len(body))
				}
				return
			}
			if got := sha256hex(body); r.StatusCode != 200 || got != want.SHA256 {
				errs <- fmt.Errorf("client %d: %d sha %s", i, r.StatusCode, got)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := up.count("/win-64/zlib-1.2.11-h62dcd97_3.tar.bz2"); n != 1 {
		t.Errorf("upstream fetched the file %d times, want 1", n)
	}
}

// A corrupting upstream: nothing is cached and the client never holds the whole file.
func TestCorruptUpstream(t *testing.T) {
	flip := func(path string, b []byte) []byte {
		if !strings.HasSuffix(path, ".conda") {
			return b
		}
		c := bytes.Clone(b)
		c[len(c)/2] ^= 0xff
		return c
	}
	cases := []struct {
		name    string
		corrupt func(string, []byte) []byte
		chunked bool
	}{
		{"flipped byte", flip, false},
		{"flipped byte, slow", flip, true},
		{"truncated", func(p string, b []byte) []byte {
			if strings.HasSuffix(p, ".conda") {
				return b[:len(b)-10]
			}
			return b
		}, true},
		{"longer", func(p string, b []byte) []byte {
			if strings.HasSuffix(p, ".conda") {
				return append(bytes.Clone(b), "extra"...)
			}
			return b
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := newUpstream(t, formatRepo(t))
			up.setCorrupt(c.corrupt)
			up.chunked.Store(c.chunked)
			h := newHarness(t, channelYAML("", up.URL))
			want := readRepodata(t, filepath.Join(formatRepo(t), "linux-64", "repodata.json"))[zlibLinux]
			r := h.get("/fmt/linux-64/" + zlibLinux)
			if r.StatusCode == 200 && r.readErr == nil && int64(len(r.body)) == want.Size {
				t.Fatalf("client got a complete-looking %d-byte body from a corrupt upstream", len(r.body))
			}
			if r.StatusCode == 200 && sha256hex(r.body) == want.SHA256 {
				t.Fatal("corrupt upstream produced the right bytes?")
			}
			// Range on the same cold, corrupt file: an error status, no bytes.
			rr := h.get("/fmt/linux-64/"+zlibLinux, "Range: bytes=-100")
			if rr.StatusCode != http.StatusBadGateway {
				t.Errorf("range on corrupt file: %d, want 502", rr.StatusCode)
			}
			if _, n, _ := h.store.Usage(); n != 0 {
				t.Errorf("%d blobs cached from a corrupt upstream", n)
			}
			if _, ok := h.srv.pkgEntry(h.srv.channels["fmt"], "linux-64", zlibLinux); ok {
				t.Error("package index records a corrupt file")
			}
			if v := h.metric(`condaproxy_checksum_failures_total{channel="fmt"}`); v < 2 {
				t.Errorf("checksum failures metric = %v, want >= 2", v)
			}
			entries, _ := os.ReadDir(filepath.Join(h.data, "tmp"))
			if len(entries) != 0 {
				t.Errorf("temp files left behind: %v", entries)
			}
			// Upstream heals: the next request fetches again and succeeds.
			up.corrupt.Store(nil)
			ok := h.get("/fmt/linux-64/" + zlibLinux)
			if ok.StatusCode != 200 || sha256hex(ok.body) != want.SHA256 {
				t.Errorf("after upstream healed: %d", ok.StatusCode)
			}
		})
	}
}

// Upstream down: cached packages and the last good repodata are still served.
func TestUpstreamDown(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	fresh := h.get("/fmt/linux-64/repodata.json")
	pkg := h.get("/fmt/linux-64/" + zlibLinux)
	if fresh.StatusCode != 200 || pkg.StatusCode != 200 {
		t.Fatal("warm-up failed")
	}
	up.status.Store(http.StatusServiceUnavailable)
	h.clock.advance(15 * time.Minute)
	// Past the TTL: the cached copy at once, revalidation in the background.
	r := h.get("/fmt/linux-64/repodata.json")
	if r.StatusCode != 200 || !bytes.Equal(r.body, fresh.body) {
		t.Fatalf("stale-while-revalidate: %d", r.StatusCode)
	}
	sd := h.srv.channels["fmt"].subdir("linux-64")
	waitFor(t, "failed revalidation", func() bool {
		sd.mu.Lock()
		defer sd.mu.Unlock()
		return sd.lastErr != nil && !sd.refreshing.Load()
	})
	r = h.get("/fmt/linux-64/repodata.json")
	if r.StatusCode != 200 || !bytes.Equal(r.body, fresh.body) {
		t.Fatalf("upstream down: repodata %d", r.StatusCode)
	}
	if got := r.Header.Get("X-Condaproxy-Stale"); got != "900" {
		t.Errorf("X-Condaproxy-Stale = %q, want 900 (seconds)", got)
	}
	if p := h.get("/fmt/linux-64/" + zlibLinux); p.StatusCode != 200 || !bytes.Equal(p.body, pkg.body) {
		t.Errorf("cached package while upstream down: %d", p.StatusCode)
	}
	// Retried with backoff (1 + 2 retries), never cached.
	if n := up.count("/linux-64/repodata.json"); n != 1+3 {
		t.Errorf("upstream asked %d times, want retries", n)
	}
	// Not cached, upstream down: 502, not a cached failure.
	if p := h.get("/fmt/linux-64/zlib-1.2.11-h7b6447c_3.tar.bz2"); p.StatusCode != http.StatusBadGateway {
		t.Errorf("uncached package while upstream down: %d, want 502", p.StatusCode)
	}
	cold := h.get("/fmt/win-32/repodata.json")
	if cold.StatusCode != http.StatusBadGateway {
		t.Errorf("uncached repodata while upstream down: %d, want 502", cold.StatusCode)
	}
	up.status.Store(0)
	if again := h.get("/fmt/win-32/repodata.json"); again.StatusCode != 200 {
		t.Errorf("after upstream recovered: %d (a failure was cached?)", again.StatusCode)
	}
	if v := h.metric(`condaproxy_stale_answers_total{channel="fmt"}`); v < 1 {
		t.Errorf("stale answers metric = %v", v)
	}
}

func TestNegativeTTL(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	for i := 0; i < 3; i++ {
		if r := h.get("/fmt/linux-aarch64/repodata.json"); r.StatusCode != 404 {
			t.Fatalf("missing subdir: %d", r.StatusCode)
		}
	}
	if n := up.countPrefix("/linux-aarch64/"); n != 2 {
		t.Errorf("upstream asked %d times within negative_ttl, want 2 (.zst, .json once)", n)
	}
	h.clock.advance(2 * time.Minute)
	h.get("/fmt/linux-aarch64/repodata.json")
	if n := up.countPrefix("/linux-aarch64/"); n != 4 {
		t.Errorf("after negative_ttl upstream asked %d times, want 4", n)
	}
	// noarch always exists for clients, even when upstream has none.
	empty := newUpstream(t, t.TempDir())
	h2 := newHarness(t, channelYAML("", empty.URL))
	if r := h2.get("/fmt/noarch/repodata.json"); r.StatusCode != 200 || len(filenames(t, r.body)) != 0 {
		t.Errorf("noarch without upstream: %d %s", r.StatusCode, r.body)
	}
}

func TestRestartKeepsCache(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	rd := h.get("/fmt/osx-64/repodata.json")
	pkg := h.get("/fmt/osx-64/" + zlibOSX)
	zst := h.get("/fmt/osx-64/repodata.json.zst")
	up.Close() // upstream gone for good
	h.restart()
	for _, c := range []struct {
		path string
		want resp
	}{{"/fmt/osx-64/repodata.json", rd}, {"/fmt/osx-64/" + zlibOSX, pkg}, {"/fmt/osx-64/repodata.json.zst", zst}} {
		r := h.get(c.path)
		if r.StatusCode != 200 || !bytes.Equal(r.body, c.want.body) {
			t.Errorf("%s after restart: %d", c.path, r.StatusCode)
		}
		if r.Header.Get("ETag") != c.want.Header.Get("ETag") || r.Header.Get("Last-Modified") != c.want.Header.Get("Last-Modified") {
			t.Errorf("%s: validators changed across restart", c.path)
		}
	}
}

func TestRange(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	file, _ := os.ReadFile(filepath.Join(formatRepo(t), "osx-64", "zlib-1.2.11-h1de35cc_3.conda"))
	cases := []struct {
		name, rng string
		want      []byte
	}{
		// conda-package-streaming reads the tail of a .conda first: on a cold file.
		{"cold suffix", "bytes=-10240", file[len(file)-10240:]},
		{"hot prefix", "bytes=0-99", file[:100]},
		{"hot middle", "bytes=1000-1999", file[1000:2000]},
		{"hot open end", "bytes=90000-", file[90000:]},
	}
	for _, c := range cases {
		r := h.get("/fmt/osx-64/zlib-1.2.11-h1de35cc_3.conda", "Range: "+c.rng)
		if r.StatusCode != 206 || !bytes.Equal(r.body, c.want) {
			t.Errorf("%s: %d, %d bytes", c.name, r.StatusCode, len(r.body))
		}
	}
	if r := h.get("/fmt/osx-64/zlib-1.2.11-h1de35cc_3.conda", "Range: bytes=999999-"); r.StatusCode != 416 {
		t.Errorf("unsatisfiable range: %d", r.StatusCode)
	}
	if n := up.count("/osx-64/zlib-1.2.11-h1de35cc_3.conda"); n != 1 {
		t.Errorf("upstream fetched %d times", n)
	}
}

// rawRequest sends a request line as written, bypassing Go's client, which would
// clean the path.
func rawRequest(t *testing.T, addr, target string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	r.Body.Close()
	return r.StatusCode
}

// traversalTargets are request targets that leave a channel's tree or spell a
// path two ways; every one must answer 400. FuzzRoute seeds from them too.
var traversalTargets = []string{
	"/fmt/../../etc/passwd",
	"/fmt/linux-64/../../../etc/passwd",
	"/fmt/linux-64/..%2f..%2fetc%2fpasswd",
	"/fmt/linux-64/%2e%2e/%2e%2e/x.conda",
	"/fmt/%2E%2E/linux-64/repodata.json",
	"/fmt/linux-64%2frepodata.json",
	"/fmt//linux-64/repodata.json",
	"/fmt/./linux-64/repodata.json",
	"/fmt/linux-64/..\\..\\x.conda",
	"/fmt/linux-64/%5c..%5cx.conda",
	"/fmt/linux-64/x%00.conda",
	"/t/../fmt/linux-64/repodata.json",
	"http://evil.invalid/fmt/linux-64/repodata.json",
}

func TestTraversalRefused(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	addr := strings.TrimPrefix(h.http.URL, "http://")
	for _, target := range traversalTargets {
		if got := rawRequest(t, addr, target); got != 400 {
			t.Errorf("%s: %d, want 400", target, got)
		}
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("traversal attempts reached upstream: %v", up.requests())
	}
	if got := rawRequest(t, addr, "/fmt/linux-64/repodata.json"); got != 200 {
		t.Errorf("plain path: %d", got)
	}
}

func TestClientTokens(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("auth:\n  tokens: [good-token, other]\n", up.URL))
	cases := []struct {
		path string
		hdr  []string
		want int
	}{
		{"/fmt/osx-64/repodata.json", nil, 401},
		{"/t/good-token/fmt/osx-64/repodata.json", nil, 200},
		{"/t/other/fmt/osx-64/" + zlibOSX, nil, 200},
		{"/t/bad/fmt/osx-64/repodata.json", nil, 401},
		{"/fmt/osx-64/repodata.json", []string{"Authorization: Bearer good-token"}, 200},
		{"/fmt/osx-64/repodata.json", []string{"Authorization: Bearer good-tokenx"}, 401},
		{"/fmt/osx-64/repodata.json", []string{"Authorization: Basic Z29vZC10b2tlbg=="}, 401},
		{"/t/good-token/nochannel/x", nil, 404},
	}
	for _, c := range cases {
		r := h.get(c.path, c.hdr...)
		if r.StatusCode != c.want {
			t.Errorf("%s %v: %d, want %d", c.path, c.hdr, r.StatusCode, c.want)
		}
		if r.StatusCode == 401 && r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", c.path)
		}
	}
	if strings.Contains(h.logs.String(), "good-token") {
		t.Error("a client token reached the log")
	}
}

// The upstream's token and password never reach a log line, even when it fails.
func TestUpstreamSecretsNeverLogged(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	up.token = "SEKRET-TOKEN"
	h := newHarness(t, channelYAML("", up.URL+"/t/SEKRET-TOKEN"))
	if r := h.get("/fmt/osx-64/" + zlibOSX); r.StatusCode != 200 {
		t.Fatalf("through a token upstream: %d %s", r.StatusCode, r.body)
	}
	up.status.Store(500)
	h.get("/fmt/win-32/repodata.json")
	h.get("/fmt/linux-64/" + zlibLinux)
	if strings.Contains(h.logs.String(), "SEKRET") {
		t.Error("the upstream token reached the log")
	}
	if !strings.Contains(h.logs.String(), "/t/***/") {
		t.Error("no redacted upstream URL in the log: the test proves nothing")
	}

	basic := newUpstream(t, formatRepo(t))
	basic.user, basic.pass = "bob", "hunter2-pass"
	yaml := "cache:\n  memory: 1MiB\nchannels:\n  - name: fmt\n    upstreams:\n      - url: " + basic.URL +
		"\n        username: bob\n        password: hunter2-pass\n"
	h2 := newHarness(t, yaml)
	if r := h2.get("/fmt/osx-64/" + zlibOSX); r.StatusCode != 200 {
		t.Errorf("basic-auth upstream: %d", r.StatusCode)
	}
	if strings.Contains(h2.logs.String(), "hunter2") {
		t.Error("the upstream password reached the log")
	}
}

func TestMethodsAndUnknownPaths(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	cases := []struct {
		method, path string
		want         int
	}{
		{"POST", "/fmt/osx-64/repodata.json", 405},
		{"DELETE", "/fmt/osx-64/" + zlibOSX, 405},
		{"GET", "/fmt/osx-64/notes.txt", 404},
		{"GET", "/fmt/Linux_64/repodata.json", 404},
		{"GET", "/fmt", 404},
		{"GET", "/nochannel/osx-64/repodata.json", 404},
		{"GET", "/healthz", 200},
		{"GET", "/readyz", 200},
		{"GET", "/metrics", 200},
	}
	for _, c := range cases {
		if r := h.do(c.method, c.path); r.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, r.StatusCode, c.want)
		}
	}
}
