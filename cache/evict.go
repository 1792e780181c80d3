package cache

import (
	"errors"
	"io/fs"
	"os"
)

// Eviction takes blobs out of the table under Store.mu, at once: from then on
// they are neither served nor counted. Their keys and files are deleted after,
// by the deleter goroutine, so that a commit into a full cache pays for neither
// a synced metadata write nor a file removal per blob it pushes out.
//
// The deleter's writes are not synced, and the order of a key's delete and its
// file's removal does not matter after a crash: the next Open drops a key whose
// file is gone, and adopts a file that has no key (its bytes were verified
// before it was renamed into blobs/; it is then one more blob, evicted again if
// the cap wants it). A delete that never ran is a blob still there.
//
// What must not happen is a delete taking a newer blob of the same sha256 with
// it: a fill of bytes evicted a moment ago renames a fresh file to the same
// path. Store.busy says, per sha256, what is under way for its file and key.
// Whoever changes them outside the lock holds a claim (fileClaimed), and every
// other party waits for it or leaves that sha256 alone: a commit takes the
// claim before its rename (claimFile: a delete still queued is cancelled, one
// in progress waited for) and lets it go as the blob enters the table (added),
// so eviction, a purge or the reconciliation never meet a file half renamed.

// fileState is what is under way for the file and key of a sha256
// (Store.busy); absent, nothing is.
type fileState uint8

const (
	// deleteQueued: evicted; the deleter has yet to delete its key and file.
	// The blob is out of the table.
	deleteQueued fileState = iota + 1
	// fileClaimed: its key or file is being changed outside the lock: a
	// commit or an import renaming a file into place, the deleter or RemoveBlob
	// deleting them, the reconciliation adopting the file or dropping the key.
	// The blob may be in the table (a commit of bytes already there), and is
	// not evicted meanwhile.
	fileClaimed
)

// deleteBatch bounds the blobs one pass of the deleter claims: a commit that
// waits for a delete in progress waits for one batch at most.
const deleteBatch = 256

// pickVictimsLocked chooses the least recently used blobs that are not open (nor
// pinned) until the store is back under its cap, takes them out of the table
// and queues their deletion; the caller kicks the deleter when it returns more
// than 0. newest, the blob being committed, never goes in its own commit: its
// fill pins it next (Pin) for the clients waiting to be served it, and a blob
// larger than the whole cap would otherwise be gone before it was ever served.
// The cap is passed by open and pinned blobs at most, and enforced again as
// they are let go (at the next commit, or the flusher's next tick), and at Open
// and at the end of the reconciliation that follows it (when it adopted
// files). A blob whose file a commit is renaming over right now (claimed) is
// passed over too.
//
// It walks from the least recently used end and stops as soon as the store is
// under its cap: its cost is the victims plus the open, pinned or claimed
// blobs older than them, never the size of the table.
func (s *Store) pickVictimsLocked(newest string) int {
	if s.opts.MaxSize <= 0 || s.total <= s.opts.MaxSize {
		return 0
	}
	n := 0
	for e := s.lru.front(); e != nil && s.total > s.opts.MaxSize; {
		next := s.lru.after(e)
		// A sha an import batch has placed but not yet committed is that
		// batch's file too: deleting it would leave the batch's key naming
		// nothing.
		if e.inUse == 0 && e.sha != newest && s.busy[e.sha] == 0 && s.placing[e.sha] == 0 {
			s.dropLocked(e)
			s.busy[e.sha] = deleteQueued
			s.deleteQueue = append(s.deleteQueue, e.sha)
			n++
		}
		e = next
	}
	return n
}

// dropLocked takes e out of the table: not served, not counted from now on.
func (s *Store) dropLocked(e *blobEntry) {
	s.lru.remove(e)
	delete(s.blobs, e.sha)
	delete(s.dirty, e.sha)
	s.total -= e.Size
}

// insertLocked puts e in the table, at the most recently used end: the
// reverse of dropLocked.
func (s *Store) insertLocked(e *blobEntry) {
	s.blobs[e.sha] = e
	s.lru.pushBack(e)
	s.total += e.Size
}

// enforceCap evicts what is over the cap and wakes the deleter for it.
func (s *Store) enforceCap() {
	s.mu.Lock()
	victims := s.pickVictimsLocked("")
	s.mu.Unlock()
	if victims > 0 {
		s.kickDeleter()
	}
}

// deleteRecords deletes the table records of shas (unsynced: a record left by
// a crash names a file the start-up check finds gone).
func (s *Store) deleteRecords(shas []string) error {
	keys := make([]string, len(shas))
	for i, sha := range shas {
		keys[i] = "b/" + sha
	}
	return s.Meta.writeNoSync(nil, keys)
}

// kickDeleter wakes the deleter; it never blocks (a kick pending is enough).
func (s *Store) kickDeleter() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// deleter deletes the keys and files of evicted blobs; at Close (quit) it
// deletes what is still queued, then returns.
func (s *Store) deleter() {
	defer close(s.deleterDone)
	for {
		select {
		case <-s.kick:
			s.deleteQueued()
		case <-s.quit:
			s.deleteQueued()
			return
		}
	}
}

// deleteQueued works through the queue until it is empty. A sha256 whose
// delete a commit cancelled (claimFile), or RemoveBlob took over, is no longer
// deleteQueued and is passed over.
func (s *Store) deleteQueued() {
	for {
		s.mu.Lock()
		var shas []string
		taken := 0
		for taken < len(s.deleteQueue) && len(shas) < deleteBatch {
			sha := s.deleteQueue[taken]
			taken++
			if s.busy[sha] == deleteQueued {
				s.busy[sha] = fileClaimed
				shas = append(shas, sha)
			}
		}
		s.deleteQueue = s.deleteQueue[taken:]
		if len(s.deleteQueue) == 0 {
			s.deleteQueue = nil // let a long queue's array go
		}
		s.mu.Unlock()
		if taken == 0 {
			return
		}
		if len(shas) == 0 {
			continue
		}
		if s.opts.deleteGate != nil {
			<-s.opts.deleteGate
		}
		if err := s.deleteRecords(shas); err != nil {
			// The next Open drops the keys whose files are gone.
			s.log.Error("evict blobs: delete records", "count", len(shas), "err", err)
		}
		for _, sha := range shas {
			if s.hot != nil {
				s.hot.Del(sha)
			}
			if err := os.Remove(s.blobPath(sha)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Error("evict blob", "sha256", sha, "err", err)
			} else {
				s.log.Debug("evicted blob", "sha256", sha)
			}
		}
		s.unclaim(shas...)
	}
}

// claimFile takes the claim on the file of sha for a verified file about to
// be renamed there: a change in progress is waited for, so that it never takes
// the new file or its key with it, and a delete of an evicted blob of the same
// sha256 still queued is cancelled (the file there holds the same verified
// bytes and its key is still there; the caller puts the blob back in the
// table). The caller ends the claim with added or unclaim.
func (s *Store) claimFile(sha string) {
	s.mu.Lock()
	s.claimLocked(sha)
	s.mu.Unlock()
}

// claimLocked waits until no one else holds the claim on sha's file, and takes
// it; a queued delete is taken over. The caller ends it with unclaim.
func (s *Store) claimLocked(sha string) {
	for s.busy[sha] == fileClaimed {
		s.settled.Wait()
	}
	s.busy[sha] = fileClaimed
}

// unclaimLocked ends claims.
func (s *Store) unclaimLocked(shas ...string) {
	for _, sha := range shas {
		delete(s.busy, sha)
	}
	s.settled.Broadcast()
}

func (s *Store) unclaim(shas ...string) {
	s.mu.Lock()
	s.unclaimLocked(shas...)
	s.mu.Unlock()
}

// removeStray removes the file of sha unless a blob of that sha256 is in the
// table or its file is busy (then it is that blob's, or being dealt with): for
// a file placed for a batch that was never committed.
func (s *Store) removeStray(sha string) {
	s.mu.Lock()
	// Nor when another import batch not yet committed placed the same file:
	// it is that batch's to commit.
	if _, ok := s.blobs[sha]; ok || s.busy[sha] != 0 || s.placing[sha] > 0 {
		s.mu.Unlock()
		return
	}
	s.busy[sha] = fileClaimed
	s.mu.Unlock()
	os.Remove(s.blobPath(sha))
	s.unclaim(sha)
}
