package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/condaproxy/condaproxy/fill"
	"github.com/condaproxy/condaproxy/internal/testdata"
)

// Tests of the request path against hostile clients and broken or hostile
// upstreams (issue: hostile input and faults). Each names the fault it holds.

// A path below a kind: files channel is joined below the upstream, never read as
// a URL of its own: "file:/etc/..." must not reach the local file system.
func TestFilesChannelNeverReadsLocalFiles(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret.txt")
	p2WriteFile(t, secret, []byte("LOCAL-SECRET-CONTENT"))
	httpUp := newUpstream(t, t.TempDir())
	fileDir := t.TempDir()
	yaml := "cache:\n  memory: 16MiB\nchannels:\n" +
		"  - name: inst\n    kind: files\n    upstreams:\n      - url: " + httpUp.URL + "\n" +
		"  - name: local\n    kind: files\n    upstreams:\n      - url: file://" + fileDir + "\n"
	h := newHarness(t, yaml)
	for _, ch := range []string{"inst", "local"} {
		for _, p := range []string{
			"/" + ch + "/file:" + secret,
			"/" + ch + "/file:" + strings.ReplaceAll(secret, "/", "%2F"),
			"/" + ch + "/file:/" + secret,
			"/" + ch + "/http:" + strings.TrimPrefix(httpUp.URL, "http:") + "/x",
		} {
			r := h.get(p)
			if bytes.Contains(r.body, []byte("LOCAL-SECRET-CONTENT")) || r.StatusCode == 200 {
				t.Errorf("%s: %d %q", p, r.StatusCode, r.body)
			}
		}
	}
	// What did reach the http upstream stayed below it.
	for _, req := range httpUp.requests() {
		if !strings.HasPrefix(req, "GET /file:") && !strings.HasPrefix(req, "GET /http:") {
			t.Errorf("upstream asked for %s", req)
		}
	}
}

// No log line or metric holds a client token, valid or guessed, whatever the
// answer (401, 400, 502).
func TestClientTokensNeverLogged(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("auth:\n  tokens: [VALID-TOKEN-1]\n", up.URL))
	h.get("/t/GUESSED-TOKEN-2/fmt/linux-64/repodata.json")                        // 401
	h.get("/fmt/linux-64/repodata.json", "Authorization: Bearer GUESSED-TOKEN-3") // 401
	up.status.Store(500)
	h.get("/t/VALID-TOKEN-1/fmt/win-32/repodata.json") // 502
	h.get("/t/VALID-TOKEN-1/fmt/win-32/" + "zlib-1.2.11-h62dcd97_3.conda")
	h.get("/t/VALID-TOKEN-1/fmt/win-32/%2e%2e/x") // 400
	metrics := h.get("/metrics").body
	for _, tok := range []string{"VALID-TOKEN-1", "GUESSED-TOKEN-2", "GUESSED-TOKEN-3"} {
		if strings.Contains(h.logs.String(), tok) {
			t.Errorf("%s reached the log", tok)
		}
		if bytes.Contains(metrics, []byte(tok)) {
			t.Errorf("%s reached the metrics", tok)
		}
	}
	if !strings.Contains(h.logs.String(), "/t/***/") {
		t.Error("the refused requests were not logged at all (want their path, token masked)")
	}
}

// A token scoped to channels opens those and no other; the refusal is the same
// 401 as an unknown token's, so it says nothing of which channels exist.
func TestScopedTokens(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	yaml := "cache:\n  memory: 16MiB\nauth:\n  tokens: [ALL-TOKEN, {token: CI-TOKEN, channels: [fmt]}, {token: TWO-TOKEN, channels: [fmt]}, {token: TWO-TOKEN, channels: [other]}]\nchannels:\n" +
		"  - name: fmt\n    upstreams: [{url: " + up.URL + "}]\n" +
		"  - name: other\n    upstreams: [{url: " + up.URL + "}]\n"
	h := newHarness(t, yaml)
	cases := []struct {
		path string
		hdr  []string
		want int
	}{
		{"/t/CI-TOKEN/fmt/linux-64/repodata.json", nil, 200},
		{"/t/CI-TOKEN/other/linux-64/repodata.json", nil, 401},
		{"/other/linux-64/repodata.json", []string{"Authorization: Bearer CI-TOKEN"}, 401},
		{"/fmt/linux-64/repodata.json", []string{"Authorization: Bearer CI-TOKEN"}, 200},
		{"/t/ALL-TOKEN/other/linux-64/repodata.json", nil, 200},
		{"/t/NOPE/other/linux-64/repodata.json", nil, 401},
		// Nothing tells a channel the token may not read from a name that is none.
		{"/t/CI-TOKEN/nochannel/linux-64/repodata.json", nil, 401},
		{"/t/NOPE/nochannel/linux-64/repodata.json", nil, 401},
		{"/nochannel/linux-64/repodata.json", nil, 401},
		{"/other/bad-subdir!/x", nil, 401},
		{"/nochannel/linux-64/repodata.json", []string{"Authorization: Bearer CI-TOKEN"}, 401},
		{"/t/ALL-TOKEN/nochannel/linux-64/repodata.json", nil, 404},
		{"/nochannel/x", []string{"Authorization: Bearer ALL-TOKEN"}, 404},
		{"/healthz", nil, 200},
		// Listed twice: it opens what either entry opens.
		{"/t/TWO-TOKEN/fmt/linux-64/repodata.json", nil, 200},
		{"/t/TWO-TOKEN/other/linux-64/repodata.json", nil, 200},
	}
	var refusals []string
	for _, c := range cases {
		r := h.get(c.path, c.hdr...)
		if r.StatusCode != c.want {
			t.Errorf("%s %v: %d, want %d", c.path, c.hdr, r.StatusCode, c.want)
		}
		if r.StatusCode == 401 {
			refusals = append(refusals, string(r.body))
		}
	}
	for _, b := range refusals[1:] {
		if b != refusals[0] {
			t.Errorf("refusals differ, so they tell which channels exist: %q vs %q", b, refusals[0])
		}
	}
	// The admin API's reads list every channel: a scoped token does not open them.
	req, _ := http.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer CI-TOKEN")
	if h.srv.CanRead(req) {
		t.Error("a token scoped to some channels may read the admin API")
	}
	req.Header.Set("Authorization", "Bearer ALL-TOKEN")
	if !h.srv.CanRead(req) {
		t.Error("a token for every channel may not read the admin API")
	}
}

// An upstream that answers 304 to requests that named no validator used to
// crash the process (a nil body closed in a background fill). Now it is a 502,
// and the process serves on.
func TestUnasked304(t *testing.T) {
	var mode atomic.Int32 // 0: 304 to everything; 1: serve the channel
	real := newUpstream(t, formatRepo(t))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mode.Load() == 0 {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		real.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)
	yaml := channelYAML("", up.URL) + "  - name: inst\n    kind: files\n    upstreams: [{url: " + up.URL + "}]\n"
	h := newHarness(t, yaml)
	for _, p := range []string{"/fmt/linux-64/repodata.json", "/fmt/linux-64/" + zlibLinux, "/fmt/channeldata.json", "/inst/linux-64/" + zlibLinux} {
		if r := h.get(p); r.StatusCode != http.StatusBadGateway {
			t.Errorf("%s against a 304-only upstream: %d, want 502", p, r.StatusCode)
		}
	}
	if n := h.metric(`condaproxy_panics_total{unit="fill"}`); n != 0 {
		t.Errorf("%v fills panicked", n)
	}
	mode.Store(1)
	h.clock.advance(2 * time.Minute) // past negative_ttl and the failure backoff
	if r := h.get("/fmt/linux-64/" + zlibLinux); r.StatusCode != 200 {
		t.Errorf("after upstream recovered: %d %s", r.StatusCode, r.body)
	}
}

// A panic inside background work fails that unit alone: its waiters get an
// error, it is counted, and the process goes on.
func TestPanicFailsOneFill(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	f := h.srv.fills.Start(context.Background(), "test|panic", func(context.Context, *fill.Fill) (string, error) {
		var m map[string]int
		m["boom"]++ // a nil map write: the kind of bug a hostile input finds
		return "", nil
	})
	_, err := f.Wait(context.Background())
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Unit != "fill" {
		t.Fatalf("waiter got %v, want a *PanicError of the fill", err)
	}
	if n := h.metric(`condaproxy_panics_total{unit="fill"}`); n != 1 {
		t.Errorf("panics counted: %v, want 1", n)
	}
	if !strings.Contains(h.logs.String(), "goroutine") {
		t.Error("the panic's stack is not in the log")
	}
	if r := h.get("/fmt/linux-64/" + zlibLinux); r.StatusCode != 200 {
		t.Errorf("after the panic: %d", r.StatusCode)
	}
}

// The filter's Decider is used at once by package requests, explain and sync.
// With python_versions set it used to write a map without a lock; under -race
// this test caught it.
func TestDeciderConcurrentUse(t *testing.T) {
	cf := testdata.Path(t, "cf-subchannel-py39")
	up := newUpstream(t, cf)
	yaml := "cache:\n  memory: 64MiB\nchannels:\n  - name: cf\n    upstreams: [{url: " + up.URL + "}]\n" +
		"    platforms: [linux-64]\n    python_versions: [\"3.11\"]\n"
	h := newHarness(t, yaml)
	if r := h.get("/cf/linux-64/repodata.json"); r.StatusCode != 200 {
		t.Fatalf("repodata: %d", r.StatusCode)
	}
	var doc struct {
		Packages map[string]struct{ Name string } `json:"packages"`
	}
	raw, _ := os.ReadFile(filepath.Join(cf, "linux-64", "repodata.json"))
	json.Unmarshal(raw, &doc)
	var names, files []string
	seen := map[string]bool{}
	for fn, r := range doc.Packages {
		if !seen[r.Name] && len(names) < 40 {
			seen[r.Name] = true
			names = append(names, r.Name)
		}
		if len(files) < 40 {
			files = append(files, fn)
		}
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 6; i++ {
				switch (g + i) % 3 {
				case 0:
					h.srv.Explain(ctx, "cf", "linux-64", names[(g*7+i)%len(names)])
				case 1:
					h.do(http.MethodHead, "/cf/linux-64/"+files[(g*5+i)%len(files)])
				case 2:
					h.srv.ServedFiles(ctx, "cf", "linux-64", false)
				}
			}
		}(g)
	}
	wg.Wait()
}

// A reader never gets an error because a refresh happened: with upstream
// changing all the time and every request starting a revalidation, 8 readers of
// every form of two subdirs (one's build reads the other's upstream copy:
// include_dependencies) get only whole 200s.
func TestRefreshNeverFailsReaders(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"linux-64", "noarch"} {
		data, err := os.ReadFile(filepath.Join(testdata.Path(t, "cf-subchannel-py39"), sub, "repodata.json"))
		if err != nil {
			t.Fatal(err)
		}
		p2WriteFile(t, filepath.Join(dir, sub, "repodata.json"), data)
	}
	up := newUpstream(t, dir)
	yaml := "cache:\n  memory: 8MiB\nchannels:\n  - name: cf\n    upstreams: [{url: " + up.URL + "}]\n" +
		"    platforms: [linux-64]\n    pkg_list: [python, numpy]\n    include_dependencies: true\n"
	h := newHarness(t, yaml)

	// The upstream changes its documents every few milliseconds (a new
	// repodata_version-like key), so every revalidation publishes a new generation.
	stop := make(chan struct{})
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Millisecond):
			}
			for _, sub := range []string{"linux-64", "noarch"} {
				p := filepath.Join(dir, sub, "repodata.json")
				data, _ := os.ReadFile(p)
				data = bytes.Replace(data, []byte(`"info"`), []byte(fmt.Sprintf(`"x_gen": %d, "info"`, n)), 1)
				if i := bytes.Index(data, []byte(`"x_gen": `)); i >= 0 && n > 0 {
					// keep one marker, not a growing list
					j := bytes.Index(data[i+9:], []byte(`, "x_gen"`))
					if j >= 0 {
						data = append(data[:i+9+j], data[i+9+j+len(fmt.Sprintf(`, "x_gen": %d`, n-1)):]...)
					}
				}
				tmp := p + ".tmp"
				os.WriteFile(tmp, data, 0o644)
				os.Rename(tmp, p)
			}
		}
	}()
	forms := []string{"repodata.json", "repodata.json.zst", "repodata.json.bz2", "current_repodata.json"}
	var bad atomic.Int32
	var answers atomic.Int32
	var wg sync.WaitGroup
	deadline := time.Now().Add(4 * time.Second)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 150 && time.Now().Before(deadline); i++ {
				h.clock.advance(11 * time.Minute) // every request finds the answer stale
				sub := []string{"linux-64", "noarch"}[(g+i)%2]
				form := forms[(g*3+i)%len(forms)]
				r := h.get("/cf/" + sub + "/" + form)
				answers.Add(1)
				if r.StatusCode != 200 || r.readErr != nil {
					if bad.Add(1) <= 5 {
						t.Errorf("%s/%s: %d %v %s", sub, form, r.StatusCode, r.readErr, r.body)
					}
					continue
				}
				if strings.HasSuffix(form, ".json") && !json.Valid(r.body) {
					t.Errorf("%s/%s: not whole JSON (%d bytes)", sub, form, len(r.body))
				}
			}
		}(g)
	}
	wg.Wait()
	close(stop)
	writer.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d of %d answers failed during refreshes", bad.Load(), answers.Load())
	}
	// Once the readers are gone, retired generations leave no file behind: a
	// restart (which sweeps what no state names) finds nothing to remove.
	waitFor(t, "background refreshes to settle", func() bool { return p2FillsIdle(h) })
	h.restart()
	if strings.Contains(h.logs.String(), "removed repodata files no state refers to") {
		t.Error("files of retired generations were left behind")
	}
}

// A stalled upstream fails the fill after limits.upstream_idle_timeout, so the
// next client starts afresh; and a waiter whose client left stops waiting at
// once, not when the fill ends.
func TestStalledUpstream(t *testing.T) {
	pkg, err := os.ReadFile(filepath.Join(formatRepo(t), "linux-64", zlibLinux))
	if err != nil {
		t.Fatal(err)
	}
	var stall atomic.Bool
	stall.Store(true)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	real := newUpstream(t, formatRepo(t))
	var pkgHits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, ".conda") {
			real.Config.Handler.ServeHTTP(w, r)
			return
		}
		pkgHits.Add(1)
		if !stall.Load() {
			w.Write(pkg)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(pkg)))
		w.Write(pkg[:len(pkg)/2])
		w.(http.Flusher).Flush()
		select { // then nothing, for longer than the idle timeout
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(up.Close)
	h := newHarness(t, channelYAML("limits:\n  upstream_idle_timeout: 1s\n", up.URL))
	path := "/fmt/linux-64/" + zlibLinux

	// A Range waiter (it waits for the committed blob) whose client leaves.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", h.http.URL+path, nil)
	req.Header.Set("Range", "bytes=0-9")
	go func() {
		time.Sleep(200 * time.Millisecond)
		cancel()
	}()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the Range request was answered %d while the fill stalls", resp.StatusCode)
	}
	// Its handler returns before the fill ends (the fill lasts the idle timeout).
	waitFor(t, "the left waiter's handler to return", func() bool {
		return h.metric(`condaproxy_requests_total{channel="fmt",code="499",kind="package"}`) == 1
	})

	// A streaming client gets half, then a broken transfer once the idle timeout fires.
	r := h.get(path)
	if r.readErr == nil || bytes.Equal(r.body, pkg) {
		t.Fatalf("stalled fill: %d bytes, err %v: want a broken transfer", len(r.body), r.readErr)
	}
	waitFor(t, "the failed fill to end", func() bool { return p2FillsIdle(h) })
	stall.Store(false)
	r = h.get(path)
	if r.StatusCode != 200 || !bytes.Equal(r.body, pkg) {
		t.Fatalf("after the stall: %d, %d bytes", r.StatusCode, len(r.body))
	}
	if n := pkgHits.Load(); n < 2 {
		t.Errorf("upstream asked %d times: the stalled fill was joined, not retried", n)
	}
}

// Request targets and headers past the limits are refused by name (414, 431),
// well above what conda clients send.
func TestRequestLimits(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	if r := h.get("/fmt/linux-64/repodata.json?" + strings.Repeat("a", 100<<10)); r.StatusCode != http.StatusRequestURITooLong {
		t.Errorf("100 KiB URL: %d, want 414", r.StatusCode)
	}
	if r := h.get("/fmt/linux-64/repodata.json", "X-Big: "+strings.Repeat("b", 64<<10)); r.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB header: %d, want 431", r.StatusCode)
	}
	// What conda sends: a long but ordinary URL and a few KiB of headers.
	if r := h.get("/fmt/linux-64/repodata.json", "User-Agent: conda/24.1.2 requests/2.31.0 "+strings.Repeat("x", 2000)); r.StatusCode != 200 {
		t.Errorf("ordinary request: %d", r.StatusCode)
	}
}

// Metadata files are read whole to be filtered: one past limits.max_metadata is
// refused and not kept; a repodata that decodes past limits.max_repodata too.
func TestExpansionBounds(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"linux-64", "noarch"} {
		data, _ := os.ReadFile(filepath.Join(formatRepo(t), sub, "repodata.json"))
		p2WriteFile(t, filepath.Join(dir, sub, "repodata.json"), data)
	}
	// run_exports.json of 100 KiB, over a 64 KiB limit.
	p2WriteFile(t, filepath.Join(dir, "linux-64", "run_exports.json"),
		[]byte(`{"packages": {}, "x": "`+strings.Repeat("y", 100<<10)+`"}`))
	// A zstd repodata that expands past 1 MiB: 2 MiB of JSON whitespace.
	var bomb bytes.Buffer
	zw, _ := zstd.NewWriter(&bomb)
	zw.Write([]byte(`{"info": {"subdir": "win-64"}, "packages": {}` + strings.Repeat(" ", 2<<20) + `}`))
	zw.Close()
	p2WriteFile(t, filepath.Join(dir, "win-64", "repodata.json.zst"), bomb.Bytes())
	up := newUpstream(t, dir)
	h := newHarness(t, channelYAML("limits:\n  max_metadata: 64KiB\n  max_repodata: 1MiB\n", up.URL))
	for i := 0; i < 2; i++ {
		if r := h.get("/fmt/linux-64/run_exports.json"); r.StatusCode != http.StatusBadGateway {
			t.Errorf("oversized run_exports.json: %d, want 502", r.StatusCode)
		}
		waitFor(t, "the refused fill to end", func() bool { return p2FillsIdle(h) })
	}
	if n := up.count("/linux-64/run_exports.json"); n != 2 {
		t.Errorf("upstream asked %d times: a refused file was kept", n)
	}
	if r := h.get("/fmt/win-64/repodata.json"); r.StatusCode != http.StatusBadGateway {
		t.Errorf("repodata bomb: %d, want 502", r.StatusCode)
	}
	if !strings.Contains(h.logs.String(), "limit") {
		t.Error("the log does not say a limit was passed")
	}
}

// The guard that keeps a corrupt upstream's bytes from looking whole: a client
// streaming a fill never gets the last byte before the digest matched. Here the
// upstream sends every byte of a wrong body, then waits before ending it, so a
// streamer that did not hold the last byte back would have all of them.
func TestStreamedFillHoldsLastByte(t *testing.T) {
	pkg, err := os.ReadFile(filepath.Join(formatRepo(t), "linux-64", zlibLinux))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(pkg)
	bad[len(bad)-1] ^= 0xff // right size, wrong sha256
	real := newUpstream(t, formatRepo(t))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, ".conda") {
			real.Config.Handler.ServeHTTP(w, r)
			return
		}
		// Chunked (no Content-Length): the proxy cannot see the end until the
		// upstream ends the body.
		w.Write(bad)
		w.(http.Flusher).Flush()
		time.Sleep(500 * time.Millisecond)
	}))
	t.Cleanup(up.Close)
	h := newHarness(t, channelYAML("", up.URL))
	r := h.get("/fmt/linux-64/" + zlibLinux)
	if len(r.body) >= len(pkg) {
		t.Fatalf("client got %d of %d bytes of a file whose digest does not match", len(r.body), len(pkg))
	}
	if r.readErr == nil {
		t.Error("the transfer of a mismatching file was not broken off")
	}
	if len(r.body) != len(pkg)-1 {
		t.Errorf("client got %d bytes, want all but the last (%d): streaming stalled", len(r.body), len(pkg)-1)
	}
}

// An upstream 404 for a subdir's repodata is remembered for negative_ttl: no
// request reaches upstream again before it passes.
func TestRepodataNegativeCache(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	for i := 0; i < 3; i++ {
		if r := h.get("/fmt/linux-aarch64/repodata.json"); r.StatusCode != 404 {
			t.Fatalf("missing subdir: %d", r.StatusCode)
		}
	}
	first := up.countPrefix("/linux-aarch64/")
	if first == 0 || first > 2 {
		t.Fatalf("first miss asked upstream %d times, want 1 or 2 (.zst, then .json)", first)
	}
	h.clock.advance(30 * time.Second) // within negative_ttl (1m)
	h.get("/fmt/linux-aarch64/repodata.json")
	if n := up.countPrefix("/linux-aarch64/"); n != first {
		t.Errorf("within negative_ttl upstream was asked again: %d requests, want %d", n, first)
	}
	h.clock.advance(31 * time.Second) // past it
	h.get("/fmt/linux-aarch64/repodata.json")
	if n := up.countPrefix("/linux-aarch64/"); n == first {
		t.Error("past negative_ttl upstream was not asked again")
	}
}

// An upstream that answers 429 with Retry-After is not asked again before then:
// the last good repodata is served meanwhile, marked stale, and the pushback is
// counted for its host.
func TestUpstreamPushBack(t *testing.T) {
	real := newUpstream(t, formatRepo(t))
	var throttle atomic.Bool
	var asked atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if throttle.Load() {
			asked.Add(1)
			w.Header().Set("Retry-After", "120")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		real.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)
	h := newHarness(t, channelYAML("", up.URL))
	good := h.get("/fmt/linux-64/repodata.json")
	if good.StatusCode != 200 {
		t.Fatal(good.StatusCode)
	}
	throttle.Store(true)
	for i := 0; i < 10; i++ {
		h.clock.advance(11 * time.Minute)
		r := h.get("/fmt/linux-64/repodata.json")
		if r.StatusCode != 200 || !bytes.Equal(r.body, good.body) {
			t.Fatalf("while throttled: %d", r.StatusCode)
		}
		waitFor(t, "the revalidation to end", func() bool { return p2FillsIdle(h) })
	}
	r := h.get("/fmt/linux-64/repodata.json")
	if r.Header.Get("X-Condaproxy-Stale") == "" {
		t.Error("the copy served while upstream pushes back is not marked stale")
	}
	// The Retry-After holds in real time (120 s), whatever the test clock says.
	if n := asked.Load(); n != 1 {
		t.Errorf("upstream asked %d times while it said to wait, want 1", n)
	}
	host := strings.TrimPrefix(up.URL, "http://")
	if n := h.metric(`condaproxy_upstream_throttled_total{host="` + host + `"}`); n < 1 {
		t.Errorf("pushback not counted for %s: %v", host, n)
	}
}

// Files a state names that are gone from the data directory (a power cut before
// the directory reached the disk, a hand cleaning it) heal: the answer is made or
// fetched again, instead of every request failing until someone steps in.
func TestMissingFilesHeal(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	for _, form := range []string{"repodata.json", "repodata.json.zst", "current_repodata.json"} {
		if r := h.get("/fmt/linux-64/" + form); r.StatusCode != 200 {
			t.Fatalf("%s: %d", form, r.StatusCode)
		}
	}
	removeAll := func(prefix string) {
		t.Helper()
		names, _ := filepath.Glob(filepath.Join(h.data, "files", prefix+"*"))
		if len(names) == 0 {
			t.Fatalf("no %s* file to remove", prefix)
		}
		for _, n := range names {
			os.Remove(n)
		}
	}
	// A form's file: made again.
	removeAll("served-") // the JSON and every form
	h.restart()          // nothing in memory: only the states name the files
	for _, form := range []string{"repodata.json.zst", "current_repodata.json", "repodata.json", "repodata.json.zst"} {
		r := h.get("/fmt/linux-64/" + form)
		if r.StatusCode != 200 {
			// One failed answer is allowed for the published JSON itself; the
			// next request must be whole.
			r = h.get("/fmt/linux-64/" + form)
		}
		if r.StatusCode != 200 {
			t.Errorf("%s after its file went missing: %d %s", form, r.StatusCode, r.body)
		}
	}
	// The stored upstream copy: fetched again.
	before := up.countPrefix("/linux-64/repodata.json")
	removeAll("raw-")
	removeAll("served-")
	h.restart()
	r := h.get("/fmt/linux-64/repodata.json")
	if r.StatusCode != 200 {
		r = h.get("/fmt/linux-64/repodata.json")
	}
	if r.StatusCode != 200 || !json.Valid(r.body) {
		t.Errorf("after the stored upstream copy went missing: %d", r.StatusCode)
	}
	if up.countPrefix("/linux-64/repodata.json") == before {
		t.Error("the missing upstream copy was not fetched again")
	}
}

// With no platforms, a channel serves the subdirs conda knows: a made-up name is
// a 404 that costs no upstream request and keeps no state; and a made-up path
// below a files channel that upstream lacks is remembered in memory only.
func TestMadeUpNamesCostNothing(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	yaml := channelYAML("", up.URL) + "  - name: inst\n    kind: files\n    upstreams: [{url: " + up.URL + "}]\n"
	h := newHarness(t, yaml)
	for i := 0; i < 50; i++ {
		if r := h.get(fmt.Sprintf("/fmt/zz%d-x/repodata.json", i)); r.StatusCode != 404 {
			t.Fatalf("made-up subdir: %d", r.StatusCode)
		}
		if r := h.get(fmt.Sprintf("/inst/nothing-%d.sh", i)); r.StatusCode != 404 {
			t.Fatalf("made-up file: %d", r.StatusCode)
		}
	}
	if n := up.countPrefix("/zz"); n != 0 {
		t.Errorf("made-up subdirs asked upstream %d times", n)
	}
	keys := 0
	h.store.Meta.Scan("", func(k string, _ []byte) error {
		if strings.Contains(k, "zz") || strings.Contains(k, "nothing-") {
			keys++
		}
		return nil
	})
	if keys != 0 {
		t.Errorf("%d keys kept for made-up names", keys)
	}
	// A 404 is still remembered for negative_ttl.
	h.get("/inst/nothing-0.sh")
	if n := up.count("/nothing-0.sh"); n != 1 {
		t.Errorf("a remembered 404 asked upstream %d times", n)
	}
}

// A record with no size is not fetched: an upstream could send bytes without
// end before the digest is ever checked.
func TestRecordWithoutSizeNotFetched(t *testing.T) {
	dir := t.TempDir()
	raw, _ := os.ReadFile(filepath.Join(formatRepo(t), "linux-64", "repodata.json"))
	var doc map[string]any
	json.Unmarshal(raw, &doc)
	for _, sec := range []string{"packages", "packages.conda"} {
		if recs, ok := doc[sec].(map[string]any); ok {
			for _, r := range recs {
				delete(r.(map[string]any), "size")
			}
		}
	}
	out, _ := json.Marshal(doc)
	p2WriteFile(t, filepath.Join(dir, "linux-64", "repodata.json"), out)
	up := newUpstream(t, dir)
	h := newHarness(t, channelYAML("", up.URL))
	if r := h.get("/fmt/linux-64/" + zlibLinux); r.StatusCode != http.StatusBadGateway {
		t.Errorf("a record with no size: %d, want 502", r.StatusCode)
	}
	if n := up.count("/linux-64/" + zlibLinux); n != 0 {
		t.Errorf("upstream was asked %d times for it", n)
	}
}

// A record whose size is past the whole cache is refused before any byte is
// fetched: it could never stay cached, and a hostile record could otherwise
// park any size on the disk while it is served.
func TestPackageLargerThanCacheRefused(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "noarch"), 0o755)
	const fn = "big-1.0-0.conda"
	doc := `{"info":{"subdir":"noarch"},"packages":{},"packages.conda":{"` + fn + `":{"name":"big","version":"1.0","build":"0",` +
		`"build_number":0,"depends":[],"size":2097153,"sha256":"` + strings.Repeat("ab", 32) + `"}}}`
	os.WriteFile(filepath.Join(dir, "noarch", "repodata.json"), []byte(doc), 0o644)
	up := newUpstream(t, dir)
	h := newHarness(t, "cache:\n  max_size: 2MiB\nchannels:\n  - name: fmt\n    upstreams:\n      - url: "+up.URL+"\n")
	r := h.get("/fmt/noarch/" + fn)
	if r.StatusCode != http.StatusBadGateway || !strings.Contains(string(r.body), "cache.max_size") {
		t.Fatalf("a package past the cache: %d %s; want 502 naming cache.max_size", r.StatusCode, r.body)
	}
	if n := up.count("/noarch/" + fn); n != 0 {
		t.Errorf("upstream was asked for it %d times", n)
	}
}
