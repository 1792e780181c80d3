package proxy

import (
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
// may stall the request path: a fill or a hit that finds refs taken leaves its
// entry in deferred and answers at once (the entry is bookkeeping for clean,
// sync and export, not what a client is served from). The writer that holds
// refs writes the deferred entries before it lets go (unlockRefs), so they are
// ordered like any other write: a later entry for a key replaces an earlier
// one in deferred, and one written directly comes after every deferred one
// (see putIndex). No goroutine waits on refs, so Shutdown waits for none.
//
// Across replicas a purge reaches the shared store too; a replica indexing the
// same bytes at that moment is not ordered by this lock.

// deferredIndex are index entries left by writers that found refs taken, by
// key, the latest only.
type deferredIndex struct {
	mu sync.Mutex
	m  map[string]pkgEntry
}

// putIndex writes the index entry key for e.SHA256, unless a purge took that
// blob since the fill that brought it committed. With refs taken (a purge, or
// a purge waiting behind an import), the entry is left for the holder to write
// as it lets go, and putIndex reports deferred.
//
// The try happens under deferred.mu, which unlockRefs holds from its last look
// at the entries to the unlock: an entry left after that look finds refs still
// taken only if another writer holds or waits for it, and that one writes it.
// A try that succeeds finds deferred empty (the last holder wrote it all), so
// no older entry for key can land after this one.
func (s *Server) putIndex(key string, e pkgEntry) (deferred bool, err error) {
	s.deferred.mu.Lock()
	if !s.refs.TryRLock() {
		if s.deferred.m == nil {
			s.deferred.m = map[string]pkgEntry{}
		}
		s.deferred.m[key] = e
		s.deferred.mu.Unlock()
		return true, nil
	}
	s.deferred.mu.Unlock()
	defer s.refs.RUnlock()
	return false, s.writeIndex(key, e)
}

// lockRefs takes refs exclusively; unlockRefs writes the entries left while it
// was held, then lets go.
func (s *Server) lockRefs() { s.refs.Lock() }

func (s *Server) unlockRefs() {
	s.deferred.mu.Lock()
	defer s.deferred.mu.Unlock()
	for key, e := range s.deferred.m {
		if err := s.writeIndex(key, e); err != nil {
			s.log.Warn("cannot index a cached package", "key", key, "err", err)
		}
	}
	s.deferred.m = nil
	s.refs.Unlock()
}

// writeIndex is putIndex's write, with refs held (shared, or by unlockRefs).
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
