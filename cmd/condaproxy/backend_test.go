package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/admin"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/internal/testdata"
)

// Secrets of the test configuration: none may show in an answer or a log line.
const (
	upTok  = "up-tok-7f3a"  // in the upstream URL, /t/<token>/
	cliTok = "cli-tok-91b2" // auth.tokens
	admTok = "adm-tok-c44e" // auth.admin_token
)

// countingUpstream serves conda_format_repo below /t/<upTok>/, counts requests by
// path (without the token) and can hold one file until released.
type countingUpstream struct {
	*httptest.Server
	mu     sync.Mutex
	counts map[string]int
	cond   map[string]bool // the last request of a path was conditional
	hold   atomic.Pointer[holdFile]
}

type holdFile struct {
	path    string
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func newCountingUpstream(t *testing.T) *countingUpstream {
	t.Helper()
	u := &countingUpstream{counts: map[string]int{}, cond: map[string]bool{}}
	files := http.FileServer(http.Dir(testdata.Path(t, "conda_format_repo")))
	prefix := "/t/" + upTok
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		u.mu.Lock()
		u.counts[p]++
		u.cond[p] = r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != ""
		u.mu.Unlock()
		if h := u.hold.Load(); h != nil && h.path == p {
			h.once.Do(func() { close(h.reached) })
			select {
			case <-h.release:
			case <-r.Context().Done():
				return
			}
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = p
		files.ServeHTTP(w, r2)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *countingUpstream) count(p string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[p]
}

// holdNext makes the next request of p wait until the returned release is closed.
func (u *countingUpstream) holdNext(p string) *holdFile {
	h := &holdFile{path: p, reached: make(chan struct{}), release: make(chan struct{})}
	u.hold.Store(h)
	return h
}

// testApp is the real app (newApp) on a temp data directory, served by httptest.
type testApp struct {
	*app
	srv     *httptest.Server
	up      *countingUpstream
	logs    *testdata.Buffer
	cfgPath string
}

func startTestApp(t *testing.T) *testApp {
	t.Helper()
	up := newCountingUpstream(t)
	yaml := "data: " + filepath.Join(t.TempDir(), "data") + "\n" +
		"auth:\n  tokens: [" + cliTok + "]\n  admin_token: " + admTok + "\n" +
		"log:\n  level: debug\n" +
		"channels:\n" +
		"  - name: fmt\n    platforms: [linux-64]\n    license_blacklist: [GPL]\n" +
		"    upstreams:\n      - url: " + up.URL + "/t/" + upTok + "\n" +
		"  - name: inst\n    kind: files\n    upstreams:\n      - url: " + up.URL + "/t/" + upTok + "\n"
	cfgPath := writeFile(t, "c.yaml", yaml)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testdata.Buffer{}
	a, err := newApp(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.handler)
	ta := &testApp{app: a, srv: srv, up: up, logs: logs, cfgPath: cfgPath}
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.proxy.Shutdown(ctx)
		a.Close()
		for _, secret := range []string{upTok, cliTok, admTok} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("a secret (%s) is in the log:\n%s", secret, logs.String())
			}
		}
	})
	return ta
}

// call asks the app; token is sent as a bearer token. out, if not nil, gets the
// decoded JSON answer.
func (ta *testApp) call(t *testing.T, method, path, token, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ta.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, secret := range []string{upTok, cliTok, admTok} {
		if bytes.Contains(data, []byte(secret)) {
			t.Fatalf("%s %s: a secret in the answer: %s", method, path, data)
		}
	}
	if strings.HasPrefix(path, "/api/") {
		if resp.StatusCode >= 400 {
			var e map[string]any
			if json.Unmarshal(data, &e) != nil || len(e) != 1 || e["error"] == nil {
				t.Fatalf("%s %s: %d %s; want {\"error\": ...}", method, path, resp.StatusCode, data)
			}
		} else if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				t.Fatalf("%s %s: %v: %s", method, path, err, data)
			}
		}
	}
	return resp.StatusCode
}

func (ta *testApp) waitJob(t *testing.T, id string) admin.Job {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var j admin.Job
		if code := ta.call(t, "GET", "/api/v1/jobs/"+id, cliTok, "", &j); code != 200 {
			t.Fatalf("GET job %s: %d", id, code)
		}
		if j.State != "running" {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still running after 20 s: %+v", id, j)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const (
	zlibConda = "zlib-1.2.11-h7b6447c_3.conda"
	zlibBz2   = "zlib-1.2.11-h7b6447c_3.tar.bz2"
	libgcc    = "libgcc-ng-8.2.0-hdf63c60_1.tar.bz2"
)

func TestBackendOnTheRealApp(t *testing.T) {
	ta := startTestApp(t)

	// Channels: both, upstreams redacted; reads need a client token.
	if code := ta.call(t, "GET", "/api/v1/channels", "", "", nil); code != 401 {
		t.Errorf("channels without a token: %d, want 401", code)
	}
	var chans []admin.ChannelInfo
	if code := ta.call(t, "GET", "/api/v1/channels", cliTok, "", &chans); code != 200 || len(chans) != 2 {
		t.Fatalf("channels: %d %+v", code, chans)
	}
	fmtCh := chans[0]
	if fmtCh.Name != "fmt" || fmtCh.Kind != "conda" || len(fmtCh.Upstreams) != 1 ||
		!strings.Contains(fmtCh.Upstreams[0], "/t/"+config.Mask) || strings.Join(fmtCh.Platforms, ",") != "linux-64" ||
		fmtCh.PackagesCached != 0 || !fmtCh.UpstreamOK || !fmtCh.LastRefresh.IsZero() || !fmtCh.LastSync.IsZero() {
		t.Errorf("channel fmt: %+v", fmtCh)
	}
	if chans[1].Name != "inst" || chans[1].Kind != "files" {
		t.Errorf("channel inst: %+v", chans[1])
	}

	// Package search: served and hidden, sorted, paged.
	var page admin.PackagePage
	if code := ta.call(t, "GET", "/api/v1/packages?channel=fmt&subdir=linux-64", cliTok, "", &page); code != 200 {
		t.Fatalf("packages: %d", code)
	}
	if page.Total != 3 || len(page.Packages) != 3 || page.Limit != 50 {
		t.Fatalf("packages: %+v", page)
	}
	hidden := page.Packages[0]
	want := admin.Package{Filename: libgcc, Name: "libgcc-ng", Version: "8.2.0", Build: "hdf63c60_1", Size: -1,
		Reason: "license_blacklist: GPL"}
	if hidden != want {
		t.Errorf("hidden record: %+v, want %+v", hidden, want)
	}
	if p := page.Packages[1]; p.Filename != zlibConda || !p.Served || p.Size != 105917 || p.Cached || p.Reason != "" ||
		p.Name != "zlib" || p.Version != "1.2.11" || p.Build != "h7b6447c_3" {
		t.Errorf("served record: %+v", p)
	}
	page = admin.PackagePage{}
	ta.call(t, "GET", "/api/v1/packages?channel=fmt&subdir=linux-64&q=zlib&offset=1&limit=1", cliTok, "", &page)
	if page.Total != 2 || page.Offset != 1 || page.Limit != 1 || len(page.Packages) != 1 || page.Packages[0].Filename != zlibBz2 {
		t.Errorf("packages q=zlib offset=1 limit=1: %+v", page)
	}
	page = admin.PackagePage{}
	ta.call(t, "GET", "/api/v1/packages?channel=fmt&subdir=linux-64&q=nothing-like-it", cliTok, "", &page)
	if page.Total != 0 || page.Packages == nil {
		t.Errorf("packages with no match: %+v, want total 0 and []", page)
	}
	for path, status := range map[string]int{
		"/api/v1/packages?channel=nochan&subdir=linux-64":      404,
		"/api/v1/packages?channel=inst&subdir=linux-64":        404, // a files channel
		"/api/v1/packages?channel=fmt&subdir=osx-64":           404, // not in its platforms
		"/api/v1/packages?channel=fmt&subdir=linux64":          400,
		"/api/v1/packages?channel=fmt":                         400,
		"/api/v1/explain?channel=fmt&subdir=../x&package=zlib": 400,
	} {
		if code := ta.call(t, "GET", path, cliTok, "", nil); code != status {
			t.Errorf("GET %s: %d, want %d", path, code, status)
		}
	}

	// Explain.
	var ex []admin.Explanation
	ta.call(t, "GET", "/api/v1/explain?channel=fmt&subdir=linux-64&package=libgcc-ng", cliTok, "", &ex)
	if len(ex) != 1 || ex[0].Filename != libgcc || ex[0].Served || ex[0].Rule != "license_blacklist: GPL" || ex[0].Name != "libgcc-ng" {
		t.Errorf("explain libgcc-ng: %+v", ex)
	}

	// Stats after a miss and a hit of one package.
	var before admin.Stats
	ta.call(t, "GET", "/api/v1/stats", cliTok, "", &before)
	for i := 0; i < 2; i++ {
		if code := ta.call(t, "GET", "/fmt/linux-64/"+zlibConda, cliTok, "", nil); code != 200 {
			t.Fatalf("GET %s: %d", zlibConda, code)
		}
	}
	if n := ta.up.count("/linux-64/" + zlibConda); n != 1 {
		t.Errorf("upstream asked %d times for %s, want 1", n, zlibConda)
	}
	var st admin.Stats
	ta.call(t, "GET", "/api/v1/stats", cliTok, "", &st)
	if st.Hits-before.Hits < 1 || st.Misses-before.Misses < 1 || st.HitRatio <= 0 || st.HitRatio >= 1 {
		t.Errorf("stats after a miss and a hit: before %+v, after %+v", before, st)
	}
	if st.CacheFiles != 1 || st.CacheBytes != 105917 || st.CacheLimit <= 0 {
		t.Errorf("stats cache: %+v", st)
	}
	if st.BytesBySource["upstream"] != 105917 || st.BytesBySource["memory"]+st.BytesBySource["disk"] != 105917 {
		t.Errorf("stats bytes by source: %v", st.BytesBySource)
	}
	page = admin.PackagePage{}
	ta.call(t, "GET", "/api/v1/packages?channel=fmt&subdir=linux-64&q=.conda", cliTok, "", &page)
	if len(page.Packages) != 1 || !page.Packages[0].Cached {
		t.Errorf("after its download, %s is not cached: %+v", zlibConda, page)
	}

	// A sync job: writes need the admin token; one job per channel at a time.
	if code := ta.call(t, "POST", "/api/v1/sync", "", `{"channels":["fmt"]}`, nil); code != 401 {
		t.Errorf("sync without a token: %d, want 401", code)
	}
	if code := ta.call(t, "POST", "/api/v1/sync", cliTok, `{"channels":["fmt"]}`, nil); code != 401 {
		t.Errorf("sync with a client token: %d, want 401", code)
	}
	if code := ta.call(t, "POST", "/api/v1/sync", admTok, `{"channels":["inst"]}`, nil); code != 404 {
		t.Errorf("sync of a files channel: %d, want 404", code)
	}
	hold := ta.up.holdNext("/linux-64/" + zlibBz2)
	var job admin.Job
	if code := ta.call(t, "POST", "/api/v1/sync", admTok, `{"channels":["fmt"]}`, &job); code != 202 || job.ID == "" || job.State != "running" {
		t.Fatalf("sync: %d %+v", code, job)
	}
	select {
	case <-hold.reached:
	case <-time.After(20 * time.Second):
		t.Fatal("the sync job never asked upstream for the missing file")
	}
	var running admin.Job
	ta.call(t, "GET", "/api/v1/jobs/"+job.ID, cliTok, "", &running)
	if running.State != "running" || running.Files != 1 || running.Done != 0 || running.Bytes != 122456 {
		t.Errorf("job in progress: %+v", running)
	}
	if code := ta.call(t, "POST", "/api/v1/sync", admTok, `{"channels":["fmt"]}`, nil); code != 409 {
		t.Errorf("second sync of fmt while one runs: %d, want 409", code)
	}
	if code := ta.call(t, "POST", "/api/v1/sync", admTok, "", nil); code != 409 {
		t.Errorf("sync of every channel while fmt's runs: %d, want 409", code)
	}
	close(hold.release)
	ta.up.hold.Store(nil)
	done := ta.waitJob(t, job.ID)
	if done.State != "done" || done.Fetched != 1 || done.Present != 1 || done.Files != 1 || done.Done != 1 ||
		done.BytesDone != 122456 || len(done.Failed) != 0 || done.Error != "" || done.Finished.IsZero() {
		t.Errorf("finished job: %+v", done)
	}
	if n := ta.up.count("/linux-64/" + zlibBz2); n != 1 {
		t.Errorf("upstream asked %d times for %s, want 1", n, zlibBz2)
	}
	var jobs []admin.Job
	ta.call(t, "GET", "/api/v1/jobs", cliTok, "", &jobs)
	if len(jobs) != 1 || jobs[0].ID != job.ID || jobs[0].State != "done" {
		t.Errorf("jobs: %+v", jobs)
	}
	if code := ta.call(t, "GET", "/api/v1/jobs/feedface", cliTok, "", nil); code != 404 {
		t.Errorf("unknown job: %d, want 404", code)
	}
	// A new sync of fmt is accepted once the first is over: nothing left to fetch.
	var again admin.Job
	if code := ta.call(t, "POST", "/api/v1/sync", admTok, "", &again); code != 202 {
		t.Fatalf("sync after the first finished: %d", code)
	}
	if j := ta.waitJob(t, again.ID); j.State != "done" || j.Fetched != 0 || j.Present != 2 {
		t.Errorf("second job: %+v", j)
	}
	chans = nil
	ta.call(t, "GET", "/api/v1/channels", cliTok, "", &chans)
	if c := chans[0]; c.LastSync.IsZero() || c.LastRefresh.IsZero() || c.PackagesCached != 2 || c.BytesCached != 105917+122456 {
		t.Errorf("channel fmt after the syncs: %+v", c)
	}

	// Purge of one file: the next request fetches it again.
	if code := ta.call(t, "POST", "/api/v1/purge", "", `{"channel":"fmt","subdir":"linux-64","filename":"`+zlibConda+`"}`, nil); code != 401 {
		t.Errorf("purge without a token: %d, want 401", code)
	}
	for body, status := range map[string]int{
		`{"channel":"fmt","subdir":"linux-64","filename":"../x.conda"}`: 400,
		`{"channel":"fmt","subdir":"linux-64","filename":"x.txt"}`:      400,
		`{"channel":"nochan"}`: 404,
	} {
		if code := ta.call(t, "POST", "/api/v1/purge", admTok, body, nil); code != status {
			t.Errorf("purge %s: %d, want %d", body, code, status)
		}
	}
	if code := ta.call(t, "POST", "/api/v1/purge", admTok, `{"channel":"fmt","subdir":"linux-64","filename":"`+zlibConda+`"}`, nil); code != 200 {
		t.Fatalf("purge of %s: %d", zlibConda, code)
	}
	page = admin.PackagePage{}
	ta.call(t, "GET", "/api/v1/packages?channel=fmt&subdir=linux-64&q=.conda", cliTok, "", &page)
	if len(page.Packages) != 1 || page.Packages[0].Cached {
		t.Errorf("after its purge, %s is still cached: %+v", zlibConda, page)
	}
	if code := ta.call(t, "GET", "/fmt/linux-64/"+zlibConda, cliTok, "", nil); code != 200 {
		t.Fatalf("GET %s after its purge: %d", zlibConda, code)
	}
	if n := ta.up.count("/linux-64/" + zlibConda); n != 2 {
		t.Errorf("upstream asked %d times for %s after its purge, want 2", n, zlibConda)
	}

	// Purge of repodata: the next request fetches it in full again.
	rd := ta.up.count("/linux-64/repodata.json")
	if code := ta.call(t, "POST", "/api/v1/purge", admTok, `{"channel":"fmt","subdir":"linux-64"}`, nil); code != 200 {
		t.Fatalf("purge of repodata: %d", code)
	}
	if code := ta.call(t, "GET", "/fmt/linux-64/repodata.json", cliTok, "", nil); code != 200 {
		t.Fatalf("repodata after its purge: %d", code)
	}
	if n := ta.up.count("/linux-64/repodata.json"); n != rd+1 {
		t.Errorf("upstream asked %d times for linux-64/repodata.json after the purge, want %d", n, rd+1)
	}
	ta.up.mu.Lock()
	if ta.up.cond["/linux-64/repodata.json"] {
		t.Error("after the purge, repodata.json was asked for conditionally: the stored copy was not forgotten")
	}
	ta.up.mu.Unlock()
	page = admin.PackagePage{}
	ta.call(t, "GET", "/api/v1/packages?channel=fmt&subdir=linux-64", cliTok, "", &page)
	if page.Total != 3 {
		t.Errorf("packages after the repodata purge: %+v", page)
	}

	// `condaproxy explain --server` asks the running app's API.
	code, out, errOut := runCmd(t, "explain", "-c", ta.cfgPath, "fmt", "linux-64", "libgcc-ng", "--server", ta.srv.URL)
	if code != 0 || !strings.Contains(out, libgcc) || !strings.Contains(out, "hidden by license_blacklist: GPL") {
		t.Errorf("explain --server: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	code, out, errOut = runCmd(t, "explain", "-c", ta.cfgPath, "fmt", "linux-64", zlibConda, "--server", ta.srv.URL)
	if code != 0 || !strings.Contains(out, zlibConda) || !strings.Contains(out, "served") || !strings.Contains(out, "cached") {
		t.Errorf("explain --server %s: exit %d\nstdout %s\nstderr %s", zlibConda, code, out, errOut)
	}
}

// Closing the app stops a running job: nothing of it outlives the store.
func TestBackendCloseStopsJobs(t *testing.T) {
	ta := startTestApp(t)
	hold := ta.up.holdNext("/linux-64/" + zlibConda)
	defer close(hold.release)
	var job admin.Job
	if code := ta.call(t, "POST", "/api/v1/sync", admTok, `{"channels":["fmt"]}`, &job); code != 202 {
		t.Fatalf("sync: %d", code)
	}
	select {
	case <-hold.reached:
	case <-time.After(20 * time.Second):
		t.Fatal("the sync job never reached upstream")
	}
	// As serve does: the proxy's shutdown (fills get until ctx is done), then Close.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	ta.proxy.Shutdown(ctx)
	closed := make(chan struct{})
	go func() { ta.backend.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("backend.Close did not return with a job running")
	}
	j, ok := ta.backend.Job(job.ID)
	if !ok || j.State != "failed" || j.Finished.IsZero() {
		t.Errorf("job after Close: %+v", j)
	}
	if _, err := ta.backend.StartSync(nil); err == nil {
		t.Error("a sync started after Close")
	}
}

// SPEC: the API stays fast on a 300,000-record channel: the search runs on the
// server over a sorted index made once per answer, and only a page is sent.
func TestPackageSearchScales(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 300,000-record channel")
	}
	const n = 300_000
	dir := t.TempDir()
	var buf bytes.Buffer
	buf.WriteString(`{"info":{"subdir":"linux-64"},"packages":{},"packages.conda":{`)
	for i := 0; i < n; i++ {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `"pkg%d-1.%d-h0_0.conda":{"build":"h0_0","build_number":0,"depends":[],"license":"%s","name":"pkg%d","sha256":"%064x","size":%d,"subdir":"linux-64","version":"1.%d"}`,
			i/3, i%3, map[bool]string{true: "GPL", false: "MIT"}[i%10 == 0], i/3, i, 1000+i, i%3)
	}
	buf.WriteString(`},"repodata_version":1}`)
	os.MkdirAll(filepath.Join(dir, "linux-64"), 0o755)
	os.MkdirAll(filepath.Join(dir, "noarch"), 0o755)
	os.WriteFile(filepath.Join(dir, "linux-64", "repodata.json"), buf.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "noarch", "repodata.json"), []byte(`{"info":{"subdir":"noarch"},"packages":{}}`), 0o644)
	up := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer up.Close()
	cfg, err := config.Load(writeFile(t, "c.yaml", "data: "+filepath.Join(t.TempDir(), "data")+"\n"+
		"channels:\n  - name: big\n    platforms: [linux-64]\n    license_blacklist: [GPL]\n    upstreams:\n      - url: "+up.URL+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer a.proxy.Shutdown(context.Background())
	srv := httptest.NewServer(a.handler)
	defer srv.Close()
	get := func(q string) (admin.PackagePage, time.Duration) {
		t.Helper()
		start := time.Now()
		resp, err := http.Get(srv.URL + "/api/v1/packages?channel=big&subdir=linux-64" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var page admin.PackagePage
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&page) != nil {
			t.Fatalf("packages%s: %d", q, resp.StatusCode)
		}
		return page, time.Since(start)
	}
	start := time.Now()
	page, _ := get("&limit=1") // builds the answer (upstream fetch and filter) and the index
	t.Logf("first search, repodata build included: %v", time.Since(start))
	if page.Total != n {
		t.Fatalf("total %d, want %d", page.Total, n)
	}
	var worst time.Duration
	for _, q := range []string{"", "&q=pkg99999-", "&q=h0_0&offset=150000&limit=500", "&q=nomatch"} {
		page, took := get(q)
		worst = max(worst, took)
		t.Logf("packages%s: total %d, %d on the page, %v", q, page.Total, len(page.Packages), took)
	}
	page, _ = get("&q=pkg99999-")
	if page.Total != 3 || page.Packages[0].Filename != "pkg99999-1.0-h0_0.conda" {
		t.Errorf("q=pkg99999-: %+v", page)
	}
	page, _ = get("&q=h0_0&offset=299990&limit=500")
	if page.Total != n || len(page.Packages) != 10 {
		t.Errorf("last page: total %d, %d records", page.Total, len(page.Packages))
	}
	// Generous for -race on a loaded machine: a linear scan takes milliseconds.
	if worst > 2*time.Second {
		t.Errorf("a search of %d records took %v", n, worst)
	}
}

// serveApp runs the app of the configuration yaml in this process, its log to
// h, behind an httptest server; both stop with the test.
func serveApp(t *testing.T, yaml string, h slog.Handler) *httptest.Server {
	t.Helper()
	cfg, err := config.Load(writeFile(t, "c.yaml", yaml))
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, slog.New(h))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.handler)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.proxy.Shutdown(ctx)
		a.Close()
	})
	return srv
}
