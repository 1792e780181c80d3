package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeMaintainer is a fakeBackend that exports what it is told to.
type fakeMaintainer struct {
	*fakeBackend
	export    func(w io.Writer) (ExportResult, error)
	committed []string
	imported  []byte
}

func (f *fakeMaintainer) StartClean(channels []string, dryRun bool) (Job, error) {
	return Job{ID: "c1", Kind: "clean", State: "running", DryRun: dryRun}, nil
}

func (f *fakeMaintainer) Export(ctx context.Context, id string, channels []string, delta bool, w io.Writer) (ExportResult, error) {
	if len(channels) == 1 && channels[0] == "nope" {
		return ExportResult{}, errors.Join(ErrNotFound, errors.New("no such conda channel"))
	}
	return f.export(w)
}

func (f *fakeMaintainer) CommitExport(id string) error {
	if id == "old" {
		return errors.Join(ErrGone, errors.New("export old expired"))
	}
	f.committed = append(f.committed, id)
	return nil
}

func (f *fakeMaintainer) Import(ctx context.Context, r io.Reader, size int64) (Job, error) {
	b, err := io.ReadAll(r)
	f.imported = b
	if err != nil {
		return Job{}, err
	}
	if string(b) == "bad" {
		return Job{ID: "i1", Kind: "import", State: "failed"}, errors.Join(ErrRefused, errors.New("tampered"))
	}
	return Job{ID: "i1", Kind: "import", State: "done"}, nil
}

// An export that fails midway drops the connection: the client never reads
// an answer that ends, nor the ok trailer; a whole one ends with it.
func TestExportAnswerSaysWhole(t *testing.T) {
	f := &fakeMaintainer{fakeBackend: &fakeBackend{}}
	srv := httptest.NewServer(New(Options{Gatherer: prometheus.NewRegistry(), Backend: f}))
	defer srv.Close()
	post := func(body string) (*http.Response, []byte, error) {
		resp, err := http.Post(srv.URL+"/api/v1/export", "application/json", strings.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}

	f.export = func(w io.Writer) (ExportResult, error) {
		w.Write(bytes.Repeat([]byte("x"), 100<<10))
		return ExportResult{Packages: 2, Bytes: 7}, nil
	}
	resp, b, err := post(`{"channels": ["a"]}`)
	if err != nil || resp.StatusCode != 200 || len(b) != 100<<10 || resp.Trailer.Get(ExportStatusTrailer) != "ok 2 7" ||
		resp.Header.Get(ExportIDHeader) == "" || resp.Header.Get("Content-Type") != TarType {
		t.Fatalf("a whole export: %v, %d bytes, trailer %v, header %v", err, len(b), resp.Trailer, resp.Header)
	}

	f.export = func(w io.Writer) (ExportResult, error) {
		w.Write(bytes.Repeat([]byte("x"), 100<<10))
		return ExportResult{}, errors.New("disk gone")
	}
	resp, b, err = post(`{}`)
	if err == nil {
		t.Fatalf("an export failed midway read as ending: %d bytes, trailer %v", len(b), resp.Trailer)
	}

	// Refused before its first byte: a JSON error.
	resp, b, err = post(`{"channels": ["nope"]}`)
	if err != nil || resp.StatusCode != 404 || !strings.Contains(string(b), "no such conda channel") {
		t.Errorf("an export of an unknown channel: %v %v %s", err, resp.Status, b)
	}

	// The commit, the clean and the import calls.
	resp, err = http.Post(srv.URL+"/api/v1/export/commit", "application/json", strings.NewReader(`{"id": "e1"}`))
	if err != nil || resp.StatusCode != 200 || len(f.committed) != 1 || f.committed[0] != "e1" {
		t.Errorf("commit: %v %v %v", err, resp, f.committed)
	}
	resp, err = http.Post(srv.URL+"/api/v1/export/commit", "application/json", strings.NewReader(`{"id": "old"}`))
	if err != nil || resp.StatusCode != http.StatusGone {
		t.Errorf("commit of an expired export: %v %v, want 410", err, resp)
	}
	resp, err = http.Post(srv.URL+"/api/v1/clean", "application/json", strings.NewReader(`{"dry_run": true}`))
	var j Job
	if err == nil {
		json.NewDecoder(resp.Body).Decode(&j)
	}
	if err != nil || resp.StatusCode != 202 || j.Kind != "clean" || !j.DryRun {
		t.Errorf("clean: %v %v %+v", err, resp, j)
	}
	for body, want := range map[string]int{"good": 200, "bad": 422} {
		resp, err := http.Post(srv.URL+"/api/v1/import", TarType, strings.NewReader(body))
		if err != nil || resp.StatusCode != want || string(f.imported) != body {
			t.Errorf("import of %q: %v %v, want %d", body, err, resp, want)
		}
	}
	if resp, err := http.Post(srv.URL+"/api/v1/import", "application/json", strings.NewReader(`{}`)); err != nil || resp.StatusCode != 415 {
		t.Errorf("import as JSON: %v %v, want 415", err, resp)
	}
	if resp, err := http.Get(srv.URL + "/api/v1/import"); err != nil || resp.StatusCode != 405 {
		t.Errorf("GET /api/v1/import: %v %v, want 405", err, resp)
	}
}

// trickle plays a client sending a byte a read, each read waiting step on a
// fake clock: below any idle bound, yet slow.
type trickle struct {
	left  int
	clock *time.Time
	step  time.Duration
}

func (r *trickle) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	*r.clock = r.clock.Add(r.step)
	r.left--
	p[0] = 'x'
	return 1, nil
}

// An upload that trickles in under the idle bound still fails once a window
// of waiting on it brought less than the minimum rate; one at the rate passes.
func TestUploadMinRate(t *testing.T) {
	clock := time.Unix(1e9, 0)
	read := func(step time.Duration, n int) (int64, error) {
		r := &idleReader{r: &trickle{left: n, clock: &clock, step: step}, rc: http.NewResponseController(httptest.NewRecorder()),
			idle: 30 * time.Second, now: func() time.Time { return clock }, minRate: 1024, window: time.Minute}
		got, err := io.Copy(io.Discard, r)
		if err != r.err {
			t.Errorf("the reader's first error %v, returned %v", r.err, err)
		}
		return got, err
	}
	// A byte every 29 s, for an hour: fails after the first minute of it.
	if got, err := read(29*time.Second, 125); !errors.Is(err, errUploadSlow) || got > 3 ||
		!strings.Contains(err.Error(), "below the minimum average of 1 KiB/s") {
		t.Errorf("a trickle: %d bytes, %v; want errUploadSlow after a minute", got, err)
	}
	// 2 KiB/s (a byte every 500 µs) for more than a window: fine.
	if got, err := read(500*time.Microsecond, 300_000); err != nil || got != 300_000 {
		t.Errorf("an upload at twice the minimum: %d bytes, %v", got, err)
	}
}

// Through the API, a too slow upload answers 408 naming the rule.
func TestImportTooSlowAnswers408(t *testing.T) {
	defer func(r int64, w time.Duration, now func() time.Time) {
		UploadMinRate, UploadRateWindow, uploadNow = r, w, now
	}(UploadMinRate, UploadRateWindow, uploadNow)
	clock := time.Unix(1e9, 0)
	UploadMinRate, UploadRateWindow = 1<<30, time.Second
	uploadNow = func() time.Time { clock = clock.Add(10 * time.Second); return clock } // each read waits 10 s
	f := &fakeMaintainer{fakeBackend: &fakeBackend{}}
	srv := httptest.NewServer(New(Options{Gatherer: prometheus.NewRegistry(), Backend: f}))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/api/v1/import", TarType, bytes.NewReader(make([]byte, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "below the minimum average of 1048576 KiB/s") ||
		!strings.Contains(string(b), "nothing was imported") {
		t.Errorf("a too slow upload: %d %s, want 408 naming the rule", resp.StatusCode, b)
	}
}
