package faults

import (
	"bytes"
	"compress/bzip2"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/condaproxy/condaproxy/internal/testproc"
)

// bin is the condaproxy binary TestMain builds: the tests run the real program,
// as an operator does, so a fault reaches every layer at once.
var bin string

func TestMain(m *testing.M) {
	os.Exit(testproc.RunWithBinary(m, "faults", &bin))
}

// --- configuration ---------------------------------------------------------------

// setup is what a test's configuration file says. The channel is always called
// "fault"; only the port changes from one start to the next, so the file is written
// again before each start.
type setup struct {
	path     string // the configuration file
	data     string // the data directory
	upstream string // the channel's upstream URL
	cache    string // the body of the cache: section, each line indented by two spaces
}

func (s setup) write(t *testing.T, port int) {
	t.Helper()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:%d
data: %s
log:
  level: info
  format: text
cache:
%s
channels:
  - name: fault
    upstreams:
      - url: %s
`, port, s.data, s.cache, s.upstream)
	if err := os.WriteFile(s.path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// --- processes -------------------------------------------------------------------

// proc is one condaproxy process the test started.
type proc = testproc.Proc

// startProc runs the binary with args. The environment's CONDAPROXY_CONFIG is
// cleared so only -c counts.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	return testproc.Start(t, []string{"CONDAPROXY_CONFIG="}, bin, args...)
}

// server is a serving condaproxy process and its base URL.
type server struct {
	*proc
	base string
}

// startServer starts `condaproxy serve -c` on a fresh port and waits for /healthz.
// A port taken between the kernel's offer and the bind is retried with another.
func startServer(t *testing.T, s setup) *server {
	t.Helper()
	var srv *server
	p, err := testproc.OnFreePort(t, func(port int) (*proc, error) {
		s.write(t, port)
		p := startProc(t, "serve", "-c", s.path)
		srv = &server{proc: p, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
		return p, p.WaitHealthy(client, srv.base, 30*time.Second)
	})
	if err != nil {
		t.Fatalf("condaproxy serve did not become healthy: %v (exit: %v)\noutput:\n%s", err, p.Err(), p.Out.String())
	}
	return srv
}

// startServerNoWait starts serve without waiting for it, for kills that must land
// while it opens its data directory.
func startServerNoWait(t *testing.T, s setup) *server {
	t.Helper()
	port := testproc.FreePort(t)
	s.write(t, port)
	return &server{proc: startProc(t, "serve", "-c", s.path), base: fmt.Sprintf("http://127.0.0.1:%d", port)}
}

// --- HTTP --------------------------------------------------------------------------

// client opens a new connection for every request: processes come and go on new
// ports, and a kept-alive connection to a killed one would only add noise.
var client = &http.Client{
	Timeout:   15 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true},
}

// get fetches url. err is set when the transfer broke (connection refused or
// reset, short body): then code and body describe what arrived before.
func get(url string) (code int, body []byte, err error) {
	resp, body, err := do(http.MethodGet, url, "")
	if resp == nil {
		return 0, nil, err
	}
	return resp.StatusCode, body, err
}

// do sends method to url, with a Range header when rng is set, and reads the whole
// answer. resp is nil when no answer came; err is set when the body broke off.
func do(method, url, rng string) (resp *http.Response, body []byte, err error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, nil, err
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err = client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp, body, err
}

// mustGet fetches url and fails the test unless it answers 200 in full.
func mustGet(t *testing.T, url string) []byte {
	t.Helper()
	code, body, err := get(url)
	if err != nil || code != http.StatusOK {
		t.Errorf("GET %s: %d %v: %.300s", url, code, err, body)
		return nil
	}
	return body
}

// decodeRepodata undoes the form's compression (by the URL's extension) and
// parses the document: a complete answer of any form must be whole JSON.
func decodeRepodata(name string, body []byte) (*repodataDoc, error) {
	var r io.Reader = bytes.NewReader(body)
	switch {
	case strings.HasSuffix(name, ".zst"):
		d, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		r = d
	case strings.HasSuffix(name, ".bz2"):
		r = bzip2.NewReader(r)
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decompress: %w", err)
	}
	var doc repodataDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return &doc, nil
}

// repodataDoc is the part of a repodata document the checks read.
type repodataDoc struct {
	Packages map[string]recordSum `json:"packages"`
	Conda    map[string]recordSum `json:"packages.conda"`
}

type recordSum struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// records is every filename the document lists, with its record.
func (d *repodataDoc) records() map[string]recordSum {
	out := map[string]recordSum{}
	for fn, r := range d.Packages {
		out[fn] = r
	}
	for fn, r := range d.Conda {
		out[fn] = r
	}
	return out
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// --- the data directory, read directly ------------------------------------------------

var (
	shaName = regexp.MustCompile(`^[0-9a-f]{64}$`)
	fanOut  = regexp.MustCompile(`^[0-9a-f]{2}$`)
)

// checkBlobs reads <data>/blobs itself: every file must sit at blobs/<sha[:2]>/<sha>
// and hash to its name, so nothing partial or misplaced is ever visible there. Each
// blob must also be bytes the test knows (sizes maps sha256 → size: what upstream
// served, what an import brought) or a whole JSON document, the metadata the proxy
// derives itself (run_exports.json cut to the served records): anything else would
// be bytes from nowhere. It returns the blobs found.
// A file that vanishes while being read was evicted by a running server: skipped.
func checkBlobs(t *testing.T, data string, sizes map[string]int64) map[string]bool {
	t.Helper()
	found := map[string]bool{}
	root := filepath.Join(data, "blobs")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if rel != "." && !fanOut.MatchString(rel) {
				t.Errorf("blobs/%s: a directory that is not a two-hex-digit fan-out", rel)
			}
			return nil
		}
		name := d.Name()
		if !shaName.MatchString(name) || filepath.Dir(rel) != name[:2] {
			t.Errorf("blobs/%s: not a blob path blobs/<sha[:2]>/<sha>: a partial or stray file is visible", rel)
			return nil
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if got := sha256hex(b); got != name {
			t.Errorf("blobs/%s: %d bytes hashing to %s: a blob that is not its name is visible", rel, len(b), got)
		}
		if size, ok := sizes[name]; !ok {
			if !json.Valid(b) {
				t.Errorf("blobs/%s: %d bytes that are neither a file upstream served or the test imported nor JSON: %.100q", rel, len(b), b)
			}
		} else if size != int64(len(b)) {
			t.Errorf("blobs/%s: %d bytes, upstream's file has %d", rel, len(b), size)
		}
		found[name] = true
		return nil
	})
	if err != nil {
		t.Errorf("read %s: %v", root, err)
	}
	return found
}

// tmpEntries lists <data>/tmp, where fills in progress live.
func tmpEntries(t *testing.T, data string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(data, "tmp"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("read tmp/: %v", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// waitTmpEmpty waits up to limit for <data>/tmp to be empty: a fill that is being
// abandoned may need a moment to remove its file. It returns what is left.
func waitTmpEmpty(t *testing.T, data string, limit time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		left := tmpEntries(t, data)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(25 * time.Millisecond)
	}
}
