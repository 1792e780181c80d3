package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/upstream"
)

// What the mirror operations (sync, clean, export) need from the request path:
// the same served records, the same fills and the same filter, without HTTP.

// ServedFile is one record a channel serves.
type ServedFile struct {
	Subdir   string
	Filename string
	SHA256   string // "" for an old record with md5 only
	Size     int64
	Cached   bool
}

// commonSubdirs are tried for a channel with no platforms whose upstream has no
// channeldata.json to list its subdirs (and is not a file:// tree to look in).
var commonSubdirs = []string{"noarch", "linux-64", "linux-aarch64", "linux-ppc64le", "linux-s390x",
	"osx-64", "osx-arm64", "win-64", "win-32", "win-arm64"}

// CommonSubdirs returns (a copy of) commonSubdirs: the guess to show when a
// channel's own list (SyncSubdirs) cannot be had.
func CommonSubdirs() []string { return slices.Clone(commonSubdirs) }

// SyncSubdirs returns the subdirs a pre-warm of channel covers: its platforms and
// noarch; with no platforms, those its upstreams list and imports brought
// (channelSubdirs).
func (s *Server) SyncSubdirs(ctx context.Context, channel string) ([]string, error) {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return nil, err
	}
	return s.channelSubdirs(ctx, ch, false)
}

func (s *Server) condaChannel(name string) (*channel, error) {
	ch := s.channels[name]
	if ch == nil || ch.cfg.Kind != config.KindConda {
		return nil, fmt.Errorf("%w %q", ErrUnknownChannel, name)
	}
	return ch, nil
}

// ServedFiles lists what channel/subdir serves; with refresh, upstream is asked
// first (conditionally). A subdir no upstream has lists nothing.
func (s *Server) ServedFiles(ctx context.Context, channel, subdir string, refresh bool) ([]ServedFile, error) {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return nil, err
	}
	if !ch.serves(subdir) {
		return nil, nil
	}
	sd := ch.subdir(subdir)
	var sv *served
	if refresh {
		v, err, _ := s.loads.Do(stateKey("load", ch.cfg.Name, subdir), func() (any, error) {
			return s.guardedBuild(ctx, sd, true)
		})
		if err != nil && sd.cur.Load() == nil {
			return nil, err
		}
		if err != nil {
			sv = sd.cur.Load() // upstream failed: the last good answer
		} else {
			sv = v.(*served)
		}
	} else if sv, err = s.load(ctx, sd); err != nil {
		return nil, err
	}
	if sv.notFound {
		return nil, nil
	}
	out := make([]ServedFile, 0, sv.packages.size())
	sv.packages.each(func(fn string, ref pkgRef) bool {
		f := ServedFile{Subdir: subdir, Filename: fn, SHA256: ref.shaHex(), Size: ref.size}
		// Cached means indexed under this channel path, not only that the bytes
		// exist (another channel may hold them): sync then records the path, and
		// export and clean, which read the index, see it.
		if e, ok := s.pkgEntry(ch, subdir, fn); ok {
			f.Cached = s.store.Has(e.SHA256) && (f.SHA256 == "" || e.SHA256 == f.SHA256)
		}
		out = append(out, f)
		return true
	})
	return out, nil
}

// ErrNotServed: the file is not a record the channel serves now.
var ErrNotServed = errors.New("not served by the channel")

// Prefetch makes sure channel/subdir/filename is cached and verified, through the
// same one-per-file fill as a client's request. fetched says whether bytes came
// from upstream. An upstream 404 is upstream.ErrNotFound.
func (s *Server) Prefetch(ctx context.Context, channel, subdir, filename string) (fetched bool, err error) {
	// Sync runs it on worker goroutines of its own: a panic must fail this file,
	// not the process.
	err = s.guard("sync", func() (err error) {
		fetched, err = s.prefetch(ctx, channel, subdir, filename)
		return err
	})
	return fetched, err
}

func (s *Server) prefetch(ctx context.Context, channel, subdir, filename string) (fetched bool, err error) {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return false, err
	}
	sd := ch.subdir(subdir)
	sv, done, err := s.use(ctx, sd)
	if err != nil {
		return false, err
	}
	defer done()
	ref, ok := sv.packages.get(filename)
	if !ok {
		return false, fmt.Errorf("%s/%s/%s: %w", channel, subdir, filename, ErrNotServed)
	}
	if sha := ref.shaHex(); sha != "" && s.store.Has(sha) {
		if _, ok := s.pkgEntry(ch, subdir, filename); ok {
			return false, nil
		}
	}
	if !ref.hasSHA && !ref.hasMD5 {
		return false, fmt.Errorf("%s/%s/%s: the record has no checksum to verify against", channel, subdir, filename)
	}
	f := s.startPackageFill(ctx, ch, subdir, filename, sv, ref)
	if _, err = f.Wait(ctx); err != nil {
		return false, fillError(err)
	}
	return f.Streamed(), nil
}

// CachedFile is a package in the cache under a channel path.
type CachedFile struct {
	Subdir, Filename string
	SHA256           string
	Size             int64
	Rule             string // the rule that hides it now ("" when served)
}

// CachedHidden lists channel's cached packages that its filter hides now: what
// `condaproxy clean` removes after a filter change.
func (s *Server) CachedHidden(ctx context.Context, channel string) ([]CachedFile, error) {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return nil, err
	}
	var out []CachedFile
	views := map[string]*served{}
	prefix := "p/" + ch.cfg.Name + "|"
	err = s.store.Meta.Scan(prefix, func(key string, val []byte) error {
		subdir, fn, ok := strings.Cut(strings.TrimPrefix(key, prefix), "|")
		if !ok {
			return nil
		}
		var e pkgEntry
		if err := json.Unmarshal(val, &e); err != nil {
			return nil
		}
		f := CachedFile{Subdir: subdir, Filename: fn, SHA256: e.SHA256, Size: e.Size}
		if !ch.serves(subdir) {
			f.Rule = "platforms"
			out = append(out, f)
			return nil
		}
		sv, seen := views[subdir]
		if !seen {
			sv, _ = s.load(ctx, ch.subdir(subdir)) // nil when no repodata can be had
			views[subdir] = sv
		}
		if sv != nil {
			if sv.packages.has(fn) {
				return nil
			}
			if rule, ok := sv.hidden.get(fn); ok {
				f.Rule = rule
				out = append(out, f)
				return nil
			}
		}
		var d policy.Decider
		if sv != nil {
			d = sv.decider
		}
		if rule := s.decideCached(route{channel: ch, subdir: subdir, file: fn}, e, d); rule != "" {
			f.Rule = rule
			out = append(out, f)
		}
		return nil
	})
	return out, err
}

// Uncache removes channel/subdir/filename from the cache: its index entry, and its
// blob unless another channel path holds the same bytes.
func (s *Server) Uncache(channel, subdir, filename string) error {
	return s.UncacheFiles(channel, []CachedFile{{Subdir: subdir, Filename: filename}})
}

// UncacheFiles removes several files of channel: their index entries, then the
// blobs no remaining entry holds. The package index is scanned once for all of
// them, not once a file (clean removes thousands).
func (s *Server) UncacheFiles(channel string, files []CachedFile) error {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return err
	}
	dropped := map[string]bool{}
	for _, f := range files {
		key := stateKey("p", ch.cfg.Name, f.Subdir, f.Filename)
		s.indexed.Delete(key)
		var e pkgEntry
		ok, err := s.store.Meta.Get(key, &e)
		if err != nil {
			return err
		}
		if f.SHA256 != "" {
			// The blob the caller names (a purge: the served record's), whether
			// or not this path indexed it.
			dropped[f.SHA256] = true
		}
		if !ok {
			continue
		}
		if err := s.store.Meta.Delete(key); err != nil {
			return err
		}
		dropped[e.SHA256] = true
	}
	if len(dropped) == 0 {
		return nil
	}
	// From the look for other holders to the purge, no index entry is written
	// (refs.go): one written in between would name a purged blob.
	s.lockRefs()
	defer s.unlockRefs()
	err = s.store.Meta.Scan("p/", func(_ string, val []byte) error {
		var other pkgEntry
		if json.Unmarshal(val, &other) == nil {
			delete(dropped, other.SHA256) // still held under another path
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.purged.add(dropped, s.now())
	for sha := range dropped {
		// Everywhere: the shared object store too, or a replica would pull it
		// back.
		// s.base ends at Shutdown: a purge of thousands of blobs from an
		// object store does not hold a stopping server.
		if err := s.store.PurgeBlob(s.base, sha); err != nil {
			return err
		}
	}
	return nil
}

// IsNotFound reports whether err is an upstream 404 (a record whose file upstream
// lacks): sync reports it and goes on.
func IsNotFound(err error) bool {
	return errors.Is(err, upstream.ErrNotFound) || errors.Is(err, errNotFound)
}
