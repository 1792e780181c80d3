package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/condaproxy/condaproxy/admin"
	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/jobs"
	"github.com/condaproxy/condaproxy/mirror"
	"github.com/condaproxy/condaproxy/proxy"
)

// Maintainer is what clean, export and import through the server ask of the
// request path beyond Proxy; *proxy.Server plays it.
type Maintainer interface {
	CleanShards(channel string) (packs int, bytes int64, err error)
	CachedHidden(ctx context.Context, channel string) ([]proxy.CachedFile, error)
	UncacheFiles(channel string, files []proxy.CachedFile) error
	mirror.ExportSource
	mirror.ImportTarget
}

// Blobs is what export and import ask of the cache beyond Store; *cache.Store
// plays it.
type Blobs interface {
	mirror.BlobOpener
	mirror.Stager
}

var _ admin.Maintainer = (*Backend)(nil)

// Pending exports: what an export through the API wrote counts as exported
// (for the next delta) once its client says it has the whole tar. Until then
// its marks (one filename per package written, grouped by channel and subdir)
// are held in memory, full exports' too: the ledger records every export, so
// a delta after a full one holds only what came since.
//
// The held marks are bounded: at most maxPendingExports exports, each for
// pendingExportTTL, and maxHeldMarks marks across them all (about 70 MB at
// ~70 B a mark). An export that would pass the bound drops the oldest pending
// ones first; one larger than the bound alone is held alone. A dropped or
// expired export's commit answers 410 (admin.ErrGone): its client runs the
// delta again.
const (
	maxPendingExports = 16
	pendingExportTTL  = time.Hour
	maxGoneExports    = 64 // dropped or expired exports remembered, for a clear 410
)

// maxHeldMarks bounds the marks held across pending exports (a var for tests).
var maxHeldMarks = 1 << 20

// markGroup is the marks of an export in one channel/subdir.
type markGroup struct {
	channel, subdir string
	files           []string
}

type pendingExport struct {
	marks []markGroup
	n     int // marks in all groups
	at    time.Time
}

// pendingExports is the exports waiting for their commit, within the bounds.
type pendingExports struct {
	mu        sync.Mutex
	now       func() time.Time // nil: time.Now
	pending   map[string]*pendingExport
	held      int               // marks across pending
	gone      map[string]string // id -> why it is no longer pending
	goneOrder []string
}

func (p *pendingExports) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// dropLocked forgets the pending export id, remembering why.
func (p *pendingExports) dropLocked(id, why string) {
	p.held -= p.pending[id].n
	delete(p.pending, id)
	if p.gone == nil {
		p.gone = map[string]string{}
	}
	p.gone[id] = why
	p.goneOrder = append(p.goneOrder, id)
	for len(p.goneOrder) > maxGoneExports {
		delete(p.gone, p.goneOrder[0])
		p.goneOrder = p.goneOrder[1:]
	}
}

// hold keeps the marks of export id until its commit, dropping the oldest
// pending exports for room.
func (p *pendingExports) hold(id string, marks []markGroup) {
	n := 0
	for _, g := range marks {
		n += len(g.files)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == nil {
		p.pending = map[string]*pendingExport{}
	}
	now := p.clock()
	for k, e := range p.pending {
		if now.Sub(e.at) > pendingExportTTL {
			p.dropLocked(k, fmt.Sprintf("older than %v", pendingExportTTL))
		}
	}
	for len(p.pending) > 0 && (len(p.pending) >= maxPendingExports || p.held+n > maxHeldMarks) {
		oldest := ""
		for k, e := range p.pending {
			if oldest == "" || e.at.Before(p.pending[oldest].at) {
				oldest = k
			}
		}
		p.dropLocked(oldest, fmt.Sprintf("dropped to keep the exports waiting for their commit within %d exports and %d packages", maxPendingExports, maxHeldMarks))
	}
	p.pending[id] = &pendingExport{marks: marks, n: n, at: now}
	p.held += n
}

// take removes export id and returns its marks: ErrGone for one dropped or
// expired, ErrNotFound for one unknown or committed already.
func (p *pendingExports) take(id string) ([]markGroup, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.pending[id]
	if ok && p.clock().Sub(e.at) > pendingExportTTL {
		p.dropLocked(id, fmt.Sprintf("older than %v", pendingExportTTL))
		ok = false
	}
	if !ok {
		if why, gone := p.gone[id]; gone {
			// id is quoted: the server issued it, it is no guess of a secret.
			return nil, fmt.Errorf("%w: export %s expired (%s); its delta state was not advanced, run the delta export again", admin.ErrGone, id, why)
		}
		return nil, fmt.Errorf("%w: no such export waiting for its commit (committed already, or unknown)", admin.ErrNotFound)
	}
	p.held -= e.n
	delete(p.pending, id)
	return e.marks, nil
}

// maintenance is the Backend's state for clean, export and import.
type maintenance struct {
	importMu sync.Mutex // one import at a time: each may take the disk's free space
	exports  pendingExports
}

func (b *Backend) maintainer() (Maintainer, Blobs, error) {
	m, ok := b.proxy.(Maintainer)
	bl, ok2 := b.store.(Blobs)
	if !ok || !ok2 {
		return nil, nil, fmt.Errorf("%w: this server offers no clean, export or import", admin.ErrNotFound)
	}
	return m, bl, nil
}

// condaNames is channels, checked configured conda channels, or all of them
// when empty.
func (b *Backend) condaNames(channels []string, what string) ([]string, error) {
	var names []string
	if len(channels) == 0 {
		for _, ch := range b.cfg.Channels {
			if ch.Kind == config.KindConda {
				names = append(names, ch.Name)
			}
		}
		if len(names) == 0 {
			return nil, invalid("the configuration has no conda channel to " + what)
		}
	}
	for _, name := range channels {
		if err := b.condaChannel(name); err != nil {
			return nil, err
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names, nil
}

// busyErr turns the job manager's refusal into the admin API's 409.
func busyErr(err error) error {
	busy := (*jobs.BusyError)(nil)
	if !errors.As(err, &busy) {
		return err
	}
	// busy.Channel is configured: the caller checked it.
	if busy.Kind == "" || busy.Kind == jobs.KindSync {
		return fmt.Errorf("%w for channel %q (job %s)", admin.ErrBusy, busy.Channel, busy.Job)
	}
	return fmt.Errorf("%w: %s", admin.ErrBusy, busy.Error())
}

// StartClean starts a clean job: what `condaproxy clean` does on a stopped
// server, under the job slot of each channel (no sync of it runs meanwhile).
func (b *Backend) StartClean(channels []string, dryRun bool) (admin.Job, error) {
	m, _, err := b.maintainer()
	if err != nil {
		return admin.Job{}, err
	}
	names, err := b.condaNames(channels, "clean")
	if err != nil {
		return admin.Job{}, err
	}
	j, err := b.jobs.StartWork(jobs.KindClean, names, func(ctx context.Context, t *jobs.Task) error {
		t.Update(func(j *jobs.Job) { j.DryRun = dryRun })
		return b.proxy.Guard("clean", func() error { return b.clean(ctx, m, t, names, dryRun) })
	})
	if err != nil {
		return admin.Job{}, busyErr(err)
	}
	j.DryRun = dryRun
	return toAdmin(j), nil
}

func (b *Backend) clean(ctx context.Context, m Maintainer, t *jobs.Task, names []string, dryRun bool) error {
	for _, ch := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		defer b.forgetUsage(ch)
		if !dryRun {
			packs, bytes, err := m.CleanShards(ch)
			if err != nil {
				return fmt.Errorf("%s: sharded repodata: %w", ch, err)
			}
			t.Update(func(j *jobs.Job) { j.ShardPacks += packs; j.ShardBytes += bytes })
		}
		files, err := m.CachedHidden(ctx, ch)
		if err != nil {
			return fmt.Errorf("%s: %w", ch, err)
		}
		var size int64
		for _, f := range files {
			size += f.Size
		}
		t.Update(func(j *jobs.Job) {
			j.Files += len(files)
			j.Bytes += size
			for _, f := range files {
				if len(j.Cleaned) >= t.MaxList() {
					break
				}
				j.Cleaned = append(j.Cleaned, jobs.CleanedFile{Channel: ch, Subdir: f.Subdir, Filename: f.Filename, Size: f.Size, Rule: f.Rule})
			}
		})
		if dryRun {
			continue
		}
		if err := m.UncacheFiles(ch, files); err != nil {
			return fmt.Errorf("%s: %w", ch, err)
		}
		t.Update(func(j *jobs.Job) { j.Done += len(files); j.BytesDone += size })
	}
	return nil
}

// deferredLedger is the proxy as an export's source, with MarkExported kept
// aside: the marks are the proxy's only once the client has the whole tar.
type deferredLedger struct {
	mirror.ExportSource
	marks []markGroup
}

func (d *deferredLedger) MarkExported(channel, subdir, filename string) error {
	if n := len(d.marks); n == 0 || d.marks[n-1].channel != channel || d.marks[n-1].subdir != subdir {
		d.marks = append(d.marks, markGroup{channel: channel, subdir: subdir})
	}
	g := &d.marks[len(d.marks)-1]
	g.files = append(g.files, filename)
	return nil
}

// Export writes the export tar of channels to w, as `condaproxy export` does
// on a stopped server; its marks wait for CommitExport(id).
func (b *Backend) Export(ctx context.Context, id string, channels []string, delta bool, w io.Writer) (admin.ExportResult, error) {
	m, bl, err := b.maintainer()
	if err != nil {
		return admin.ExportResult{}, err
	}
	names, err := b.condaNames(channels, "export")
	if err != nil {
		return admin.ExportResult{}, err
	}
	src := &deferredLedger{ExportSource: m}
	var rep *mirror.ExportReport
	err = b.proxy.Guard("export", func() (err error) {
		rep, err = mirror.Export(ctx, src, bl, w, mirror.ExportOptions{
			Channels: names, Delta: delta, Source: b.cfg.Source, TempDir: filepath.Join(b.cfg.Data, "tmp"),
		})
		return err
	})
	if err != nil {
		return admin.ExportResult{}, err
	}
	b.exports.hold(id, src.marks)
	return admin.ExportResult{Packages: rep.Packages, Bytes: rep.Bytes}, nil
}

// CommitExport records what the export id wrote as exported.
func (b *Backend) CommitExport(id string) error {
	m, _, err := b.maintainer()
	if err != nil {
		return err
	}
	marks, err := b.exports.take(id)
	if err != nil {
		return err
	}
	for _, g := range marks {
		for _, fn := range g.files {
			if err := m.MarkExported(g.channel, g.subdir, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// An import keeps a reserve of the data directory's file system free: it is
// refused when its Content-Length passes the free space less the reserve, and
// fails as soon as it reads past that (no Content-Length, or a lying one).
// The reserve is the larger of importReserveMin and importReservePct percent
// of the file system. Vars for tests.
var (
	importReserveMin int64 = 1 << 30
	importReservePct int64 = 5
	diskSpace              = cache.DiskSpace
)

// errUploadSize is an upload past the free space of the data directory.
var errUploadSize = fmt.Errorf("%w: the tar is larger than the free space of the data directory less its reserve (the larger of 1 GiB and 5%% of the file system)", admin.ErrTooLarge)

// importRoom is what an import may write to dir: its free space less the
// reserve; -1 when unknown.
func importRoom(dir string) int64 {
	free, total, err := diskSpace(dir)
	if err != nil {
		return -1
	}
	return max(free-max(importReserveMin, total/100*importReservePct), 0)
}

// importReader counts what an import read, for its job, and bounds it.
type importReader struct {
	r     io.Reader
	left  int64 // -1: no bound
	t     *jobs.Task
	total int64
}

func (r *importReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		// A tar that fills the room exactly ends here; one byte more is past it.
		// A Read may return (0, nil): look again (as io.ReadAtLeast does, a
		// bounded number of times) until a byte or an error comes.
		var one [1]byte
		for range 100 {
			n, err := r.r.Read(one[:])
			if n > 0 {
				return 0, errUploadSize
			}
			if err != nil {
				return 0, err
			}
		}
		return 0, io.ErrNoProgress
	}
	if r.left > 0 && int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	if r.left > 0 {
		r.left -= int64(n)
	}
	r.total += int64(n)
	if n > 0 {
		total := r.total
		r.t.Update(func(j *jobs.Job) { j.BytesDone = total })
	}
	return n, err
}

// Import reads an export tar from r and commits it whole, as `condaproxy
// import` does on a stopped server (the same Known and limits), as a job that
// claims each channel of the tar as it comes to it.
func (b *Backend) Import(ctx context.Context, r io.Reader, size int64) (admin.Job, error) {
	m, bl, err := b.maintainer()
	if err != nil {
		return admin.Job{}, err
	}
	if !b.importMu.TryLock() {
		return admin.Job{}, fmt.Errorf("%w: an import is running", admin.ErrBusy)
	}
	defer b.importMu.Unlock()
	left := importRoom(b.cfg.Data)
	if left >= 0 && size > left {
		return admin.Job{}, errUploadSize
	}
	var workErr, claimErr error
	j, err := b.jobs.RunWork(ctx, jobs.KindImport, nil, func(ctx context.Context, t *jobs.Task) error {
		t.Update(func(j *jobs.Job) { j.Bytes = max(size, 0) })
		claimed := map[string]bool{}
		known := func(name string) bool {
			if ok, seen := claimed[name]; seen {
				return ok
			}
			ch := b.cfg.Channel(name)
			ok := ch != nil && ch.Kind == config.KindConda
			if ok {
				if err := t.Claim(name); err != nil {
					claimErr, ok = err, false
				}
			}
			claimed[name] = ok
			return ok
		}
		var rep *mirror.ImportReport
		workErr = b.proxy.Guard("import", func() (err error) {
			rep, err = mirror.Import(ctx, m, bl, &importReader{r: r, left: left, t: t}, mirror.ImportOptions{
				Known:       known,
				MaxRepodata: int64(b.cfg.Limits.MaxRepodata),
				MaxMetadata: int64(b.cfg.Limits.MaxMetadata),
			})
			return err
		})
		if workErr != nil && claimErr != nil {
			workErr = claimErr // the channel is in a running job, not unknown
		}
		if workErr != nil {
			return workErr
		}
		for _, ch := range rep.Channels {
			b.forgetUsage(ch)
		}
		t.Update(func(j *jobs.Job) {
			j.Packages, j.PackageSize = rep.Packages, rep.Bytes
			slices.Sort(j.Channels)
		})
		return nil
	})
	if err != nil {
		return admin.Job{}, err
	}
	switch {
	case workErr == nil:
		return toAdmin(j), nil
	case errors.Is(workErr, errUploadSize):
		return toAdmin(j), workErr
	case errors.As(workErr, new(*jobs.BusyError)):
		return toAdmin(j), busyErr(workErr)
	case errors.Is(workErr, mirror.ErrRefused):
		return toAdmin(j), refusedError{workErr}
	}
	return toAdmin(j), fmt.Errorf("import: %w", workErr)
}

// toAdmin is a job as the admin API shows it.
func toAdmin(j jobs.Job) admin.Job {
	out := admin.Job{ID: j.ID, Kind: j.Kind, Channels: j.Channels, State: j.State, Started: j.Started,
		Finished: j.Finished, Files: j.Files, Done: j.Done, Bytes: j.Bytes, BytesDone: j.BytesDone,
		Fetched: j.Fetched, Present: j.Present, Failed: j.Failed, Error: j.Error,
		DryRun: j.DryRun, ShardPacks: j.ShardPacks, ShardBytes: j.ShardBytes,
		Packages: j.Packages, PackageSize: j.PackageSize}
	for _, f := range j.Cleaned {
		out.Cleaned = append(out.Cleaned, admin.CleanedFile{Channel: f.Channel, Subdir: f.Subdir,
			Filename: f.Filename, Size: f.Size, Rule: f.Rule})
	}
	return out
}

// refusedError is a tar mirror.Import refused, as the admin API's ErrRefused;
// its text is the import's own ("import refused; nothing was imported: ...").
type refusedError struct{ err error }

func (e refusedError) Error() string        { return e.err.Error() }
func (e refusedError) Is(target error) bool { return target == admin.ErrRefused }
func (e refusedError) Unwrap() error        { return e.err }
