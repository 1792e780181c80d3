package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/condaproxy/condaproxy/admin"
	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/upstream"
)

// TestMain refuses any dial outside loopback, so no test here can reach the internet.
func TestMain(m *testing.M) {
	base := http.DefaultTransport.(*http.Transport)
	base.DialContext = loopbackOnly((&net.Dialer{Timeout: 5 * time.Second}).DialContext)
	os.Exit(m.Run())
}

func loopbackOnly(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			panic("test tried to dial " + addr + ": tests stay on loopback")
		}
		return dial(ctx, network, addr)
	}
}

// fakeUpstream serves a directory like a conda channel server, counting requests
// and misbehaving on demand.
type fakeUpstream struct {
	*httptest.Server
	dir string

	mu   sync.Mutex
	hits map[string]int
	log  []string

	status  atomic.Int32 // non-zero: answer every request with this status
	delay   atomic.Int64 // nanoseconds to wait before answering
	chunked atomic.Bool  // stream bodies slowly in small chunks
	// corrupt, if set, rewrites a body before it is sent.
	corrupt atomic.Pointer[func(path string, b []byte) []byte]
	// token, if set, must prefix every path as /t/<token>.
	token string
	// user, pass: required basic auth when set.
	user, pass string
}

func newUpstream(t *testing.T, dir string) *fakeUpstream {
	u := &fakeUpstream{dir: dir, hits: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	u.mu.Lock()
	u.hits[p]++
	u.log = append(u.log, r.Method+" "+r.URL.RequestURI())
	u.mu.Unlock()
	if d := u.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	if st := u.status.Load(); st != 0 {
		http.Error(w, "injected failure", int(st))
		return
	}
	if u.user != "" {
		if user, pass, ok := r.BasicAuth(); !ok || user != u.user || pass != u.pass {
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
	}
	if u.token != "" {
		prefix := "/t/" + u.token
		if !strings.HasPrefix(p, prefix+"/") {
			http.Error(w, "token", http.StatusUnauthorized)
			return
		}
		p = strings.TrimPrefix(p, prefix)
	}
	f := filepath.Join(u.dir, filepath.FromSlash(p))
	data, err := os.ReadFile(f)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	info, _ := os.Stat(f)
	if c := u.corrupt.Load(); c != nil {
		data = (*c)(p, data)
	}
	if u.chunked.Load() {
		w.Header().Set("Content-Length", itoa(len(data)))
		for i := 0; i < len(data); i += 8 << 10 {
			w.Write(data[i:min(i+8<<10, len(data))])
			w.(http.Flusher).Flush()
			time.Sleep(2 * time.Millisecond)
		}
		return
	}
	http.ServeContent(w, r, filepath.Base(f), info.ModTime(), bytes.NewReader(data))
}

func itoa(n int) string { return strconv.Itoa(n) }

func (u *fakeUpstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits[path]
}

// countPrefix sums the requests whose path starts with prefix.
func (u *fakeUpstream) countPrefix(prefix string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for p, c := range u.hits {
		if strings.HasPrefix(p, prefix) {
			n += c
		}
	}
	return n
}

func (u *fakeUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.log...)
}

func (u *fakeUpstream) setCorrupt(fn func(path string, b []byte) []byte) { u.corrupt.Store(&fn) }

// clock is a test clock that only moves when told.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// harness is a proxy on a real Pebble store in a temp dir, served by httptest.
type harness struct {
	t       *testing.T
	yaml    string
	data    string
	cfg     *config.Config
	store   *cache.Store
	srv     *Server
	http    *httptest.Server
	reg     *prometheus.Registry
	clock   *clock
	logs    *testdata.Buffer
	storeOp cache.Options
	// opts adjust the Server's Options before each start.
	opts []func(*Options)
}

// newHarness starts a proxy for the configuration yaml (data and listen are set by
// the harness).
func newHarness(t *testing.T, yaml string, opts ...func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, yaml: yaml, data: t.TempDir(), clock: &clock{}, logs: &testdata.Buffer{}, opts: opts}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) start() {
	t := h.t
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(h.yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Data = h.data
	h.cfg = cfg
	log := slog.New(slog.NewTextHandler(io.MultiWriter(h.logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := h.storeOp
	opts.MaxSize, opts.Memory, opts.Logger = int64(cfg.Cache.MaxSize), int64(cfg.Cache.Memory), log
	h.store, err = cache.Open(h.data, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.reg = prometheus.NewRegistry()
	m := NewMetrics(h.reg, h.store)
	policies := map[string]policy.Policy{}
	for i, ch := range cfg.Channels {
		if ch.Kind == config.KindConda {
			if policies[ch.Name], err = policy.Compile(cfg, i, h.clock.now); err != nil {
				t.Fatal(err)
			}
		}
	}
	o := Options{
		Config: cfg, Store: h.store, Metrics: m, Logger: log, Now: h.clock.now, Policies: policies,
		Upstream: upstream.New(upstream.Options{Logger: log, Backoff: 5 * time.Millisecond, Retries: 2,
			IdleTimeout: cfg.Limits.UpstreamIdleTimeout.D(),
			Transport:   &http.Transport{DialContext: loopbackOnly((&net.Dialer{}).DialContext)}}),
		Fallback: admin.New(admin.Options{Gatherer: h.reg}),
	}
	for _, f := range h.opts {
		f(&o)
	}
	h.srv, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.http = httptest.NewServer(h.srv)
}

func (h *harness) stop() {
	if h.http == nil {
		return
	}
	h.http.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	h.srv.Shutdown(ctx)
	cancel()
	h.store.Close()
	h.http = nil
}

// restart stops the proxy and starts a new one on the same data directory.
func (h *harness) restart() {
	h.stop()
	h.start()
}

// testWriter sends log lines to t.Log, so a failing test shows what the proxy said.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type resp struct {
	*http.Response
	body    []byte
	readErr error // the body broke off
	doErr   error // the connection broke before the headers
}

// get requests path from the proxy; hdr holds "Key: value" pairs.
func (h *harness) get(path string, hdr ...string) resp {
	return h.do(http.MethodGet, path, hdr...)
}

func (h *harness) do(method, path string, hdr ...string) resp {
	h.t.Helper()
	req, err := http.NewRequest(method, h.http.URL+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, kv := range hdr {
		k, v, _ := strings.Cut(kv, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	// No transparent gzip: the tests look at exactly what was sent.
	if req.Header.Get("Accept-Encoding") == "" {
		req.Header.Set("Accept-Encoding", "identity")
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		return resp{Response: &http.Response{StatusCode: 0, Header: http.Header{}}, doErr: err}
	}
	defer r.Body.Close()
	body, rerr := io.ReadAll(r.Body)
	return resp{Response: r, body: body, readErr: rerr}
}

// metric returns the value of the Prometheus sample whose line starts with prefix
// (name and labels in exposition format), or 0.
func (h *harness) metric(prefix string) float64 {
	h.t.Helper()
	r := h.get("/metrics")
	for _, line := range strings.Split(string(r.body), "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			var v float64
			json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(line, prefix))), &v)
			return v
		}
	}
	return 0
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// repoRecord is a record of a testdata repodata.json, decoded independently of the
// code under test.
type repoRecord struct {
	Name, Version, Build string
	SHA256               string
	MD5                  string
	Size                 int64
}

func readRepodata(t *testing.T, path string) map[string]repoRecord {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Packages      map[string]repoRecord `json:"packages"`
		PackagesConda map[string]repoRecord `json:"packages.conda"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]repoRecord{}
	for k, v := range doc.Packages {
		out[k] = v
	}
	for k, v := range doc.PackagesConda {
		out[k] = v
	}
	return out
}

// formatRepo is the real Anaconda zlib mini-channel of the shared testdata.
func formatRepo(t *testing.T) string { return testdata.Path(t, "conda_format_repo") }

// channelYAML is a config with one channel "fmt" on the given upstream URLs.
func channelYAML(extra string, urls ...string) string {
	var b strings.Builder
	b.WriteString("cache:\n  metadata_ttl: 10m\n  negative_ttl: 1m\n  memory: 16MiB\n")
	b.WriteString(extra)
	b.WriteString("channels:\n  - name: fmt\n    upstreams:\n")
	for _, u := range urls {
		b.WriteString("      - url: " + u + "\n")
	}
	return b.String()
}
