package admin

import (
	"context"
	"io"
	"time"
)

// Backend is what the admin API and the web page read and steer. The web page is
// built on the same calls as the API: nothing it shows is unavailable to a script.
// cmd/condaproxy implements it on the running proxy, cache and sync engine.
//
// Its errors should not quote the values a call was given (a channel name once
// checked configured excepted): admin masks them in every text anyway, as it
// masks secrets, so that no answer tells whether a guess was one (redact.go).
type Backend interface {
	Channels(ctx context.Context) []ChannelInfo
	// Packages searches channel/subdir: records whose filename contains q (all
	// when q is ""), sorted by filename, the page [offset, offset+limit).
	// servedOnly leaves the hidden records out, of the page and of the total.
	Packages(ctx context.Context, channel, subdir, q string, servedOnly bool, offset, limit int) (PackagePage, error)
	// Subdirs lists the subdirs of a conda channel, noarch first, as the proxy
	// has them: its platforms and noarch, else those its upstreams list (it may
	// ask upstream, bounded by ctx). On an error it still answers the best guess
	// to show (the platforms and noarch, or the common subdirs) with the error.
	Subdirs(ctx context.Context, channel string) ([]string, error)
	Explain(ctx context.Context, channel, subdir, pkg string) ([]Explanation, error)
	Stats(ctx context.Context) Stats
	// StartSync starts a pre-warm job of the channels (all conda channels when
	// empty). One job per channel at a time: ErrBusy names the running one.
	StartSync(channels []string) (Job, error)
	Job(id string) (Job, bool)
	Jobs() []Job
	// Purge drops cached repodata of channel/subdir (filename ""), or one cached
	// file, so the next request fetches it again.
	Purge(ctx context.Context, channel, subdir, filename string) error
}

// ChannelInfo is one channel as GET /api/v1/channels lists it.
type ChannelInfo struct {
	Name           string    `json:"name"`
	Kind           string    `json:"kind"`
	Upstreams      []string  `json:"upstreams"` // redacted: no token, no password
	Platforms      []string  `json:"platforms"`
	PackagesCached int       `json:"packages_cached"`
	BytesCached    int64     `json:"bytes_cached"`
	LastRefresh    time.Time `json:"last_refresh"` // zero: never
	UpstreamOK     bool      `json:"upstream_ok"`
	LastSync       time.Time `json:"last_sync"` // zero: never
}

// PackagePage is one page of a package search.
type PackagePage struct {
	Total    int       `json:"total"` // matching records, all pages
	Offset   int       `json:"offset"`
	Limit    int       `json:"limit"`
	Packages []Package `json:"packages"`
}

// Package is one record of a search.
type Package struct {
	Filename string `json:"filename"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Build    string `json:"build"`
	Size     int64  `json:"size"` // -1 when unknown (hidden records)
	Served   bool   `json:"served"`
	Cached   bool   `json:"cached"`
	Reason   string `json:"reason,omitempty"` // the rule that hides it
}

// Explanation is one record of an explain answer: {served, rule, detail}. Its
// fields are those of proxy.Explanation, which `condaproxy explain --server`
// decodes.
type Explanation struct {
	Filename string `json:"filename"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Build    string `json:"build"`
	Served   bool   `json:"served"`
	Rule     string `json:"rule,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Cached   bool   `json:"cached"`
}

// Stats is GET /api/v1/stats.
type Stats struct {
	CacheBytes     int64            `json:"cache_bytes"`
	CacheLimit     int64            `json:"cache_limit"`
	CacheFiles     int              `json:"cache_files"`
	Hits           int64            `json:"hits"`
	Misses         int64            `json:"misses"`
	HitRatio       float64          `json:"hit_ratio"`
	BytesBySource  map[string]int64 `json:"bytes_by_source"`
	UpstreamErrors int64            `json:"upstream_errors"`
	ChecksumErrors int64            `json:"checksum_failures"`
}

// Maintainer is the maintenance side of a Backend: `condaproxy clean`, `export`
// and `import` through a running server (POST /api/v1/clean, /export,
// /export/commit and /import). A Backend that is not one answers those 404.
type Maintainer interface {
	// StartClean starts a clean job of the channels (all conda channels when
	// empty): cached packages the filter hides now are removed (listed only,
	// with dryRun), and old shard packs. One job per channel at a time.
	StartClean(channels []string, dryRun bool) (Job, error)
	// Export writes the export tar of the channels (all when empty) to w. It
	// checks the channels before it writes anything. What it wrote counts as
	// exported (for a later delta) only once CommitExport(id) is called: the
	// client has the whole tar.
	Export(ctx context.Context, id string, channels []string, delta bool, w io.Writer) (ExportResult, error)
	CommitExport(id string) error
	// Import reads an export tar of size bytes (-1: unknown) from r, verifies
	// it and commits it whole, as a job run to its end. A refused tar is an
	// error wrapping ErrRefused; the cache is then as it was.
	Import(ctx context.Context, r io.Reader, size int64) (Job, error)
}

// ExportResult is what an export through the server wrote.
type ExportResult struct {
	Packages int   `json:"packages"`
	Bytes    int64 `json:"bytes"`
}

// CleanedFile is one file a clean job removed, or would remove.
type CleanedFile struct {
	Channel  string `json:"channel"`
	Subdir   string `json:"subdir"`
	Filename string `json:"filename"`
	Size     int64  `json:"size"`
	Rule     string `json:"rule"` // the rule that hides it
}

// Job is a sync, clean or import job and its progress. For a clean, Files and
// Bytes count what is to be removed, Done and BytesDone what was; for an
// import, BytesDone counts the tar read so far.
type Job struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"` // sync, clean, import
	Channels  []string  `json:"channels"`
	State     string    `json:"state"` // running, done, failed
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished,omitzero"`
	Files     int       `json:"files"` // to fetch
	Done      int       `json:"done"`
	Bytes     int64     `json:"bytes"`
	BytesDone int64     `json:"bytes_done"`
	Fetched   int       `json:"fetched"`
	Present   int       `json:"present"`
	Failed    []string  `json:"failed,omitempty"` // "channel/subdir/file: reason"
	Error     string    `json:"error,omitempty"`

	DryRun      bool          `json:"dry_run,omitempty"`
	Cleaned     []CleanedFile `json:"cleaned,omitempty"` // at most 200; Files counts them all
	ShardPacks  int           `json:"shard_packs,omitempty"`
	ShardBytes  int64         `json:"shard_bytes,omitempty"`
	Packages    int           `json:"packages,omitempty"` // imported
	PackageSize int64         `json:"package_bytes,omitempty"`
}
