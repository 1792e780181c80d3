package main

// End-to-end tests of the mirror commands (sync, clean, export, import,
// sync --mirror-config) through the real command line (run), on real Pebble data
// directories in t.TempDir(), against httptest upstreams on 127.0.0.1 that serve the
// real Anaconda zlib channel of the shared testdata and count every request.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/condaproxy/condaproxy/mirror"
)

// ---------------------------------------------------------------------------
// Fixtures

// mxFile is one package of a test channel, with its true digest.
type mxFile struct {
	Subdir, Filename string
	SHA256           string
	Size             int64
}

func (f mxFile) path() string { return f.Subdir + "/" + f.Filename }

// mxChannel is a channel directory built in a temp dir from the real zlib channel.
type mxChannel struct {
	dir   string
	files []mxFile // sorted by path
}

func (c *mxChannel) bytes() int64 {
	var n int64
	for _, f := range c.files {
		n += f.Size
	}
	return n
}

func (c *mxChannel) paths() []string {
	var out []string
	for _, f := range c.files {
		out = append(out, f.path())
	}
	return out
}

func (c *mxChannel) file(p string) mxFile {
	for _, f := range c.files {
		if f.path() == p {
			return f
		}
	}
	panic("no file " + p)
}

// mxMiniChannel copies the real zlib channel's package files into a temp dir and
// writes, for every subdir, a repodata.json holding exactly the records whose file
// is there (their raw JSON from the real repodata, so their true sha256 and size).
// skip names subdir/filename records (and files) to leave out.
func mxMiniChannel(t *testing.T, skip ...string) *mxChannel {
	t.Helper()
	src := testdata.Path(t, "conda_format_repo")
	dst := t.TempDir()
	c := &mxChannel{dir: dst}
	if b, err := os.ReadFile(filepath.Join(src, "channeldata.json")); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(filepath.Join(dst, "channeldata.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"noarch", "linux-64", "osx-64", "win-32", "win-64"} {
		if err := os.MkdirAll(filepath.Join(dst, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(src, sub, "repodata.json"))
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		for _, section := range []string{"packages", "packages.conda"} {
			var recs map[string]json.RawMessage
			if err := json.Unmarshal(doc[section], &recs); err != nil {
				t.Fatal(err)
			}
			for fn, rec := range recs {
				data, err := os.ReadFile(filepath.Join(src, sub, fn))
				if err != nil || slices.Contains(skip, sub+"/"+fn) {
					delete(recs, fn) // one of the records whose file the testdata lacks
					continue
				}
				var r struct {
					SHA256 string `json:"sha256"`
					Size   int64  `json:"size"`
				}
				if err := json.Unmarshal(rec, &r); err != nil {
					t.Fatal(err)
				}
				if got := mxSHA(data); got != r.SHA256 || int64(len(data)) != r.Size {
					t.Fatalf("testdata %s/%s: sha256 %s size %d, its record says %s %d", sub, fn, got, len(data), r.SHA256, r.Size)
				}
				if err := os.WriteFile(filepath.Join(dst, sub, fn), data, 0o644); err != nil {
					t.Fatal(err)
				}
				c.files = append(c.files, mxFile{sub, fn, r.SHA256, r.Size})
			}
			doc[section], _ = json.Marshal(recs)
		}
		out, _ := json.MarshalIndent(doc, "", "  ")
		if err := os.WriteFile(filepath.Join(dst, sub, "repodata.json"), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sort.Slice(c.files, func(i, j int) bool { return c.files[i].path() < c.files[j].path() })
	if len(c.files) != 8-len(skip) {
		t.Fatalf("mini channel has %d files, want the 8 real zlib files less %d skipped", len(c.files), len(skip))
	}
	return c
}

// mxAddBack puts a skipped record and its file back into the channel (upstream
// publishes a new package), with a newer mtime so a conditional request sees it.
func mxAddBack(t *testing.T, c *mxChannel, p string) mxFile {
	t.Helper()
	full := mxMiniChannel(t)
	f := full.file(p)
	sub := f.Subdir
	for _, name := range []string{"repodata.json", f.Filename} {
		b, err := os.ReadFile(filepath.Join(full.dir, sub, name))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(c.dir, sub, name)
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Hour)
		os.Chtimes(dst, later, later)
	}
	c.files = append(c.files, f)
	sort.Slice(c.files, func(i, j int) bool { return c.files[i].path() < c.files[j].path() })
	return f
}

func mxSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func mxIsPackage(p string) bool {
	return strings.HasSuffix(p, ".conda") || strings.HasSuffix(p, ".tar.bz2")
}

// mxUpstream serves a channel directory under a path prefix and counts requests.
type mxUpstream struct {
	*httptest.Server
	dir, prefix string
	mu          sync.Mutex
	hits        map[string]int // path below the prefix → requests
	// slow: package bodies go out in 4 KiB chunks with a pause after each.
	slow atomic.Bool
	// inflight counts the requests being answered.
	inflight atomic.Int64
}

func newMxUpstream(t *testing.T, dir, prefix string) *mxUpstream {
	t.Helper()
	u := &mxUpstream{dir: dir, prefix: prefix, hits: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

// url is the channel's URL.
func (u *mxUpstream) url() string { return u.Server.URL + u.prefix }

func (u *mxUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.inflight.Add(1)
	defer u.inflight.Add(-1)
	p, ok := strings.CutPrefix(r.URL.Path, u.prefix+"/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	u.mu.Lock()
	u.hits[p]++
	u.mu.Unlock()
	f := filepath.Join(u.dir, filepath.FromSlash(p))
	info, err := os.Stat(f)
	if err != nil || info.IsDir() {
		http.NotFound(w, r)
		return
	}
	data, err := os.ReadFile(f)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	if mxIsPackage(p) && u.slow.Load() && r.Method == http.MethodGet {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		for i := 0; i < len(data); i += 4 << 10 {
			if _, err := w.Write(data[i:min(i+4<<10, len(data))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		return
	}
	http.ServeContent(w, r, filepath.Base(f), info.ModTime(), bytes.NewReader(data))
}

// pkgHits is a copy of the package requests by path.
func (u *mxUpstream) pkgHits() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := map[string]int{}
	for p, n := range u.hits {
		if mxIsPackage(p) {
			out[p] = n
		}
	}
	return out
}

func (u *mxUpstream) pkgTotal() int {
	n := 0
	for _, c := range u.pkgHits() {
		n += c
	}
	return n
}

func (u *mxUpstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.hits {
		n += c
	}
	return n
}

// mxChan is one channel of a test configuration.
type mxChan struct {
	name  string
	urls  []string
	extra string // more keys of the channel, each line indented by 4 spaces
}

// mxConfig writes a configuration on the data directory data and returns its path.
func mxConfig(t *testing.T, data string, chans ...mxChan) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "data: %s\nlisten: \"127.0.0.1:0\"\ncache:\n  memory: 16MiB\nlog:\n  level: error\n  format: text\n", data)
	if len(chans) > 0 {
		b.WriteString("channels:\n")
	}
	for _, c := range chans {
		fmt.Fprintf(&b, "  - name: %s\n", c.name)
		if len(c.urls) > 0 {
			b.WriteString("    upstreams:\n")
			for _, u := range c.urls {
				fmt.Fprintf(&b, "      - url: %s\n", u)
			}
		}
		b.WriteString(c.extra)
	}
	p := filepath.Join(t.TempDir(), "condaproxy.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// mxRun runs the command line, bounded by 60 s.
func mxRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code = run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// mxMustRun runs the command line and fails the test unless it exits 0.
func mxMustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := mxRun(t, args...)
	if code != 0 {
		t.Fatalf("%v: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out
}

// mxBlobs lists <data>/blobs: every blob file, by name (its sha256).
func mxBlobs(t *testing.T, data string) []string {
	t.Helper()
	var out []string
	root := filepath.Join(data, "blobs")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func mxHasBlob(t *testing.T, data, sha string) bool {
	_, err := os.Stat(filepath.Join(data, "blobs", sha[:2], sha))
	return err == nil
}

func mxTmpFiles(t *testing.T, data string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(data, "tmp"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// mxServer is `condaproxy serve` running in a goroutine on a free loopback port.
type mxServer struct {
	base   string
	cancel context.CancelFunc
	done   chan struct{}
	code   int
	stderr *testdata.Buffer
}

func mxServe(t *testing.T, cfg string) *mxServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	s := &mxServer{base: "http://" + addr, cancel: cancel, done: make(chan struct{}), stderr: &testdata.Buffer{}}
	go func() {
		s.code = run(ctx, []string{"serve", "-c", cfg, "--listen", addr}, io.Discard, s.stderr)
		close(s.done)
	}()
	t.Cleanup(func() { s.stop(t) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("serve exited %d before answering:\n%s", s.code, s.stderr.String())
		default:
		}
		if r, err := http.Get(s.base + "/healthz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not answer /healthz within 10 s:\n%s", s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *mxServer) stop(t *testing.T) {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		t.Errorf("serve did not stop within 15 s")
	}
}

// mxGet fetches base+p; status 0 and the error text when the request failed.
func mxGet(t *testing.T, u string) (int, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Accept-Encoding", "identity")
	r, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return 0, []byte("body broke off: " + err.Error())
	}
	return r.StatusCode, b
}

// mxRecords returns the filenames of a repodata.json (packages and packages.conda).
func mxRecords(t *testing.T, body []byte) []string {
	t.Helper()
	var doc struct {
		Packages      map[string]json.RawMessage `json:"packages"`
		PackagesConda map[string]json.RawMessage `json:"packages.conda"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("not a repodata.json: %v: %.200s", err, body)
	}
	out := []string{}
	for fn := range doc.Packages {
		out = append(out, fn)
	}
	for fn := range doc.PackagesConda {
		out = append(out, fn)
	}
	sort.Strings(out)
	return out
}

// mxTar is an export tar read back by the test (archive/tar, not the code under test).
type mxTar struct {
	manifest mirror.Manifest
	names    []string          // entries in order
	data     map[string][]byte // entry → bytes
	offset   map[string]int64  // entry → offset of its data in the tar
	raw      []byte
}

func mxReadTar(t *testing.T, p string) *mxTar {
	t.Helper()
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	x := &mxTar{data: map[string][]byte{}, offset: map[string]int64{}, raw: raw}
	br := bytes.NewReader(raw)
	tr := tar.NewReader(br)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: not a readable tar: %v", p, err)
		}
		off := int64(len(raw)) - int64(br.Len())
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw[off:off+int64(len(b))], b) {
			t.Fatalf("tar entry %s: data offset not found", hdr.Name)
		}
		x.names = append(x.names, hdr.Name)
		x.data[hdr.Name] = b
		x.offset[hdr.Name] = off
	}
	if len(x.names) == 0 || x.names[0] != mirror.ManifestName {
		t.Fatalf("%s: first entry is not %s: %v", p, mirror.ManifestName, x.names)
	}
	if err := json.Unmarshal(x.data[mirror.ManifestName], &x.manifest); err != nil {
		t.Fatalf("%s: manifest: %v", p, err)
	}
	return x
}

// packages returns the manifest's package paths, sorted.
func (x *mxTar) packages() []string {
	var out []string
	for _, f := range x.manifest.Files {
		if mxIsPackage(f.Path) {
			out = append(out, f.Path)
		}
	}
	sort.Strings(out)
	return out
}

// mxUntar writes the tar's entries (not the manifest) under dir.
func mxUntar(t *testing.T, x *mxTar, dir string) {
	t.Helper()
	for _, n := range x.names[1:] {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, x.data[n], 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// mxPrefixed is the channel's file paths, each under prefix.
func mxPrefixed(prefix string, paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = prefix + "/" + p
	}
	sort.Strings(out)
	return out
}

func mxKeys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// mxSynced builds a mini channel, an upstream for it, and a data directory the
// channel "zlib" was synced into. It returns the channel, upstream, data dir and
// configuration file.
func mxSynced(t *testing.T, skip ...string) (*mxChannel, *mxUpstream, string, string) {
	t.Helper()
	ch := mxMiniChannel(t, skip...)
	up := newMxUpstream(t, ch.dir, "/zlib")
	data := filepath.Join(t.TempDir(), "data")
	cfg := mxConfig(t, data, mxChan{name: "zlib", urls: []string{up.url()}})
	out := mxMustRun(t, "sync", "-c", cfg)
	if want := fmt.Sprintf("fetched %d files", len(ch.files)); !strings.Contains(out, want) {
		t.Fatalf("sync: stdout lacks %q:\n%s", want, out)
	}
	return ch, up, data, cfg
}

// ---------------------------------------------------------------------------
// 1. sync

func TestMirrorSyncOnceThenNothing(t *testing.T) {
	ch := mxMiniChannel(t)
	up := newMxUpstream(t, ch.dir, "/zlib")
	data := filepath.Join(t.TempDir(), "data")
	cfg := mxConfig(t, data, mxChan{name: "zlib", urls: []string{up.url()}})
	n := len(ch.files)

	// --dry-run: counts and bytes, and no package request.
	out := mxMustRun(t, "sync", "-c", cfg, "--dry-run")
	if want := fmt.Sprintf("would fetch %d files (%s)", n, human(ch.bytes())); !strings.Contains(out, want) {
		t.Errorf("sync --dry-run: stdout lacks %q:\n%s", want, out)
	}
	if got := up.pkgHits(); len(got) != 0 {
		t.Errorf("sync --dry-run made package requests: %v", got)
	}
	for _, f := range ch.files {
		if mxHasBlob(t, data, f.SHA256) {
			t.Errorf("sync --dry-run stored %s", f.path())
		}
	}

	// The first sync fetches each file exactly once.
	out = mxMustRun(t, "sync", "-c", cfg, "--jobs", "2")
	if want := fmt.Sprintf("fetched %d files (%s), 0 already there", n, human(ch.bytes())); !strings.Contains(out, want) {
		t.Errorf("first sync: stdout lacks %q:\n%s", want, out)
	}
	hits := up.pkgHits()
	if !slices.Equal(mxKeys(hits), ch.paths()) {
		t.Errorf("first sync asked upstream for %v, want every file of %v", mxKeys(hits), ch.paths())
	}
	for p, c := range hits {
		if c != 1 {
			t.Errorf("first sync: %s requested %d times upstream, want 1", p, c)
		}
	}
	for _, f := range ch.files {
		if !mxHasBlob(t, data, f.SHA256) {
			t.Errorf("after sync, no blob for %s (%s)", f.path(), f.SHA256)
		}
	}
	if tmp := mxTmpFiles(t, data); len(tmp) != 0 {
		t.Errorf("after sync, %s/tmp holds %v", data, tmp)
	}

	// A second sync fetches nothing.
	before := up.pkgTotal()
	out = mxMustRun(t, "sync", "-c", cfg, "--jobs", "2")
	if want := fmt.Sprintf("fetched 0 files (0 B), %d already there, 0 failed", n); !strings.Contains(out, want) {
		t.Errorf("second sync: stdout lacks %q:\n%s", want, out)
	}
	if got := up.pkgTotal(); got != before {
		t.Errorf("second sync made %d package requests upstream, want 0: %v", got-before, up.pkgHits())
	}
	out = mxMustRun(t, "sync", "-c", cfg, "--dry-run")
	if want := fmt.Sprintf("%d cached, would fetch 0 files (0 B)", n); !strings.Contains(out, want) {
		t.Errorf("dry run after sync: stdout lacks %q:\n%s", want, out)
	}
	if got := up.pkgTotal(); got != before {
		t.Errorf("dry run after sync made %d package requests", got-before)
	}

	// --reset hashes every cached file again and fetches nothing.
	out = mxMustRun(t, "sync", "-c", cfg, "--reset")
	if want := fmt.Sprintf("%d re-verified (0 dropped", n); !strings.Contains(out, want) {
		t.Errorf("sync --reset: stdout lacks %q:\n%s", want, out)
	}
	if got := up.pkgTotal(); got != before {
		t.Errorf("sync --reset of intact files made %d package requests", got-before)
	}

	// Bad --jobs is usage.
	for _, j := range []string{"0", "65"} {
		if code, _, errOut := mxRun(t, "sync", "-c", cfg, "--jobs", j); code != 2 || !strings.Contains(errOut, "--jobs") {
			t.Errorf("sync --jobs %s: exit %d, stderr %q; want 2 naming --jobs", j, code, errOut)
		}
	}
}

// A record whose file upstream lacks is reported with its reason, does not stop
// the others, and makes the exit status 1: the real conda_format_repo lists four.
func TestMirrorSyncReports404(t *testing.T) {
	repo := testdata.Path(t, "conda_format_repo")
	up := newMxUpstream(t, repo, "/fmt")
	data := filepath.Join(t.TempDir(), "data")
	cfg := mxConfig(t, data, mxChan{name: "fmt", urls: []string{up.url()}})
	code, out, errOut := mxRun(t, "sync", "-c", cfg, "--jobs", "2")
	if code != 1 {
		t.Errorf("sync with 4 files missing upstream: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	missing := []string{
		"fmt/linux-64/libgcc-ng-8.2.0-hdf63c60_1.tar.bz2",
		"fmt/win-64/vc-14.1-h0510ff6_4.tar.bz2",
		"fmt/win-64/vs2015_runtime-14.15.26706-h3a45250_4.tar.bz2",
		"fmt/win-64/zlib-1.2.8-0.tar.bz2",
	}
	for _, m := range missing {
		if want := "failed: " + m + ": not found upstream (404)"; !strings.Contains(out, want) {
			t.Errorf("sync: stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "fetched 8 files") || !strings.Contains(out, "4 failed") {
		t.Errorf("sync: stdout lacks \"fetched 8 files\" and \"4 failed\":\n%s", out)
	}
	if !strings.Contains(errOut, "4 files failed") {
		t.Errorf("sync: stderr lacks \"4 files failed\": %q", errOut)
	}
	mini := mxMiniChannel(t)
	for _, f := range mini.files {
		if !mxHasBlob(t, data, f.SHA256) {
			t.Errorf("the 404s stopped %s from being fetched", f.path())
		}
	}
	// Each real file once; a missing one is not hammered (at most the upstream
	// client's retries of a 404: none).
	for p, c := range up.pkgHits() {
		if c != 1 {
			t.Errorf("%s requested %d times upstream, want 1", p, c)
		}
	}
	// Again: the 8 are there, the 4 still fail, exit 1 again.
	code, out, _ = mxRun(t, "sync", "-c", cfg)
	if code != 1 || !strings.Contains(out, "fetched 0 files") || !strings.Contains(out, "8 already there") || !strings.Contains(out, "4 failed") {
		t.Errorf("second sync: exit %d, want 1 with fetched 0, 8 already there, 4 failed:\n%s", code, out)
	}
}

// --channel limits the sync to that channel; an unknown channel is usage (exit 2).
func TestMirrorSyncChannelFlag(t *testing.T) {
	ch := mxMiniChannel(t)
	upA := newMxUpstream(t, ch.dir, "/a")
	upB := newMxUpstream(t, ch.dir, "/b")
	data := filepath.Join(t.TempDir(), "data")
	cfg := mxConfig(t, data,
		mxChan{name: "a", urls: []string{upA.url()}},
		mxChan{name: "b", urls: []string{upB.url()}, extra: "    platforms: [osx-64]\n"},
		mxChan{name: "inst", urls: []string{"http://127.0.0.1:1/inst"}, extra: "    kind: files\n"})
	out := mxMustRun(t, "sync", "-c", cfg, "--channel", "b")
	if !strings.Contains(out, "fetched 2 files") {
		t.Errorf("sync --channel b: stdout lacks \"fetched 2 files\":\n%s", out)
	}
	if n := upA.total(); n != 0 {
		t.Errorf("sync --channel b made %d requests to channel a's upstream", n)
	}
	wantB := []string{"osx-64/zlib-1.2.11-h1de35cc_3.conda", "osx-64/zlib-1.2.11-h1de35cc_3.tar.bz2"}
	if got := mxKeys(upB.pkgHits()); !slices.Equal(got, wantB) {
		t.Errorf("sync --channel b fetched %v, want %v", got, wantB)
	}
	for _, bad := range [][]string{{"--channel", "nope"}, {"--channel", "b", "--channel", "nope"}, {"--channel", "inst"}} {
		args := append([]string{"sync", "-c", cfg}, bad...)
		code, out, errOut := mxRun(t, args...)
		name := bad[len(bad)-1]
		if code != 2 || !strings.Contains(errOut, `"`+name+`"`) {
			t.Errorf("sync %v: exit %d, stderr %q; want 2 naming %q (SPEC: bad usage is exit 2)\nstdout: %s", bad, code, errOut, name, out)
		}
	}
	if n := upA.total(); n != 0 {
		t.Errorf("the refused syncs made %d requests to channel a's upstream", n)
	}
}

// ---------------------------------------------------------------------------
// 2. kill -9 mid-sync, then resume

const mxKillChildEnv = "CONDAPROXY_TEST_SYNC_CHILD_CONFIG"

// TestMirrorSyncKillChild is the child of TestMirrorSyncKilledResumes: it runs a
// sync and is killed with SIGKILL in the middle.
func TestMirrorSyncKillChild(t *testing.T) {
	cfg := os.Getenv(mxKillChildEnv)
	if cfg == "" {
		t.Skip("runs only as the child of TestMirrorSyncKilledResumes")
	}
	code := run(context.Background(), []string{"sync", "-c", cfg, "--jobs", "1"}, os.Stdout, os.Stderr)
	os.Exit(code)
}

func TestMirrorSyncKilledResumes(t *testing.T) {
	ch := mxMiniChannel(t)
	up := newMxUpstream(t, ch.dir, "/zlib")
	up.slow.Store(true) // ~0.5 s a file, one at a time: ~4 s in all
	data := filepath.Join(t.TempDir(), "data")
	cfg := mxConfig(t, data, mxChan{name: "zlib", urls: []string{up.url()}})

	var childOut testdata.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestMirrorSyncKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), mxKillChildEnv+"="+cfg)
	cmd.Stdout, cmd.Stderr = &childOut, &childOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(30 * time.Second)
poll:
	for {
		select {
		case err := <-exited:
			t.Fatalf("the sync child ended (%v) before it was killed; the upstream is not slow enough:\n%s", err, childOut.String())
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("no blob committed within 30 s:\n%s", childOut.String())
		case <-time.After(10 * time.Millisecond):
			for _, f := range ch.files {
				if mxHasBlob(t, data, f.SHA256) {
					break poll
				}
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the killed child did not go away")
	}
	// Requests the child sent before it died may still be read and answered by the
	// upstream: wait until it is idle and its count stands still.
	idleSince, last := time.Now(), -1
	for stop := time.Now().Add(10 * time.Second); time.Now().Before(stop); time.Sleep(20 * time.Millisecond) {
		n := up.total()
		if n != last || up.inflight.Load() != 0 {
			idleSince, last = time.Now(), n
		} else if time.Since(idleSince) > 300*time.Millisecond {
			break
		}
	}
	committed := map[string]bool{}
	for _, f := range ch.files {
		if mxHasBlob(t, data, f.SHA256) {
			committed[f.path()] = true
		}
	}
	if len(committed) == 0 || len(committed) == len(ch.files) {
		t.Fatalf("after the kill %d of %d files are committed; want some, not all", len(committed), len(ch.files))
	}
	atKill := up.pkgHits()
	t.Logf("%s/tmp after the kill: %v", data, mxTmpFiles(t, data))
	t.Logf("killed with %d of %d files committed; upstream package requests so far: %v", len(committed), len(ch.files), atKill)

	// Resume, in-process, at full speed.
	up.slow.Store(false)
	out := mxMustRun(t, "sync", "-c", cfg)
	want := fmt.Sprintf("fetched %d files", len(ch.files)-len(committed))
	if !strings.Contains(out, want) || !strings.Contains(out, fmt.Sprintf("%d already there, 0 failed", len(committed))) {
		t.Errorf("resumed sync: stdout lacks %q and \"%d already there, 0 failed\":\n%s", want, len(committed), out)
	}
	after := up.pkgHits()
	for _, f := range ch.files {
		p := f.path()
		resumed := after[p] - atKill[p]
		if committed[p] {
			if after[p] != 1 || resumed != 0 {
				t.Errorf("%s was committed before the kill: asked upstream %d times overall (%d by the resumed sync), want 1 (0)", p, after[p], resumed)
			}
		} else if resumed != 1 {
			t.Errorf("%s was not committed before the kill: the resumed sync asked for it %d times, want 1", p, resumed)
		}
		if !mxHasBlob(t, data, f.SHA256) {
			t.Errorf("after the resumed sync, no blob for %s", p)
		}
	}
	if tmp := mxTmpFiles(t, data); len(tmp) != 0 {
		t.Errorf("after the resumed sync, %s/tmp holds %v", data, tmp)
	}
	// And every file is served afterwards, from the cache, upstream gone.
	up.Close()
	srv := mxServe(t, cfg)
	for _, f := range ch.files {
		code, body := mxGet(t, srv.base+"/zlib/"+f.path())
		if code != 200 || mxSHA(body) != f.SHA256 {
			t.Errorf("after resume, GET /zlib/%s with upstream down: %d, sha256 %s; want 200, %s", f.path(), code, mxSHA(body), f.SHA256)
		}
	}
}

// ---------------------------------------------------------------------------
// 3. export, then import into a fresh data directory with no upstream

func TestMirrorExportImportServe(t *testing.T) {
	ch, _, _, cfg := mxSynced(t)
	tarPath := filepath.Join(t.TempDir(), "zlib.tar")
	out := mxMustRun(t, "export", "-c", cfg, "-o", tarPath)
	if want := fmt.Sprintf("export: %d packages (%s)", len(ch.files), human(ch.bytes())); !strings.Contains(out, want) {
		t.Errorf("export: stdout lacks %q:\n%s", want, out)
	}
	x := mxReadTar(t, tarPath)
	if got, want := x.packages(), mxPrefixed("zlib", ch.paths()); !slices.Equal(got, want) {
		t.Errorf("the manifest lists packages %v, want %v", got, want)
	}
	for _, f := range x.manifest.Files {
		b, ok := x.data[f.Path]
		if !ok {
			t.Errorf("manifest lists %s, the tar lacks it", f.Path)
			continue
		}
		if mxSHA(b) != f.SHA256 || int64(len(b)) != f.Size {
			t.Errorf("%s: the tar holds sha256 %s size %d, the manifest says %s %d", f.Path, mxSHA(b), len(b), f.SHA256, f.Size)
		}
	}
	for _, sub := range []string{"noarch", "linux-64", "osx-64", "win-32", "win-64"} {
		for _, name := range []string{"repodata.json", "repodata.json.zst"} {
			if _, ok := x.data["zlib/"+sub+"/"+name]; !ok {
				t.Errorf("the tar lacks zlib/%s/%s", sub, name)
			}
		}
	}

	for _, upstreams := range []struct {
		name string
		urls []string
	}{{"dead upstream", []string{"http://127.0.0.1:1/dead"}}, {"no upstreams", nil}} {
		t.Run(upstreams.name, func(t *testing.T) {
			data2 := filepath.Join(t.TempDir(), "data")
			cfg2 := mxConfig(t, data2, mxChan{name: "zlib", urls: upstreams.urls})
			out := mxMustRun(t, "import", "-c", cfg2, tarPath)
			if want := fmt.Sprintf("import: %d packages (%s) into [zlib]", len(ch.files), human(ch.bytes())); !strings.Contains(out, want) {
				t.Errorf("import: stdout lacks %q:\n%s", want, out)
			}
			srv := mxServe(t, cfg2)
			mxCheckServes(t, srv.base, "zlib", ch.files)
		})
	}
}

// mxCheckServes downloads every file through the proxy (200, right sha256) and
// checks that each subdir's repodata lists exactly files.
func mxCheckServes(t *testing.T, base, channel string, files []mxFile) {
	t.Helper()
	bySub := map[string][]string{}
	for _, f := range files {
		code, body := mxGet(t, base+"/"+channel+"/"+f.path())
		if code != 200 || mxSHA(body) != f.SHA256 {
			t.Errorf("GET /%s/%s: %d, sha256 %s, want 200 and %s (%.200s)", channel, f.path(), code, mxSHA(body), f.SHA256, body)
		}
		bySub[f.Subdir] = append(bySub[f.Subdir], f.Filename)
	}
	for _, sub := range []string{"noarch", "linux-64", "osx-64", "win-32", "win-64"} {
		code, body := mxGet(t, base+"/"+channel+"/"+sub+"/repodata.json")
		if code != 200 {
			t.Errorf("GET /%s/%s/repodata.json: %d, want 200: %.300s", channel, sub, code, body)
			continue
		}
		want := append([]string{}, bySub[sub]...)
		sort.Strings(want)
		if got := mxRecords(t, body); !slices.Equal(got, want) {
			t.Errorf("/%s/%s/repodata.json lists %v, want %v", channel, sub, got, want)
		}
	}
}

// --delta: after a first export, one more cached file; the delta holds only it, and
// full then delta imported in order serve everything.
func TestMirrorExportDelta(t *testing.T) {
	late := "win-32/zlib-1.2.11-h62dcd97_3.conda"
	ch, up, _, cfg := mxSynced(t, late)
	full := filepath.Join(t.TempDir(), "full.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", full)
	if got := mxReadTar(t, full).packages(); len(got) != len(ch.files) || slices.Contains(got, "zlib/"+late) {
		t.Fatalf("first export holds %v", got)
	}

	// Upstream publishes one more package; a sync caches it.
	f := mxAddBack(t, ch, late)
	out := mxMustRun(t, "sync", "-c", cfg)
	if !strings.Contains(out, "fetched 1 files") {
		t.Fatalf("sync after upstream added %s: stdout lacks \"fetched 1 files\":\n%s", late, out)
	}
	if up.pkgHits()[late] != 1 {
		t.Fatalf("%s requested %d times upstream", late, up.pkgHits()[late])
	}

	delta := filepath.Join(t.TempDir(), "delta.tar")
	out = mxMustRun(t, "export", "-c", cfg, "-o", delta, "--delta")
	if !strings.Contains(out, "delta export: 1 packages") {
		t.Errorf("export --delta: stdout lacks \"delta export: 1 packages\":\n%s", out)
	}
	x := mxReadTar(t, delta)
	if !x.manifest.Delta {
		t.Errorf("the delta's manifest says delta: false")
	}
	if got := x.packages(); !slices.Equal(got, []string{"zlib/" + late}) {
		t.Errorf("the delta's manifest lists packages %v, want only zlib/%s", got, late)
	}
	if got := mxRecords(t, x.data["zlib/win-32/repodata.json"]); !slices.Equal(got, []string{f.Filename}) {
		t.Errorf("the delta's win-32 repodata lists %v, want only %s", got, f.Filename)
	}
	// A second delta right after holds nothing.
	delta2 := filepath.Join(t.TempDir(), "delta2.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", delta2, "--delta")
	if got := mxReadTar(t, delta2).packages(); len(got) != 0 {
		t.Errorf("a delta right after a delta holds %v, want nothing", got)
	}

	data2 := filepath.Join(t.TempDir(), "data")
	cfg2 := mxConfig(t, data2, mxChan{name: "zlib"}) // no upstreams: only what imports bring
	mxMustRun(t, "import", "-c", cfg2, full)
	mxMustRun(t, "import", "-c", cfg2, delta)
	srv := mxServe(t, cfg2)
	mxCheckServes(t, srv.base, "zlib", ch.files)
}

// A channel whose bytes are already in the cache under another channel is still
// exported: every cached, filter-passing package of the chosen channels.
func TestMirrorExportSharedBlobs(t *testing.T) {
	ch := mxMiniChannel(t)
	upA := newMxUpstream(t, ch.dir, "/a")
	upB := newMxUpstream(t, ch.dir, "/b")
	data := filepath.Join(t.TempDir(), "data")
	cfg := mxConfig(t, data,
		mxChan{name: "a", urls: []string{upA.url()}},
		mxChan{name: "b", urls: []string{upB.url()}})
	mxMustRun(t, "sync", "-c", cfg, "--channel", "a")
	out := mxMustRun(t, "sync", "-c", cfg, "--channel", "b")
	if !strings.Contains(out, fmt.Sprintf("%d already there", len(ch.files))) {
		t.Logf("sync of b after a: %s", out)
	}
	tarPath := filepath.Join(t.TempDir(), "b.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", tarPath, "--channel", "b")
	if got, want := mxReadTar(t, tarPath).packages(), mxPrefixed("b", ch.paths()); !slices.Equal(got, want) {
		t.Errorf("export --channel b after syncing a then b (same bytes): packages %v, want %v "+
			"(mirror.Sync counts b's files as present by sha256 without indexing them under b; "+
			"proxy.CachedSubdirs(b) then lists only noarch)", got, want)
	}
}

// ---------------------------------------------------------------------------
// 4. tampered and truncated tars are refused whole

func TestMirrorImportRefusesDamagedTar(t *testing.T) {
	_, _, _, cfg := mxSynced(t)
	tarPath := filepath.Join(t.TempDir(), "zlib.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", tarPath)
	x := mxReadTar(t, tarPath)
	pkgs := x.packages()
	// The second package entry in tar order: earlier files are good, so an import
	// that made files visible one by one would show them.
	var victim string
	n := 0
	for _, name := range x.names {
		if mxIsPackage(name) {
			if n++; n == 2 {
				victim = name
			}
		}
	}
	if victim == "" {
		t.Fatalf("export has packages %v", pkgs)
	}
	off, size := x.offset[victim], int64(len(x.data[victim]))

	tampered := bytes.Clone(x.raw)
	tampered[off+size/2] ^= 0x01
	truncated := bytes.Clone(x.raw[:off+size/2])

	data2 := filepath.Join(t.TempDir(), "data")
	cfg2 := mxConfig(t, data2, mxChan{name: "zlib"})
	answers := func() map[string]string {
		srv := mxServe(t, cfg2)
		defer srv.stop(t)
		out := map[string]string{}
		for _, sub := range []string{"noarch", "linux-64", "osx-64", "win-32", "win-64"} {
			code, body := mxGet(t, srv.base+"/zlib/"+sub+"/repodata.json")
			recs := ""
			if code == 200 {
				recs = strings.Join(mxRecords(t, body), ",")
			}
			out[sub+"/repodata.json"] = fmt.Sprintf("%d %s", code, recs)
		}
		for _, p := range pkgs {
			code, _ := mxGet(t, srv.base+"/"+p)
			out[p] = fmt.Sprint(code)
		}
		return out
	}
	before := answers()
	blobsBefore := mxBlobs(t, data2)
	for _, c := range []struct {
		name string
		tar  []byte
		want []string
	}{
		{"tampered", tampered, []string{victim, "sha256"}},
		{"truncated", truncated, []string{victim, "truncated"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), c.name+".tar")
			if err := os.WriteFile(p, c.tar, 0o644); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := mxRun(t, "import", "-c", cfg2, p)
			if code != 1 {
				t.Errorf("import of a %s tar: exit %d, want 1\n%s%s", c.name, code, out, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("import of a %s tar: stderr %q does not name %q", c.name, errOut, w)
				}
			}
			if got := mxBlobs(t, data2); !slices.Equal(got, blobsBefore) {
				t.Errorf("import of a %s tar changed %s/blobs: %v, was %v", c.name, data2, got, blobsBefore)
			}
			if tmp := mxTmpFiles(t, data2); len(tmp) != 0 {
				t.Errorf("import of a %s tar left %s/tmp: %v", c.name, data2, tmp)
			}
			after := answers()
			for k, v := range before {
				if after[k] != v {
					t.Errorf("after the refused %s import, %s answers %q, was %q", c.name, k, after[k], v)
				}
			}
		})
	}
	// The intact tar still imports afterwards.
	mxMustRun(t, "import", "-c", cfg2, tarPath)
}

// A manifest path with "..", and a tar for a channel the configuration lacks.
func TestMirrorImportRefusesBadPathsAndChannels(t *testing.T) {
	_, _, _, cfg := mxSynced(t)
	tarPath := filepath.Join(t.TempDir(), "zlib.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", tarPath)
	x := mxReadTar(t, tarPath)

	// Rewrite the tar with one package renamed to climb out of the tree, in the
	// manifest and the entry both.
	victim := x.packages()[0]
	evil := "zlib/../../evil/" + path.Base(victim)
	m := x.manifest
	m.Files = slices.Clone(m.Files)
	for i := range m.Files {
		if m.Files[i].Path == victim {
			m.Files[i].Path = evil
		}
	}
	mb, _ := json.Marshal(m)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range x.names {
		body := x.data[name]
		entry := name
		switch name {
		case mirror.ManifestName:
			body = mb
		case victim:
			entry = evil
		}
		tw.WriteHeader(&tar.Header{Name: entry, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write(body)
	}
	tw.Close()
	evilTar := filepath.Join(t.TempDir(), "evil.tar")
	if err := os.WriteFile(evilTar, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	data2 := filepath.Join(t.TempDir(), "data")
	cfg2 := mxConfig(t, data2, mxChan{name: "zlib"})
	code, _, errOut := mxRun(t, "import", "-c", cfg2, evilTar)
	if code != 1 || !strings.Contains(errOut, evil) {
		t.Errorf("import of a tar whose manifest holds %q: exit %d, stderr %q; want 1 naming the path", evil, code, errOut)
	}
	if b := mxBlobs(t, data2); len(b) != 0 {
		t.Errorf("the refused import stored blobs %v", b)
	}
	for _, p := range []string{filepath.Join(data2, "..", "evil"), filepath.Join(filepath.Dir(data2), "evil")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("the refused import wrote %s", p)
		}
	}

	// A channel not in the configuration: refused, naming it.
	cfg3 := mxConfig(t, filepath.Join(t.TempDir(), "data"), mxChan{name: "other"})
	code, _, errOut = mxRun(t, "import", "-c", cfg3, tarPath)
	if code != 1 || !strings.Contains(errOut, `"zlib"`) {
		t.Errorf("import of a zlib tar into a config without zlib: exit %d, stderr %q; want 1 naming \"zlib\"", code, errOut)
	}

	// Not a tar at all; a missing file.
	junk := filepath.Join(t.TempDir(), "junk.tar")
	os.WriteFile(junk, []byte("this is not a tar"), 0o644)
	if code, _, errOut := mxRun(t, "import", "-c", cfg2, junk); code != 1 || !strings.Contains(errOut, "junk.tar") {
		t.Errorf("import of a non-tar: exit %d, stderr %q; want 1 naming the file", code, errOut)
	}
	missing := filepath.Join(t.TempDir(), "missing.tar")
	if code, _, errOut := mxRun(t, "import", "-c", cfg2, missing); code != 1 || !strings.Contains(errOut, missing) {
		t.Errorf("import of a missing file: exit %d, stderr %q; want 1 naming it", code, errOut)
	}
	if code, _, _ := mxRun(t, "import", "-c", cfg2); code != 2 {
		t.Errorf("import with no file: exit %d, want 2", code)
	}
	if code, _, _ := mxRun(t, "export", "-c", cfg2); code != 2 {
		t.Errorf("export with no -o: exit %d, want 2", code)
	}
	if code, _, errOut := mxRun(t, "export", "-c", cfg2, "-o", filepath.Join(t.TempDir(), "x.tar"), "--channel", "nope"); code != 2 || !strings.Contains(errOut, `"nope"`) {
		t.Errorf("export --channel nope: exit %d, stderr %q; want 2 naming it", code, errOut)
	}
}

// ---------------------------------------------------------------------------
// 5. the untarred tree is a file:// upstream for another proxy

func TestMirrorUntarredTreeAsFileUpstream(t *testing.T) {
	ch, _, _, cfg := mxSynced(t)
	tarPath := filepath.Join(t.TempDir(), "zlib.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", tarPath)
	tree := t.TempDir()
	mxUntar(t, mxReadTar(t, tarPath), tree)
	if _, err := os.Stat(filepath.Join(tree, "zlib", "noarch", "repodata.json")); err != nil {
		t.Errorf("the untarred tree lacks zlib/noarch/repodata.json: %v", err)
	}
	fileURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(tree, "zlib"))}).String()
	data2 := filepath.Join(t.TempDir(), "data")
	cfg2 := mxConfig(t, data2, mxChan{name: "local", urls: []string{fileURL}})
	srv := mxServe(t, cfg2)
	mxCheckServes(t, srv.base, "local", ch.files)
}

// ---------------------------------------------------------------------------
// 6. clean after a filter change

func TestMirrorCleanAfterFilterChange(t *testing.T) {
	ch, up, data, _ := mxSynced(t)
	blobs := mxBlobs(t, data)
	for _, f := range ch.files {
		if !mxHasBlob(t, data, f.SHA256) {
			t.Fatalf("after sync, no blob for %s", f.path())
		}
	}
	// Nothing hidden yet: clean removes nothing.
	cfg0 := mxConfig(t, data, mxChan{name: "zlib", urls: []string{up.url()}})
	if out := mxMustRun(t, "clean", "-c", cfg0); !strings.Contains(out, "clean: removed 0 files") {
		t.Errorf("clean with an unchanged filter: %s", out)
	}

	// Only the osx-64 zlib stays (whitelist brings it back).
	cfg := mxConfig(t, data, mxChan{name: "zlib", urls: []string{up.url()},
		extra: "    blacklist: [zlib]\n    whitelist: [\"zlib[build=h1de35cc_3]\"]\n"})
	var gone []mxFile
	for _, f := range ch.files {
		if f.Subdir != "osx-64" {
			gone = append(gone, f)
		}
	}
	out := mxMustRun(t, "clean", "-c", cfg, "--dry-run")
	for _, f := range gone {
		if want := fmt.Sprintf("would remove zlib/%s (%s), hidden by", f.path(), human(f.Size)); !strings.Contains(out, want) {
			t.Errorf("clean --dry-run: stdout lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "osx-64") {
		t.Errorf("clean --dry-run lists a whitelisted osx-64 file:\n%s", out)
	}
	var total int64
	for _, f := range gone {
		total += f.Size
	}
	if want := fmt.Sprintf("clean: would remove %d files (%s)", len(gone), human(total)); !strings.Contains(out, want) {
		t.Errorf("clean --dry-run: stdout lacks %q:\n%s", want, out)
	}
	if got := mxBlobs(t, data); !slices.Equal(got, blobs) {
		t.Errorf("clean --dry-run changed blobs: %v, was %v", got, blobs)
	}

	out = mxMustRun(t, "clean", "-c", cfg)
	if want := fmt.Sprintf("clean: removed %d files (%s)", len(gone), human(total)); !strings.Contains(out, want) {
		t.Errorf("clean: stdout lacks %q:\n%s", want, out)
	}
	for _, f := range ch.files {
		has := mxHasBlob(t, data, f.SHA256)
		if f.Subdir == "osx-64" && !has {
			t.Errorf("clean removed the whitelisted %s", f.path())
		}
		if f.Subdir != "osx-64" && has {
			t.Errorf("clean left the blacklisted %s", f.path())
		}
	}
	if out := mxMustRun(t, "clean", "-c", cfg); !strings.Contains(out, "clean: removed 0 files") {
		t.Errorf("a second clean: %s", out)
	}

	before := up.pkgTotal()
	srv := mxServe(t, cfg)
	for _, f := range ch.files {
		code, body := mxGet(t, srv.base+"/zlib/"+f.path())
		switch {
		case f.Subdir == "osx-64" && (code != 200 || mxSHA(body) != f.SHA256):
			t.Errorf("GET /zlib/%s after clean: %d, want 200", f.path(), code)
		case f.Subdir != "osx-64" && code != 403:
			t.Errorf("GET /zlib/%s after clean: %d, want 403 (%.200s)", f.path(), code, body)
		}
	}
	if n := up.pkgTotal() - before; n != 0 {
		t.Errorf("the proxy asked upstream for %d packages after clean, want 0", n)
	}

	// license_blacklist hides them too; a hidden file named by --channel only.
	cfg2 := mxConfig(t, data, mxChan{name: "zlib", urls: []string{up.url()}, extra: "    license_blacklist: [zlib]\n"})
	srv.stop(t)
	out = mxMustRun(t, "clean", "-c", cfg2, "--channel", "zlib", "--dry-run")
	if !strings.Contains(out, "would remove zlib/osx-64/zlib-1.2.11-h1de35cc_3.conda") || !strings.Contains(out, "would remove 2 files") {
		t.Errorf("clean --dry-run under license_blacklist: [zlib]:\n%s", out)
	}
}

// ---------------------------------------------------------------------------
// 7. --mirror-config

func TestMirrorSyncMirrorConfig(t *testing.T) {
	ch := mxMiniChannel(t)
	up := newMxUpstream(t, ch.dir, "/zlibchan")
	data := filepath.Join(t.TempDir(), "data")
	base := mxConfig(t, data)
	dir := t.TempDir()
	exportYAML := filepath.Join(dir, "export.yaml")
	os.WriteFile(exportYAML, []byte("channels: ["+up.url()+"]\npkg_list: [zlib]\npython_versions: [3.9]\nplatforms: [osx-64]\nremote_url: https://repo.anaconda.com\n"), 0o644)
	code, out, errOut := mxRun(t, "sync", "--mirror-config", exportYAML, "-c", base)
	if code != 0 {
		t.Fatalf("sync --mirror-config export.yaml: exit %d\n%s\n%s", code, out, errOut)
	}
	want := []string{"osx-64/zlib-1.2.11-h1de35cc_3.conda", "osx-64/zlib-1.2.11-h1de35cc_3.tar.bz2"}
	if got := mxKeys(up.pkgHits()); !slices.Equal(got, want) {
		t.Errorf("sync --mirror-config fetched %v, want only %v", got, want)
	}
	for p, n := range up.pkgHits() {
		if n != 1 {
			t.Errorf("%s requested %d times", p, n)
		}
	}
	if w := exportYAML + ":5: remote_url"; !strings.Contains(errOut, "warning") || !strings.Contains(errOut, w) {
		t.Errorf("stderr lacks a warning naming %q: %q", w, errOut)
	}
	if !strings.Contains(out, "fetched 2 files") {
		t.Errorf("stdout lacks \"fetched 2 files\":\n%s", out)
	}

	// The import.yaml shape: an untarred export as a file:// channel, dest_channel.
	_, _, _, cfgFull := mxSynced(t)
	tarPath := filepath.Join(t.TempDir(), "zlib.tar")
	mxMustRun(t, "export", "-c", cfgFull, "-o", tarPath)
	tree := t.TempDir()
	mxUntar(t, mxReadTar(t, tarPath), tree)
	importYAML := filepath.Join(dir, "import.yaml")
	fileURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(tree, "zlib"))}).String()
	os.WriteFile(importYAML, []byte("channels: ["+fileURL+"]\ndest_channel: mirror\n"), 0o644)
	data2 := filepath.Join(t.TempDir(), "data")
	base2 := mxConfig(t, data2)
	code, out, errOut = mxRun(t, "sync", "--mirror-config", importYAML, "-c", base2)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("fetched %d files", len(ch.files))) {
		t.Errorf("sync --mirror-config import.yaml: exit %d, want 0 and \"fetched %d files\"\n%s\n%s", code, len(ch.files), out, errOut)
	}
	for _, f := range ch.files {
		if !mxHasBlob(t, data2, f.SHA256) {
			t.Errorf("sync --mirror-config import.yaml (file:// untarred export, no platforms) did not cache %s: "+
				"the export tree has no channeldata.json listing its subdirs, so proxy.SyncSubdirs falls back to "+
				"commonSubdirs, which lacks %s; a subdir of the export is silently not synced", f.path(), f.Subdir)
		}
	}

	// A bad mirror file: exit 2 naming the file.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("channels: []\n"), 0o644)
	if code, _, errOut := mxRun(t, "sync", "--mirror-config", bad, "-c", base); code != 2 || !strings.Contains(errOut, bad) {
		t.Errorf("sync --mirror-config with no channels: exit %d, stderr %q; want 2 naming the file", code, errOut)
	}
}

// ---------------------------------------------------------------------------
// 8. with a server on the data directory

func TestMirrorCommandsWithServerRunning(t *testing.T) {
	ch, up, data, cfg := mxSynced(t)
	tarPath := filepath.Join(t.TempDir(), "zlib.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", tarPath)
	srv := mxServe(t, cfg)
	blobs := mxBlobs(t, data)
	out := filepath.Join(t.TempDir(), "again.tar")
	// sync, clean, export and import work through the server (its admin API);
	// sync --dry-run, which the API does not offer, is refused naming the server.
	if code, stdout, stderr := mxRun(t, "sync", "-c", cfg); code != 0 || !strings.Contains(stdout, "through the server at "+srv.base) {
		t.Errorf("sync with a server running: exit %d, stdout %q, stderr %q; want 0, through the server", code, stdout, stderr)
	}
	if code, stdout, stderr, panicked := mxRunNoPanic(t, "sync", "-c", cfg, "--dry-run"); !panicked && (code != 1 || !strings.Contains(stderr, srv.base)) {
		t.Errorf("sync --dry-run with a server running: exit %d, stderr %q; want 1 naming the server %s\nstdout: %s", code, stderr, srv.base, stdout)
	}
	for _, args := range [][]string{
		{"clean", "-c", cfg},
		{"clean", "-c", cfg, "--dry-run"},
		{"export", "-c", cfg, "-o", out},
		{"import", "-c", cfg, tarPath},
	} {
		code, stdout, stderr, panicked := mxRunNoPanic(t, args...)
		if panicked {
			continue
		}
		if code != 0 || !strings.Contains(stdout, srv.base) {
			t.Errorf("%v with a server running: exit %d, stdout %q, stderr %q; want 0 through the server %s", args, code, stdout, stderr, srv.base)
		}
		if strings.Contains(stderr, "panic") || strings.Contains(stdout, "panic") {
			t.Errorf("%v: a panic: %s", args, stderr)
		}
	}
	if a, b := rmManifest(t, tarPath), rmManifest(t, out); !slices.Equal(a, b) {
		t.Errorf("the export through the server holds %v, the local one %v", b, a)
	}
	os.Remove(out)
	if got := mxBlobs(t, data); !slices.Equal(got, blobs) {
		t.Errorf("the commands through the server changed blobs (nothing to clean, the import brought the same files)")
	}
	// The server keeps serving.
	before := up.pkgTotal()
	for _, f := range ch.files {
		code, body := mxGet(t, srv.base+"/zlib/"+f.path())
		if code != 200 || mxSHA(body) != f.SHA256 {
			t.Errorf("after the commands, GET /zlib/%s: %d, want 200 and the right bytes", f.path(), code)
		}
	}
	if n := up.pkgTotal() - before; n != 0 {
		t.Errorf("the server refetched %d packages", n)
	}
	select {
	case <-srv.done:
		t.Errorf("the server stopped (exit %d):\n%s", srv.code, srv.stderr.String())
	default:
	}
	// sync --server goes through the named server.
	if code, stdout, stderr := mxRun(t, "sync", "-c", cfg, "--server", srv.base); code != 0 || !strings.Contains(stdout, "job ") {
		t.Errorf("sync --server: exit %d, stdout %q, stderr %q; want 0 and a job", code, stdout, stderr)
	}
	// --server names the server for the others too.
	for _, args := range [][]string{
		{"clean", "-c", cfg, "--server", srv.base},
		{"export", "-c", cfg, "-o", out, "--server", srv.base},
		{"import", "-c", cfg, tarPath, "--server", srv.base + "/"},
	} {
		if code, stdout, stderr := mxRun(t, args...); code != 0 || !strings.Contains(stdout, srv.base) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 0 through the server", args, code, stdout, stderr)
		}
	}
}

// ---------------------------------------------------------------------------
// A channel with no upstreams (an air-gapped site) before its first import

// mxRunNoPanic is mxRun that turns a panic into a test error.
func mxRunNoPanic(t *testing.T, args ...string) (code int, stdout, stderr string, panicked bool) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%v panics: %v", args, r)
			code, panicked = -1, true
		}
	}()
	code, stdout, stderr = mxRun(t, args...)
	return code, stdout, stderr, false
}

func TestMirrorAirGappedChannelBeforeImport(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	cfg := mxConfig(t, data, mxChan{name: "zlib"})
	if code, out, errOut, p := mxRunNoPanic(t, "sync", "-c", cfg); !p && code != 0 {
		t.Errorf("sync of a channel with no upstreams, nothing imported: exit %d, want 0 (nothing to fetch)\n%s%s", code, out, errOut)
	}
	tarPath := filepath.Join(t.TempDir(), "x.tar")
	if code, out, errOut, p := mxRunNoPanic(t, "export", "-c", cfg, "-o", tarPath); !p {
		if code != 0 {
			t.Errorf("export of a channel with no upstreams, nothing imported: exit %d, want 0 (an empty export)\n%s%s", code, out, errOut)
		} else if got := mxReadTar(t, tarPath).packages(); len(got) != 0 {
			t.Errorf("empty export holds %v", got)
		}
	}
	srv := mxServe(t, cfg)
	if code, body := mxGet(t, srv.base+"/zlib/linux-64/zlib-1.2.11-h7b6447c_3.conda"); code != 404 {
		t.Errorf("GET a package of a channel with no upstreams, nothing imported: %d (%.120s), want 404 "+
			"(proxy/packages.go servePackage dereferences the nil *served that Server.load returns when no source has state)", code, body)
	}
	if code, body := mxGet(t, srv.base+"/zlib/noarch/repodata.json"); code == 0 || code >= 500 {
		t.Errorf("GET noarch/repodata.json of a channel with no upstreams, nothing imported: %d (%.120s), want an answer, not a broken connection", code, body)
	}
}
