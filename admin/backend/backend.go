// Package backend is the admin API's admin.Backend on a running condaproxy: it
// answers from the request path (Proxy, which *proxy.Server plays), the cache's
// usage and the sync ledger, and hands syncs to a job manager (package jobs).
// Package admin is the HTTP side; this is what its answers are made of.
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Proxy is what the admin API asks of the request path; *proxy.Server plays it.
// The value types it answers with (proxy.ChannelStatus...) are the data, not
// the dependency.
type Proxy interface {
	// mirror.Warmer: a sync job pre-warms through the same fills clients take.
	mirror.Warmer
	ChannelNames() []string
	ChannelStatus(name string) (proxy.ChannelStatus, error)
	CachedUsage(channel string) (files int, bytes int64, err error)
	SearchPackages(ctx context.Context, channel, subdir, q string, servedOnly bool, offset, limit int) (proxy.PackageSearch, error)
	Explain(ctx context.Context, channel, subdir, query string) ([]proxy.Explanation, error)
	// Counts reads the request path's counters, the numbers /metrics shows.
	Counts() proxy.Counts
	// Purge drops cached repodata or one file on every replica.
	Purge(ctx context.Context, channel, subdir, filename string) error
	// Guard runs a unit of work whose panic fails it alone.
	Guard(unit string, fn func() error) error
}

// Store is what the admin API asks of the cache; *cache.Store plays it.
type Store interface {
	mirror.Verifier
	Usage() (bytes int64, files int, limit int64)
}

// Ledger remembers each channel's last sync; mirror.SyncLedger is one.
type Ledger interface {
	Last(channel string) (mirror.LastSync, bool)
	Record(rep *mirror.SyncReport, at time.Time) error
}

// Options are what a Backend answers from. All are required.
type Options struct {
	Config *config.Config
	Proxy  Proxy
	Store  Store
	Ledger Ledger
	Logger *slog.Logger
}

// Backend is admin.Backend on a running proxy.
type Backend struct {
	cfg    *config.Config
	proxy  Proxy
	store  Store
	ledger Ledger
	log    *slog.Logger
	jobs   *jobs.Manager

	usageMu sync.Mutex
	usage   map[string]chanUsage

	maintenance
}

type chanUsage struct {
	files int
	bytes int64
	at    time.Time
}

var _ admin.Backend = (*Backend)(nil)

// New returns a Backend with no job running.
func New(o Options) *Backend {
	b := &Backend{cfg: o.Config, proxy: o.Proxy, store: o.Store, ledger: o.Ledger, log: o.Logger,
		usage: map[string]chanUsage{}}
	b.jobs = jobs.New(b.syncChannel, jobs.Options{Logger: o.Logger})
	return b
}

// Close cancels running jobs and waits for them to stop. Their fills in progress
// are the proxy's (proxy.Server.Shutdown): call it first, and Close before the
// store's.
func (b *Backend) Close() { b.jobs.Close() }

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

func (b *Backend) condaChannel(name string) error {
	ch := b.cfg.Channel(name)
	if ch == nil || ch.Kind != config.KindConda {
		return errNoChannel
	}
	return nil
}

// checkSubdir refuses a subdir that is no subdir's name, or that channel (a
// configured conda channel) does not serve: one outside its platforms, when it
// lists them (noarch is always served).
func (b *Backend) checkSubdir(channel, sub string) error {
	if !config.SubdirPattern.MatchString(sub) {
		return errSubdirShape
	}
	if ch := b.cfg.Channel(channel); ch != nil && len(ch.Platforms) > 0 && sub != "noarch" && !slices.Contains(ch.Platforms, sub) {
		return errNotPlatform
	}
	return nil
}

func (b *Backend) Channels(ctx context.Context) []admin.ChannelInfo {
	out := []admin.ChannelInfo{}
	for _, name := range b.proxy.ChannelNames() {
		st, err := b.proxy.ChannelStatus(name)
		if err != nil {
			continue
		}
		info := admin.ChannelInfo{Name: st.Name, Kind: st.Kind, Upstreams: st.Upstreams, Platforms: st.Platforms,
			LastRefresh: st.LastRefresh, UpstreamOK: st.UpstreamOK}
		info.PackagesCached, info.BytesCached = b.cachedUsage(name)
		if last, ok := b.ledger.Last(name); ok {
			info.LastSync = last.Finished
		}
		out = append(out, info)
	}
	return out
}

// cachedUsage is proxy.CachedUsage, reused for usageTTL.
func (b *Backend) cachedUsage(channel string) (int, int64) {
	b.usageMu.Lock()
	defer b.usageMu.Unlock()
	if u, ok := b.usage[channel]; ok && time.Since(u.at) < usageTTL {
		return u.files, u.bytes
	}
	files, bytes, err := b.proxy.CachedUsage(channel)
	if err != nil {
		b.log.Warn("admin: counting cached files failed", "channel", channel, "err", err)
		return 0, 0
	}
	b.usage[channel] = chanUsage{files: files, bytes: bytes, at: time.Now()}
	return files, bytes
}

func (b *Backend) forgetUsage(channel string) {
	b.usageMu.Lock()
	delete(b.usage, channel)
	b.usageMu.Unlock()
}

func (b *Backend) Packages(ctx context.Context, channel, subdir, q string, servedOnly bool, offset, limit int) (admin.PackagePage, error) {
	if err := b.condaChannel(channel); err != nil {
		return admin.PackagePage{}, err
	}
	if err := b.checkSubdir(channel, subdir); err != nil {
		return admin.PackagePage{}, err
	}
	res, err := b.proxy.SearchPackages(ctx, channel, subdir, q, servedOnly, offset, limit)
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

// Subdirs is proxy.SyncSubdirs, the one answer to which subdirs a channel has.
// On its error the guess is the platforms and noarch, or proxy.CommonSubdirs().
func (b *Backend) Subdirs(ctx context.Context, channel string) ([]string, error) {
	if err := b.condaChannel(channel); err != nil {
		return nil, err
	}
	subs, err := b.proxy.SyncSubdirs(ctx, channel)
	if err != nil {
		// Only a channel with no platforms asks upstream (and can fail): with
		// them, the list is its own.
		return proxy.CommonSubdirs(), notFound(err)
	}
	return subs, nil
}

// Explain answers a subdir outside the channel's platforms 404, as Packages
// does, where proxy.Explain answers one record named after the package asked
// for: nothing asked is quoted.
func (b *Backend) Explain(ctx context.Context, channel, subdir, pkg string) ([]admin.Explanation, error) {
	if err := b.condaChannel(channel); err != nil {
		return nil, err
	}
	if err := b.checkSubdir(channel, subdir); err != nil {
		return nil, err
	}
	res, err := b.proxy.Explain(ctx, channel, subdir, pkg)
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
func (b *Backend) Stats(ctx context.Context) admin.Stats {
	st := admin.Stats{BytesBySource: map[string]int64{}}
	st.CacheBytes, st.CacheFiles, st.CacheLimit = b.store.Usage()
	c := b.proxy.Counts()
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
func (b *Backend) Purge(ctx context.Context, channel, subdir, filename string) error {
	if err := b.condaChannel(channel); err != nil {
		return err
	}
	if subdir != "" {
		if err := b.checkSubdir(channel, subdir); err != nil {
			return err
		}
	}
	if filename == "" {
		return notFound(b.proxy.Purge(ctx, channel, subdir, ""))
	}
	if subdir == "" {
		return invalid("a filename needs its subdir")
	}
	if !repodata.ValidFilename(filename) {
		return invalid("filename: want a package file name ending in .conda or .tar.bz2")
	}
	defer b.forgetUsage(channel)
	return notFound(b.proxy.Purge(ctx, channel, subdir, filename))
}

// syncChannel is one channel of a sync job (jobs.SyncFunc): mirror.Sync on the
// running proxy, under its panic guard, recording the channel's last sync as the
// CLI's `condaproxy sync` does.
func (b *Backend) syncChannel(ctx context.Context, name string, p mirror.Progress) (*mirror.SyncReport, error) {
	defer b.forgetUsage(name)
	var rep *mirror.SyncReport
	err := b.proxy.Guard("job", func() (err error) {
		rep, err = mirror.Sync(ctx, b.proxy, b.store, []string{name}, mirror.SyncOptions{Progress: p})
		return err
	})
	if rep != nil && err == nil {
		if err := b.ledger.Record(rep, time.Now()); err != nil {
			b.log.Warn("admin: cannot record the sync", "channel", name, "err", err)
		}
	}
	return rep, err
}

// StartSync starts a pre-warm of channels (every conda channel when empty). A
// channel a running job syncs is refused (ErrBusy) rather than synced twice.
func (b *Backend) StartSync(channels []string) (admin.Job, error) {
	names, err := b.condaNames(channels, "sync")
	if err != nil {
		return admin.Job{}, err
	}
	j, err := b.jobs.Start(names)
	if err != nil {
		return admin.Job{}, busyErr(err)
	}
	return toAdmin(j), nil
}

func (b *Backend) Job(id string) (admin.Job, bool) {
	j, ok := b.jobs.Job(id)
	return toAdmin(j), ok
}

// Jobs lists the remembered jobs, newest first.
func (b *Backend) Jobs() []admin.Job {
	list := b.jobs.Jobs()
	out := make([]admin.Job, 0, len(list))
	for _, j := range list {
		out = append(out, toAdmin(j))
	}
	return out
}
