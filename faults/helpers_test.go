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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/condaproxy/condaproxy/internal/testdata"
)

// bin is the condaproxy binary TestMain builds: the tests run the real program,
// as an operator does, so a fault reaches every layer at once.
var bin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds the binary once for every test of the package, in a temp dir it
// removes afterwards.
func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "condaproxy-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	bin = filepath.Join(dir, "condaproxy")
	build := exec.Command("go", "build", "-o", bin, "./cmd/condaproxy")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "faults: go build ./cmd/condaproxy: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// repoRoot is the directory holding go.mod, above the test's working directory.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
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

// freePort asks the kernel for a free loopback port. It is released before the
// proxy takes it, so startServer retries when another process got there first.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// --- processes -------------------------------------------------------------------

// proc is one condaproxy process the test started. out collects its stdout and
// stderr, shown when something about it fails.
type proc struct {
	cmd  *exec.Cmd
	out  *testdata.Buffer
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // cmd.Wait's result, once done is closed
}

// startProc runs the binary with args. The environment's CONDAPROXY_CONFIG is
// cleared so only -c counts. A Cleanup kills what is left running, so a failing
// test never leaves a process behind; and on Linux the kernel kills it if the
// test process dies first (a test timeout runs no Cleanup).
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{out: &testdata.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.Env = append(os.Environ(), "CONDAPROXY_CONFIG=")
	dieWithTest(p.cmd)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start condaproxy %v: %v", args, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	return p
}

// wait waits up to limit for the process to end by itself and returns why it did
// not end well: a non-zero status, or no exit in time (then it is killed).
func (p *proc) wait(limit time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(limit):
		p.kill()
		return fmt.Errorf("still running after %v; killed", limit)
	}
}

// exited says whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits until the process is reaped: only then are its
// locks released and its files closed, as after a real crash.
func (p *proc) kill() {
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// stop sends SIGTERM and waits up to timeout for a clean exit; it returns why the
// stop was not clean (a non-zero status, or no exit in time, then SIGKILL).
func (p *proc) stop(timeout time.Duration) error {
	if p.exited() {
		return fmt.Errorf("had already exited: %v", p.err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("exited with %v after SIGTERM, want status 0", p.err)
		}
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("did not exit within %v of SIGTERM; killed", timeout)
	}
}

// server is a serving condaproxy process and its base URL.
type server struct {
	*proc
	base string
}

// startServer starts `condaproxy serve -c` on a fresh port and waits for /healthz.
// A port taken between freePort and the bind is retried with another.
func startServer(t *testing.T, s setup) *server {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		s.write(t, port)
		p := startProc(t, "serve", "-c", s.path)
		srv := &server{proc: p, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
		err := srv.waitHealthy(30 * time.Second)
		if err == nil {
			return srv
		}
		p.kill()
		if attempt < 3 && strings.Contains(p.out.String(), "address already in use") {
			continue
		}
		t.Fatalf("condaproxy serve did not become healthy: %v (exit: %v)\noutput:\n%s", err, p.err, p.out.String())
	}
}

// startServerNoWait starts serve without waiting for it, for kills that must land
// while it opens its data directory.
func startServerNoWait(t *testing.T, s setup) *server {
	t.Helper()
	port := freePort(t)
	s.write(t, port)
	return &server{proc: startProc(t, "serve", "-c", s.path), base: fmt.Sprintf("http://127.0.0.1:%d", port)}
}

func (s *server) waitHealthy(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if code, _, err := get(s.base + "/healthz"); err == nil && code == http.StatusOK {
			return nil
		}
		if s.exited() {
			return errors.New("process exited")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no 200 from /healthz within %v", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
