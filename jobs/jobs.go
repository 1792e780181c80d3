// Package jobs runs syncs in the background of a running server (the admin API's
// POST /api/v1/sync), and its other maintenance work (clean, import: a Kind of
// job each, run by a WorkFunc of the caller), and keeps each one's progress for
// it to be read while it runs and after.
//
// A job syncs its channels one after the other through a SyncFunc, so each
// channel ends with a report of its own. At most one job syncs a channel at a
// time, whatever the jobs' kinds: a second is refused (ErrBusy) rather than
// racing the first for the same files. Jobs live in memory: a restart forgets
// them (what a sync did stays in the data directory, see mirror.LastSync). The package never decides which
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

// Job kinds. A sync job runs a SyncFunc per channel (Start); the others run
// their caller's WorkFunc (StartWork, RunWork). All share the one rule: a
// channel is in at most one running job, whatever its kind.
const (
	KindSync   = "sync"
	KindClean  = "clean"
	KindImport = "import"
)

// CleanedFile is one file a clean job removed, or would remove on a dry run.
type CleanedFile struct {
	Channel, Subdir, Filename string
	Size                      int64
	Rule                      string // the rule that hides it
}

// Job is a sync job and its progress. Its fields are admin.Job's, in the same
// order, so the admin adapter converts one into the other.
type Job struct {
	ID        string
	Kind      string // KindSync, KindClean, KindImport
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

	// A clean or import job's result.
	DryRun      bool          // a clean that lists and removes nothing
	Cleaned     []CleanedFile // removed (or would be), at most Options.MaxFailures
	ShardPacks  int           // packs of old shards a clean removed
	ShardBytes  int64
	Packages    int // imported
	PackageSize int64
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

// BusyError names the channel a running job holds, that job and its kind.
type BusyError struct {
	Channel string
	Job     string
	Kind    string // "" is KindSync
}

func (e *BusyError) Error() string {
	if e.Kind != "" && e.Kind != KindSync {
		return fmt.Sprintf("a %s is running for channel %q (job %s)", e.Kind, e.Channel, e.Job)
	}
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
	out.Cleaned = slices.Clone(j.j.Cleaned)
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
// starts. Channels a running job holds are refused with a *BusyError rather
// than synced twice.
func (m *Manager) Start(channels []string) (Job, error) {
	if len(channels) == 0 {
		return Job{}, errors.New("jobs: no channel to sync")
	}
	names := slices.Clone(channels)
	j, err := m.start(KindSync, names)
	if err != nil {
		return Job{}, err
	}
	go m.run(j, names)
	return j.snapshot(), nil
}

// WorkFunc is the work of a clean or import job. It reports through t and may
// claim more channels as it learns of them (an import, from its tar). ctx is
// canceled when the manager closes.
type WorkFunc func(ctx context.Context, t *Task) error

// Task is a running job's handle for its WorkFunc.
type Task struct {
	m *Manager
	j *job
}

// ID is the job's id.
func (t *Task) ID() string { return t.j.j.ID }

// Update changes the job's progress or result under its lock.
func (t *Task) Update(fn func(*Job)) {
	t.j.mu.Lock()
	fn(&t.j.j)
	t.j.mu.Unlock()
}

// MaxList is the bound of a job's lists (Failed, Cleaned).
func (t *Task) MaxList() int { return t.m.opts.MaxFailures }

// Claim adds channel to the job's channels for the rest of it: a *BusyError if
// another running job holds it, ErrClosed once the manager closes.
func (t *Task) Claim(channel string) error {
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	id := t.j.j.ID
	if other, ok := m.busy[channel]; ok {
		if other == id {
			return nil
		}
		return m.busyError(channel, other)
	}
	if m.closed {
		return ErrClosed
	}
	m.busy[channel] = id
	t.j.mu.Lock()
	t.j.j.Channels = append(t.j.j.Channels, channel)
	t.j.mu.Unlock()
	return nil
}

// StartWork starts a job of kind holding channels (more may be claimed as it
// runs) that runs fn in the background.
func (m *Manager) StartWork(kind string, channels []string, fn WorkFunc) (Job, error) {
	j, err := m.start(kind, slices.Clone(channels))
	if err != nil {
		return Job{}, err
	}
	go m.work(m.ctx, j, fn)
	return j.snapshot(), nil
}

// RunWork runs a job of kind holding channels in the caller's goroutine, to
// its end, and returns it ended (Done or Failed). fn's context ends with ctx
// or when the manager closes. An import runs so: it reads its caller's upload.
func (m *Manager) RunWork(ctx context.Context, kind string, channels []string, fn WorkFunc) (Job, error) {
	j, err := m.start(kind, slices.Clone(channels))
	if err != nil {
		return Job{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(m.ctx, cancel)
	defer stop()
	m.work(ctx, j, fn)
	return j.snapshot(), nil
}

func (m *Manager) busyError(channel, id string) error {
	kind := KindSync
	if j := m.jobs[id]; j != nil {
		j.mu.Lock()
		kind = j.j.Kind
		j.mu.Unlock()
	}
	return &BusyError{Channel: channel, Job: id, Kind: kind}
}

// start registers a running job of kind holding names; its runner (run, work)
// ends it and lets the manager's Close go on.
func (m *Manager) start(kind string, names []string) (*job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	for _, name := range names {
		if id, ok := m.busy[name]; ok {
			return nil, m.busyError(name, id)
		}
	}
	if names == nil {
		names = []string{}
	}
	j := &job{j: Job{ID: newJobID(), Kind: kind, Channels: names, State: Running, Started: time.Now().UTC()}}
	for _, name := range names {
		m.busy[name] = j.j.ID
	}
	m.jobs[j.j.ID] = j
	m.order = append(m.order, j.j.ID)
	m.prune()
	m.wg.Add(1)
	return j, nil
}

// work runs a clean or import job's fn and ends the job with its error.
func (m *Manager) work(ctx context.Context, j *job, fn WorkFunc) {
	defer m.wg.Done()
	log := m.opts.Logger.With("job", j.j.ID)
	log.Info(j.j.Kind+" job started", "channels", j.snapshot().Channels)
	var errs []string
	err := func() (err error) {
		defer func() {
			// fn runs under its caller's guard; this only keeps the
			// channels from staying held by a job that can never end.
			if v := recover(); v != nil {
				m.end(j, []string{fmt.Sprintf("internal error: %v", v)})
				panic(v)
			}
		}()
		return fn(ctx, &Task{m: m, j: j})
	}()
	if err != nil {
		msg := err.Error()
		if errors.Is(err, context.Canceled) && m.ctx.Err() != nil {
			msg = interrupted
		}
		errs = append(errs, msg)
	}
	done := m.end(j, errs)
	log.Info(done.Kind+" job finished", "state", done.State, "error", done.Error,
		"took", done.Finished.Sub(done.Started).Round(time.Millisecond))
}

// end releases the job's channels and ends it with errs, in one step under
// m.mu: whoever saw it end can start the next job of them at once.
func (m *Manager) end(j *job, errs []string) Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, id := range m.busy {
		if id == j.j.ID {
			delete(m.busy, name)
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.j.State != Running {
		return j.j
	}
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
	return j.j
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
	done := m.end(j, errs)
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
