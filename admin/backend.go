package admin

import (
	"context"
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
	Packages(ctx context.Context, channel, subdir, q string, offset, limit int) (PackagePage, error)
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

// Job is a sync job and its progress.
type Job struct {
	ID        string    `json:"id"`
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
}
