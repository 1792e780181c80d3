package scale

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/internal/testdata"
)

// The upstream is a real channel, ../shared/testdata/conda_format_repo, whose
// zlib packages are real files listed in real repodata: a replica verifies what it
// fetched against those records, so a wrong or partial file cannot pass as right.

// pkg is one package file of the channel, with what its repodata says of it.
type pkg struct {
	subdir, file string
	sha          string
	size         int64
}

func (p pkg) path() string { return "/" + p.subdir + "/" + p.file }

// channelPackages reads every subdir's repodata.json and keeps the records whose
// file the channel really holds (its linux-64 repodata also lists a libgcc-ng it
// does not ship). Sorted, so a test names its files by index, each test its own.
func channelPackages(t *testing.T) []pkg {
	t.Helper()
	root := testdata.Path(t, "conda_format_repo")
	subdirs, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []pkg
	for _, sd := range subdirs {
		raw, err := os.ReadFile(filepath.Join(root, sd.Name(), "repodata.json"))
		if err != nil {
			continue
		}
		// Only the two record maps are read; "info" and the rest are skipped.
		var top map[string]json.RawMessage
		if err := json.Unmarshal(raw, &top); err != nil {
			t.Fatalf("%s/repodata.json: %v", sd.Name(), err)
		}
		for _, section := range []string{"packages", "packages.conda"} {
			var m map[string]struct {
				SHA256 string `json:"sha256"`
				Size   int64  `json:"size"`
			}
			if top[section] == nil {
				continue
			}
			if err := json.Unmarshal(top[section], &m); err != nil {
				t.Fatalf("%s/repodata.json %s: %v", sd.Name(), section, err)
			}
			for fn, r := range m {
				fi, err := os.Stat(filepath.Join(root, sd.Name(), fn))
				if err != nil || fi.Size() != r.Size || r.SHA256 == "" {
					continue
				}
				out = append(out, pkg{subdir: sd.Name(), file: fn, sha: r.SHA256, size: r.Size})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path() < out[j].path() })
	if len(out) < 6 {
		t.Fatalf("the test channel holds %d package files with records; the tests need 6", len(out))
	}
	return out
}

// upstream serves the channel's files as a plain static host would (Last-Modified,
// ETag, 304 on revalidation, 404 for what it lacks) and counts every request by
// path. A path set slow is sent in small chunked pieces with pauses, so a fill of
// it lasts long enough for concurrent misses to overlap and for a kill to land in
// its middle.
type upstream struct {
	srv  *httptest.Server
	root string

	mu     sync.Mutex
	counts map[string]int           // requests by path
	sent   map[string]int64         // body bytes written by path, all requests
	slow   map[string]time.Duration // pause between pieces, by path
}

// slowPiece is the size of one piece of a slow answer.
const slowPiece = 8 << 10

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{
		root:   testdata.Path(t, "conda_format_repo"),
		counts: map[string]int{},
		sent:   map[string]int64{},
		slow:   map[string]time.Duration{},
	}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	// Close waits for handlers; a slow answer stops as soon as its client goes.
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	p := path.Clean(r.URL.Path)
	u.mu.Lock()
	u.counts[p]++
	pause := u.slow[p]
	u.mu.Unlock()
	if strings.Contains(r.URL.Path, "..") {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	f, err := os.Open(filepath.Join(u.root, filepath.FromSlash(p)))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		http.NotFound(w, r)
		return
	}
	if pause == 0 || r.Method != http.MethodGet {
		w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
		cw := &countingWriter{ResponseWriter: w, u: u, path: p}
		http.ServeContent(cw, r, fi.Name(), fi.ModTime(), f)
		return
	}
	// No Content-Length: the body goes chunked, piece by piece, as from a slow CDN.
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, slowPiece)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			w.(http.Flusher).Flush()
			u.mu.Lock()
			u.sent[p] += int64(n)
			pause = u.slow[p] // the test may speed a path up mid-answer
			u.mu.Unlock()
		}
		if err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(pause):
		}
	}
}

// countingWriter counts the body bytes of a fast answer.
type countingWriter struct {
	http.ResponseWriter
	u    *upstream
	path string
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.u.mu.Lock()
	c.u.sent[c.path] += int64(n)
	c.u.mu.Unlock()
	return n, err
}

// count is how many requests path got.
func (u *upstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[path]
}

// bytesSent is how many body bytes path's answers carried so far.
func (u *upstream) bytesSent(path string) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sent[path]
}

// setSlow makes path's answers pause between pieces (0: at full speed).
func (u *upstream) setSlow(path string, pause time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.slow[path] = pause
}

// repodataFetches counts the requests for subdir's repodata.json. The upstream
// has that form only, so every fetch or revalidation a replica makes ends in
// exactly one request for it, whatever compressed forms it probes first (their
// 404s are not counted): this is the number of times upstream was asked whether
// the subdir changed.
func (u *upstream) repodataFetches(subdir string) int {
	return u.count("/" + subdir + "/repodata.json")
}

// requests lists every path asked with its count, for a failure message.
func (u *upstream) requests() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var lines []string
	for p, c := range u.counts {
		lines = append(lines, fmt.Sprintf("%s ×%d", p, c))
	}
	sort.Strings(lines)
	return strings.Join(lines, ", ")
}
