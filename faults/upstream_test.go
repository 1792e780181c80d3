package faults

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/condaproxy/condaproxy/internal/testdata"
)

// pkg is one package file the upstream channel holds, with its repodata record.
type pkg struct {
	sub, fn string
	rec     map[string]any // the record, as repodata lists it
	data    []byte
	sha     string
	listed  func(gen int) bool // whether the repodata of generation gen lists it
}

// channel is the upstream in the test process: the real conda_format_repo channel
// of the shared testdata (zlib builds for five subdirs), plus synthetic packages the
// tests add, served by an httptest server on 127.0.0.1.
//
// Its repodata changes with a generation number the test advances, so a proxy's
// revalidations get new documents (and 304s within one generation). Package files
// are never removed: whatever repodata the proxy kept, its files stay fetchable, so a
// failed download is always the proxy's doing.
//
// With slow set, every answer is sent in small chunks with sleeps between, so a kill
// lands in the middle of fills and revalidations instead of between them.
type channel struct {
	srv         *httptest.Server
	subdirs     []string
	channeldata []byte
	slow        atomic.Bool

	mu   sync.Mutex
	gen  int
	pkgs map[string]*pkg // "subdir/filename" →
	hits map[string]int  // request path → count
	// other bytes a data directory may rightly hold as blobs (sha256 → size):
	// every body served (a proxy may keep metadata files as blobs too), and what
	// also adds
	other map[string]int64
}

// newChannel loads the testdata channel and starts serving it. Records whose file
// the testdata lacks (libgcc-ng) are left out: every listed file must download.
func newChannel(t *testing.T) *channel {
	t.Helper()
	dir := testdata.Path(t, "conda_format_repo")
	c := &channel{pkgs: map[string]*pkg{}, hits: map[string]int{}, other: map[string]int64{}}
	var err error
	if c.channeldata, err = os.ReadFile(filepath.Join(dir, "channeldata.json")); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name(), "repodata.json"))
		if !e.IsDir() || err != nil {
			continue
		}
		c.subdirs = append(c.subdirs, e.Name())
		var doc struct {
			Packages map[string]map[string]any `json:"packages"`
			Conda    map[string]map[string]any `json:"packages.conda"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s/repodata.json: %v", e.Name(), err)
		}
		for _, section := range []map[string]map[string]any{doc.Packages, doc.Conda} {
			for _, fn := range sortedKeys(section) {
				data, err := os.ReadFile(filepath.Join(dir, e.Name(), fn))
				if err != nil {
					continue
				}
				rec := section[fn]
				p := &pkg{sub: e.Name(), fn: fn, rec: rec, data: data, sha: sha256hex(data)}
				if rec["sha256"] != p.sha || int64(rec["size"].(float64)) != int64(len(data)) {
					t.Fatalf("testdata %s/%s does not match its record", e.Name(), fn)
				}
				// From the first generation on, a rotating quarter of the real records
				// drops out of the listing and comes back later.
				n := i
				p.listed = func(gen int) bool { return gen == 0 || (gen+n)%4 != 3 }
				i++
				c.pkgs[p.sub+"/"+fn] = p
			}
		}
	}
	if len(c.pkgs) == 0 {
		t.Fatalf("no package files in %s", dir)
	}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// add puts a synthetic package into subdir sub: data with a record that gives its
// true sha256, md5 and size, listed in the generations listed says.
func (c *channel) add(sub, name, version string, data []byte, listed func(gen int) bool) *pkg {
	p := makePkg(sub, name, version, data)
	p.listed = listed
	c.mu.Lock()
	c.pkgs[sub+"/"+p.fn] = p
	c.mu.Unlock()
	return p
}

// makePkg is the package name-version-0.tar.bz2 of subdir sub holding data,
// with a record that gives its true sha256, md5 and size.
func makePkg(sub, name, version string, data []byte) *pkg {
	m := md5.Sum(data)
	return &pkg{sub: sub, fn: name + "-" + version + "-0.tar.bz2", data: data, sha: sha256hex(data), rec: map[string]any{
		"name": name, "version": version, "build": "0", "build_number": 0,
		"depends": []string{}, "license": "MIT", "subdir": sub,
		"md5": hex.EncodeToString(m[:]), "sha256": sha256hex(data), "size": len(data),
		"timestamp": 1700000000000,
	}}
}

// synthetic returns n bytes drawn from seed: the same seed, the same bytes.
func synthetic(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// setGen moves the channel to generation g: the next repodata fetch sees it.
func (c *channel) setGen(g int) {
	c.mu.Lock()
	c.gen = g
	c.mu.Unlock()
}

// file is the package sub/fn, or nil.
func (c *channel) file(sub, fn string) *pkg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pkgs[sub+"/"+fn]
}

// also records files that are not upstream's but may rightly be blobs.
func (c *channel) also(files map[string]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for sha, size := range files {
		c.other[sha] = size
	}
}

// sizes maps the sha256 of every file upstream holds or served (and of those also
// added) to its size.
func (c *channel) sizes() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int64{}
	for sha, size := range c.other {
		out[sha] = size
	}
	for _, p := range c.pkgs {
		out[p.sha] = int64(len(p.data))
	}
	return out
}

// lists says whether the current generation lists p.
func (c *channel) lists(p *pkg) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return p.listed != nil && p.listed(c.gen)
}

// listedNow is every package the current generation lists.
func (c *channel) listedNow() []*pkg {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*pkg
	for _, k := range sortedKeys(c.pkgs) {
		if p := c.pkgs[k]; p.listed(c.gen) {
			out = append(out, p)
		}
	}
	return out
}

// hitCount is how many requests reached path.
func (c *channel) hitCount(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits[path]
}

// repodata is subdir sub's repodata.json at the current generation.
func (c *channel) repodata(sub string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	doc := map[string]any{
		"info": map[string]any{"subdir": sub}, "repodata_version": 1, "removed": []string{},
	}
	tar, conda := map[string]any{}, map[string]any{}
	for _, p := range c.pkgs {
		if p.sub != sub || !p.listed(c.gen) {
			continue
		}
		if strings.HasSuffix(p.fn, ".conda") {
			conda[p.fn] = p.rec
		} else {
			tar[p.fn] = p.rec
		}
	}
	doc["packages"], doc["packages.conda"] = tar, conda
	b, _ := json.Marshal(doc)
	return b
}

// runExports is a CEP-12 run_exports.json for linux-64's listed records: the
// testdata has none, and a client may fetch it.
func (c *channel) runExports(sub string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	tar, conda := map[string]any{}, map[string]any{}
	for _, p := range c.pkgs {
		if p.sub != sub || !p.listed(c.gen) {
			continue
		}
		re := map[string]any{"run_exports": map[string]any{"weak": []string{p.rec["name"].(string) + " >=" + p.rec["version"].(string)}}}
		if strings.HasSuffix(p.fn, ".conda") {
			conda[p.fn] = re
		} else {
			tar[p.fn] = re
		}
	}
	b, _ := json.Marshal(map[string]any{"info": map[string]any{"subdir": sub}, "packages": tar, "packages.conda": conda})
	return b
}

var zenc, _ = zstd.NewWriter(nil)

func (c *channel) serve(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.hits[r.URL.Path]++
	c.mu.Unlock()
	rel := strings.TrimPrefix(r.URL.Path, "/")
	sub, file, _ := strings.Cut(rel, "/")
	var body []byte
	mutable := true
	switch {
	case rel == "channeldata.json":
		body = c.channeldata
	case file == "repodata.json" && c.hasSubdir(sub):
		body = c.repodata(sub)
	case file == "repodata.json.zst" && c.hasSubdir(sub):
		body = zenc.EncodeAll(c.repodata(sub), nil)
	case file == "run_exports.json" && sub == "linux-64":
		body = c.runExports(sub)
	default:
		p := c.file(sub, file)
		if p == nil {
			http.NotFound(w, r)
			return
		}
		body, mutable = p.data, false
	}
	sha := sha256hex(body)
	c.mu.Lock()
	c.other[sha] = int64(len(body))
	c.mu.Unlock()
	etag := `"` + sha + `"`
	w.Header().Set("ETag", etag)
	if mutable && r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	chunk := 512
	if !mutable {
		chunk = 4 << 10
	}
	c.write(w, r, body, chunk)
}

func (c *channel) hasSubdir(sub string) bool {
	for _, s := range c.subdirs {
		if s == sub {
			return true
		}
	}
	return false
}

// write sends body with its length, while slow is set in chunks 3 ms apart: 4 KiB
// for packages, so a 100 KB one takes about 100 ms, and 512 bytes for metadata, so
// a revalidation takes tens of ms too. Kills then land inside them.
func (c *channel) write(w http.ResponseWriter, r *http.Request, body []byte, chunk int) {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	fl, _ := w.(http.Flusher)
	for off := 0; off < len(body); off += chunk {
		end := min(off+chunk, len(body))
		if _, err := w.Write(body[off:end]); err != nil {
			return
		}
		if c.slow.Load() {
			if fl != nil {
				fl.Flush()
			}
			time.Sleep(3 * time.Millisecond)
		}
	}
}
