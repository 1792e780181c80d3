// Package jobs runs syncs in the background of a running server (the admin API's
// POST /api/v1/sync) and keeps each one's progress for it to be read while it
// runs and after.
//
// A job syncs its channels one after the other through a SyncFunc, so each
// channel ends with a report of its own. At most one job syncs a channel at a
// time: a second is refused (ErrBusy) rather than racing the first for the same
// files. Jobs live in memory: a restart forgets them (what a sync did stays in
// the data directory, see mirror.LastSync). The package never decides which
// channels exist, nor how a channel is synced: its caller does both.
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/condaproxy/condaproxy/mirror"
	"github.com/condaproxy/condaproxy/proxy"
)

// Job states.
const (
	Running = "running"
	Done    = "done"
	Failed  = "failed"
)

// Job is a sync job and its progress. Its fields are admin.Job's, in the same
// order, so the admin adapter converts one into the other.
type Job struct {
	ID        string
	Channels  []string
	State     string // Running, Done, Failed
	Started   time.Time
	Finished  time.Time // zero while running
	Files     int       // to fetch, summed as each channel's repodata is in
	Done      int       // files finished, fetched or failed
	Bytes     int64     // to fetch
	BytesDone int64
	Fetched   int
	Present   int      // already cached
	Failed    []string // "channel/subdir/file: reason", at most Options.MaxFailures
	Error     string   // why the job failed; "" when it did not
}

// SyncFunc syncs one channel, telling p of each file. It is mirror.Sync on the
// running server, with whatever the caller records around it (the channel's
// last sync). ctx is canceled when the manager closes.
type SyncFunc func(ctx context.Context, channel string, p mirror.Progress) (*mirror.SyncReport, error)

// Options configure a Manager.
type Options struct {
	// Keep is how many jobs are remembered, running ones always included.
	// Default 50.
	Keep int
	// MaxFailures bounds a job's list of failed files; its count goes on.
	// Default 200.
	MaxFailures int
	// Logger hears of each job's start and end. Default slog.Default().
	Logger *slog.Logger
}

// ErrBusy is a job refused because a running one syncs one of its channels; the
// error is a *BusyError.
var ErrBusy = errors.New("a sync is running")

// BusyError names the channel a running job syncs and that job.
type BusyError struct {
	Channel string
	Job     string
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%v for channel %q (job %s)", ErrBusy, e.Channel, e.Job)
}

func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// ErrClosed is a job refused because the manager is closed.
var ErrClosed = errors.New("the server is shutting down")

// interrupted is what a channel cut short by Close says.
const interrupted = "interrupted (server shutting down)"

// Manager starts sync jobs and remembers them. Its methods are safe for
// concurrent use.
type Manager struct {
	sync SyncFunc
	opts Options

	// ctx is the jobs' context: Close cancels it and waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	jobs   map[string]*job
	order  []string          // job ids, oldest first
	busy   map[string]string // channel -> the id of the job syncing it
	closed bool
}

// New returns a Manager whose jobs sync each channel with fn.
func New(fn SyncFunc, o Options) *Manager {
	if o.Keep <= 0 {
		o.Keep = 50
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = 200
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{sync: fn, opts: o, ctx: ctx, cancel: cancel,
		jobs: map[string]*job{}, busy: map[string]string{}}
}

// Close cancels the running jobs and waits for them to end; Start refuses new
// ones from then on. A fill a job started belongs to the server's request path,
// which must let it go first (proxy.Server.Shutdown), or Close waits for it.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}

// job is one job; its Job is read and written under mu.
type job struct {
	mu sync.Mutex
	j  Job
}

func (j *job) snapshot() Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := j.j
	out.Channels = slices.Clone(j.j.Channels)
	out.Failed = slices.Clone(j.j.Failed)
	return out
}

// progress is a job's mirror.Progress: each channel's files to fetch add up.
type progress struct{ j *job }

func (p progress) Planned(files int, bytes int64) {
	p.j.mu.Lock()
	p.j.j.Files += files
	p.j.j.Bytes += bytes
	p.j.mu.Unlock()
}

func (p progress) Done(f proxy.ServedFile, fetched bool, err error) {
	p.j.mu.Lock()
	p.j.j.Done++
	if err == nil {
		// Every file now in place counts, its bytes fetched or already there:
		// Done - Fetched is then the count of failed files.
		p.j.j.Fetched++
		p.j.j.BytesDone += max(f.Size, 0)
	}
	p.j.mu.Unlock()
}

func newJobID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Start starts a job syncing channels, in that order, and returns it as it
// starts. Channels a running job syncs are refused with a *BusyError rather
// than synced twice.
func (m *Manager) Start(channels []string) (Job, error) {
	if len(channels) == 0 {
		return Job{}, errors.New("jobs: no channel to sync")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Job{}, ErrClosed
	}
	for _, name := range channels {
		if id, ok := m.busy[name]; ok {
			return Job{}, &BusyError{Channel: name, Job: id}
		}
	}
	names := slices.Clone(channels)
	j := &job{j: Job{ID: newJobID(), Channels: names, State: Running, Started: time.Now().UTC()}}
	for _, name := range names {
		m.busy[name] = j.j.ID
	}
	m.jobs[j.j.ID] = j
	m.order = append(m.order, j.j.ID)
	m.prune()
	m.wg.Add(1)
	go m.run(j, names)
	return j.snapshot(), nil
}

// prune forgets the oldest finished jobs beyond Keep. Called with mu held: the
// lock order is m.mu, then a job's mu.
func (m *Manager) prune() {
	for i := 0; len(m.order) > m.opts.Keep && i < len(m.order); {
		id := m.order[i]
		if j := m.jobs[id]; j != nil && j.snapshot().State == Running {
			i++
			continue
		}
		delete(m.jobs, id)
		m.order = slices.Delete(m.order, i, i+1)
	}
}

// run syncs the job's channels one after the other, each with its own report.
func (m *Manager) run(j *job, names []string) {
	defer m.wg.Done()
	log := m.opts.Logger.With("job", j.j.ID)
	log.Info("sync job started", "channels", names)
	prog := progress{j}
	var errs []string
	for _, name := range names {
		if m.ctx.Err() != nil {
			errs = append(errs, name+": "+interrupted)
			continue
		}
		rep, err := m.sync(m.ctx, name, prog)
		if rep != nil {
			j.mu.Lock()
			j.j.Present += rep.Present
			for _, f := range rep.Failures {
				if len(j.j.Failed) < m.opts.MaxFailures {
					j.j.Failed = append(j.j.Failed, f.Channel+"/"+f.Subdir+"/"+f.Filename+": "+f.Reason)
				}
			}
			j.mu.Unlock()
		}
		if err != nil {
			msg := err.Error()
			if errors.Is(err, context.Canceled) {
				msg = interrupted
			}
			errs = append(errs, name+": "+msg)
		}
	}
	// The channels are released in the same step that shows the job ended, so
	// whoever saw it end can start the next sync of them at once.
	m.mu.Lock()
	for _, name := range names {
		if m.busy[name] == j.j.ID {
			delete(m.busy, name)
		}
	}
	j.mu.Lock()
	j.j.Finished = time.Now().UTC()
	failed := j.j.Done - j.j.Fetched
	for _, e := range errs {
		if j.j.Error != "" {
			j.j.Error += "; "
		}
		j.j.Error += e
	}
	if j.j.Error == "" && len(j.j.Failed) > 0 {
		j.j.Error = fmt.Sprintf("%d files failed", max(failed, len(j.j.Failed)))
	}
	j.j.State = Done
	if j.j.Error != "" {
		j.j.State = Failed
	}
	done := j.j
	j.mu.Unlock()
	m.mu.Unlock()
	log.Info("sync job finished", "state", done.State, "fetched", done.Fetched, "present", done.Present,
		"failed", len(done.Failed), "took", done.Finished.Sub(done.Started).Round(time.Millisecond))
}

// Job returns the job with that id, if it is remembered.
func (m *Manager) Job(id string) (Job, bool) {
	m.mu.Lock()
	j, ok := m.jobs[id]
	m.mu.Unlock()
	if !ok {
		return Job{}, false
	}
	return j.snapshot(), true
}

// Jobs lists the remembered jobs, newest first.
func (m *Manager) Jobs() []Job {
	m.mu.Lock()
	list := make([]*job, 0, len(m.order))
	for i := len(m.order) - 1; i >= 0; i-- {
		list = append(list, m.jobs[m.order[i]])
	}
	m.mu.Unlock()
	out := make([]Job, 0, len(list))
	for _, j := range list {
		out = append(out, j.snapshot())
	}
	return out
}
