// Command refreshload measures what a refresh of a conda-forge-sized repodata
// costs the clients that read other, small answers at the same time. The target
// (issue: "refresh of the 315 MB repodata while 100 clients read: 0 errors; p99
// of small hot answers ≤ 3× idle").
//
// In one run it:
//
//   - writes two versions, A and B, of a 300 MB linux-64/repodata.json
//     (bench.ScaleRepodata; B has 1% of its records changed, ScaleOptions.Touch)
//     and the small benchmark channel (bench.BuildChannel: a 4 KiB repodata.json
//     and a 1 MiB package);
//   - serves both channels from an upstream in this process (127.0.0.1), whose
//     big linux-64/repodata.json can be switched from A to B with a new ETag and
//     Last-Modified, so the proxy's next revalidation gets a 200 and must fetch,
//     check, cut and publish the whole document again;
//   - builds the real binary and runs `condaproxy serve` with channels "big" and
//     "small" and a short cache.metadata_ttl (it is one setting for every
//     channel: the small answers revalidate too, with 304s, as they would in
//     production, only more often);
//   - warms: big/linux-64/repodata.json (the cold build) and its .zst, the
//     small answers and the package;
//   - idle phase: -clients goroutines GET small answers over keep-alive for
//     -duration (small/linux-64/repodata.json, small/noarch/repodata.json,
//     big/noarch/repodata.json, in turn), every answer checked byte for byte;
//   - refresh phase: the same load goes on, the upstream switches to B, and the
//     phase lasts until the proxy serves B's cut (plus -tail), at least
//     -duration, at most -refresh-timeout.
//
// Beside the load, a watcher asks for big/linux-64/repodata.json every -poll with
// If-None-Match: the old cut's ETag (a 304 is the old answer, served without
// waiting for the build; a 200 with a new ETag is the switch), and once, while
// the proxy rebuilds, reads the whole old document to show it still streams
// whole. A .zst reader (-zst-clients) fetches big/linux-64/repodata.json.zst
// (what conda asks first) every -zst-pause. Their latencies are reported apart
// from the hot answers.
//
// It prints, per phase, requests, errors and p50/p90/p99/max of the hot answers,
// the refresh/idle p99 ratio against the 3x target (over the whole refresh
// phase, and over the rebuild window: from the proxy's upstream GET of B to the
// first answer with B's cut), the timeline of the rebuild, a per-second table
// that says what limited the hot answers (their p99; CPU of the proxy and of
// this process; how long the proxy's threads waited for a CPU, from schedstat;
// the machine's CPU and I/O pressure, from PSI; GC cycles, pauses and GOGC from
// the proxy's /metrics, and the Go scheduler's run-queue latency and GC CPU
// when the binary exposes them; RSS), and the proxy's peak RSS (VmHWM) in each
// phase against the document size.
//
//	go run ./bench/refreshload [-size 300] [-clients 100] [-duration 10s] [-keep]
//
// Every answer is checked; the run fails (exit 1, after the figures) if any
// request failed or the proxy never served B. A missed target is printed, not
// failed: it is a measurement. It needs nothing but Go; every server binds
// 127.0.0.1.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/condaproxy/condaproxy/bench"
)

type options struct {
	sizeMB         int
	clients        int
	duration       time.Duration
	rampup         time.Duration
	tail           time.Duration
	refreshTimeout time.Duration
	maxRequests    int64
	ttl            time.Duration
	poll           time.Duration
	zstClients     int
	zstPause       time.Duration
	think          time.Duration
	fullRead       bool
	keep           bool
	testdata       string
	proxyBin       string
	cpuProfile     string
	gctrace        bool
}

func main() {
	var o options
	flag.IntVar(&o.sizeMB, "size", 300, "size of the big linux-64/repodata.json, in MB")
	flag.IntVar(&o.clients, "clients", 100, "client goroutines asking for the small answers")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of the idle phase, and the least length of the refresh phase")
	flag.DurationVar(&o.rampup, "rampup", time.Second, "load before the idle phase that is not counted (connections opening)")
	flag.DurationVar(&o.tail, "tail", 2*time.Second, "load kept on after the proxy served the new cut (what follows the publish)")
	flag.DurationVar(&o.refreshTimeout, "refresh-timeout", 5*time.Minute, "longest refresh phase: the run fails if the proxy has not served the new cut by then")
	flag.Int64Var(&o.maxRequests, "max-requests", 5_000_000, "bound on the hot requests of the whole run (the load stops there)")
	flag.DurationVar(&o.ttl, "ttl", 2*time.Second, "cache.metadata_ttl of the proxy")
	flag.DurationVar(&o.poll, "poll", 100*time.Millisecond, "the watcher's pause between two conditional GETs of big/linux-64/repodata.json")
	flag.IntVar(&o.zstClients, "zst-clients", 1, "clients fetching big/linux-64/repodata.json.zst (0: none)")
	flag.DurationVar(&o.zstPause, "zst-pause", 250*time.Millisecond, "a .zst client's pause between two GETs")
	flag.DurationVar(&o.think, "think", 0, "a hot client's pause between two requests (0: closed loop, each asks again at once)")
	flag.BoolVar(&o.fullRead, "full-read", true, "during the rebuild, read the whole old big repodata.json once (300 MB over loopback)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp directory (documents, config, proxy log)")
	flag.StringVar(&o.testdata, "testdata", "../shared/testdata", "the shared testdata directory")
	flag.StringVar(&o.proxyBin, "proxy-bin", "", "a condaproxy binary to run instead of building ./cmd/condaproxy")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "ask the proxy for a CPU profile of its run into this file (CONDAPROXY_CPUPROFILE; binaries that support it)")
	flag.BoolVar(&o.gctrace, "gctrace", false, "run the proxy with GODEBUG=gctrace=1 (lines in its log; with -keep)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "refreshload:", err)
		os.Exit(1)
	}
}

// The hot answers every load client asks for, in turn.
var hotPaths = []string{
	"/small/linux-64/repodata.json", // the 4 KiB document (bench.BuildChannel)
	"/small/noarch/repodata.json",
	"/big/noarch/repodata.json", // the big channel's other subdir: same channel, other subdir
}

func run(o options) error {
	tmp, cleanup, err := bench.TempDir("refreshload-", o.keep)
	if err != nil {
		return err
	}
	defer cleanup()

	// The documents. Both versions are written before anything is timed, and
	// served from disk by sendfile, so the upstream costs little CPU.
	src := filepath.Join(o.testdata, "cf-subchannel-py39", "linux-64", "repodata.json")
	target := int64(o.sizeMB) << 20
	docA := filepath.Join(tmp, "upstream", "A.json")
	docB := filepath.Join(tmp, "upstream", "B.json")
	sizeA, records, err := bench.ScaleRepodata(src, docA, target, bench.ScaleOptions{})
	if err != nil {
		return err
	}
	// B: one copy of the records in a hundred gets one more member, as a day of
	// conda-forge changes some records; any change means a whole new cut.
	sizeB, _, err := bench.ScaleRepodata(src, docB, target, bench.ScaleOptions{Touch: func(c int) bool { return c%100 == 1 }})
	if err != nil {
		return err
	}
	small, err := bench.BuildChannel(filepath.Join(tmp, "small"))
	if err != nil {
		return err
	}
	fmt.Printf("big linux-64/repodata.json: A %.1f MB, B %.1f MB (1%% of the records changed), %d records\n",
		float64(sizeA)/1e6, float64(sizeB)/1e6, records)

	up, err := newUpstream(small, docA, docB, sizeA, sizeB)
	if err != nil {
		return err
	}
	defer up.close()

	bin := o.proxyBin
	if bin == "" {
		bin = filepath.Join(tmp, "condaproxy")
		if err := bench.BuildHere(bin); err != nil {
			return err
		}
	}
	port, err := bench.FreePort()
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`listen: 127.0.0.1:%d
data: %s
log: {level: info}
cache: {metadata_ttl: %s}
channels:
  - name: big
    upstreams: [{url: "%s/big"}]
  - name: small
    upstreams: [{url: "%s/small"}]
`, port, filepath.Join(tmp, "data"), o.ttl, up.url, up.url)
	cfgPath := filepath.Join(tmp, "condaproxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	logPath := filepath.Join(tmp, "proxy.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	var env []string
	if o.cpuProfile != "" {
		p, _ := filepath.Abs(o.cpuProfile)
		env = append(env, "CONDAPROXY_CPUPROFILE="+p)
	}
	if o.gctrace {
		env = append(env, "GODEBUG=gctrace=1")
	}
	stop, pid, err := bench.ServeProxy(bin, cfgPath, port, logf, env, 400)
	if err != nil {
		return err
	}
	defer stop()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	r := &runner{o: o, base: base, pid: pid, up: up, epoch: time.Now()}
	r.client = &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: o.clients + 16, // one kept-alive connection per client
		DisableCompression:  true,           // identity: the plain JSON form, as the Go benchmarks ask
	}, Timeout: time.Minute}
	if err := r.warm(); err != nil {
		return err
	}
	err = r.measure()
	r.report(sizeA)
	if err == nil && len(r.problems) > 0 {
		err = fmt.Errorf("%d problem(s), first: %s", len(r.problems), r.problems[0])
	}
	if err != nil {
		if tail, _ := os.ReadFile(logPath); len(tail) > 0 {
			fmt.Fprintf(os.Stderr, "proxy log (last 2 KB):\n%s\n", tail[max(0, len(tail)-2048):])
		}
	}
	return err
}

// ---- the upstream ----------------------------------------------------------

// version is one version of the big linux-64/repodata.json upstream serves.
type version struct {
	name    string // "A" or "B"
	path    string
	size    int64
	etag    string
	modTime time.Time
}

// upstream serves both channels. Its big linux-64/repodata.json is switched
// from A to B by switchTo; every answer to that path is logged with its time.
type upstream struct {
	url      string
	srv      *http.Server
	big      atomic.Pointer[version]
	versions map[string]*version
	files    map[string][]byte // the other paths: /big/noarch/..., /small/...
	filesMod time.Time

	mu     sync.Mutex
	events []upEvent // answers to /big/linux-64/repodata.json
}

type upEvent struct {
	version    string
	status     int
	start, end time.Time
}

func newUpstream(small *bench.Channel, docA, docB string, sizeA, sizeB int64) (*upstream, error) {
	now := time.Now()
	u := &upstream{
		versions: map[string]*version{
			"A": {name: "A", path: docA, size: sizeA, etag: `"A-` + strconv.FormatInt(sizeA, 10) + `"`, modTime: now.Add(-time.Hour)},
			"B": {name: "B", path: docB, size: sizeB, etag: `"B-` + strconv.FormatInt(sizeB, 10) + `"`},
		},
		files:    map[string][]byte{},
		filesMod: now.Add(-time.Hour),
	}
	u.big.Store(u.versions["A"])
	u.files["/big/noarch/repodata.json"] = []byte(`{"info":{"subdir":"noarch"},"packages":{},"packages.conda":{},"removed":[],"repodata_version":1}` + "\n")
	for _, rel := range []string{small.Repodata, small.Noarch, small.Pkg} {
		b, err := os.ReadFile(small.Path(rel))
		if err != nil {
			return nil, err
		}
		u.files["/small/"+rel] = b
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u.url = "http://" + ln.Addr().String()
	u.srv = &http.Server{Handler: u}
	go u.srv.Serve(ln)
	return u, nil
}

func (u *upstream) close() { u.srv.Close() }

// switchTo makes name the version served from now on, with a fresh
// Last-Modified (and its own ETag), so the proxy's conditional request gets 200.
func (u *upstream) switchTo(name string) {
	v := *u.versions[name]
	v.modTime = time.Now()
	u.big.Store(&v)
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/big/linux-64/repodata.json" {
		v := u.big.Load()
		f, err := os.Open(v.path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		// ServeContent answers If-None-Match / If-Modified-Since with 304.
		w.Header().Set("ETag", v.etag)
		w.Header().Set("Content-Type", "application/json")
		rec := &statusWriter{ResponseWriter: w}
		start := time.Now()
		http.ServeContent(rec, r, "", v.modTime, f)
		u.mu.Lock()
		u.events = append(u.events, upEvent{v.name, rec.status, start, time.Now()})
		u.mu.Unlock()
		return
	}
	// Anything else the proxy may ask (repodata.json.zst, channeldata.json...)
	// is absent, as on a plain file server: it falls back to repodata.json.
	b, ok := u.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", `"`+bench.SHA256(b)[:16]+`"`)
	http.ServeContent(w, r, "", u.filesMod, bytes.NewReader(b))
}

// firstOK is the first 200 answer of version name: when the proxy's fetch of it
// started and when the last byte was sent.
func (u *upstream) firstOK(name string) (upEvent, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, e := range u.events {
		if e.version == name && e.status == http.StatusOK {
			return e, true
		}
	}
	return upEvent{}, false
}

// count is the number of answers of version name with status in [from, to).
func (u *upstream) count(name string, status int, from, to time.Time) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, e := range u.events {
		if e.version == name && e.status == status && !e.start.Before(from) && e.start.Before(to) {
			n++
		}
	}
	return n
}

// statusWriter records the status and keeps ReadFrom, so ServeContent of a
// file still goes by sendfile (a wrapper without it would copy 300 MB through
// a 32 KiB buffer in this process, CPU the proxy would not get).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.(io.ReaderFrom).ReadFrom(src)
}

// ---- the clients -----------------------------------------------------------

// sample is one request: when it started (ns since the run's epoch), how long it
// took to the last byte, which target, and whether its answer was right.
type sample struct {
	at, dur int64
	target  uint8
	ok      bool
}

// Targets beyond the hot paths (indices 0..len(hotPaths)-1).
const (
	tWatch    = uint8(100 + iota) // conditional GET of big linux-64 (304 or the switch)
	tZst                          // big linux-64 .zst, whole
	tFullRead                     // the whole old big linux-64 during the rebuild
)

type runner struct {
	o      options
	base   string
	pid    int
	up     *upstream
	client *http.Client
	epoch  time.Time

	expected  [][]byte // the hot answers, as warm read them
	etagA     string   // the proxy's ETag of A's cut
	servedA   int64
	coldBuild time.Duration
	coldZst   time.Duration
	hwmCold   int64
	docSize   int64

	// Phase boundaries, ns since epoch.
	idleStart, switchAt, end int64
	switchSeen               atomic.Int64 // first 200 with a new ETag (ns since epoch; 0: not yet)
	etagB                    string
	hwmIdle, hwmRefresh      int64
	hwmReset                 bool
	budgetHit                atomic.Bool

	mu       sync.Mutex
	samples  []sample
	problems []string
	fullRead struct {
		done       bool
		at         int64
		ttfb, dur  time.Duration
		size       int64
		sha, etag  string
		whileBuild bool
	}
	ticks []tick
}

func (r *runner) now() int64 { return int64(time.Since(r.epoch)) }

func (r *runner) problem(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.problems) < 1000 {
		r.problems = append(r.problems, fmt.Sprintf("%.3fs: ", float64(r.now())/1e9)+fmt.Sprintf(format, args...))
	}
}

func (r *runner) get(path string, hdr ...string) (*http.Response, error) {
	req, err := http.NewRequest("GET", r.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return r.client.Do(req)
}

// getWhole reads path whole: its size, the sha256 of its bytes, its ETag.
func (r *runner) getWhole(path string) (size int64, sha, etag string, err error) {
	resp, err := r.get(path)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	h := sha256.New()
	size, err = io.Copy(h, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", path, resp.Status)
	}
	return size, hex.EncodeToString(h.Sum(nil)), strings.Trim(resp.Header.Get("ETag"), `"`), err
}

func (r *runner) warm() error {
	start := time.Now()
	size, sha, etag, err := r.getWhole("/big/linux-64/repodata.json")
	if err != nil {
		return fmt.Errorf("cold build: %w", err)
	}
	r.coldBuild = time.Since(start)
	if sha != etag {
		return fmt.Errorf("big/linux-64/repodata.json: ETag %s is not the sha256 of its %d bytes (%s)", etag, size, sha)
	}
	r.etagA, r.servedA, r.docSize = etag, size, r.up.versions["A"].size
	r.hwmCold = bench.ProcStatus(r.pid, "VmHWM:")
	// The .zst is made on its first ask and kept with the generation: warm it, so
	// the idle phase serves it from disk like any answer.
	start = time.Now()
	if _, _, _, err := r.getWhole("/big/linux-64/repodata.json.zst"); err != nil {
		return err
	}
	r.coldZst = time.Since(start)
	for _, p := range hotPaths {
		resp, err := r.get(p)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("warm %s: %s %v", p, resp.Status, err)
		}
		r.expected = append(r.expected, b)
	}
	pkg := "/small/linux-64/bigpkg-1.0-h0_0.conda"
	_, sha, _, err = r.getWhole(pkg)
	if err != nil {
		return err
	}
	if sha != bench.SHA256(r.up.files[pkg]) {
		return fmt.Errorf("%s: wrong bytes", pkg)
	}
	fmt.Printf("warm: cold build of big/linux-64/repodata.json %.2fs (%.1f MB served, peak RSS %.1f MB), its .zst %.2fs; small answers %d/%d/%d bytes\n",
		r.coldBuild.Seconds(), float64(size)/1e6, float64(r.hwmCold)/1e6, r.coldZst.Seconds(),
		len(r.expected[0]), len(r.expected[1]), len(r.expected[2]))
	return nil
}

// measure runs the idle and refresh phases.
func (r *runner) measure() error {
	o := r.o
	var stopLoad, stopSide atomic.Bool
	var budget atomic.Int64
	budget.Store(o.maxRequests)
	var wg, side sync.WaitGroup

	// The hot clients: closed loop (or -think), each on its own kept-alive
	// connection, every answer compared with what warm read.
	for i := 0; i < o.clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var local []sample
			var body bytes.Buffer
			k := i % len(hotPaths)
			for !stopLoad.Load() {
				if budget.Add(-1) < 0 {
					r.budgetHit.Store(true)
					break
				}
				at := r.now()
				ok, msg := r.hot(k, &body)
				local = append(local, sample{at: at, dur: r.now() - at, target: uint8(k), ok: ok})
				if !ok {
					r.problem("%s: %s", hotPaths[k], msg)
				}
				k = (k + 1) % len(hotPaths)
				if o.think > 0 {
					time.Sleep(o.think)
				}
			}
			r.mu.Lock()
			r.samples = append(r.samples, local...)
			r.mu.Unlock()
		}(i)
	}
	side.Add(1)
	go func() { defer side.Done(); r.watch(&stopSide) }()
	for i := 0; i < o.zstClients; i++ {
		side.Add(1)
		go func() { defer side.Done(); r.zst(&stopSide) }()
	}
	side.Add(1)
	go func() { defer side.Done(); r.sample(&stopSide) }()

	finish := func() {
		stopLoad.Store(true)
		wg.Wait()
		stopSide.Store(true)
		side.Wait()
	}

	// Idle: the load runs, upstream is unchanged (the proxy revalidates every
	// metadata_ttl and gets 304s).
	time.Sleep(o.rampup)
	r.idleStart = r.now()
	r.hwmReset = clearHWM(r.pid)
	time.Sleep(o.duration)

	// Refresh: upstream switches to B; the watcher's next ask past metadata_ttl
	// starts the revalidation, which gets B whole.
	r.hwmIdle = bench.ProcStatus(r.pid, "VmHWM:")
	r.hwmReset = r.hwmReset && clearHWM(r.pid)
	r.switchAt = r.now()
	r.up.switchTo("B")
	deadline := time.Now().Add(o.refreshTimeout)
	for {
		time.Sleep(50 * time.Millisecond)
		seen := r.switchSeen.Load()
		now := r.now()
		if seen != 0 && now-seen >= int64(o.tail) && now-r.switchAt >= int64(o.duration) {
			break
		}
		if time.Now().After(deadline) {
			r.end = r.now()
			finish()
			return fmt.Errorf("the proxy did not serve the new cut within %s of the upstream change", o.refreshTimeout)
		}
	}
	r.end = r.now()
	r.hwmRefresh = bench.ProcStatus(r.pid, "VmHWM:")
	finish()

	// After the load: the answer is the cut the switch saw, whole (its ETag is
	// the sha256 of its bytes), and not A's.
	_, sha, etag, err := r.getWhole("/big/linux-64/repodata.json")
	if err != nil {
		return err
	}
	if sha != etag || etag == r.etagA || etag != r.etagB {
		r.problem("after the refresh big/linux-64/repodata.json has ETag %s, sha256 %s (A's cut %s, switch saw %s)", etag, sha, r.etagA, r.etagB)
	}
	return nil
}

// hot asks for hot answer k and checks it byte for byte.
func (r *runner) hot(k int, body *bytes.Buffer) (bool, string) {
	resp, err := r.get(hotPaths[k])
	if err != nil {
		return false, err.Error()
	}
	body.Reset()
	_, err = body.ReadFrom(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return false, err.Error()
	case resp.StatusCode != http.StatusOK:
		return false, resp.Status
	case !bytes.Equal(body.Bytes(), r.expected[k]):
		return false, fmt.Sprintf("wrong answer: %d bytes", body.Len())
	}
	return true, ""
}

// watch asks for big/linux-64/repodata.json every -poll, conditionally on the
// ETag it knows: 304 while the old cut is served (without waiting for the
// build), 200 with another ETag when the new one is published. Its asks past
// metadata_ttl are also what start the proxy's revalidations of that subdir.
func (r *runner) watch(stop *atomic.Bool) {
	etag := `"` + r.etagA + `"`
	for !stop.Load() {
		if r.o.fullRead && !r.fullRead.done && r.switchSeen.Load() == 0 {
			if _, ok := r.up.firstOK("B"); ok {
				r.readOld()
			}
		}
		at := r.now()
		resp, err := r.get("/big/linux-64/repodata.json", "If-None-Match", etag)
		if err != nil {
			r.problem("watch: %v", err)
			r.add(sample{at: at, dur: r.now() - at, target: tWatch})
			time.Sleep(r.o.poll)
			continue
		}
		ok := true
		switch resp.StatusCode {
		case http.StatusNotModified:
			io.Copy(io.Discard, resp.Body)
		case http.StatusOK:
			// The switch. Only the header is needed now; the body (the whole
			// new document) is read and checked after the load, so this
			// process's hashing does not land in the measured window. Closing
			// it unread ends this connection.
			if got := resp.Header.Get("ETag"); got != etag {
				if r.switchSeen.Load() == 0 {
					r.etagB = strings.Trim(got, `"`)
					r.switchSeen.Store(r.now())
				}
				etag = got
			} else {
				ok = false
				r.problem("watch: 200 with the ETag asked for in If-None-Match")
			}
		default:
			ok = false
			r.problem("watch: %s", resp.Status)
		}
		resp.Body.Close()
		// Time to the answer's header: a 304 has no body, and a 200's body is
		// not read here.
		r.add(sample{at: at, dur: r.now() - at, target: tWatch, ok: ok})
		time.Sleep(r.o.poll)
	}
}

// readOld reads the whole big repodata.json once, while the proxy is building
// B's cut (the upstream has sent B, the proxy serves no new cut yet): the old
// generation must stream whole, from its first byte at once.
func (r *runner) readOld() {
	at := r.now()
	start := time.Now()
	resp, err := r.get("/big/linux-64/repodata.json")
	r.fullRead.done = true
	if err != nil {
		r.problem("full read during the rebuild: %v", err)
		return
	}
	defer resp.Body.Close()
	ttfb := time.Since(start)
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	dur := time.Since(start)
	sha := hex.EncodeToString(h.Sum(nil))
	etag := strings.Trim(resp.Header.Get("ETag"), `"`)
	ok := err == nil && resp.StatusCode == http.StatusOK && sha == etag && etag == r.etagA
	if !ok {
		r.problem("full read during the rebuild: %s, %d bytes, sha256 %s, ETag %s (A's cut %s), %v", resp.Status, n, sha, etag, r.etagA, err)
	}
	r.mu.Lock()
	fr := &r.fullRead
	fr.at, fr.ttfb, fr.dur, fr.size, fr.sha, fr.etag = at, ttfb, dur, n, sha, etag
	fr.whileBuild = r.switchSeen.Load() == 0
	r.mu.Unlock()
	r.add(sample{at: at, dur: int64(dur), target: tFullRead, ok: ok})
}

// zst fetches big/linux-64/repodata.json.zst whole, every -zst-pause.
func (r *runner) zst(stop *atomic.Bool) {
	for !stop.Load() {
		at := r.now()
		resp, err := r.get("/big/linux-64/repodata.json.zst")
		ok := err == nil
		if err != nil {
			r.problem("zst: %v", err)
		} else {
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || (resp.ContentLength >= 0 && n != resp.ContentLength) {
				ok = false
				r.problem("zst: %s, %d bytes, %v", resp.Status, n, err)
			}
		}
		r.add(sample{at: at, dur: r.now() - at, target: tZst, ok: ok})
		time.Sleep(r.o.zstPause)
	}
}

func (r *runner) add(s sample) {
	r.mu.Lock()
	r.samples = append(r.samples, s)
	r.mu.Unlock()
}

// ---- process figures -------------------------------------------------------

// tick is one second of the run, as the proxy process and this one saw it.
type tick struct {
	at             int64 // ns since epoch
	proxyCPU       float64
	selfCPU        float64 // CPU seconds so far
	rss, anon      int64
	gcCount, gcSum float64 // go_gc_duration_seconds count and sum (stop-the-world pauses)
	gogc           float64
	heapInuse      float64
	proxyWait      float64  // seconds the proxy's threads waited runnable for a CPU, so far
	psiCPU, psiIO  float64  // seconds some task of the machine stalled on CPU, on I/O, so far
	gcCPU          float64  // go_cpu_classes_gc_total_cpu_seconds_total (NaN if not exposed)
	sched          []bucket // go_sched_latencies_seconds (nil if not exposed)
	load1          string
}

// sample records a tick every second, and the proxy's RSS every 50 ms in
// between (a peak between two ticks counts).
func (r *runner) sample(stop *atomic.Bool) {
	next := time.Now()
	for !stop.Load() {
		if time.Now().After(next) {
			t := tick{at: r.now(), proxyCPU: cpuSeconds(r.pid), selfCPU: cpuSeconds(os.Getpid()),
				rss: bench.ProcStatus(r.pid, "VmRSS:"), anon: bench.ProcStatus(r.pid, "RssAnon:"), proxyWait: runqWait(r.pid),
				psiCPU: psiSome("cpu"), psiIO: psiSome("io")}
			m, sched := r.metrics("go_gc_duration_seconds_count", "go_gc_duration_seconds_sum", "go_gc_gogc_percent",
				"go_memstats_heap_inuse_bytes", "go_cpu_classes_gc_total_cpu_seconds_total")
			t.gcCount, t.gcSum, t.gogc, t.heapInuse, t.gcCPU, t.sched = m[0], m[1], m[2], m[3], m[4], sched
			t.load1 = strings.Fields(bench.LoadAvg())[0]
			r.mu.Lock()
			r.ticks = append(r.ticks, t)
			r.mu.Unlock()
			next = next.Add(time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metrics reads the named figures from the proxy's /metrics (NaN if absent),
// and the buckets of go_sched_latencies_seconds (the time goroutines waited
// runnable before they ran), which a binary exposes only when its Go collector
// includes the runtime's /sched metrics.
func (r *runner) metrics(names ...string) ([]float64, []bucket) {
	out := make([]float64, len(names))
	for i := range out {
		out[i] = math.NaN()
	}
	resp, err := r.get("/metrics")
	if err != nil {
		return out, nil
	}
	defer resp.Body.Close()
	var sched []bucket
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if le, ok := strings.CutPrefix(line, `go_sched_latencies_seconds_bucket{le="`); ok {
			le, count, _ := strings.Cut(le, `"} `)
			var b bucket
			b.le, _ = strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
			b.count, _ = strconv.ParseFloat(count, 64)
			sched = append(sched, b)
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := slices.Index(names, name); i >= 0 {
			out[i], _ = strconv.ParseFloat(val, 64)
		}
	}
	return out, sched
}

// bucket is one cumulative bucket of a Prometheus histogram.
type bucket struct{ le, count float64 }

// schedQuantile is the q quantile of the scheduler latencies between two
// scrapes (upper bound of the bucket it falls in); NaN without them.
func schedQuantile(a, b []bucket, q float64) float64 {
	if len(a) == 0 || len(a) != len(b) {
		return math.NaN()
	}
	total := b[len(b)-1].count - a[len(a)-1].count
	if total <= 0 {
		return math.NaN()
	}
	for i := range b {
		if b[i].count-a[i].count >= q*total {
			return b[i].le
		}
	}
	return math.Inf(1)
}

// clearHWM resets pid's VmHWM to its current RSS (Linux: "5" to clear_refs),
// so each phase's peak is its own, not the cold build's.
func clearHWM(pid int) bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

// cpuSeconds is the user+system CPU time of pid so far (/proc/<pid>/stat,
// clock ticks of 1/100 s).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces: it ends at the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// runqWait is the time pid's threads spent runnable but waiting for a CPU so
// far, in seconds (the second field of /proc/<pid>/task/*/schedstat): how much
// the machine's other work kept the proxy off the cores. Threads that have
// ended are not counted, so it is a lower bound.
func runqWait(pid int) float64 {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return math.NaN()
	}
	var ns float64
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			v, _ := strconv.ParseFloat(f[1], 64)
			ns += v
		}
	}
	return ns / 1e9
}

// psiSome is the machine's pressure stall total for resource ("cpu", "io"):
// the time, in seconds, during which some runnable task waited for it.
func psiSome(resource string) float64 {
	b, err := os.ReadFile("/proc/pressure/" + resource)
	if err != nil {
		return math.NaN()
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "some "); ok {
			for _, f := range strings.Fields(rest) {
				if v, ok := strings.CutPrefix(f, "total="); ok {
					us, _ := strconv.ParseFloat(v, 64)
					return us / 1e6
				}
			}
		}
	}
	return math.NaN()
}

// ---- the report ------------------------------------------------------------

type stats struct {
	n, errs                 int
	p50, p90, p99, p999, mx time.Duration
	rate                    float64
}

func compute(ss []sample, from, to int64, keep func(uint8) bool) stats {
	var d []int64
	var st stats
	for _, s := range ss {
		if s.at < from || s.at >= to || !keep(s.target) {
			continue
		}
		st.n++
		if !s.ok {
			st.errs++
		}
		d = append(d, s.dur)
	}
	if len(d) == 0 {
		return st
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return time.Duration(d[max(0, int(math.Ceil(p*float64(len(d))))-1)]) }
	st.p50, st.p90, st.p99, st.p999, st.mx = q(0.5), q(0.9), q(0.99), q(0.999), time.Duration(d[len(d)-1])
	st.rate = float64(st.n) / (float64(to-from) / 1e9)
	return st
}

func (s stats) line(name string) string {
	if s.n == 0 {
		return fmt.Sprintf("%-34s %9d  (no request)", name, 0)
	}
	return fmt.Sprintf("%-34s %9d %6d %9.0f %9s %9s %9s %9s %9s", name, s.n, s.errs, s.rate,
		ms(s.p50), ms(s.p90), ms(s.p99), ms(s.p999), ms(s.mx))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }

func secs(ns int64) string { return fmt.Sprintf("%.2fs", float64(ns)/1e9) }

func isHot(t uint8) bool { return int(t) < len(hotPaths) }

func (r *runner) report(docSize int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.end == 0 {
		return
	}
	o := r.o
	ss := r.samples
	seen := r.switchSeen.Load()
	var fetchStart, fetchEnd int64
	if e, ok := r.up.firstOK("B"); ok {
		fetchStart, fetchEnd = int64(e.start.Sub(r.epoch)), int64(e.end.Sub(r.epoch))
	}
	fmt.Printf("\nload: %d hot clients (closed loop%s) over %v, on %d CPUs; metadata_ttl %s; watcher every %s; %d .zst client(s) every %s\n",
		o.clients, map[bool]string{true: ", think " + o.think.String(), false: ""}[o.think > 0], hotPaths, runtime.NumCPU(), o.ttl, o.poll, o.zstClients, o.zstPause)
	if r.budgetHit.Load() {
		fmt.Printf("(the load stopped at -max-requests %d before the phase ended)\n", o.maxRequests)
	}
	fmt.Printf("\n%-34s %9s %6s %9s %9s %9s %9s %9s %9s\n", "phase / answers", "requests", "errors", "req/s", "p50", "p90", "p99", "p99.9", "max")
	idle := compute(ss, r.idleStart, r.switchAt, isHot)
	refresh := compute(ss, r.switchAt, r.end, isHot)
	fmt.Println(idle.line(fmt.Sprintf("idle (%s), hot", secs(r.switchAt-r.idleStart))))
	for k, p := range hotPaths {
		fmt.Println(compute(ss, r.idleStart, r.switchAt, func(t uint8) bool { return int(t) == k }).line("  " + p))
	}
	fmt.Println(refresh.line(fmt.Sprintf("refresh (%s), hot", secs(r.end-r.switchAt))))
	for k, p := range hotPaths {
		fmt.Println(compute(ss, r.switchAt, r.end, func(t uint8) bool { return int(t) == k }).line("  " + p))
	}
	var window stats
	if fetchStart != 0 && seen != 0 {
		window = compute(ss, fetchStart, seen, isHot)
		fmt.Println(window.line(fmt.Sprintf("rebuild window (%s), hot", secs(seen-fetchStart))))
	}
	isW := func(t uint8) bool { return t == tWatch }
	isZ := func(t uint8) bool { return t == tZst }
	fmt.Println(compute(ss, r.idleStart, r.switchAt, isW).line("idle, big linux-64 If-None-Match"))
	fmt.Println(compute(ss, r.switchAt, r.end, isW).line("refresh, big linux-64 If-None-Match"))
	if fetchStart != 0 && seen != 0 {
		fmt.Println(compute(ss, fetchStart, seen, isW).line("rebuild window, If-None-Match"))
	}
	if o.zstClients > 0 {
		fmt.Println(compute(ss, r.idleStart, r.switchAt, isZ).line("idle, big linux-64 .zst"))
		fmt.Println(compute(ss, r.switchAt, r.end, isZ).line("refresh, big linux-64 .zst"))
		if seen != 0 {
			fmt.Println(compute(ss, seen, r.end, isZ).line("  after the switch"))
		}
	}

	fmt.Println()
	ratio := func(a, b time.Duration) float64 { return float64(a) / float64(b) }
	verdict := func(x float64) string {
		if x <= 3 {
			return "meets the target (<= 3x)"
		}
		return "MISSES the target (<= 3x)"
	}
	if idle.n > 0 && refresh.n > 0 {
		x := ratio(refresh.p99, idle.p99)
		fmt.Printf("hot p99, whole refresh phase / idle: %s / %s = %.2fx: %s\n", ms(refresh.p99), ms(idle.p99), x, verdict(x))
	}
	if idle.n > 0 && window.n > 0 {
		x := ratio(window.p99, idle.p99)
		fmt.Printf("hot p99, rebuild window / idle:      %s / %s = %.2fx: %s\n", ms(window.p99), ms(idle.p99), x, verdict(x))
	}
	errs := idle.errs + refresh.errs
	fmt.Printf("errors: %d (hot, both phases); %d problem(s) in all\n", errs, len(r.problems))
	for i, p := range r.problems {
		if i == 10 {
			fmt.Printf("  ... %d more\n", len(r.problems)-10)
			break
		}
		fmt.Println("  " + p)
	}

	fmt.Println("\nrefresh timeline (from the upstream change):")
	fmt.Printf("  upstream switched to B                     +0.00s\n")
	if fetchStart != 0 {
		fmt.Printf("  proxy's GET of B started (200)              +%s\n", secs(fetchStart-r.switchAt))
		fmt.Printf("  upstream sent B's last byte                 +%s  (%s)\n", secs(fetchEnd-r.switchAt), secs(fetchEnd-fetchStart))
	} else {
		fmt.Printf("  the proxy never fetched B\n")
	}
	if fr := r.fullRead; fr.done && fr.size > 0 {
		fmt.Printf("  whole old repodata.json read               +%s: first byte in %s, %.1f MB in %.2fs, %s cut (%s), during the build: %v\n",
			secs(fr.at-r.switchAt), ms(fr.ttfb), float64(fr.size)/1e6, fr.dur.Seconds(),
			map[bool]string{true: "A's", false: "NOT A's"}[fr.etag == r.etagA && fr.sha == fr.etag], fr.etag[:min(12, len(fr.etag))], fr.whileBuild)
	}
	if seen != 0 {
		fmt.Printf("  first answer with B's cut                  +%s  (rebuild: %s from the proxy's GET, watcher step %s)\n",
			secs(seen-r.switchAt), secs(seen-fetchStart), o.poll)
	} else {
		fmt.Printf("  the proxy never served B's cut\n")
	}
	fmt.Printf("  upstream answers to big linux-64: idle %d x 304, %d x 200; refresh %d x 304 (A), %d x 304 (B), %d x 200 (B)\n",
		r.up.count("A", 304, r.epoch.Add(time.Duration(r.idleStart)), r.epoch.Add(time.Duration(r.switchAt))),
		r.up.count("A", 200, r.epoch.Add(time.Duration(r.idleStart)), r.epoch.Add(time.Duration(r.switchAt))),
		r.up.count("A", 304, r.epoch.Add(time.Duration(r.switchAt)), r.epoch.Add(time.Duration(r.end))),
		r.up.count("B", 304, r.epoch.Add(time.Duration(r.switchAt)), r.epoch.Add(time.Duration(r.end))),
		r.up.count("B", 200, r.epoch.Add(time.Duration(r.switchAt)), r.epoch.Add(time.Duration(r.end))))

	r.printTicks(fetchStart, fetchEnd, seen)

	fmt.Println()
	hwmNote := ""
	if !r.hwmReset {
		hwmNote = " (clear_refs refused: VmHWM is the process's peak since start)"
	}
	fmt.Printf("peak RSS (VmHWM): cold build %.1f MB = %.2fx the document; idle %.1f MB; refresh %.1f MB = %.2fx the document (%.1f MB)%s\n",
		float64(r.hwmCold)/1e6, float64(r.hwmCold)/float64(docSize), float64(r.hwmIdle)/1e6,
		float64(r.hwmRefresh)/1e6, float64(r.hwmRefresh)/float64(docSize), float64(docSize)/1e6, hwmNote)
}

// printTicks prints the per-second table from a little before the switch to the
// end: what the hot answers got, and what the proxy was doing.
func (r *runner) printTicks(fetchStart, fetchEnd, seen int64) {
	fmt.Println("\nper second (t from the upstream change; CPU in cores over the interval; GC = cycles and their")
	fmt.Println("stop-the-world time, GC CPU and sched p99 = goroutine run-queue wait, from the proxy's /metrics, '-' if not exposed;")
	fmt.Println("proxy wait = its threads' wait for a CPU (schedstat), in cores; PSI = share of the time some task of the machine stalled):")
	fmt.Printf("  %6s %8s %9s %9s %6s %9s %9s %10s %7s %6s %4s %8s %6s %9s %5s %7s %7s %7s %5s  %s\n",
		"t", "hot req", "hot p99", "hot max", "errors", "proxy CPU", "bench CPU", "proxy wait", "PSI cpu", "PSI io", "GC", "GC STW", "GC CPU", "sched p99", "GOGC", "heap", "RSS", "anon", "load", "")
	var prev *tick
	for i := range r.ticks {
		t := &r.ticks[i]
		if prev == nil || t.at < r.switchAt-3e9 {
			prev = t
			continue
		}
		dt := float64(t.at-prev.at) / 1e9
		st := compute(r.samples, prev.at, t.at, isHot)
		var marks []string
		for _, m := range []struct {
			at   int64
			what string
		}{{r.switchAt, "upstream changed"}, {fetchStart, "proxy GETs B"}, {fetchEnd, "B received"}, {seen, "B's cut served"}} {
			if m.at != 0 && m.at > prev.at && m.at <= t.at {
				marks = append(marks, m.what)
			}
		}
		fmt.Printf("  %+6.1f %8d %9s %9s %6d %9.2f %9.2f %10s %6s%% %5s%% %4.0f %8s %6s %9s %5.0f %6.0fM %6.0fM %6.0fM %5s  %s\n",
			float64(t.at-r.switchAt)/1e9, st.n, ms(st.p99), ms(st.mx), st.errs,
			(t.proxyCPU-prev.proxyCPU)/dt, (t.selfCPU-prev.selfCPU)/dt, opt("%.2f", (t.proxyWait-prev.proxyWait)/dt),
			opt("%.0f", (t.psiCPU-prev.psiCPU)/dt*100), opt("%.0f", (t.psiIO-prev.psiIO)/dt*100), t.gcCount-prev.gcCount,
			ms(time.Duration((t.gcSum-prev.gcSum)*1e9)), opt("%.2f", (t.gcCPU-prev.gcCPU)/dt),
			opt("%.2fms", schedQuantile(prev.sched, t.sched, 0.99)*1e3), t.gogc, t.heapInuse/1e6,
			float64(t.rss)/1e6, float64(t.anon)/1e6, t.load1, strings.Join(marks, ", "))
		prev = t
	}
	// The idle phase in one line, for comparison.
	var a, b *tick
	for i := range r.ticks {
		t := &r.ticks[i]
		if a == nil && t.at >= r.idleStart {
			a = t
		}
		if t.at <= r.switchAt {
			b = t
		}
	}
	if a != nil && b != nil && b.at > a.at {
		dt := float64(b.at-a.at) / 1e9
		fmt.Printf("  idle average: proxy CPU %.2f cores, bench CPU %.2f cores, proxy wait %s cores, PSI cpu %s%% io %s%%, %.1f GC/s (STW %s/s), GC CPU %s cores, sched p99 %s, GOGC %.0f, heap %.0fM\n",
			(b.proxyCPU-a.proxyCPU)/dt, (b.selfCPU-a.selfCPU)/dt, opt("%.2f", (b.proxyWait-a.proxyWait)/dt),
			opt("%.0f", (b.psiCPU-a.psiCPU)/dt*100), opt("%.0f", (b.psiIO-a.psiIO)/dt*100), (b.gcCount-a.gcCount)/dt,
			ms(time.Duration((b.gcSum-a.gcSum)/dt*1e9)), opt("%.2f", (b.gcCPU-a.gcCPU)/dt),
			opt("%.2fms", schedQuantile(a.sched, b.sched, 0.99)*1e3), b.gogc, b.heapInuse/1e6)
	}
	if fetchStart != 0 && seen != 0 {
		// The rebuild window as one line: the ticks that cover it.
		var a, b *tick
		for i := range r.ticks {
			t := &r.ticks[i]
			if t.at <= fetchStart {
				a = t
			}
			if b == nil && t.at >= seen {
				b = t
			}
		}
		if a != nil && b != nil && b.at > a.at {
			dt := float64(b.at-a.at) / 1e9
			fmt.Printf("  rebuild (%.1fs of ticks): proxy CPU %.2f cores, bench CPU %.2f cores, proxy wait %s cores, PSI cpu %s%% io %s%%, %.1f GC/s (STW %s/s), GC CPU %s cores, sched p99 %s\n",
				dt, (b.proxyCPU-a.proxyCPU)/dt, (b.selfCPU-a.selfCPU)/dt, opt("%.2f", (b.proxyWait-a.proxyWait)/dt),
				opt("%.0f", (b.psiCPU-a.psiCPU)/dt*100), opt("%.0f", (b.psiIO-a.psiIO)/dt*100), (b.gcCount-a.gcCount)/dt,
				ms(time.Duration((b.gcSum-a.gcSum)/dt*1e9)), opt("%.2f", (b.gcCPU-a.gcCPU)/dt),
				opt("%.2fms", schedQuantile(a.sched, b.sched, 0.99)*1e3))
		}
	}
}

// opt formats v, or "-" when it is not a number (a figure the binary does not
// expose).
func opt(format string, v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// ---- the proxy process -----------------------------------------------------
