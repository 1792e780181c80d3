package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/condaproxy/condaproxy/admin"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/jobs"
	"github.com/condaproxy/condaproxy/mirror"
	"github.com/condaproxy/condaproxy/proxy"
	"github.com/condaproxy/condaproxy/repodata"
)

// usageTTL is how long a channel's cached-files count is reused: counting scans
// the package index, which the page asks for every few seconds.
const usageTTL = 10 * time.Second

// backend is the admin API's admin.Backend on the running app: it answers from
// the proxy, its metrics and the store, and hands syncs to a job manager
// (package jobs).
type backend struct {
	a    *app
	jobs *jobs.Manager

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
// built after the admin handler that holds the backend. The registry is not
// read (Stats asks the proxy's Metrics); the parameter stays for serve.go's call.
func newBackend(a *app) *backend {
	b := &backend{a: a, usage: map[string]chanUsage{}}
	b.jobs = jobs.New(b.syncChannel, jobs.Options{Logger: a.log})
	return b
}

// Close cancels running jobs and waits for them to stop. Their fills in progress
// are the proxy's (proxy.Shutdown): call it first, and Close before the store's.
func (b *backend) Close() { b.jobs.Close() }

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

// Stats reads the request path's counters, the same numbers /metrics and the
// dashboards show, and the cache's usage from the store.
func (b *backend) Stats(ctx context.Context) admin.Stats {
	st := admin.Stats{BytesBySource: map[string]int64{}}
	st.CacheBytes, st.CacheFiles, st.CacheLimit = b.a.store.Usage()
	c := b.a.proxy.Metrics().Counts()
	for l, n := range c.Lookups {
		if l.Kind != "package" && l.Kind != "repodata" {
			continue
		}
		switch l.Result {
		case "hit":
			st.Hits += n
		case "miss":
			st.Misses += n
		}
	}
	maps.Copy(st.BytesBySource, c.BytesBySource)
	st.UpstreamErrors = c.UpstreamErrors
	st.ChecksumErrors = c.ChecksumFailures
	if n := st.Hits + st.Misses; n > 0 {
		st.HitRatio = float64(st.Hits) / float64(n)
	}
	return st
}

// Purge drops cached repodata (filename "") or one cached package, on every
// replica: the proxy applies it here and fans it out over Redis.
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

// syncChannel is one channel of a sync job (jobs.SyncFunc): mirror.Sync on the
// running proxy, under its panic guard, recording the channel's last sync as the
// CLI's `condaproxy sync` does.
func (b *backend) syncChannel(ctx context.Context, name string, p mirror.Progress) (*mirror.SyncReport, error) {
	defer b.forgetUsage(name)
	var rep *mirror.SyncReport
	err := b.a.proxy.Guard("job", func() (err error) {
		rep, err = mirror.Sync(ctx, b.a.proxy, b.a.store, []string{name}, mirror.SyncOptions{Progress: p})
		return err
	})
	if rep != nil && err == nil {
		b.a.store.Meta.Put("sync/"+name, mirror.LastSync{Finished: time.Now().UTC(),
			Records: rep.Records, Fetched: rep.Fetched, Failed: len(rep.Failures)})
	}
	return rep, err
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
	j, err := b.jobs.Start(names)
	if busy := (*jobs.BusyError)(nil); errors.As(err, &busy) {
		// busy.Channel is configured: condaChannel passed it.
		return admin.Job{}, fmt.Errorf("%w for channel %q (job %s)", admin.ErrBusy, busy.Channel, busy.Job)
	}
	if err != nil {
		return admin.Job{}, err
	}
	return admin.Job(j), nil
}

func (b *backend) Job(id string) (admin.Job, bool) {
	j, ok := b.jobs.Job(id)
	return admin.Job(j), ok
}

// Jobs lists the remembered jobs, newest first.
func (b *backend) Jobs() []admin.Job {
	list := b.jobs.Jobs()
	out := make([]admin.Job, 0, len(list))
	for _, j := range list {
		out = append(out, admin.Job(j))
	}
	return out
}
