// Package e2e runs condaproxy against a real conda client: rattler, the solver
// library inside pixi, through its official JS/WASM bindings (@conda-org/rattler,
// installed by `make e2e-deps`) driven by solve.cjs.
//
// The proxy under test is the real binary, built once in TestMain and run as a
// subprocess with its own configuration file; its upstream is an httptest server
// serving the shared testdata channel conda_format_repo (real Anaconda zlib
// packages and repodata).
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/condaproxy/condaproxy/internal/testproc"
)

// testTimeout bounds each test as a whole, so a stuck client or proxy cannot hang CI.
const testTimeout = 2 * time.Minute

// proxyBin is the condaproxy binary built by TestMain.
var proxyBin string

func TestMain(m *testing.M) {
	os.Exit(testproc.RunWithBinary(m, "e2e", &proxyBin))
}

// requireRattler skips when node is absent on a developer machine, and fails when CI
// is set (CI must run this test) or when node is there but the npm package is not.
func requireRattler(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		testdata.Skipf(t, testdata.Node, "node is not on PATH: the rattler end-to-end test needs it; install node and run `make e2e-deps`")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "@conda-org", "rattler", "package.json")); err != nil {
		t.Fatalf("e2e/node_modules/@conda-org/rattler is missing: run `make e2e-deps` (npm ci in e2e/) first: %v", err)
	}
}

// --- upstream: the testdata channel, with a request log -------------------------------

type upstream struct {
	srv *httptest.Server
	dir string

	mu    sync.Mutex
	paths []string // every request path, in order
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	return startUpstreamDir(t, testdata.Path(t, "conda_format_repo"), "osx-64")
}

// startUpstreamDir serves the channel in dir; subdir must exist in it.
func startUpstreamDir(t *testing.T, dir, subdir string) *upstream {
	t.Helper()
	u := &upstream{dir: dir}
	if _, err := os.Stat(filepath.Join(u.dir, subdir, "repodata.json")); err != nil {
		t.Fatalf("testdata channel: %v", err)
	}
	files := http.FileServer(http.Dir(u.dir))
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.paths = append(u.paths, r.URL.Path)
		u.mu.Unlock()
		files.ServeHTTP(w, r)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.srv.Listener.Close()
	u.srv.Listener = ln
	u.srv.Start()
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.paths)
}

// repodataRequests counts the upstream requests for any form of repodata.
func (u *upstream) repodataRequests() int {
	n := 0
	for _, p := range u.requests() {
		if strings.Contains(path.Base(p), "repodata") {
			n++
		}
	}
	return n
}

// --- the proxy under test, as a subprocess ------------------------------------------

type proxyProc struct {
	base   string // http://127.0.0.1:PORT
	stderr *testdata.Buffer
}

// startProxy runs condaproxy serve with one channel, anaconda, pulling from
// upstreamURL; extra is appended to the configuration file. It returns once
// /readyz answers 200, and stops the proxy (SIGTERM, then wait) at cleanup.
// A port another process takes before the proxy binds it is retried with a new one.
func startProxy(t *testing.T, ctx context.Context, upstreamURL, extra string) *proxyProc {
	t.Helper()
	return startProxyWith(t, ctx, upstreamURL, extra, "", nil)
}

// startProxyWith is startProxy with top-level configuration (before
// channels:) and environment variables for the process.
func startProxyWith(t *testing.T, ctx context.Context, upstreamURL, extra, top string, env []string) *proxyProc {
	t.Helper()
	data := t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "condaproxy.yaml")
	var cfg, base string
	p, err := testproc.OnFreePort(t, func(port int) (*testproc.Proc, error) {
		cfg = fmt.Sprintf(`listen: 127.0.0.1:%d
data: %s
log:
  level: debug
  format: text
%schannels:
  - name: anaconda
    upstreams:
      - url: %s
%s`, port, data, top, upstreamURL, extra)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		base = fmt.Sprintf("http://127.0.0.1:%d", port)
		p := testproc.Start(t, append([]string{"CONDAPROXY_CONFIG="}, env...), proxyBin, "serve", "-c", cfgPath)
		return p, waitReady(ctx, base+"/readyz", p.Done())
	})
	if err != nil {
		t.Fatalf("condaproxy did not become ready: %v (exit: %v)\nconfig:\n%s\noutput:\n%s", err, p.Err(), cfg, p.Out.String())
	}
	t.Cleanup(func() {
		p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.Done():
		case <-time.After(30 * time.Second):
			t.Errorf("condaproxy did not stop within 30s of SIGTERM; killing it")
			p.Kill()
		}
		if err := p.Err(); err != nil {
			t.Errorf("condaproxy exited with %v after SIGTERM (want a clean exit)", err)
		}
		if t.Failed() {
			t.Logf("condaproxy output:\n%s", p.Out.String())
		}
	})
	return &proxyProc{base: base, stderr: p.Out}
}

func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.After(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("process exited")
		case <-deadline:
			return errors.New("no 200 from /readyz within 30s")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// --- the client -----------------------------------------------------------------------

// solvedPackage is one line of solve.cjs's output.
type solvedPackage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Build   string `json:"build"`
	Subdir  string `json:"subdir"`
	URL     string `json:"url"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
}

// solve runs solve.cjs (rattler) against channelURL and returns the solution. The
// requests rattler made are logged.
func solve(t *testing.T, ctx context.Context, channelURL, platform string, specs ...string) []solvedPackage {
	t.Helper()
	pkgs, _ := solveTrace(t, ctx, channelURL, platform, specs...)
	return pkgs
}

// solveTrace is solve, with the requests rattler made ("GET <url> -> <status>").
func solveTrace(t *testing.T, ctx context.Context, channelURL, platform string, specs ...string) ([]solvedPackage, []string) {
	t.Helper()
	return solveTraceEnv(t, ctx, nil, channelURL, platform, specs...)
}

// solveTraceEnv is solveTrace with environment variables for node.
func solveTraceEnv(t *testing.T, ctx context.Context, env []string, channelURL, platform string, specs ...string) ([]solvedPackage, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	args := append([]string{"solve.cjs", channelURL, platform}, specs...)
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Env = append(append(os.Environ(), "SOLVE_TRACE=1"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("rattler solve %s %v (%s, %v):\n%s", platform, specs, channelURL, time.Since(start).Round(time.Millisecond),
		strings.TrimRight(stderr.String(), "\n"))
	if err != nil {
		t.Fatalf("node solve.cjs %s %s %v: %v\nstdout: %s", channelURL, platform, specs, err, stdout.String())
	}
	var out struct {
		Packages []solvedPackage `json:"packages"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("solve.cjs printed no JSON: %v\nstdout: %s", err, stdout.String())
	}
	var trace []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		if r, ok := strings.CutPrefix(line, "fetch "); ok {
			trace = append(trace, r)
		}
	}
	return out.Packages, trace
}

// --- checks ---------------------------------------------------------------------------

// repodataEntry is what the test reads from the testdata repodata.json.
type repodataEntry struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
}

func readRepodata(t *testing.T, dir, subdir string) map[string]repodataEntry {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, subdir, "repodata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rd struct {
		Packages      map[string]repodataEntry `json:"packages"`
		PackagesConda map[string]repodataEntry `json:"packages.conda"`
	}
	if err := json.Unmarshal(raw, &rd); err != nil {
		t.Fatalf("%s/repodata.json: %v", subdir, err)
	}
	all := map[string]repodataEntry{}
	for fn, e := range rd.Packages {
		all[fn] = e
	}
	for fn, e := range rd.PackagesConda {
		all[fn] = e
	}
	return all
}

var httpClient = &http.Client{
	Timeout: 30 * time.Second,
	// The body must be the bytes served, not a transparently decoded copy.
	Transport: &http.Transport{DisableCompression: true, Proxy: nil},
}

func get(t *testing.T, ctx context.Context, url string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, body
}

// checkZlibDownload fetches pkg.url through the proxy and checks its bytes against
// what rattler reported, what the upstream repodata says, and the file itself.
func checkZlibDownload(t *testing.T, ctx context.Context, up *upstream, pkg solvedPackage) {
	t.Helper()
	fn := path.Base(pkg.URL)
	entry, ok := readRepodata(t, up.dir, pkg.Subdir)[fn]
	if !ok {
		t.Fatalf("rattler chose %s, which is not in %s/repodata.json", fn, pkg.Subdir)
	}
	if pkg.SHA256 != entry.SHA256 || pkg.Size != entry.Size {
		t.Errorf("rattler reports %s sha256=%s size=%d; repodata.json says sha256=%s size=%d",
			fn, pkg.SHA256, pkg.Size, entry.SHA256, entry.Size)
	}
	status, body := get(t, ctx, pkg.URL)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", pkg.URL, status, body)
	}
	sum := sha256.Sum256(body)
	if got := hex.EncodeToString(sum[:]); got != pkg.SHA256 || got != entry.SHA256 {
		t.Errorf("GET %s: sha256 %s; rattler says %s, repodata.json says %s", pkg.URL, got, pkg.SHA256, entry.SHA256)
	}
	if int64(len(body)) != pkg.Size || int64(len(body)) != entry.Size {
		t.Errorf("GET %s: %d bytes; rattler says %d, repodata.json says %d", pkg.URL, len(body), pkg.Size, entry.Size)
	}
	file, err := os.ReadFile(filepath.Join(up.dir, pkg.Subdir, fn))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, file) {
		t.Errorf("GET %s: body differs from upstream's file", pkg.URL)
	}
}

func findPackage(pkgs []solvedPackage, name string) (solvedPackage, bool) {
	for _, p := range pkgs {
		if p.Name == name {
			return p, true
		}
	}
	return solvedPackage{}, false
}

func names(pkgs []solvedPackage) []string {
	var n []string
	for _, p := range pkgs {
		n = append(n, p.Name+"="+p.Version+"="+p.Build)
	}
	return n
}

// --- tests ----------------------------------------------------------------------------

func TestRattlerSolvesThroughProxy(t *testing.T) {
	requireRattler(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	up := startUpstream(t)
	px := startProxy(t, ctx, up.srv.URL, "")
	channel := px.base + "/anaconda"

	// osx-64: zlib has no dependencies, so the solution is zlib alone.
	pkgs := solve(t, ctx, channel, "osx-64", "zlib")
	if len(pkgs) != 1 {
		t.Fatalf("osx-64 zlib: want exactly one package, got %v", names(pkgs))
	}
	zlib := pkgs[0]
	if zlib.Name != "zlib" || zlib.Version != "1.2.11" || zlib.Subdir != "osx-64" {
		t.Fatalf("osx-64 zlib: got %+v, want zlib 1.2.11 from osx-64", zlib)
	}
	if want := channel + "/osx-64/"; !strings.HasPrefix(zlib.URL, want) {
		t.Fatalf("package url %s does not point at the proxy (%s...)", zlib.URL, want)
	}
	checkZlibDownload(t, ctx, up, zlib)

	// The same solve again is answered from the proxy's cache.
	before := up.repodataRequests()
	again := solve(t, ctx, channel, "osx-64", "zlib")
	if !slices.Equal(names(again), names(pkgs)) {
		t.Errorf("second osx-64 solve: got %v, first got %v", names(again), names(pkgs))
	}
	if after := up.repodataRequests(); after != before {
		t.Errorf("second osx-64 solve made %d new upstream repodata requests (want a cache hit); upstream log: %v",
			after-before, up.requests())
	}

	// linux-64: zlib depends on libgcc-ng (solve only: its package file is not in
	// the testdata). linux-64 upstream also holds shard files rattler cannot read.
	linux := solve(t, ctx, channel, "linux-64", "zlib")
	for _, name := range []string{"zlib", "libgcc-ng"} {
		p, ok := findPackage(linux, name)
		if !ok {
			t.Errorf("linux-64 zlib: solution %v lacks %s", names(linux), name)
			continue
		}
		if want := channel + "/linux-64/"; !strings.HasPrefix(p.URL, want) {
			t.Errorf("linux-64 %s url %s does not point at the proxy (%s...)", name, p.URL, want)
		}
	}
	before = up.repodataRequests()
	solve(t, ctx, channel, "linux-64", "zlib")
	if after := up.repodataRequests(); after != before {
		t.Errorf("second linux-64 solve made %d new upstream repodata requests (want a cache hit)", after-before)
	}

	// The proxy answers shard requests itself and never passes upstream's through.
	reqs := up.requests()
	for _, p := range reqs {
		if strings.Contains(p, "repodata_shards") || strings.Contains(p, ".msgpack") {
			t.Errorf("the proxy asked upstream for %s: shards must never be passed through", p)
		}
	}
	t.Logf("upstream saw, in order: %v", reqs)
}

func TestRattlerWithToken(t *testing.T) {
	requireRattler(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	up := startUpstream(t)
	px := startProxy(t, ctx, up.srv.URL, "auth:\n  tokens: [sekret]\n")
	channel := px.base + "/t/sekret/anaconda"

	pkgs := solve(t, ctx, channel, "osx-64", "zlib")
	if len(pkgs) != 1 || pkgs[0].Name != "zlib" {
		t.Fatalf("osx-64 zlib with token: want zlib alone, got %v", names(pkgs))
	}
	zlib := pkgs[0]
	if want := channel + "/osx-64/"; !strings.HasPrefix(zlib.URL, want) {
		t.Fatalf("package url %s lost the token prefix (want %s...)", zlib.URL, want)
	}
	checkZlibDownload(t, ctx, up, zlib)

	bare := strings.Replace(zlib.URL, "/t/sekret/", "/", 1)
	if status, body := get(t, ctx, bare); status != http.StatusUnauthorized {
		t.Errorf("GET %s without token: status %d, want 401: %s", bare, status, body)
	}
	if status, _ := get(t, ctx, px.base+"/anaconda/osx-64/repodata.json"); status != http.StatusUnauthorized {
		t.Errorf("repodata without token: status %d, want 401", status)
	}
	if status, _ := get(t, ctx, px.base+"/t/wrong/anaconda/osx-64/repodata.json"); status != http.StatusUnauthorized {
		t.Errorf("repodata with a wrong token: status %d, want 401", status)
	}
}

// A filtered channel: rattler is never offered a hidden record, so its solution
// honours the rules even where the newest build would have broken them.
func TestRattlerThroughFilteredChannel(t *testing.T) {
	requireRattler(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The conda-forge python=3.9 subset: its newest python 3.9 builds need
	// openssl >=3, older ones openssl 1.1.1.
	up := startUpstreamDir(t, testdata.Path(t, "cf-subchannel-py39"), "linux-64")
	px := startProxy(t, ctx, up.srv.URL, `    platforms: [linux-64]
    blacklist: ["openssl >=3"]
`)
	channel := px.base + "/anaconda"
	pkgs := solve(t, ctx, channel, "linux-64", "python 3.9.*")
	py, ok := findPackage(pkgs, "python")
	if !ok || !strings.HasPrefix(py.Version, "3.9") {
		t.Fatalf("no python 3.9 in the solution: %v", names(pkgs))
	}
	ssl, ok := findPackage(pkgs, "openssl")
	if !ok {
		t.Fatalf("python 3.9 without openssl? %v", names(pkgs))
	}
	if !strings.HasPrefix(ssl.Version, "1.") {
		t.Errorf("solution has openssl %s, hidden by blacklist openssl >=3", ssl.Version)
	}
	// The same filter holds in the repodata the client read, in every form.
	for _, form := range []string{"repodata.json", "current_repodata.json"} {
		code, body := get(t, ctx, channel+"/linux-64/"+form)
		if code != 200 {
			t.Fatalf("%s: %d", form, code)
		}
		var doc struct {
			Packages      map[string]repodataEntry `json:"packages"`
			PackagesConda map[string]repodataEntry `json:"packages.conda"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		for fn, r := range doc.Packages {
			if r.Name == "openssl" && strings.HasPrefix(r.Version, "3") {
				t.Errorf("%s offers hidden %s", form, fn)
			}
		}
		for fn, r := range doc.PackagesConda {
			if r.Name == "openssl" && strings.HasPrefix(r.Version, "3") {
				t.Errorf("%s offers hidden %s", form, fn)
			}
		}
	}
	// Asking for a hidden record finds nothing to solve with.
	cmd := exec.CommandContext(ctx, "node", "solve.cjs", channel, "linux-64", "openssl >=3")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("rattler solved openssl >=3 through a channel that hides it: %s", out)
	}
	// A subdir outside platforms does not exist for the client.
	if code, _ := get(t, ctx, channel+"/osx-64/repodata.json"); code != 404 {
		t.Errorf("osx-64 repodata: %d, want 404", code)
	}
}

// TestRattlerSolvesFromShards: rattler asks for each subdir's shard index first
// and, given one, solves from shards without reading repodata.json; through a
// front that answers the index 404 it falls back to repodata.json and solves to
// the same answer. The channel is filtered: the shards hold what repodata.json
// holds, hidden records in neither.
func TestRattlerSolvesFromShards(t *testing.T) {
	requireRattler(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	up := startUpstreamDir(t, testdata.Path(t, "cf-subchannel-py39"), "linux-64")
	px := startProxy(t, ctx, up.srv.URL, `    platforms: [linux-64]
    blacklist: ["openssl >=3"]
`)
	channel := px.base + "/anaconda"
	sharded, trace := solveTrace(t, ctx, channel, "linux-64", "python 3.9.*")
	var shardReqs int
	for _, sd := range []string{"linux-64", "noarch"} {
		index := "GET " + channel + "/" + sd + "/repodata_shards.msgpack.zst -> 200"
		if !slices.Contains(trace, index) {
			t.Errorf("rattler did not get the %s shard index: %v", sd, trace)
		}
	}
	for _, r := range trace {
		if strings.Contains(r, "/repodata.json") {
			t.Errorf("rattler read repodata.json although shards were served: %s", r)
		}
		if strings.Contains(r, "/shards/") {
			shardReqs++
			if !strings.HasSuffix(r, "-> 200") {
				t.Errorf("shard request failed: %s", r)
			}
		}
	}
	if shardReqs < 5 {
		t.Errorf("only %d shard requests for python's closure: %v", shardReqs, trace)
	}
	if ssl, ok := findPackage(sharded, "openssl"); !ok || !strings.HasPrefix(ssl.Version, "1.") {
		t.Errorf("from shards: openssl %+v, want a 1.x (openssl >=3 is hidden)", ssl)
	}

	// The same proxy behind a front with no shards: the index 404s.
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "repodata_shards") || strings.Contains(r.URL.Path, "/shards/") {
			http.NotFound(w, r)
			return
		}
		resp, err := http.Get(px.base + r.URL.RequestURI())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer front.Close()
	flat, trace := solveTrace(t, ctx, front.URL+"/anaconda", "linux-64", "python 3.9.*")
	if !slices.ContainsFunc(trace, func(r string) bool { return strings.Contains(r, "/linux-64/repodata.json") }) {
		t.Errorf("with the index 404, rattler did not fall back to repodata.json: %v", trace)
	}
	key := func(ps []solvedPackage) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Name+" "+p.Version+" "+path.Base(p.URL)+" "+p.SHA256)
		}
		slices.Sort(out)
		return out
	}
	if a, b := key(sharded), key(flat); !slices.Equal(a, b) {
		t.Errorf("from shards and from repodata.json the solutions differ:\nshards %v\njson   %v", a, b)
	}
}

// TestRattlerThroughForwardProxy: a real conda client whose channel URL is the
// upstream's own (https, with its own test CA) goes through condaproxy's
// forward proxy trusting only condaproxy's CA, and solves and downloads from
// the proxy's cache under its filter. condaproxy trusts the upstream through
// SSL_CERT_FILE, as Go programs do. The reverse path then serves the same
// package with no new upstream request: one cache for both modes.
func TestRattlerThroughForwardProxy(t *testing.T) {
	requireRattler(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := testdata.Path(t, "conda_format_repo")
	var mu sync.Mutex
	var paths []string
	files := http.FileServer(http.Dir(dir))
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		files.ServeHTTP(w, r)
	}))
	defer up.Close()
	work := t.TempDir()
	upCA := filepath.Join(work, "upstream-ca.pem")
	os.WriteFile(upCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o644)
	caInit := exec.CommandContext(ctx, proxyBin, "ca", "init", "-o", work)
	if out, err := caInit.CombinedOutput(); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fwd := ln.Addr().String()
	ln.Close()
	top := fmt.Sprintf("forward_proxy:\n  listen: %s\n  ca_cert: %s\n  ca_key: %s\n", fwd,
		filepath.Join(work, "ca.pem"), filepath.Join(work, "ca-key.pem"))
	px := startProxyWith(t, ctx, up.URL, `    blacklist: ["zlib 1.2.11 h1de35cc_3"]
`, top, []string{"SSL_CERT_FILE=" + upCA})

	solveEnv := []string{"FORWARD_PROXY=http://" + fwd, "FORWARD_CA=" + filepath.Join(work, "ca.pem")}
	pkgs, trace := solveTraceEnv(t, ctx, solveEnv, up.URL, "linux-64", "zlib")
	if _, ok := findPackage(pkgs, "zlib"); !ok {
		t.Fatalf("no zlib in the solution through the forward proxy: %v\ntrace: %v", names(pkgs), trace)
	}
	if !slices.ContainsFunc(trace, func(r string) bool { return strings.Contains(r, "repodata_shards") && strings.HasSuffix(r, "-> 200") }) {
		t.Errorf("through the forward proxy rattler got no shard index from condaproxy: %v", trace)
	}
	// The filter holds in forward mode: osx-64's only zlib is hidden.
	cmd := exec.CommandContext(ctx, "node", "solve.cjs", up.URL, "osx-64", "zlib")
	cmd.Env = append(os.Environ(), solveEnv...)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("rattler solved a hidden zlib through the forward proxy: %s", out)
	}
	if !strings.Contains(px.stderr.String(), "mode=forward") {
		t.Errorf("no log line tells forward-mode requests apart:\n%s", px.stderr.String())
	}
	// A download through the forward proxy, then the same file by the reverse
	// path: one upstream request in all.
	const pkg = "/linux-64/zlib-1.2.11-h7b6447c_3.conda"
	pu, _ := url.Parse("http://" + fwd)
	caPool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(work, "ca.pem"))
	caPool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: caPool}}}
	resp, err := client.Get(up.URL + pkg)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("package through the forward proxy: %v %v", resp, err)
	}
	viaForward, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	code, viaReverse := get(t, ctx, px.base+"/anaconda"+pkg)
	if code != 200 || !bytes.Equal(viaForward, viaReverse) {
		t.Errorf("the reverse path: %d, same bytes %v", code, bytes.Equal(viaForward, viaReverse))
	}
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, p := range paths {
		if p == pkg {
			n++
		}
	}
	if n != 1 {
		t.Errorf("upstream served %s %d times for both modes, want 1: %v", pkg, n, paths)
	}
}
