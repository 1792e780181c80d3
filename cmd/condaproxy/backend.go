package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/condaproxy/condaproxy/admin"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/mirror"
	"github.com/condaproxy/condaproxy/proxy"
	"github.com/condaproxy/condaproxy/repodata"
)

// keptJobs is how many jobs the API remembers, running ones always included.
const keptJobs = 50

// maxJobFailures bounds a job's list of failed files; the count goes on.
const maxJobFailures = 200

// usageTTL is how long a channel's cached-files count is reused: counting scans
// the package index, which the page asks for every few seconds.
const usageTTL = 10 * time.Second

// backend is the admin API's admin.Backend on the running app: its proxy, store,
// metrics registry and sync engine. Jobs live in memory: a restart forgets them
// (what a sync did stays in the data directory, see mirror.LastSync).
type backend struct {
	a   *app
	reg prometheus.Gatherer

	// ctx is the jobs' context: Close cancels it and waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	jobs   map[string]*syncJob
	order  []string          // job ids, oldest first
	busy   map[string]string // channel -> the id of the job syncing it
	closed bool

	usageMu sync.Mutex
	usage   map[string]chanUsage
}

type chanUsage struct {
	files int
	bytes int64
	at    time.Time
}

var _ admin.Backend = (*backend)(nil)

// newBackend reads a.proxy, a.store and a.cfg when called, not now: the proxy is
// built after the admin handler that holds the backend.
func newBackend(a *app, reg prometheus.Gatherer) *backend {
	ctx, cancel := context.WithCancel(context.Background())
	return &backend{a: a, reg: reg, ctx: ctx, cancel: cancel,
		jobs: map[string]*syncJob{}, busy: map[string]string{}, usage: map[string]chanUsage{}}
}

// Close cancels running jobs and waits for them to stop. Their fills in progress
// are the proxy's (proxy.Shutdown): call it first, and Close before the store's.
func (b *backend) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
}

// The Backend's errors never quote a value the request passed (a channel,
// subdir, package, filename): the admin API masks the configured secrets in
// every text it answers, so a quoted value masked exactly when it is a secret
// would answer a guess of it (`?channel=Guess`). A channel name is quoted only
// once it is known to be configured. The texts this Backend passes on from
// elsewhere (an upstream's error quoting its URL, subdir included) are
// withheld by admin itself.

// Errors of this Backend, without the value asked for.
var (
	errNoChannel   = fmt.Errorf("%w: no such conda channel", admin.ErrNotFound)
	errNotPlatform = fmt.Errorf("%w: the channel's platforms do not include that subdir", admin.ErrNotFound)
	errNoSubdir    = fmt.Errorf("%w: no upstream of the channel has that subdir", admin.ErrNotFound)
	errSubdirShape = fmt.Errorf("%w: subdir: want noarch or <os>-<arch>, e.g. linux-64", admin.ErrInvalid)
)

// notFound turns the proxy's "no such channel" and "no such subdir", whose texts
// quote the channel and subdir asked for, into 404s that do not.
func notFound(err error) error {
	switch {
	case errors.Is(err, proxy.ErrUnknownChannel):
		return errNoChannel
	case errors.Is(err, proxy.ErrNoSubdir):
		return errNoSubdir
	}
	return err
}

func invalid(msg string) error {
	return fmt.Errorf("%w: %s", admin.ErrInvalid, msg)
}

func (b *backend) condaChannel(name string) error {
	ch := b.a.cfg.Channel(name)
	if ch == nil || ch.Kind != config.KindConda {
		return errNoChannel
	}
	return nil
}

// checkSubdir refuses a subdir that is no subdir's name, or that channel (a
// configured conda channel) does not serve: one outside its platforms, when it
// lists them (noarch is always served).
func (b *backend) checkSubdir(channel, sub string) error {
	if !config.SubdirPattern.MatchString(sub) {
		return errSubdirShape
	}
	if ch := b.a.cfg.Channel(channel); ch != nil && len(ch.Platforms) > 0 && sub != "noarch" && !slices.Contains(ch.Platforms, sub) {
		return errNotPlatform
	}
	return nil
}

func (b *backend) Channels(ctx context.Context) []admin.ChannelInfo {
	out := []admin.ChannelInfo{}
	for _, name := range b.a.proxy.ChannelNames() {
		st, err := b.a.proxy.ChannelStatus(name)
		if err != nil {
			continue
		}
		info := admin.ChannelInfo{Name: st.Name, Kind: st.Kind, Upstreams: st.Upstreams, Platforms: st.Platforms,
			LastRefresh: st.LastRefresh, UpstreamOK: st.UpstreamOK}
		info.PackagesCached, info.BytesCached = b.cachedUsage(name)
		var last mirror.LastSync
		if ok, _ := b.a.store.Meta.Get("sync/"+name, &last); ok {
			info.LastSync = last.Finished
		}
		out = append(out, info)
	}
	return out
}

// cachedUsage is proxy.CachedUsage, reused for usageTTL.
func (b *backend) cachedUsage(channel string) (int, int64) {
	b.usageMu.Lock()
	defer b.usageMu.Unlock()
	if u, ok := b.usage[channel]; ok && time.Since(u.at) < usageTTL {
		return u.files, u.bytes
	}
	files, bytes, err := b.a.proxy.CachedUsage(channel)
	if err != nil {
		b.a.log.Warn("admin: counting cached files failed", "channel", channel, "err", err)
		return 0, 0
	}
	b.usage[channel] = chanUsage{files: files, bytes: bytes, at: time.Now()}
	return files, bytes
}

func (b *backend) forgetUsage(channel string) {
	b.usageMu.Lock()
	delete(b.usage, channel)
	b.usageMu.Unlock()
}

func (b *backend) Packages(ctx context.Context, channel, subdir, q string, offset, limit int) (admin.PackagePage, error) {
	if err := b.condaChannel(channel); err != nil {
		return admin.PackagePage{}, err
	}
	if err := b.checkSubdir(channel, subdir); err != nil {
		return admin.PackagePage{}, err
	}
	res, err := b.a.proxy.SearchPackages(ctx, channel, subdir, q, offset, limit)
	if err != nil {
		return admin.PackagePage{}, notFound(err)
	}
	page := admin.PackagePage{Total: res.Total, Offset: offset, Limit: limit, Packages: make([]admin.Package, 0, len(res.Records))}
	for _, r := range res.Records {
		page.Packages = append(page.Packages, admin.Package{Filename: r.Filename, Name: r.Name, Version: r.Version,
			Build: r.Build, Size: r.Size, Served: r.Served, Cached: r.Cached, Reason: r.Reason})
	}
	return page, nil
}

// Explain answers a subdir outside the channel's platforms 404, as Packages
// does, where proxy.Explain answers one record named after the package asked
// for: nothing asked is quoted.
func (b *backend) Explain(ctx context.Context, channel, subdir, pkg string) ([]admin.Explanation, error) {
	if err := b.condaChannel(channel); err != nil {
		return nil, err
	}
	if err := b.checkSubdir(channel, subdir); err != nil {
		return nil, err
	}
	res, err := b.a.proxy.Explain(ctx, channel, subdir, pkg)
	if err != nil {
		return nil, notFound(err)
	}
	out := make([]admin.Explanation, 0, len(res))
	for _, e := range res {
		out = append(out, admin.Explanation{Filename: e.Filename, Name: e.Name, Version: e.Version, Build: e.Build,
			Served: e.Served, Rule: e.Rule, Detail: e.Detail, Cached: e.Cached})
	}
	return out, nil
}

// Stats reads the counters from the metrics registry, the same numbers /metrics
// and the dashboards show, and the cache's usage from the store.
func (b *backend) Stats(ctx context.Context) admin.Stats {
	st := admin.Stats{BytesBySource: map[string]int64{}}
	st.CacheBytes, st.CacheFiles, st.CacheLimit = b.a.store.Usage()
	families, err := b.reg.Gather()
	if err != nil && len(families) == 0 {
		b.a.log.Warn("admin: reading the metrics failed", "err", err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			v := int64(m.GetCounter().GetValue())
			switch mf.GetName() {
			case "condaproxy_cache_lookups_total":
				kind, result := label(m, "kind"), label(m, "result")
				if kind != "package" && kind != "repodata" {
					continue
				}
				switch result {
				case "hit":
					st.Hits += v
				case "miss":
					st.Misses += v
				}
			case "condaproxy_bytes_served_total":
				st.BytesBySource[label(m, "source")] += v
			case "condaproxy_upstream_errors_total":
				st.UpstreamErrors += v
			case "condaproxy_checksum_failures_total":
				st.ChecksumErrors += v
			}
		}
	}
	if n := st.Hits + st.Misses; n > 0 {
		st.HitRatio = float64(st.Hits) / float64(n)
	}
	return st
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Purge drops cached repodata (filename "") or one cached package, on this
// replica only: with several replicas sharing Redis, each keeps its own cache and
// a purge is not fanned out to the others (not built).
func (b *backend) Purge(ctx context.Context, channel, subdir, filename string) error {
	if err := b.condaChannel(channel); err != nil {
		return err
	}
	if subdir != "" {
		if err := b.checkSubdir(channel, subdir); err != nil {
			return err
		}
	}
	if filename == "" {
		return notFound(b.a.proxy.Purge(ctx, channel, subdir, ""))
	}
	if subdir == "" {
		return invalid("a filename needs its subdir")
	}
	if !repodata.ValidFilename(filename) {
		return invalid("filename: want a package file name ending in .conda or .tar.bz2")
	}
	defer b.forgetUsage(channel)
	return notFound(b.a.proxy.Purge(ctx, channel, subdir, filename))
}

// syncJob is one pre-warm job. Its admin.Job is read and written under mu.
type syncJob struct {
	mu sync.Mutex
	j  admin.Job
}

func (j *syncJob) snapshot() admin.Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := j.j
	out.Channels = slices.Clone(j.j.Channels)
	out.Failed = slices.Clone(j.j.Failed)
	return out
}

// jobProgress is the job's mirror.Progress: files to fetch are added per channel.
type jobProgress struct{ j *syncJob }

func (p jobProgress) Planned(files int, bytes int64) {
	p.j.mu.Lock()
	p.j.j.Files += files
	p.j.j.Bytes += bytes
	p.j.mu.Unlock()
}

func (p jobProgress) Done(f proxy.ServedFile, fetched bool, err error) {
	p.j.mu.Lock()
	p.j.j.Done++
	if err == nil {
		p.j.j.Fetched++
		p.j.j.BytesDone += max(f.Size, 0)
	}
	p.j.mu.Unlock()
}

func (j *syncJob) fail(s string) {
	if len(j.j.Failed) < maxJobFailures {
		j.j.Failed = append(j.j.Failed, s)
	}
}

func newJobID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// StartSync starts a pre-warm of channels (every conda channel when empty). A
// channel a running job syncs is refused (ErrBusy) rather than synced twice.
func (b *backend) StartSync(channels []string) (admin.Job, error) {
	var names []string
	if len(channels) == 0 {
		for _, ch := range b.a.cfg.Channels {
			if ch.Kind == config.KindConda {
				names = append(names, ch.Name)
			}
		}
		if len(names) == 0 {
			return admin.Job{}, invalid("the configuration has no conda channel to sync")
		}
	}
	for _, name := range channels {
		if err := b.condaChannel(name); err != nil {
			return admin.Job{}, err
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return admin.Job{}, errors.New("the server is shutting down")
	}
	for _, name := range names {
		if id, ok := b.busy[name]; ok {
			// name is configured: condaChannel passed it.
			return admin.Job{}, fmt.Errorf("%w for channel %q (job %s)", admin.ErrBusy, name, id)
		}
	}
	j := &syncJob{j: admin.Job{ID: newJobID(), Channels: names, State: "running", Started: time.Now().UTC()}}
	for _, name := range names {
		b.busy[name] = j.j.ID
	}
	b.jobs[j.j.ID] = j
	b.order = append(b.order, j.j.ID)
	b.prune()
	b.wg.Add(1)
	go b.run(j, names)
	return j.snapshot(), nil
}

// prune forgets the oldest finished jobs beyond keptJobs. Called with mu held.
func (b *backend) prune() {
	for i := 0; len(b.order) > keptJobs && i < len(b.order); {
		id := b.order[i]
		if j := b.jobs[id]; j != nil && j.snapshot().State == "running" {
			i++
			continue
		}
		delete(b.jobs, id)
		b.order = slices.Delete(b.order, i, i+1)
	}
}

// run syncs the job's channels one after the other, each with its own report, so
// each channel's last sync is recorded as the CLI's `condaproxy sync` does.
func (b *backend) run(j *syncJob, names []string) {
	defer b.wg.Done()
	log := b.a.log.With("job", j.j.ID)
	log.Info("sync job started", "channels", names)
	prog := jobProgress{j}
	var errs []string
	for _, name := range names {
		if b.ctx.Err() != nil {
			errs = append(errs, name+": interrupted (server shutting down)")
			continue
		}
		var rep *mirror.SyncReport
		err := b.a.proxy.Guard("job", func() (err error) {
			rep, err = mirror.Sync(b.ctx, b.a.proxy, b.a.store, []string{name}, mirror.SyncOptions{Progress: prog})
			return err
		})
		if rep != nil {
			j.mu.Lock()
			j.j.Present += rep.Present
			for _, f := range rep.Failures {
				j.fail(f.Channel + "/" + f.Subdir + "/" + f.Filename + ": " + f.Reason)
			}
			j.mu.Unlock()
			if err == nil {
				b.a.store.Meta.Put("sync/"+name, mirror.LastSync{Finished: time.Now().UTC(),
					Records: rep.Records, Fetched: rep.Fetched, Failed: len(rep.Failures)})
			}
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				err = errors.New("interrupted (server shutting down)")
			}
			errs = append(errs, name+": "+err.Error())
		}
		b.forgetUsage(name)
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
	j.j.State = "done"
	if j.j.Error != "" {
		j.j.State = "failed"
	}
	done := j.j
	j.mu.Unlock()
	log.Info("sync job finished", "state", done.State, "fetched", done.Fetched, "present", done.Present,
		"failed", len(done.Failed), "took", done.Finished.Sub(done.Started).Round(time.Millisecond))
	b.mu.Lock()
	for _, name := range names {
		if b.busy[name] == j.j.ID {
			delete(b.busy, name)
		}
	}
	b.mu.Unlock()
}

func (b *backend) Job(id string) (admin.Job, bool) {
	b.mu.Lock()
	j, ok := b.jobs[id]
	b.mu.Unlock()
	if !ok {
		return admin.Job{}, false
	}
	return j.snapshot(), true
}

// Jobs lists the remembered jobs, newest first.
func (b *backend) Jobs() []admin.Job {
	b.mu.Lock()
	list := make([]*syncJob, 0, len(b.order))
	for i := len(b.order) - 1; i >= 0; i-- {
		list = append(list, b.jobs[b.order[i]])
	}
	b.mu.Unlock()
	out := make([]admin.Job, 0, len(list))
	for _, j := range list {
		out = append(out, j.snapshot())
	}
	return out
}
