package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/mirror"
	"github.com/condaproxy/condaproxy/proxy"
)

// gatedSync is a SyncFunc whose channels plan two files (10 and 20 bytes),
// finish the first, then wait for their gate (or the manager's close) before
// failing the second.
type gatedSync struct {
	mu      sync.Mutex
	reached map[string]chan struct{} // closed once the channel's first file is done
	once    map[string]*sync.Once
	gates   map[string]chan struct{} // closed by the test to let the channel finish
	calls   []string
}

func newGatedSync(channels ...string) *gatedSync {
	g := &gatedSync{reached: map[string]chan struct{}{}, gates: map[string]chan struct{}{}, once: map[string]*sync.Once{}}
	for _, c := range channels {
		g.once[c] = new(sync.Once)
		g.reached[c] = make(chan struct{})
		g.gates[c] = make(chan struct{})
	}
	return g
}

func (g *gatedSync) sync(ctx context.Context, channel string, p mirror.Progress) (*mirror.SyncReport, error) {
	g.mu.Lock()
	g.calls = append(g.calls, channel)
	g.mu.Unlock()
	p.Planned(2, 30)
	p.Done(proxy.ServedFile{Subdir: "noarch", Filename: "a-1-0.conda", Size: 10}, true, nil)
	g.once[channel].Do(func() { close(g.reached[channel]) })
	select {
	case <-g.gates[channel]:
	case <-ctx.Done():
		return nil, fmt.Errorf("sync %s: %w", channel, ctx.Err())
	}
	p.Done(proxy.ServedFile{Subdir: "noarch", Filename: "b-1-0.conda", Size: 20}, false, errors.New("upstream 500"))
	return &mirror.SyncReport{Channels: []string{channel}, Records: 3, Present: 1, Fetched: 1,
		Failures: []mirror.Failure{{Channel: channel, Subdir: "noarch", Filename: "b-1-0.conda", Reason: "upstream 500"}}}, nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func wait(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// finished polls until the job leaves Running.
func finished(t *testing.T, m *Manager, id string) Job {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		j, ok := m.Job(id)
		if !ok {
			t.Fatalf("job %s forgotten", id)
		}
		if j.State != Running {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still running: %+v", id, j)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStartProgressAndBusy(t *testing.T) {
	g := newGatedSync("a", "b")
	m := New(g.sync, Options{Logger: quiet()})
	defer m.Close()

	job, err := m.Start([]string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if job.ID == "" || job.State != Running || job.Started.IsZero() || !slices.Equal(job.Channels, []string{"a"}) {
		t.Errorf("started job: %+v", job)
	}
	wait(t, g.reached["a"], "a's first file")
	j, _ := m.Job(job.ID)
	got := fmt.Sprintf("%s files %d/%d bytes %d/%d fetched %d", j.State, j.Done, j.Files, j.BytesDone, j.Bytes, j.Fetched)
	if want := "running files 1/2 bytes 10/30 fetched 1"; got != want {
		t.Errorf("progress: got %q, want %q", got, want)
	}

	// One job per channel: a job that would sync a busy channel is refused whole.
	_, err = m.Start([]string{"b", "a"})
	var busy *BusyError
	if !errors.Is(err, ErrBusy) || !errors.As(err, &busy) || busy.Channel != "a" || busy.Job != job.ID {
		t.Fatalf("a second sync of a: %v, want ErrBusy naming a and job %s", err, job.ID)
	}
	if want := fmt.Sprintf(`a sync is running for channel "a" (job %s)`, job.ID); err.Error() != want {
		t.Errorf("busy error: %q, want %q", err, want)
	}
	// Another channel runs beside it.
	other, err := m.Start([]string{"b"})
	if err != nil {
		t.Fatalf("a sync of b beside a: %v", err)
	}

	close(g.gates["a"])
	j = finished(t, m, job.ID)
	if j.State != Failed || j.Error != "1 files failed" || j.Finished.IsZero() || j.Present != 1 ||
		!slices.Equal(j.Failed, []string{"a/noarch/b-1-0.conda: upstream 500"}) || j.Done != 2 || j.Fetched != 1 {
		t.Errorf("finished job: %+v", j)
	}
	// Its channel is free again, while b's job still holds b.
	again, err := m.Start([]string{"a"})
	if err != nil {
		t.Fatalf("a sync of a after its job ended: %v", err)
	}
	if _, err := m.Start([]string{"b"}); !errors.Is(err, ErrBusy) {
		t.Errorf("a second sync of b: %v, want ErrBusy", err)
	}

	var ids []string
	for _, j := range m.Jobs() {
		ids = append(ids, j.ID)
	}
	if want := []string{again.ID, other.ID, job.ID}; !slices.Equal(ids, want) {
		t.Errorf("jobs %v, want newest first %v", ids, want)
	}
	if _, ok := m.Job("nope"); ok {
		t.Error("an unknown job id found")
	}
}

// Close interrupts the running jobs, each channel saying so, and refuses new ones.
func TestCloseInterrupts(t *testing.T) {
	g := newGatedSync("a", "b")
	m := New(g.sync, Options{Logger: quiet()})
	job, err := m.Start([]string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, g.reached["a"], "a's first file")
	closed := make(chan struct{})
	go func() { m.Close(); close(closed) }()
	wait(t, closed, "Close")

	j, ok := m.Job(job.ID)
	want := "a: interrupted (server shutting down); b: interrupted (server shutting down)"
	if !ok || j.State != Failed || j.Error != want || j.Finished.IsZero() {
		t.Errorf("job after Close: %+v, want failed with %q", j, want)
	}
	if !slices.Equal(g.calls, []string{"a"}) {
		t.Errorf("channels synced %v: b started after Close", g.calls)
	}
	if _, err := m.Start([]string{"c"}); !errors.Is(err, ErrClosed) {
		t.Errorf("a job after Close: %v, want ErrClosed", err)
	}
}

func TestSyncErrorAndFailureCap(t *testing.T) {
	const files = 5
	fn := func(ctx context.Context, channel string, p mirror.Progress) (*mirror.SyncReport, error) {
		if channel == "broken" {
			return nil, errors.New("no repodata")
		}
		rep := &mirror.SyncReport{}
		p.Planned(files, files)
		for i := range files {
			f := proxy.ServedFile{Subdir: "noarch", Filename: fmt.Sprintf("f%d-1-0.conda", i), Size: 1}
			p.Done(f, false, errors.New("gone"))
			rep.Failures = append(rep.Failures, mirror.Failure{Channel: channel, Subdir: f.Subdir, Filename: f.Filename, Reason: "gone"})
		}
		return rep, nil
	}
	m := New(fn, Options{Logger: quiet(), MaxFailures: 3})
	defer m.Close()

	job, err := m.Start([]string{"c"})
	if err != nil {
		t.Fatal(err)
	}
	j := finished(t, m, job.ID)
	if len(j.Failed) != 3 || j.Error != "5 files failed" || j.State != Failed {
		t.Errorf("job with %d failures, 3 kept: %+v", files, j)
	}

	job, err = m.Start([]string{"broken", "c"})
	if err != nil {
		t.Fatal(err)
	}
	j = finished(t, m, job.ID)
	if j.Error != "broken: no repodata" || j.State != Failed {
		t.Errorf("job whose first channel failed: %+v", j)
	}
}

// Finished jobs beyond Keep are forgotten, oldest first; a running one never is.
func TestPrune(t *testing.T) {
	g := newGatedSync("slow")
	quick := func(ctx context.Context, channel string, p mirror.Progress) (*mirror.SyncReport, error) {
		if channel == "slow" {
			return g.sync(ctx, channel, p)
		}
		return &mirror.SyncReport{}, nil
	}
	m := New(quick, Options{Logger: quiet(), Keep: 2})
	defer m.Close()

	slow, err := m.Start([]string{"slow"})
	if err != nil {
		t.Fatal(err)
	}
	var last Job
	for range 3 {
		if last, err = m.Start([]string{"fast"}); err != nil {
			t.Fatal(err)
		}
		if j := finished(t, m, last.ID); j.State != Done {
			t.Errorf("quick job: %+v", j)
		}
	}
	var ids []string
	for _, j := range m.Jobs() {
		ids = append(ids, j.ID)
	}
	if want := []string{last.ID, slow.ID}; !slices.Equal(ids, want) {
		t.Errorf("jobs kept %v, want %v (the newest, and the running one)", ids, want)
	}
	close(g.gates["slow"])
	finished(t, m, slow.ID)
}
