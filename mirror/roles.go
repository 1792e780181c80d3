package mirror

import (
	"context"
	"io"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/proxy"
)

// The roles mirror's jobs need from the request path and the cache. Each is the
// few methods one step calls, so a job can run over anything that plays the
// role: the running proxy and its store (cmd/condaproxy passes *proxy.Server and
// *cache.Store), a second store, or a fake in a test. The value types they
// exchange (proxy.ServedFile, proxy.ImportCommit, cache.Blob...) stay in their
// packages: they are the data, not the dependency.

// Catalog says what a channel serves: the filter-passing records of each subdir,
// as a client's repodata would list them.
type Catalog interface {
	// SyncSubdirs lists the subdirs a sync of channel covers.
	SyncSubdirs(ctx context.Context, channel string) ([]string, error)
	// ServedFiles lists the files of channel/subdir the filter serves, each
	// saying whether it is cached; with refresh, upstream is asked first.
	ServedFiles(ctx context.Context, channel, subdir string, refresh bool) ([]proxy.ServedFile, error)
}

// Prefetcher fills one served file into the cache through the same fill a
// client's download takes, so it is verified the same way.
type Prefetcher interface {
	// Prefetch reports fetched false when the bytes were already there.
	Prefetch(ctx context.Context, channel, subdir, filename string) (fetched bool, err error)
}

// Warmer is what Sync pre-warms: a channel's catalog and the fills behind it.
type Warmer interface {
	Catalog
	Prefetcher
}

// ShardWarmer makes a subdir's sharded repodata ahead of the first client. A
// Warmer that is one has Sync call it for every subdir it syncs.
type ShardWarmer interface {
	WarmShards(ctx context.Context, channel, subdir string) error
}

// Verifier hashes a cached blob again; it is cache.Store.VerifyBlob.
type Verifier interface {
	VerifyBlob(sha string) error
}

// ExportLedger remembers which packages earlier exports wrote, for --delta.
type ExportLedger interface {
	Exported(channel, subdir, filename string) bool
	MarkExported(channel, subdir, filename string) error
}

// ExportSource is what Export reads a channel's cached packages and their
// repodata from, and where it records what it wrote.
type ExportSource interface {
	// CachedSubdirs lists the subdirs of channel with cached packages, and noarch.
	CachedSubdirs(channel string) ([]string, error)
	// ExportSubdir writes to w the repodata of the packages of channel/subdir
	// that are served, cached and accepted by include (nil: all), and lists them.
	ExportSubdir(ctx context.Context, channel, subdir string, include func(fn string) bool, w io.Writer) ([]proxy.ExportFile, error)
	// ExportChannelData returns the channeldata.json of an export of channel
	// holding exactly files (subdir -> filenames): upstream's, cut to them.
	ExportChannelData(ctx context.Context, channel string, files map[string][]string) ([]byte, error)
	ExportLedger
}

// BlobOpener opens a verified blob by its sha256; it is cache.Store.OpenBlob.
type BlobOpener interface {
	OpenBlob(sha string) (*cache.Blob, error)
}

// Stager starts a temp file in the store that a verified entry is sealed from;
// it is cache.Store.NewTemp. An import stages there, beside the blobs, so its
// commit is a rename and never a copy.
type Stager interface {
	NewTemp() (*cache.Temp, error)
}

// ImportTarget makes a verified import visible, all of it at once.
type ImportTarget interface {
	CommitImport(c proxy.ImportCommit) error
}
