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
// (for the next delta) once its client says it has the whole tar.
const (
	maxPendingExports = 16
	pendingExportTTL  = time.Hour
)

type exportMark struct{ channel, subdir, filename string }

type pendingExport struct {
	marks []exportMark
	at    time.Time
}

// maintenance is the Backend's state for clean, export and import.
type maintenance struct {
	importMu  sync.Mutex // one import at a time: each may take the disk's free space
	pendingMu sync.Mutex
	pending   map[string]pendingExport
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
	if busy := (*jobs.BusyError)(nil); errors.As(err, &busy) {
		// busy.Channel is configured: the caller checked it.
		return fmt.Errorf("%w: %s", admin.ErrBusy, busy.Error())
	}
	return err
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
	marks []exportMark
}

func (d *deferredLedger) MarkExported(channel, subdir, filename string) error {
	d.marks = append(d.marks, exportMark{channel, subdir, filename})
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
	b.pendingMu.Lock()
	defer b.pendingMu.Unlock()
	if b.pending == nil {
		b.pending = map[string]pendingExport{}
	}
	for k, p := range b.pending {
		if time.Since(p.at) > pendingExportTTL {
			delete(b.pending, k)
		}
	}
	for len(b.pending) >= maxPendingExports {
		oldest := ""
		for k, p := range b.pending {
			if oldest == "" || p.at.Before(b.pending[oldest].at) {
				oldest = k
			}
		}
		delete(b.pending, oldest)
	}
	b.pending[id] = pendingExport{marks: src.marks, at: time.Now()}
	return admin.ExportResult{Packages: rep.Packages, Bytes: rep.Bytes}, nil
}

// CommitExport records what the export id wrote as exported.
func (b *Backend) CommitExport(id string) error {
	m, _, err := b.maintainer()
	if err != nil {
		return err
	}
	b.pendingMu.Lock()
	p, ok := b.pending[id]
	delete(b.pending, id)
	b.pendingMu.Unlock()
	if !ok || time.Since(p.at) > pendingExportTTL {
		return fmt.Errorf("%w: no such export waiting for its commit (committed already, or older than %v)", admin.ErrNotFound, pendingExportTTL)
	}
	for _, mk := range p.marks {
		if err := m.MarkExported(mk.channel, mk.subdir, mk.filename); err != nil {
			return err
		}
	}
	return nil
}

// errUploadSize is an upload past the free space of the data directory.
var errUploadSize = fmt.Errorf("%w: the tar is larger than the free space of the data directory", admin.ErrTooLarge)

// importReader counts what an import read, for its job, and bounds it.
type importReader struct {
	r     io.Reader
	left  int64 // -1: no bound
	t     *jobs.Task
	total int64
}

func (r *importReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, errUploadSize
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
	left := int64(-1)
	if free, err := cache.FreeBytes(b.cfg.Data); err == nil {
		if size > free {
			return admin.Job{}, errUploadSize
		}
		left = free
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
