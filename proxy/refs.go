package proxy

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// A blob is held by the package index entries that name it (p/<channel>|<subdir>|
// <file>), and purged by UncacheFiles (clean, the admin purge) once no entry
// names it. A fill, a hit under a new path or an import writes its entry after
// the blob is in place; a purge of the same bytes for another channel in between
// would leave an entry naming a purged blob, served to nobody, counted as
// cached, fetched by no sync. Two rules close that:
//
//   - UncacheFiles holds refs exclusively from its look for other holders to the
//     purge, and every entry is written holding refs shared (putIndex,
//     CommitImport), so no entry appears in between;
//   - an entry written after the purge, by a fill that committed before it,
//     finds its blob in purged, looks for it, and takes itself back when it is
//     gone: the next request fetches the package again.
//
// A clean holds refs for its whole look and purge (with an object store, one
// remote delete a blob); an import holds it shared for its whole commit. Neither
// may stall the request path: a fill or a hit that finds refs taken writes its
// entry in the background, once refs is free, and answers at once (the entry is
// bookkeeping for clean, sync and export, not what a client is served from).
//
// Across replicas a purge reaches the shared store too; a replica indexing the
// same bytes at that moment is not ordered by this lock.

// putIndex writes the index entry key for e.SHA256, unless a purge took that
// blob since the fill that brought it committed. With refs taken by a purge (or
// a purge waiting behind an import), the write is left to the background and
// putIndex returns nil at once.
func (s *Server) putIndex(key string, e pkgEntry) error {
	if s.refs.TryRLock() {
		defer s.refs.RUnlock()
		return s.writeIndex(key, e)
	}
	if !s.background(func() {
		s.refs.RLock()
		defer s.refs.RUnlock()
		if err := s.writeIndex(key, e); err != nil {
			s.log.Warn("cannot index a cached package", "key", key, "err", err)
		}
	}) {
		return errors.New("shutting down: the package was not indexed")
	}
	return nil
}

// writeIndex is putIndex's write, with refs held shared.
func (s *Server) writeIndex(key string, e pkgEntry) error {
	if err := s.store.Meta.Put(key, e); err != nil {
		return err
	}
	if s.purged.has(e.SHA256) && !s.store.Has(e.SHA256) {
		s.indexed.Delete(key)
		if err := s.store.Meta.Delete(key); err != nil {
			return err
		}
		return fmt.Errorf("blob %s was purged (clean or purge of another path) before it was indexed; not indexed, fetched again on the next request", e.SHA256)
	}
	return nil
}

// purgeLog remembers the blobs purged in the last purgeMemory, for putIndex.
type purgeLog struct {
	mu sync.Mutex
	at map[string]time.Time
}

// purgeMemory is how long a purge is remembered: far longer than a fill takes
// from its commit to its index entry (a few metadata writes).
const purgeMemory = 10 * time.Minute

// add remembers shas purged at now, and forgets purges past purgeMemory.
func (l *purgeLog) add(shas map[string]bool, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.at == nil {
		l.at = map[string]time.Time{}
	}
	for k, t := range l.at {
		if now.Sub(t) > purgeMemory {
			delete(l.at, k)
		}
	}
	for sha := range shas {
		l.at[sha] = now
	}
}

func (l *purgeLog) has(sha string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.at[sha]
	return ok
}
