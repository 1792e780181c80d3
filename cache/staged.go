package cache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/condaproxy/condaproxy/internal/fsdir"
)

// Staged blobs are what an import verified and holds back until it commits as a
// whole: every package of a tar is checked before any becomes visible, and then
// all of them become visible in one metadata batch.

// Staged is a verified blob waiting in tmp/ with its file closed: a tar holds
// thousands of packages, and one open file each would run the process out of
// descriptors. tmp/ is emptied at Open, so a process that dies with blobs staged
// leaves nothing behind.
type Staged struct {
	s    *Store
	path string
	sha  string
	md5  string
	size int64
	gone bool // placed into blobs/ or discarded
}

// Seal verifies the bytes written against want, makes them durable and closes
// the file, which stays in tmp/ as a Staged blob. On any error the temp file is
// gone.
func (t *Temp) Seal(want Digest) (*Staged, error) {
	if t.done {
		return nil, errors.New("cache: temp blob already finished")
	}
	if !shaPattern.MatchString(strings.ToLower(want.SHA256)) || want.Size < 0 {
		// A staged blob is one its source vouched for: a digest to check is not
		// optional here (an entry without one would turn the check off).
		t.Abort()
		return nil, fmt.Errorf("cache: a staged blob needs the sha256 and size it must have (got %q, %d)", want.SHA256, want.Size)
	}
	sha, err := t.Verify(want)
	var md5 string
	if err == nil {
		md5, err = t.md5Hex()
	}
	if err == nil {
		// fsync while the file is still open: the index entries that will name
		// this blob are committed with fsync, and must never outlive its bytes
		// in a power cut.
		err = t.f.Sync()
	}
	if err == nil {
		err = t.f.Close()
	}
	if err != nil {
		t.Abort()
		return nil, err
	}
	t.done = true
	return &Staged{s: t.s, path: t.f.Name(), sha: sha, md5: md5, size: t.n}, nil
}

// SHA256 is the staged bytes' sha256, lower-case hex.
func (st *Staged) SHA256() string { return st.sha }

// MD5 is the staged bytes' md5, lower-case hex.
func (st *Staged) MD5() string { return st.md5 }

// Size is the number of staged bytes.
func (st *Staged) Size() int64 { return st.size }

// ReadAll returns the staged bytes: for a document staged to be checked before
// it is used (an import's repodata), whose size the caller has bounded.
func (st *Staged) ReadAll() ([]byte, error) {
	if st.gone {
		return nil, errors.New("cache: staged blob already placed or discarded")
	}
	f, err := os.Open(st.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data := make([]byte, st.size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("read staged %s: %w", st.sha, err)
	}
	return data, nil
}

// Discard removes the staged file; it does nothing once the blob is placed.
func (st *Staged) Discard() {
	if st.gone {
		return
	}
	st.gone = true
	os.Remove(st.path)
}

// Place renames staged blobs into blobs/ for the batch b, whose commit makes them
// part of the store: their records join b, and once b commits they join the
// blob table, counted against max_size and evicted like any other blob. Until
// then nothing refers to them, and the blobs already stored under the same
// sha256 are kept from eviction.
//
// If b is closed without being committed, the blobs Place added are removed
// again: the store is as it was. A crash before the commit leaves verified
// blobs that no index names; Open adopts them as it adopts a fill renamed just
// before a crash, so they count against max_size until evicted, and importing
// the same tar again uses them.
func (s *Store) Place(b *Batch, staged []*Staged) error {
	now := time.Now().UnixNano()
	fresh := map[string]int64{} // sha256 → size, of blobs not stored before
	var pinned []*blobEntry
	var pinnedSHA []string // pinned[i]'s sha256
	var renamed []string   // the fresh ones whose file is in place
	// placed ends what Place counted in s.placing (under s.mu).
	placed := func() {
		for sha := range fresh {
			if s.placing[sha]--; s.placing[sha] == 0 {
				delete(s.placing, sha)
			}
		}
	}
	s.mu.Lock()
	for _, st := range staged {
		if st.gone {
			placed()
			s.mu.Unlock()
			for _, e := range pinned {
				s.unpin(e)
			}
			return fmt.Errorf("cache: staged blob %s already placed or discarded", st.sha)
		}
		if _, dup := fresh[st.sha]; dup {
			continue
		}
		if e, ok := s.blobs[st.sha]; ok {
			e.inUse++
			pinned = append(pinned, e)
			pinnedSHA = append(pinnedSHA, st.sha)
			continue
		}
		fresh[st.sha] = st.size
		s.placing[st.sha]++
	}
	s.mu.Unlock()
	b.onAbort = append(b.onAbort, func() {
		s.mu.Lock()
		placed()
		s.mu.Unlock()
		for _, e := range pinned {
			s.unpin(e)
		}
		for _, sha := range renamed {
			// A fill of the same bytes may have committed since: then it is
			// that fill's blob, and stays.
			s.removeStray(sha)
		}
	})
	b.onCommit = append(b.onCommit, func() {
		s.mu.Lock()
		placed()
		for i, e := range pinned {
			e.inUse--
			// Just imported, so just used: not first in line for eviction
			// (the batch carries the same time, so a crash keeps it too).
			// Unless an operator's purge took it out of the table meanwhile.
			if s.blobs[pinnedSHA[i]] == e {
				e.ATime = now
				s.lru.moveToBack(e)
			}
		}
		for _, sha := range renamed {
			if e, ok := s.blobs[sha]; ok { // a concurrent fill got there first
				s.touchLocked(e, now)
				continue
			}
			s.insertLocked(&blobEntry{sha: sha, Size: fresh[sha], ATime: now})
		}
		victims := s.pickVictimsLocked("")
		s.mu.Unlock()
		if victims > 0 {
			s.kickDeleter()
		}
	})
	dirs := map[string]bool{}
	inPlace := map[string]bool{}
	for _, st := range staged {
		if st.gone {
			continue
		}
		if s.remote != nil {
			// Shared before it is local, as a fill's blob is.
			if err := s.uploadFile(st.path, st.size, st.sha); err != nil {
				return err
			}
		}
		dst := s.blobPath(st.sha)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		// Renamed over an existing blob too: the bytes are the same, just verified.
		s.claimFile(st.sha)
		err := os.Rename(st.path, dst)
		if err == nil {
			// The file is there now: the check after Open (reconcile) must
			// not drop an entry it had found without one.
			s.mu.Lock()
			if e, ok := s.blobs[st.sha]; ok {
				e.unseen = false
			}
			s.mu.Unlock()
		}
		s.unclaim(st.sha)
		if err != nil {
			return err
		}
		st.gone = true
		dirs[filepath.Dir(dst)] = true
		if _, ok := fresh[st.sha]; ok && !inPlace[st.sha] {
			inPlace[st.sha] = true
			renamed = append(renamed, st.sha)
		}
	}
	// The renames must be on disk before the batch that names them is.
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	for _, sha := range renamed {
		if err := b.Put("b/"+sha, &blobEntry{Size: fresh[sha], ATime: now}); err != nil {
			return err
		}
	}
	for i, sha := range pinnedSHA {
		if err := b.Put("b/"+sha, &blobEntry{Size: pinned[i].Size, ATime: now}); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) unpin(e *blobEntry) {
	s.mu.Lock()
	e.inUse--
	s.mu.Unlock()
}

// SyncFiles makes the named files written or renamed so far durable, for a
// caller about to commit metadata that names them.
func (s *Store) SyncFiles() error { return syncDir(filepath.Join(s.dir, "files")) }

// FileNames lists the named files whose name begins with prefix: for an owner
// that finds what a crash left between writing its files and recording them.
func (s *Store) FileNames(prefix string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "files"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && validFileName(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// syncDir makes the entries of dir durable (fsdir.Sync).
func syncDir(dir string) error { return fsdir.Sync(dir) }

// CheckFree refuses, before anything is written, an operation that needs n
// bytes more in the data directory than its file system has free (with room for
// the metadata it writes too): a full disk in the middle of a metadata commit
// would stop the process instead of failing the operation.
func (s *Store) CheckFree(n int64) error {
	free, err := freeBytes(s.dir)
	if err != nil {
		return nil // cannot tell: let the writes say
	}
	const margin = 16 << 20
	if n+margin > free {
		return fmt.Errorf("the data directory has %d bytes free, %d are needed: %w", free, n+margin, ErrNoSpace)
	}
	return nil
}

// ErrNoSpace is a write refused for lack of room in the data directory.
var ErrNoSpace = errors.New("not enough free space")
