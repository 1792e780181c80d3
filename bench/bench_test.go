package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/condaproxy/condaproxy/admin"
	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/proxy"
	"github.com/condaproxy/condaproxy/upstream"
)

// channelName: the benchmark channel's files are at /bench/<subdir>/<file>.
const channelName = ChannelName

// parallelism: RunParallel runs parallelism*GOMAXPROCS client goroutines, each on
// its own keep-alive connection, so the server sees several connections at once
// (like wrk -c) and not one ping-pong.
const parallelism = 4

// fixture is a proxy assembled as cmd/condaproxy's serve does it (cache.Open,
// proxy.NewMetrics, proxy.New with admin.New as Fallback) on a real Pebble store
// in a temp dir, with an httptest upstream serving the benchmark channel, behind a
// real loopback listener. Its cache is warm when newFixture returns.
type fixture struct {
	ch     *Channel
	srv    *proxy.Server
	http   *httptest.Server
	client *http.Client
	// repodata is what the proxy serves for ch.Repodata (checked equal to upstream's).
	repodata []byte
}

func newFixture(b *testing.B, tune ...func(*cache.Options)) *fixture {
	b.Helper()
	ch, err := BuildChannel(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	up := httptest.NewServer(http.FileServer(http.Dir(ch.Dir)))
	b.Cleanup(up.Close)

	yaml := "cache:\n  metadata_ttl: 10m\n" +
		"channels:\n  - name: " + channelName + "\n    upstreams:\n      - url: " + up.URL + "\n"
	cfg, err := config.Parse("bench.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	cfg.Data = b.TempDir()
	// The production logger (JSON, info), writing nowhere.
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts := cache.Options{MaxSize: int64(cfg.Cache.MaxSize), Memory: int64(cfg.Cache.Memory), Logger: log}
	for _, fn := range tune {
		fn(&opts)
	}
	store, err := cache.Open(cfg.Data, opts)
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	srv, err := proxy.New(proxy.Options{
		Config:   cfg,
		Store:    store,
		Upstream: upstream.New(upstream.Options{Logger: log, UserAgent: "condaproxy/bench"}),
		Metrics:  proxy.NewMetrics(reg, store),
		Fallback: admin.New(admin.Options{Gatherer: reg}),
		Logger:   log,
	})
	if err != nil {
		store.Close()
		b.Fatal(err)
	}
	f := &fixture{ch: ch, srv: srv, http: httptest.NewServer(srv), client: newClient()}
	b.Cleanup(func() {
		f.client.CloseIdleConnections()
		f.http.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		srv.Shutdown(ctx)
		cancel()
		store.Close()
	})

	// Warm: repodata (builds the served answer), noarch, then the package (the fill),
	// then a few more hits so the memory tier has settled.
	f.repodata = getOK(b, f.client, f.url(ch.Repodata))
	checkRepodata(b, f.repodata, ch.RepodataBytes)
	getOK(b, f.client, f.url(ch.Noarch))
	for range 3 {
		if got := getOK(b, f.client, f.url(ch.Pkg)); SHA256(got) != ch.PkgSHA256 {
			b.Fatalf("proxy served %s with sha256 %s, want %s", ch.Pkg, SHA256(got), ch.PkgSHA256)
		}
		getOK(b, f.client, f.url(ch.Repodata))
		time.Sleep(10 * time.Millisecond)
	}
	return f
}

func (f *fixture) url(rel string) string { return f.http.URL + "/" + channelName + "/" + rel }

// newClient is a keep-alive client that asks for identity encoding (no transparent
// gzip), so every server sends the very bytes compared.
func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true,
	}}
}

func getOK(b *testing.B, c *http.Client, url string) []byte {
	b.Helper()
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	if et := strings.Trim(resp.Header.Get("ETag"), `"`); et != "" && len(et) == 64 && et != SHA256(body) {
		b.Fatalf("GET %s: body sha256 %s does not match its ETag %s", url, SHA256(body), et)
	}
	return body
}

// checkRepodata fails unless the proxy served upstream's repodata: the same bytes,
// or (should the encoder ever lay it out differently) the same JSON document.
func checkRepodata(b *testing.B, got, want []byte) {
	b.Helper()
	if bytes.Equal(got, want) {
		return
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		b.Fatalf("proxy repodata is not JSON: %v", err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		b.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		b.Fatalf("proxy repodata (sha256 %s) is not upstream's (sha256 %s)", SHA256(got), SHA256(want))
	}
}

// benchGet GETs url in parallel over keep-alive loopback connections. Each answer's
// status and length are checked; its bytes were checked once before.
func benchGet(b *testing.B, c *http.Client, url string, size int64) {
	b.SetBytes(size)
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || n != size {
				b.Errorf("GET %s: status %d, %d bytes of %d, err %v", url, resp.StatusCode, n, size, err)
				return
			}
		}
	})
}

// BenchmarkHotPackage1MiB: the cached 1 MiB package through the proxy, over TCP.
func BenchmarkHotPackage1MiB(b *testing.B) {
	f := newFixture(b)
	benchGet(b, f.client, f.url(f.ch.Pkg), int64(len(f.ch.PkgBytes)))
}

// BenchmarkHotPackage1MiBDiskTier is a what-if: the same package with the store's
// memory tier capped below 1 MiB (cache.Options.HotMaxItem), so it is served from
// its file (sendfile) instead of from memory (bytes.Reader, 32 KiB write()s). By
// default (HotMaxItem 1 MiB) BenchmarkHotPackage1MiB takes the memory path.
func BenchmarkHotPackage1MiBDiskTier(b *testing.B) {
	f := newFixture(b, func(o *cache.Options) { o.HotMaxItem = 512 << 10 })
	benchGet(b, f.client, f.url(f.ch.Pkg), int64(len(f.ch.PkgBytes)))
}

// BenchmarkHotRepodata4KiB: the cached ~4 KiB repodata.json through the proxy.
func BenchmarkHotRepodata4KiB(b *testing.B) {
	f := newFixture(b)
	benchGet(b, f.client, f.url(f.ch.Repodata), int64(len(f.repodata)))
}

// bareServer serves the benchmark files with nothing but http.ServeContent: the
// repodata from memory, the package from an *os.File (sendfile), as a plain Go
// static server would.
func bareServer(b *testing.B) (*Channel, *httptest.Server) {
	ch, err := BuildChannel(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	info, err := os.Stat(ch.Path(ch.Repodata))
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(BareHandler(ch, info.ModTime()))
	b.Cleanup(srv.Close)
	return ch, srv
}

// BenchmarkBareServeContent4KiB: the same repodata bytes from bare ServeContent.
func BenchmarkBareServeContent4KiB(b *testing.B) {
	ch, srv := bareServer(b)
	c := newClient()
	defer c.CloseIdleConnections()
	url := srv.URL + "/" + ch.Repodata
	if got := getOK(b, c, url); SHA256(got) != ch.RepodataSHA256 {
		b.Fatalf("bare server sent repodata sha256 %s, want %s", SHA256(got), ch.RepodataSHA256)
	}
	benchGet(b, c, url, int64(len(ch.RepodataBytes)))
}

// BenchmarkBareServeContent1MiB: the same package bytes from bare ServeContent on an
// *os.File.
func BenchmarkBareServeContent1MiB(b *testing.B) {
	ch, srv := bareServer(b)
	c := newClient()
	defer c.CloseIdleConnections()
	url := srv.URL + "/" + ch.Pkg
	if got := getOK(b, c, url); SHA256(got) != ch.PkgSHA256 {
		b.Fatalf("bare server sent package sha256 %s, want %s", SHA256(got), ch.PkgSHA256)
	}
	benchGet(b, c, url, int64(len(ch.PkgBytes)))
}

// discardWriter is a ResponseWriter that keeps nothing, for timing the handler alone.
// Like net/http's response it has ReadFrom, so the handler takes the path it takes
// on a real connection (io.Copy into ReadFrom, not through a fresh buffer).
type discardWriter struct {
	h      http.Header
	status int
	n      int64
	sink   io.Writer // io.Discard, or a hash while verifying
}

func newDiscardWriter() *discardWriter { return &discardWriter{h: http.Header{}, sink: io.Discard} }

func (w *discardWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

func (w *discardWriter) Header() http.Header { return w.h }

func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.sink.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *discardWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := io.Copy(w.sink, r)
	w.n += n
	return n, err
}

// benchHandler calls h.ServeHTTP for GET path in a loop, with no network.
func benchHandler(b *testing.B, h http.Handler, path, wantSHA string) {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	w := newDiscardWriter()
	// Verify once: the bytes the handler writes are the expected ones.
	var buf bytes.Buffer
	w.sink = &buf
	h.ServeHTTP(w, req)
	if w.status != http.StatusOK || SHA256(buf.Bytes()) != wantSHA {
		b.Fatalf("GET %s: status %d, sha256 %s, want 200 and %s", path, w.status, SHA256(buf.Bytes()), wantSHA)
	}
	size := w.n
	w.sink = io.Discard
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, req)
		if w.status != http.StatusOK || w.n != size {
			b.Fatalf("GET %s: status %d, %d bytes of %d", path, w.status, w.n, size)
		}
	}
}

// BenchmarkServeHTTPHotPackage: the proxy handler alone on the cached 1 MiB package.
func BenchmarkServeHTTPHotPackage(b *testing.B) {
	f := newFixture(b)
	benchHandler(b, f.srv, "/"+channelName+"/"+f.ch.Pkg, f.ch.PkgSHA256)
}

// BenchmarkServeHTTPHotRepodata: the proxy handler alone on the cached 4 KiB repodata.
func BenchmarkServeHTTPHotRepodata(b *testing.B) {
	f := newFixture(b)
	benchHandler(b, f.srv, "/"+channelName+"/"+f.ch.Repodata, SHA256(f.repodata))
}

// BenchmarkServeHTTPBare4KiB: bare ServeContent alone on the same 4 KiB, for the
// handler overhead's baseline.
func BenchmarkServeHTTPBare4KiB(b *testing.B) {
	ch, err := BuildChannel(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	benchHandler(b, BareHandler(ch, time.Now()), "/"+ch.Repodata, ch.RepodataSHA256)
}
