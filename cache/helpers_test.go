package cache

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// quiet keeps expected warnings (adopted blobs, evictions) out of test output.
var quiet = slog.New(slog.DiscardHandler)

// openT opens dir with a silent logger and closes it when the test ends; Close is
// idempotent, so tests may also close it themselves to reopen the directory.
func openT(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet
	}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// content is n deterministic bytes; different seeds give different sha256s.
func content(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func digestOf(b []byte) Digest {
	s, m := sha256.Sum256(b), md5.Sum(b)
	return Digest{Size: int64(len(b)), SHA256: hex.EncodeToString(s[:]), MD5: hex.EncodeToString(m[:])}
}

func shaOf(b []byte) string { return digestOf(b).SHA256 }

// commit stores b as a blob through the public Temp → Commit path.
func commit(t testing.TB, s *Store, b []byte) string {
	t.Helper()
	tmp, err := s.NewTemp()
	if err != nil {
		t.Fatalf("NewTemp: %v", err)
	}
	if _, err := tmp.Write(b); err != nil {
		t.Fatalf("Write: %v", err)
	}
	sha, err := tmp.Commit(digestOf(b))
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return sha
}

// readBlob returns the blob's bytes, or the OpenBlob error.
func readBlob(s *Store, sha string) ([]byte, error) {
	b, err := s.OpenBlob(sha)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return io.ReadAll(b)
}

// blobFiles lists the files under <dir>/blobs as name → size: what is visible.
func blobFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	err := filepath.WalkDir(filepath.Join(dir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		got[d.Name()] = info.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// tmpNames lists <dir>/tmp.
func tmpNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func blobFilePath(dir, sha string) string { return filepath.Join(dir, "blobs", sha[:2], sha) }

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// setATime is the test hook for LRU order: it gives a blob an access time of the
// test's choosing, and the place in the eviction order that time has (as load
// would give it at the next start), so that the order does not depend on how
// fast the test runs. It marks the entry dirty, as OpenBlob does, so Close
// persists it like a real access.
func setATime(t *testing.T, s *Store, sha string, atime int64) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.blobs[sha]
	if !ok {
		t.Fatalf("setATime: %s not stored", sha[:8])
	}
	e.ATime = atime
	s.dirty[sha] = true
	s.lru.remove(e)
	at := s.lru.back()
	for at != nil && at.ATime > atime {
		at = s.lru.before(at)
	}
	if at == nil {
		at = &s.lru.root
	}
	s.lru.insertAfter(e, at)
}

// lruOrder is the table's eviction order, least recently used first.
func lruOrder(s *Store) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var order []string
	for e := s.lru.front(); e != nil; e = s.lru.after(e) {
		order = append(order, e.sha)
	}
	return order
}

// waitDeletes returns once no evicted blob's delete is queued or under way, nor
// any other change claimed: the files and keys then agree with the table.
func waitDeletes(t testing.TB, s *Store) {
	t.Helper()
	s.kickDeleter()
	done := make(chan struct{})
	go func() {
		s.mu.Lock()
		for len(s.busy) > 0 {
			s.settled.Wait()
		}
		s.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("evicted blobs' deletes still pending after 30s")
	}
}

// settle waits for the reconciliation after Open (adoptions, drops, the cap
// enforced again) and for the deletes it and earlier evictions queued.
func settle(t testing.TB, s *Store) {
	t.Helper()
	select {
	case <-s.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("reconciliation after Open not done after 30s")
	}
	waitDeletes(t, s)
}
