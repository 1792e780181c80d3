package mirror

// Tests of the mirror engines (Sync, Export, Import) on a real Pebble store in
// t.TempDir(), a real proxy.Server, and httptest upstreams on 127.0.0.1 serving the
// real Anaconda zlib channel of the shared testdata and counting requests. The
// command line around them is tested in cmd/condaproxy/mirror_cmd_test.go.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/proxy"
	"github.com/condaproxy/condaproxy/shards"
	"github.com/condaproxy/condaproxy/upstream"
)

// ---------------------------------------------------------------------------
// Fixtures

type tFile struct {
	Subdir, Filename, SHA256 string
	Size                     int64
}

func (f tFile) path() string { return f.Subdir + "/" + f.Filename }

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func isPkg(p string) bool { return strings.HasSuffix(p, ".conda") || strings.HasSuffix(p, ".tar.bz2") }

var subdirs = []string{"noarch", "linux-64", "osx-64", "win-32", "win-64"}

// miniChannel copies the real zlib channel into a temp dir with repodata listing
// only the records whose file is there (the real records, true sha256 and size).
func miniChannel(t *testing.T) (string, []tFile) {
	t.Helper()
	src := testdata.Path(t, "conda_format_repo")
	dst := t.TempDir()
	var files []tFile
	if b, err := os.ReadFile(filepath.Join(src, "channeldata.json")); err != nil {
		t.Fatal(err)
	} else {
		os.WriteFile(filepath.Join(dst, "channeldata.json"), b, 0o644)
	}
	for _, sub := range subdirs {
		os.MkdirAll(filepath.Join(dst, sub), 0o755)
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
			json.Unmarshal(doc[section], &recs)
			for fn, rec := range recs {
				data, err := os.ReadFile(filepath.Join(src, sub, fn))
				if err != nil {
					delete(recs, fn)
					continue
				}
				var r struct {
					SHA256 string `json:"sha256"`
					Size   int64  `json:"size"`
				}
				json.Unmarshal(rec, &r)
				if sha(data) != r.SHA256 || int64(len(data)) != r.Size {
					t.Fatalf("testdata %s/%s does not match its record", sub, fn)
				}
				os.WriteFile(filepath.Join(dst, sub, fn), data, 0o644)
				files = append(files, tFile{sub, fn, r.SHA256, r.Size})
			}
			doc[section], _ = json.Marshal(recs)
		}
		out, _ := json.Marshal(doc)
		os.WriteFile(filepath.Join(dst, sub, "repodata.json"), out, 0o644)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path() < files[j].path() })
	if len(files) != 8 {
		t.Fatalf("mini channel: %d files, want 8", len(files))
	}
	return dst, files
}

func totalSize(files []tFile) int64 {
	var n int64
	for _, f := range files {
		n += f.Size
	}
	return n
}

// upstreamDir serves a directory and counts requests by path.
type upstreamDir struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string]int
	slow atomic.Bool
}

func newUpstreamDir(t *testing.T, dir string) *upstreamDir {
	u := &upstreamDir{hits: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/")
		u.mu.Lock()
		u.hits[p]++
		u.mu.Unlock()
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(p)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if u.slow.Load() && isPkg(p) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			for i := 0; i < len(data); i += 8 << 10 {
				if _, err := w.Write(data[i:min(i+8<<10, len(data))]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			return
		}
		http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstreamDir) pkgHits() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := map[string]int{}
	for p, n := range u.hits {
		if isPkg(p) {
			out[p] = n
		}
	}
	return out
}

func (u *upstreamDir) pkgTotal() int {
	n := 0
	for _, c := range u.pkgHits() {
		n += c
	}
	return n
}

// env is a proxy.Server on a real store.
type env struct {
	t       testing.TB
	data    string
	cfg     *config.Config
	maxSize int64 // the store's cache.max_size; 0: 1 GiB
	store   *cache.Store
	srv     *proxy.Server
	http    *httptest.Server
}

// newEnv opens a store in a new temp dir for the configuration yaml.
func newEnv(t testing.TB, yaml string) *env {
	t.Helper()
	return newEnvIn(t, yaml, t.TempDir())
}

// newEnvIn is newEnv with the data directory in dir.
func newEnvIn(t testing.TB, yaml, dir string) *env {
	t.Helper()
	return newEnvSized(t, yaml, dir, 0)
}

// newEnvSized is newEnvIn with a store of maxSize bytes (0: 1 GiB).
func newEnvSized(t testing.TB, yaml, dir string, maxSize int64) *env {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Data = dir
	e := &env{t: t, data: cfg.Data, cfg: cfg, maxSize: maxSize}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	t := e.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var err error
	maxSize := e.maxSize
	if maxSize == 0 {
		maxSize = 1 << 30
	}
	e.store, err = cache.Open(e.data, cache.Options{MaxSize: maxSize, Memory: 8 << 20, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	policies := map[string]policy.Policy{}
	for i, ch := range e.cfg.Channels {
		if ch.Kind == config.KindConda {
			if policies[ch.Name], err = policy.Compile(e.cfg, i, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.srv, err = proxy.New(proxy.Options{
		Config: e.cfg, Store: e.store, Policies: policies, Logger: log,
		Metrics: proxy.NewMetrics(prometheus.NewRegistry(), e.store),
		Upstream: upstream.New(upstream.Options{Logger: log, Retries: 1, Backoff: 5 * time.Millisecond,
			Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.http = httptest.NewUnstartedServer(e.srv)
	// A handler panic shows as a broken connection to the test, which says what broke.
	e.http.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
	e.http.Start()
}

func (e *env) close() {
	if e.http == nil {
		return
	}
	e.http.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	e.srv.Shutdown(ctx)
	cancel()
	e.store.Close()
	e.http = nil
}

func (e *env) get(p string) (int, []byte) {
	e.t.Helper()
	c := &http.Client{Timeout: 20 * time.Second}
	r, err := c.Get(e.http.URL + p)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return 0, []byte(err.Error())
	}
	return r.StatusCode, b
}

// state is what an import may not touch when it is refused: the blob table, the
// package index, the upstream and import states (an import state's value too:
// it names the imported file), the imported files and tmp/.
func (e *env) state() string {
	var b strings.Builder
	_, count, _ := e.store.Usage()
	fmt.Fprintf(&b, "blobs %d\n", count)
	e.store.Meta.Scan("", func(key string, val []byte) error {
		switch {
		case strings.HasPrefix(key, "u/") && strings.HasSuffix(key, "|import"):
			fmt.Fprintf(&b, "%s %s\n", key, val)
		case strings.HasPrefix(key, "p/") || strings.HasPrefix(key, "u/") || strings.HasPrefix(key, "b/"):
			fmt.Fprintf(&b, "%s\n", key)
		}
		return nil
	})
	files, _ := os.ReadDir(filepath.Join(e.data, "files"))
	for _, en := range files {
		if strings.HasPrefix(en.Name(), "import-") {
			fmt.Fprintf(&b, "files/%s\n", en.Name())
		}
	}
	entries, _ := os.ReadDir(filepath.Join(e.data, "tmp"))
	for _, en := range entries {
		fmt.Fprintf(&b, "tmp/%s\n", en.Name())
	}
	return b.String()
}

func chanYAML(name string, urls ...string) string {
	s := "cache:\n  memory: 8MiB\nchannels:\n  - name: " + name + "\n"
	if len(urls) > 0 {
		s += "    upstreams:\n"
		for _, u := range urls {
			s += "      - url: " + u + "\n"
		}
	}
	return s
}

// recorder is a Progress that keeps what it hears.
type recorder struct {
	mu      sync.Mutex
	planned [][2]int64
	done    []string
	fetched int
	errs    int
	onDone  func()
}

func (r *recorder) Planned(files int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.planned = append(r.planned, [2]int64{int64(files), bytes})
}

func (r *recorder) Done(f proxy.ServedFile, fetched bool, err error) {
	r.mu.Lock()
	r.done = append(r.done, f.Subdir+"/"+f.Filename)
	if fetched {
		r.fetched++
	}
	if err != nil {
		r.errs++
	}
	cb := r.onDone
	r.mu.Unlock()
	if cb != nil {
		cb()
	}
}

// synced is an env whose channel "zlib" was synced from a mini channel.
func synced(t *testing.T) (*env, []tFile, *upstreamDir) {
	t.Helper()
	dir, files := miniChannel(t)
	up := newUpstreamDir(t, dir)
	e := newEnv(t, chanYAML("zlib", up.URL))
	rep, err := Sync(context.Background(), e.srv, e.store, []string{"zlib"}, SyncOptions{Jobs: 3})
	if err != nil || rep.Fetched != len(files) || len(rep.Failures) != 0 {
		t.Fatalf("sync: %+v, %v", rep, err)
	}
	return e, files, up
}

func export(t *testing.T, e *env, o ExportOptions) ([]byte, *ExportReport) {
	t.Helper()
	if o.Channels == nil {
		o.Channels = []string{"zlib"}
	}
	var buf bytes.Buffer
	rep, err := Export(context.Background(), e.srv, e.store, &buf, o)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	return buf.Bytes(), rep
}

// entry is one file of a tar.
type entry struct {
	name string
	data []byte
}

func readEntries(t *testing.T, b []byte) (Manifest, []entry) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		d, _ := io.ReadAll(tr)
		out = append(out, entry{hdr.Name, d})
	}
	var m Manifest
	if len(out) == 0 || out[0].name != ManifestName {
		t.Fatalf("first entry is not the manifest")
	}
	if err := json.Unmarshal(out[0].data, &m); err != nil {
		t.Fatal(err)
	}
	return m, out
}

// writeEntries writes entries as a tar, the manifest (entry 0) replaced by m,
// then the extra entries with no body (links, devices).
func writeEntries(m Manifest, entries []entry, extra ...*tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mb, _ := json.Marshal(m)
	for i, en := range entries {
		d := en.data
		if i == 0 && en.name == ManifestName {
			d = mb
		}
		tw.WriteHeader(&tar.Header{Name: en.name, Mode: 0o644, Size: int64(len(d)), Typeflag: tar.TypeReg})
		tw.Write(d)
	}
	for _, h := range extra {
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
	}
	tw.Close()
	return buf.Bytes()
}

// sparseEntry is a tar entry for a GNU sparse file (PAX, format 0.1): data,
// then holes that read as zeros up to size. archive/tar writes no sparse files,
// so its PAX header is written as a plain file and its type patched.
func sparseEntry(name string, data []byte, size int64) []byte {
	rec := func(k, v string) string {
		s := " " + k + "=" + v + "\n"
		n := len(s) + 1
		for len(strconv.Itoa(n))+len(s) != n {
			n++
		}
		return strconv.Itoa(n) + s
	}
	recs := rec("GNU.sparse.numblocks", "1") + rec("GNU.sparse.map", fmt.Sprintf("0,%d", len(data))) +
		rec("GNU.sparse.size", strconv.FormatInt(size, 10))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "PaxHeaders/sparse", Typeflag: tar.TypeReg, Size: int64(len(recs)), Mode: 0o644})
	tw.Write([]byte(recs))
	tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: int64(len(data)), Mode: 0o644})
	tw.Write(data)
	tw.Flush()
	b := buf.Bytes()
	b[156] = tar.TypeXHeader
	copy(b[148:156], "        ") // the checksum counts its own field as spaces
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func known(names ...string) func(string) bool {
	return func(c string) bool { return slices.Contains(names, c) }
}

// ---------------------------------------------------------------------------
// Sync

func TestSyncReportAndProgress(t *testing.T) {
	dir, files := miniChannel(t)
	up := newUpstreamDir(t, dir)
	e := newEnv(t, chanYAML("zlib", up.URL))
	ctx := context.Background()
	total := totalSize(files)

	var dry recorder
	rep, err := Sync(ctx, e.srv, e.store, []string{"zlib"}, SyncOptions{DryRun: true, Progress: &dry})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 8 || rep.ToFetch != 8 || rep.ToFetchBytes != total || rep.Fetched != 0 || rep.Present != 0 {
		t.Errorf("dry run report %+v; want 8 records, 8 to fetch (%d bytes), none fetched", rep, total)
	}
	if n := up.pkgTotal(); n != 0 {
		t.Errorf("dry run made %d package requests", n)
	}
	if len(dry.planned) != 1 || dry.planned[0] != [2]int64{8, total} || len(dry.done) != 0 {
		t.Errorf("dry run progress: planned %v, done %v", dry.planned, dry.done)
	}

	var prog recorder
	rep, err = Sync(ctx, e.srv, e.store, []string{"zlib"}, SyncOptions{Jobs: 2, Progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 8 || rep.Fetched != 8 || rep.FetchedBytes != total || rep.Present != 0 || len(rep.Failures) != 0 {
		t.Errorf("sync report %+v; want 8 fetched (%d bytes)", rep, total)
	}
	if !slices.Equal(rep.Channels, []string{"zlib"}) {
		t.Errorf("report channels %v", rep.Channels)
	}
	sort.Strings(prog.done)
	var want []string
	for _, f := range files {
		want = append(want, f.path())
	}
	if !slices.Equal(prog.done, want) || prog.fetched != 8 || prog.errs != 0 {
		t.Errorf("progress heard done %v (fetched %d, errors %d); want each file once, fetched", prog.done, prog.fetched, prog.errs)
	}
	for p, n := range up.pkgHits() {
		if n != 1 {
			t.Errorf("%s requested %d times", p, n)
		}
	}
	for _, f := range files {
		if !e.store.Has(f.SHA256) {
			t.Errorf("%s not cached", f.path())
		}
	}

	var again recorder
	rep, err = Sync(ctx, e.srv, e.store, []string{"zlib"}, SyncOptions{Progress: &again})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Present != 8 || rep.Fetched != 0 || rep.ToFetch != 0 || up.pkgTotal() != 8 {
		t.Errorf("second sync: %+v, %d package requests in all; want 8 present, nothing fetched", rep, up.pkgTotal())
	}
	if len(again.planned) != 1 || again.planned[0] != [2]int64{0, 0} {
		t.Errorf("second sync planned %v, want [0 0]", again.planned)
	}

	if _, err := Sync(ctx, e.srv, e.store, []string{"zlib"}, SyncOptions{Channels: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("sync of an unknown channel: %v, want an error naming it", err)
	}
}

func TestSyncReports404AndGoesOn(t *testing.T) {
	up := newUpstreamDir(t, testdata.Path(t, "conda_format_repo"))
	e := newEnv(t, chanYAML("fmt", up.URL))
	rep, err := Sync(context.Background(), e.srv, e.store, []string{"fmt"}, SyncOptions{Jobs: 4})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range rep.Failures {
		got = append(got, fmt.Sprintf("%s/%s/%s: %s", f.Channel, f.Subdir, f.Filename, f.Reason))
	}
	want := []string{
		"fmt/linux-64/libgcc-ng-8.2.0-hdf63c60_1.tar.bz2: not found upstream (404)",
		"fmt/win-64/vc-14.1-h0510ff6_4.tar.bz2: not found upstream (404)",
		"fmt/win-64/vs2015_runtime-14.15.26706-h3a45250_4.tar.bz2: not found upstream (404)",
		"fmt/win-64/zlib-1.2.8-0.tar.bz2: not found upstream (404)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("failures:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rep.Fetched != 8 || rep.Records != 12 {
		t.Errorf("report %+v; want 12 records, 8 fetched", rep)
	}
}

// Reset hashes every cached file again; one whose bytes rotted on disk is dropped
// and fetched again.
func TestSyncResetRefetchesCorruptBlob(t *testing.T) {
	e, files, up := synced(t)
	victim := files[0]
	p := filepath.Join(e.data, "blobs", victim.SHA256[:2], victim.SHA256)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := Sync(context.Background(), e.srv, e.store, []string{"zlib"}, SyncOptions{Reset: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Reverified != 8 || rep.Dropped != 1 || rep.Fetched != 1 || rep.Present != 7 {
		t.Errorf("reset report %+v; want 8 re-verified, 1 dropped, 1 fetched, 7 present", rep)
	}
	if n := up.pkgHits()[victim.path()]; n != 2 {
		t.Errorf("%s requested %d times in all, want 2", victim.path(), n)
	}
	if got, _ := os.ReadFile(p); sha(got) != victim.SHA256 {
		t.Errorf("the blob of %s is still wrong after the reset sync", victim.path())
	}
}

// A sync whose context ends stops: what is committed stays, the error says so.
func TestSyncInterrupted(t *testing.T) {
	dir, files := miniChannel(t)
	up := newUpstreamDir(t, dir)
	up.slow.Store(true)
	e := newEnv(t, chanYAML("zlib", up.URL))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prog := &recorder{onDone: cancel}
	rep, err := Sync(ctx, e.srv, e.store, []string{"zlib"}, SyncOptions{Jobs: 1, Progress: prog})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted sync: err %v, want context.Canceled", err)
	}
	if rep == nil || rep.Fetched < 1 || rep.Fetched >= len(files) {
		t.Fatalf("interrupted sync report %+v; want some fetched, not all", rep)
	}
	cached := 0
	for _, f := range files {
		if e.store.Has(f.SHA256) {
			cached++
		}
	}
	if cached != rep.Fetched {
		t.Errorf("%d files cached, the report says %d fetched", cached, rep.Fetched)
	}
}

// ---------------------------------------------------------------------------
// Export and Import

func TestExportImportRoundTrip(t *testing.T) {
	e, files, _ := synced(t)
	tb, rep := export(t, e, ExportOptions{Source: "test.yaml", TempDir: t.TempDir()})
	if rep.Packages != 8 || rep.Bytes != totalSize(files) {
		t.Errorf("export report %+v", rep)
	}
	m, entries := readEntries(t, tb)
	if m.Format != "condaproxy-export" || m.Version != manifestVersion || m.Delta || m.Source != "test.yaml" {
		t.Errorf("manifest header %+v", m)
	}
	if len(m.Files) != len(entries)-1 {
		t.Errorf("manifest lists %d files, the tar holds %d", len(m.Files), len(entries)-1)
	}
	byName := map[string][]byte{}
	for _, en := range entries {
		byName[en.name] = en.data
	}
	for _, f := range m.Files {
		if d, ok := byName[f.Path]; !ok || sha(d) != f.SHA256 || int64(len(d)) != f.Size {
			t.Errorf("%s: manifest and tar disagree", f.Path)
		}
	}
	checkExportedShards(t, byName)

	f := newEnv(t, chanYAML("zlib"))
	irep, err := Import(context.Background(), f.srv, f.store, bytes.NewReader(tb), ImportOptions{Known: known("zlib")})
	if err != nil {
		t.Fatal(err)
	}
	if irep.Packages != 8 || irep.Bytes != totalSize(files) || !slices.Equal(irep.Channels, []string{"zlib"}) {
		t.Errorf("import report %+v", irep)
	}
	for _, fl := range files {
		code, body := f.get("/zlib/" + fl.path())
		if code != 200 || sha(body) != fl.SHA256 {
			t.Errorf("GET %s after import: %d", fl.path(), code)
		}
	}
	// Importing the same tar again changes nothing and still serves.
	if _, err := Import(context.Background(), f.srv, f.store, bytes.NewReader(tb), ImportOptions{Known: known("zlib")}); err != nil {
		t.Errorf("a second import of the same tar: %v", err)
	}
	// After a restart, the import is still served.
	f.close()
	f.open()
	for _, fl := range files {
		if code, body := f.get("/zlib/" + fl.path()); code != 200 || sha(body) != fl.SHA256 {
			t.Errorf("GET %s after import and restart: %d", fl.path(), code)
		}
	}
}

// Every way a tar can be wrong is refused whole, naming what is wrong, and the
// cache is left exactly as it was.
func TestImportRefusals(t *testing.T) {
	e, files, _ := synced(t)
	tb, _ := export(t, e, ExportOptions{})
	m, entries := readEntries(t, tb)
	pkgIdx := -1
	for i, en := range entries {
		if isPkg(en.name) {
			pkgIdx = i
			break
		}
	}
	victim := entries[pkgIdx].name
	jsonIdx := slices.IndexFunc(entries, func(en entry) bool { return strings.HasSuffix(en.name, "/repodata.json") })
	clone := func() (Manifest, []entry) {
		m2 := m
		m2.Files = slices.Clone(m.Files)
		es := make([]entry, len(entries))
		for i, en := range entries {
			es[i] = entry{en.name, bytes.Clone(en.data)}
		}
		return m2, es
	}
	setManifest := func(m *Manifest, p string, d []byte) {
		for i := range m.Files {
			if m.Files[i].Path == p {
				m.Files[i].SHA256, m.Files[i].Size = sha(d), int64(len(d))
			}
		}
	}
	cases := []struct {
		name  string
		tar   func() []byte
		known func(string) bool
		want  []string
	}{
		{"package byte flipped", func() []byte {
			m2, es := clone()
			es[pkgIdx].data[len(es[pkgIdx].data)/3] ^= 1
			return writeEntries(m2, es)
		}, nil, []string{victim}},
		{"repodata byte flipped", func() []byte {
			m2, es := clone()
			es[jsonIdx].data[5] ^= 1
			return writeEntries(m2, es)
		}, nil, []string{entries[jsonIdx].name, "sha256"}},
		{"package and manifest agree, the record does not", func() []byte {
			m2, es := clone()
			es[pkgIdx].data[10] ^= 1
			setManifest(&m2, victim, es[pkgIdx].data)
			return writeEntries(m2, es)
		}, nil, []string{victim, "record"}},
		{"truncated mid-package", func() []byte {
			raw := writeEntries(clone())
			i := bytes.Index(raw, entries[pkgIdx].data[:512])
			return raw[:i+len(entries[pkgIdx].data)/2]
		}, nil, []string{victim}},
		{"an entry missing", func() []byte {
			m2, es := clone()
			return writeEntries(m2, slices.Delete(es, pkgIdx, pkgIdx+1))
		}, nil, []string{victim, "not in the tar"}},
		{"an entry not in the manifest", func() []byte {
			m2, es := clone()
			return writeEntries(m2, append(es, entry{"zlib/linux-64/extra-1.0-0.conda", []byte("x")}))
		}, nil, []string{"zlib/linux-64/extra-1.0-0.conda"}},
		{"an entry twice", func() []byte {
			m2, es := clone()
			return writeEntries(m2, append(es, es[pkgIdx]))
		}, nil, []string{victim}},
		{"a package its repodata does not list", func() []byte {
			m2, es := clone()
			d := es[pkgIdx].data
			name := strings.TrimSuffix(victim, ".conda") + "-copy.conda"
			m2.Files = append(m2.Files, ManifestFile{Path: name, Size: int64(len(d)), SHA256: sha(d)})
			return writeEntries(m2, append(es, entry{name, d}))
		}, nil, []string{"-copy.conda", "no record"}},
		{"a record whose package is missing", func() []byte {
			m2, es := clone()
			m2.Files = slices.DeleteFunc(m2.Files, func(f ManifestFile) bool { return f.Path == victim })
			return writeEntries(m2, slices.Delete(es, pkgIdx, pkgIdx+1))
		}, nil, []string{victim[strings.LastIndex(victim, "/")+1:], "does not hold"}},
		{"manifest path with ..", func() []byte {
			m2, es := clone()
			m2.Files[0].Path = "zlib/../../etc/passwd"
			return writeEntries(m2, es)
		}, nil, []string{"zlib/../../etc/passwd"}},
		{"manifest absolute path", func() []byte {
			m2, es := clone()
			m2.Files[0].Path = "/etc/zlib/linux-64/x.conda"
			return writeEntries(m2, es)
		}, nil, []string{"/etc/zlib/linux-64/x.conda"}},
		{"tar entry with ..", func() []byte {
			m2, es := clone()
			es = append(es, entry{"zlib/linux-64/../../x.conda", []byte("x")})
			return writeEntries(m2, es)
		}, nil, []string{"x.conda"}},
		{"tar entry with an absolute path", func() []byte {
			m2, es := clone()
			return writeEntries(m2, append(es, entry{"/zlib/linux-64/abs.conda", []byte("x")}))
		}, nil, []string{"/zlib/linux-64/abs.conda", "outside the tree"}},
		{"a package replaced by a symbolic link", func() []byte {
			m2, es := clone()
			return writeEntries(m2, slices.Delete(es, pkgIdx, pkgIdx+1),
				&tar.Header{Name: victim, Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd", Mode: 0o777})
		}, nil, []string{victim, "symbolic link", "/etc/passwd"}},
		{"a hard link", func() []byte {
			m2, es := clone()
			return writeEntries(m2, es, &tar.Header{Name: "zlib/linux-64/hard.conda", Typeflag: tar.TypeLink, Linkname: victim, Mode: 0o644})
		}, nil, []string{"zlib/linux-64/hard.conda", "hard link"}},
		{"a character device", func() []byte {
			m2, es := clone()
			return writeEntries(m2, es, &tar.Header{Name: "zlib/linux-64/null.conda", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666})
		}, nil, []string{"zlib/linux-64/null.conda", "character device"}},
		{"a block device", func() []byte {
			m2, es := clone()
			return writeEntries(m2, es, &tar.Header{Name: "zlib/linux-64/sda.conda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o660})
		}, nil, []string{"zlib/linux-64/sda.conda", "block device"}},
		{"a named pipe", func() []byte {
			m2, es := clone()
			return writeEntries(m2, es, &tar.Header{Name: "zlib/linux-64/fifo.conda", Typeflag: tar.TypeFifo, Mode: 0o644})
		}, nil, []string{"zlib/linux-64/fifo.conda", "named pipe"}},
		{"a package as a sparse file", func() []byte {
			m2, es := clone()
			raw := writeEntries(m2, slices.Delete(es, pkgIdx, pkgIdx+1))
			raw = raw[:len(raw)-1024] // the end-of-archive blocks
			raw = append(raw, sparseEntry(victim, []byte("x"), int64(len(entries[pkgIdx].data)))...)
			return append(raw, make([]byte, 1024)...)
		}, nil, []string{victim, "sparse"}},
		{"manifest not first", func() []byte {
			m2, es := clone()
			es[0], es[1] = es[1], es[0]
			return writeEntries(m2, es)
		}, nil, []string{ManifestName}},
		{"newer format", func() []byte {
			m2, es := clone()
			m2.Version = 3
			return writeEntries(m2, es)
		}, nil, []string{"version 3"}},
		{"a shard byte flipped", func() []byte {
			m2, es := clone()
			i := slices.IndexFunc(es, func(en entry) bool { return strings.Contains(en.name, "/shards/") })
			es[i].data[len(es[i].data)/2] ^= 1
			return writeEntries(m2, es)
		}, nil, []string{"/shards/", "sha256"}},
		{"a shard not named by its hash", func() []byte {
			m2, es := clone()
			i := slices.IndexFunc(es, func(en entry) bool { return strings.Contains(en.name, "/shards/") })
			name := path.Dir(es[i].name) + "/" + strings.Repeat("ab", 32) + ".msgpack.zst"
			m2.Files = append(m2.Files, ManifestFile{Path: name, Size: int64(len(es[i].data)), SHA256: sha(es[i].data)})
			return writeEntries(m2, append(es, entry{name, es[i].data}))
		}, nil, []string{"named <sha256 of its bytes>"}},
		{"a package at the top of the tree", func() []byte {
			m2, es := clone()
			d := es[pkgIdx].data
			m2.Files = append(m2.Files, ManifestFile{Path: "top-1.0-0.conda", Size: int64(len(d)), SHA256: sha(d)})
			return writeEntries(m2, append(es, entry{"top-1.0-0.conda", d}))
		}, nil, []string{"top-1.0-0.conda", "outside the tree"}},
		{"not a tar", func() []byte { return []byte("hello, this is not a tar file at all") }, nil, []string{"not a condaproxy export"}},
		{"empty", func() []byte { return nil }, nil, []string{"not a condaproxy export"}},
		{"channel not configured", func() []byte { return tb }, known("other"), []string{`"zlib"`}},
	}
	f := newEnv(t, chanYAML("zlib"))
	before := f.state()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := c.known
			if k == nil {
				k = known("zlib")
			}
			_, err := Import(context.Background(), f.srv, f.store, bytes.NewReader(c.tar()), ImportOptions{Known: k})
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("Import: %v, want ErrRefused", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Import error %q does not name %q", err, w)
				}
			}
			if after := f.state(); after != before {
				t.Errorf("a refused import changed the cache:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
	// And the intact tar imports, and is served whole.
	if _, err := Import(context.Background(), f.srv, f.store, bytes.NewReader(tb), ImportOptions{Known: known("zlib")}); err != nil {
		t.Fatalf("the intact tar: %v", err)
	}
	for _, fl := range files {
		if code, body := f.get("/zlib/" + fl.path()); code != 200 || sha(body) != fl.SHA256 {
			t.Errorf("GET %s after the refusals and a good import: %d", fl.path(), code)
		}
	}
}

// A record that carries only md5 (old channels, pre-2016 packages): an import must
// check the package against that md5, and serve it afterwards.
func TestImportMD5OnlyRecord(t *testing.T) {
	e, files, _ := synced(t)
	tb, _ := export(t, e, ExportOptions{})
	const sub = "zlib/osx-64/"
	const fn = "zlib-1.2.11-h1de35cc_3.tar.bz2"
	var want tFile
	for _, f := range files {
		if f.path() == "osx-64/"+fn {
			want = f
		}
	}
	// md5Only rewrites the export: the record of fn keeps md5 and size but loses
	// sha256; with alter, the file's bytes change (same size) and the manifest is
	// made to agree with the altered bytes.
	md5Only := func(alter bool) []byte {
		m, entries := readEntries(t, tb)
		ji := slices.IndexFunc(entries, func(en entry) bool { return en.name == sub+"repodata.json" })
		pi := slices.IndexFunc(entries, func(en entry) bool { return en.name == sub+fn })
		if ji < 0 || pi < 0 {
			t.Fatalf("export lacks %s entries", sub)
		}
		var doc map[string]json.RawMessage
		json.Unmarshal(entries[ji].data, &doc)
		var pk map[string]map[string]any
		json.Unmarshal(doc["packages"], &pk)
		if pk[fn]["md5"] == nil {
			t.Fatalf("record of %s has no md5", fn)
		}
		delete(pk[fn], "sha256")
		doc["packages"], _ = json.Marshal(pk)
		entries[ji].data, _ = json.Marshal(doc)
		// The .zst is dropped: the point is repodata.json.
		entries = slices.DeleteFunc(entries, func(en entry) bool { return en.name == sub+"repodata.json.zst" })
		m.Files = slices.DeleteFunc(m.Files, func(f ManifestFile) bool { return f.Path == sub+"repodata.json.zst" })
		pi = slices.IndexFunc(entries, func(en entry) bool { return en.name == sub+fn })
		ji = slices.IndexFunc(entries, func(en entry) bool { return en.name == sub+"repodata.json" })
		if alter {
			entries[pi].data = bytes.Clone(entries[pi].data)
			entries[pi].data[100] ^= 1
		}
		for i := range m.Files {
			switch m.Files[i].Path {
			case sub + "repodata.json":
				m.Files[i].SHA256, m.Files[i].Size = sha(entries[ji].data), int64(len(entries[ji].data))
			case sub + fn:
				m.Files[i].SHA256 = sha(entries[pi].data)
			}
		}
		return writeEntries(m, entries)
	}

	t.Run("intact bytes are imported and served", func(t *testing.T) {
		f := newEnv(t, chanYAML("zlib"))
		if _, err := Import(context.Background(), f.srv, f.store, bytes.NewReader(md5Only(false)), ImportOptions{Known: known("zlib")}); err != nil {
			t.Fatalf("Import: %v", err)
		}
		if code, body := f.get("/" + sub + fn); code != 200 || sha(body) != want.SHA256 {
			t.Errorf("GET /%s%s after importing it with an md5-only record: %d (%.120s); want 200 and its bytes "+
				"(proxy.CommitImport writes the package index entry without MD5, and serveRecord finds an md5-only "+
				"record's blob only through an entry whose MD5 equals the record's)", sub, fn, code, body)
		}
	})
	t.Run("bytes not matching the md5 are refused", func(t *testing.T) {
		f := newEnv(t, chanYAML("zlib"))
		before := f.state()
		_, err := Import(context.Background(), f.srv, f.store, bytes.NewReader(md5Only(true)), ImportOptions{Known: known("zlib")})
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), fn) {
			t.Errorf("Import of %s%s whose bytes do not match its record's md5 (record without sha256, manifest agreeing "+
				"with the altered file): err %v; want ErrRefused naming it (mirror.Import compares a record's sha256 "+
				"and size only, never its md5)", sub, fn, err)
		}
		if after := f.state(); after != before {
			t.Errorf("the import changed the cache:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

// A conda channel with no upstreams serves what imports bring; before any import
// it has nothing, and sync, export and a client's request must say so, not panic.
func TestNoUpstreamChannelBeforeImport(t *testing.T) {
	e := newEnv(t, chanYAML("zlib"))
	ctx := context.Background()
	catch := func(name string, fn func() error) {
		t.Helper()
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%s on a channel with no upstreams and nothing imported panics: %v "+
					"(proxy.Server.load returns a nil *served with a nil error when no source has any state)", name, r)
			}
		}()
		if err := fn(); err != nil {
			t.Logf("%s: %v", name, err)
		}
	}
	catch("Sync", func() error {
		rep, err := Sync(ctx, e.srv, e.store, []string{"zlib"}, SyncOptions{})
		if err == nil && (rep.Records != 0 || len(rep.Failures) != 0) {
			t.Errorf("Sync: %+v", rep)
		}
		return err
	})
	catch("Export", func() error {
		_, err := Export(ctx, e.srv, e.store, io.Discard, ExportOptions{Channels: []string{"zlib"}})
		return err
	})
	catch("ServedFiles", func() error {
		_, err := e.srv.ServedFiles(ctx, "zlib", "linux-64", false)
		return err
	})
	if code, body := e.get("/zlib/linux-64/zlib-1.2.11-h7b6447c_3.conda"); code != 404 {
		t.Errorf("GET a package of a channel with no upstreams and nothing imported: %d (%.100s), want 404 "+
			"(proxy.Server.servePackage dereferences the nil *served that load returns)", code, body)
	}
}

// --delta: only what no earlier complete export wrote; a failed export marks nothing.
func TestExportDelta(t *testing.T) {
	e, files, _ := synced(t)
	// An export whose writer breaks half-way fails and marks nothing exported.
	_, err := Export(context.Background(), e.srv, e.store, &failingWriter{left: 200 << 10}, ExportOptions{Channels: []string{"zlib"}, Delta: true})
	if err == nil {
		t.Fatal("export to a writer that fails: no error")
	}
	tb, rep := export(t, e, ExportOptions{Delta: true})
	if rep.Packages != len(files) {
		t.Errorf("delta after a failed export holds %d packages, want all %d", rep.Packages, len(files))
	}
	m, _ := readEntries(t, tb)
	if !m.Delta {
		t.Errorf("delta manifest: delta false")
	}
	_, rep = export(t, e, ExportOptions{Delta: true})
	if rep.Packages != 0 {
		t.Errorf("a delta right after a complete one holds %d packages, want 0", rep.Packages)
	}
	// A full export still holds everything.
	_, rep = export(t, e, ExportOptions{})
	if rep.Packages != len(files) {
		t.Errorf("a full export after deltas holds %d packages, want %d", rep.Packages, len(files))
	}
	if _, err := Export(context.Background(), e.srv, e.store, io.Discard, ExportOptions{Channels: []string{"nope"}}); err == nil {
		t.Errorf("export of an unknown channel: no error")
	}
}

type failingWriter struct{ left int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, errors.New("disk full")
	}
	w.left -= len(p)
	return len(p), nil
}

// checkExportedShards: every subdir of an export has its sharded repodata,
// made from its repodata.json: each shard the index names is in the tar under
// the sha256 of its bytes, and together they hold exactly the records of the
// exported repodata.json.
func checkExportedShards(t *testing.T, byName map[string][]byte) {
	t.Helper()
	n := 0
	for name, doc := range byName {
		dir, ok := strings.CutSuffix(name, "/repodata.json")
		if !ok {
			continue
		}
		n++
		ix, err := shards.DecodeIndex(byName[dir+"/repodata_shards.msgpack.zst"])
		if err != nil {
			t.Fatalf("%s: index: %v", dir, err)
		}
		if ix.Info.Subdir != path.Base(dir) || ix.Info.ShardsBaseURL != "./shards/" {
			t.Errorf("%s: index info %+v", dir, ix.Info)
		}
		var want struct {
			Packages      map[string]json.RawMessage `json:"packages"`
			PackagesConda map[string]json.RawMessage `json:"packages.conda"`
		}
		json.Unmarshal(doc, &want)
		got := 0
		for pkg, sum := range ix.Shards {
			hexSum := hex.EncodeToString(sum)
			b, ok := byName[dir+"/shards/"+hexSum+".msgpack.zst"]
			if !ok || sha(b) != hexSum {
				t.Errorf("%s: the shard of %s is not in the tar under its hash", dir, pkg)
				continue
			}
			sh, err := shards.DecodeShard(b)
			if err != nil {
				t.Fatalf("%s: shard of %s: %v", dir, pkg, err)
			}
			for fn := range sh.Packages {
				if _, ok := want.Packages[fn]; !ok {
					t.Errorf("%s: %s in a shard, not in repodata.json", dir, fn)
				}
				got++
			}
			for fn := range sh.PackagesConda {
				if _, ok := want.PackagesConda[fn]; !ok {
					t.Errorf("%s: %s in a shard, not in repodata.json", dir, fn)
				}
				got++
			}
		}
		if w := len(want.Packages) + len(want.PackagesConda); got != w {
			t.Errorf("%s: shards hold %d records, repodata.json %d", dir, got, w)
		}
	}
	if n == 0 {
		t.Fatal("no subdir in the export")
	}
}

// The export's channeldata.json is upstream's, cut to exactly what the export
// holds: the names with an exported record (zlib; libgcc-ng, vc and
// vs2015_runtime have no file in the mini channel), each with the subdirs it was
// exported in, upstream's description kept; subdirs the exported ones. With
// platforms, the hidden subdirs are gone from both lists.
func TestExportChannelData(t *testing.T) {
	dir, _ := miniChannel(t)
	up := newUpstreamDir(t, dir)
	for _, tt := range []struct {
		keys, subdirs, zlib string
	}{
		{"", "linux-64,noarch,osx-64,win-32,win-64", "linux-64,osx-64,win-32,win-64"},
		{"    platforms: [linux-64]\n", "linux-64,noarch", "linux-64"},
	} {
		e := newEnv(t, chanYAML("zlib", up.URL)+tt.keys)
		if _, err := Sync(context.Background(), e.srv, e.store, []string{"zlib"}, SyncOptions{Jobs: 2}); err != nil {
			t.Fatal(err)
		}
		tb, _ := export(t, e, ExportOptions{TempDir: t.TempDir()})
		_, entries := readEntries(t, tb)
		var cd []byte
		for _, en := range entries {
			if en.name == "zlib/channeldata.json" {
				cd = en.data
			}
		}
		var doc struct {
			Packages map[string]struct {
				Subdirs     []string `json:"subdirs"`
				Description string   `json:"description"`
				Version     string   `json:"version"`
			} `json:"packages"`
			Subdirs []string `json:"subdirs"`
		}
		if err := json.Unmarshal(cd, &doc); err != nil {
			t.Fatalf("channeldata.json: %v\n%s", err, cd)
		}
		if got := strings.Join(doc.Subdirs, ","); got != tt.subdirs {
			t.Errorf("[%s] subdirs = %s, want %s", tt.keys, got, tt.subdirs)
		}
		if len(doc.Packages) != 1 {
			t.Errorf("[%s] packages = %v, want zlib alone", tt.keys, doc.Packages)
		}
		z := doc.Packages["zlib"]
		if got := strings.Join(z.Subdirs, ","); got != tt.zlib || z.Version == "" || !strings.Contains(z.Description, "zlib is designed") {
			t.Errorf("[%s] zlib = %+v, want subdirs %s and upstream's metadata", tt.keys, z, tt.zlib)
		}
		for _, leak := range []string{"vc", "libgcc-ng", "vs2015_runtime"} {
			if bytes.Contains(cd, []byte(`"`+leak+`"`)) {
				t.Errorf("[%s] channeldata.json names %s, which the export does not hold", tt.keys, leak)
			}
		}
	}
}

// A channel with no upstream, a mirror tool's filter (pkg_list,
// include_dependencies, no platforms): the subdirs its closure runs over, and a
// sync covers, are those its imports brought.
func TestImportedSubdirsFeedTheClosure(t *testing.T) {
	e, _, _ := synced(t)
	tb, _ := export(t, e, ExportOptions{TempDir: t.TempDir()})
	f := newEnv(t, chanYAML("zlib")+"    pkg_list: [zlib]\n    include_dependencies: true\n")
	if subs, err := f.srv.SyncSubdirs(context.Background(), "zlib"); err != nil || strings.Join(subs, ",") != "noarch" {
		t.Errorf("before the import: SyncSubdirs = %v, %v", subs, err)
	}
	if _, err := Import(context.Background(), f.srv, f.store, bytes.NewReader(tb), ImportOptions{Known: known("zlib")}); err != nil {
		t.Fatal(err)
	}
	subs, err := f.srv.SyncSubdirs(context.Background(), "zlib")
	if got := strings.Join(subs, ","); err != nil || got != "noarch,linux-64,osx-64,win-32,win-64" {
		t.Errorf("after the import: SyncSubdirs = %s, %v", got, err)
	}
	if code, body := f.get("/zlib/win-64/repodata.json"); code != 200 || !bytes.Contains(body, []byte("zlib-1.2.11-h62dcd97_3")) {
		t.Errorf("win-64 after the import: %d %.200s", code, body)
	}
}
