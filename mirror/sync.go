// Package mirror holds the Anaconda mirror tools' jobs done on condaproxy's cache:
// sync (pre-warm every package a channel's filter passes), clean (drop what the
// filter now hides), export and import (a channel tree in a tar for sites with no
// network).
//
// Everything goes through the request path's own fills and filter (package proxy),
// so a pre-warmed file is verified exactly as a client's download would be, and a
// rule holds in a mirror as it does live. It reaches them through the small roles
// of roles.go, never a concrete server or store, and never writes outside the
// cache's API.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/condaproxy/condaproxy/proxy"
)

// SyncOptions configure a sync.
type SyncOptions struct {
	// Channels to sync; empty: every conda channel.
	Channels []string
	// DryRun counts what would be fetched, and fetches no package.
	DryRun bool
	// Reset forgets that files were verified: every cached file of the channels is
	// hashed again, and one whose bytes no longer match is dropped and refetched.
	Reset bool
	// Jobs is the number of parallel fetches; default 4.
	Jobs int
	// Progress, if set, is told what happens.
	Progress Progress
}

// Progress hears of a sync's progress. Calls come from several goroutines.
type Progress interface {
	// Planned: files and bytes to fetch, known once every repodata is in.
	Planned(files int, bytes int64)
	// Done: one file finished (fetched, found in the cache, or failed).
	Done(f proxy.ServedFile, fetched bool, err error)
}

// Failure is a file a sync could not fetch.
type Failure struct {
	Channel, Subdir, Filename string
	Reason                    string
}

// SyncReport is what a sync did.
type SyncReport struct {
	Channels     []string
	Records      int   // served records seen
	Present      int   // already cached and verified
	Fetched      int   // fetched now
	FetchedBytes int64 // bytes fetched now
	ToFetch      int   // what a dry run would fetch
	ToFetchBytes int64
	Reverified   int // cached files hashed again (Reset)
	Dropped      int // cached files whose bytes no longer matched (Reset)
	Failures     []Failure
}

// Sync pre-warms channels: every file w's catalog serves and the cache lacks is
// prefetched; with o.Reset, what is cached is first hashed again through v.
func Sync(ctx context.Context, w Warmer, v Verifier, channels []string, o SyncOptions) (*SyncReport, error) {
	if o.Jobs <= 0 {
		o.Jobs = 4
	}
	if len(o.Channels) > 0 {
		for _, c := range o.Channels {
			if !slices.Contains(channels, c) {
				return nil, fmt.Errorf("no conda channel %q in the configuration", c)
			}
		}
		channels = o.Channels
	}
	rep := &SyncReport{Channels: channels}
	type job struct {
		channel string
		file    proxy.ServedFile
	}
	var todo []job
	for _, ch := range channels {
		subdirs, err := w.SyncSubdirs(ctx, ch)
		if err != nil {
			return nil, err
		}
		for _, sub := range subdirs {
			files, err := w.ServedFiles(ctx, ch, sub, true)
			if err != nil {
				rep.Failures = append(rep.Failures, Failure{ch, sub, "repodata.json", err.Error()})
				continue
			}
			if sw, ok := w.(ShardWarmer); ok && !o.DryRun {
				if err := sw.WarmShards(ctx, ch, sub); err != nil {
					rep.Failures = append(rep.Failures, Failure{ch, sub, "repodata_shards.msgpack.zst", err.Error()})
				}
			}
			sort.Slice(files, func(i, j int) bool { return files[i].Filename < files[j].Filename })
			for _, f := range files {
				rep.Records++
				if f.Cached && o.Reset && f.SHA256 != "" {
					rep.Reverified++
					if err := v.VerifyBlob(f.SHA256); err != nil {
						rep.Dropped++
						f.Cached = false
					}
				}
				if f.Cached {
					rep.Present++
					continue
				}
				rep.ToFetch++
				rep.ToFetchBytes += max(f.Size, 0)
				todo = append(todo, job{ch, f})
			}
		}
	}
	if o.Progress != nil {
		o.Progress.Planned(len(todo), rep.ToFetchBytes)
	}
	if o.DryRun || len(todo) == 0 {
		return rep, ctx.Err()
	}
	// Bounded parallelism: at most Jobs fetches upstream at once, whatever the
	// channel count; each fetch retries with backoff inside the upstream client.
	var (
		mu      sync.Mutex
		next    atomic.Int64
		wg      sync.WaitGroup
		fetched atomic.Int64
		present atomic.Int64
		bytes   atomic.Int64
	)
	for range o.Jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(todo) || ctx.Err() != nil {
					return
				}
				j := todo[i]
				got, err := w.Prefetch(ctx, j.channel, j.file.Subdir, j.file.Filename)
				switch {
				case err == nil && got:
					fetched.Add(1)
					bytes.Add(max(j.file.Size, 0))
				case err == nil:
					// The bytes were there (a blob committed just before a kill, or
					// held by another channel): only the index entry was written.
					present.Add(1)
				default:
					mu.Lock()
					rep.Failures = append(rep.Failures, Failure{j.channel, j.file.Subdir, j.file.Filename, reason(err)})
					mu.Unlock()
				}
				if o.Progress != nil {
					o.Progress.Done(j.file, got, err)
				}
			}
		}()
	}
	wg.Wait()
	rep.Fetched = int(fetched.Load())
	rep.Present += int(present.Load())
	rep.FetchedBytes = bytes.Load()
	sort.Slice(rep.Failures, func(i, j int) bool {
		a, b := rep.Failures[i], rep.Failures[j]
		return a.Channel+a.Subdir+a.Filename < b.Channel+b.Subdir+b.Filename
	})
	return rep, ctx.Err()
}

func reason(err error) string {
	switch {
	case proxy.IsNotFound(err):
		return "not found upstream (404)"
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	return err.Error()
}
