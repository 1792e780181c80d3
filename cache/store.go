package cache

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/condaproxy/condaproxy/blobstore"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// FormatVersion is the data directory layout this binary writes. A directory with a
// higher number was written by a newer condaproxy and is refused.
const FormatVersion = 1

const formatFile = "FORMAT"

// Errors.
var (
	ErrNotFound = errors.New("not in cache")
	// ErrNewerFormat: the data directory was written by a newer condaproxy.
	ErrNewerFormat = errors.New("data directory was written by a newer condaproxy")
)

// MismatchError is a fill whose bytes are not what the repodata promised.
type MismatchError struct {
	What      string // "size", "sha256" or "md5"
	Want, Got string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s mismatch: want %s, got %s", e.What, e.Want, e.Got)
}

// Options configure a Store. Zero values take the documented defaults.
type Options struct {
	// MaxSize caps the package blobs on disk; 0 means no cap.
	MaxSize int64
	// Memory is the hot cache's size; 0 disables it.
	Memory int64
	// HotMaxItem is the largest package blob kept in memory; default 64 KiB.
	// Larger ones go out from the page cache with sendfile, which is what nginx
	// does and costs less than copying from memory.
	HotMaxItem int64
	// HotMaxFile is the largest named file (repodata) kept in memory; default 8 MiB.
	HotMaxFile int64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// FlushEvery is how often access times reach disk; default 30s.
	FlushEvery time.Duration
	// Remote, if set, is the object store several replicas share (remote.go):
	// blobs are put there once verified, and pulled from there on a local miss.
	Remote blobstore.Store

	// Test hooks, nil outside this package's tests, for interleavings that
	// timing alone would not make: the deleter takes a receive on deleteGate
	// after claiming each batch and before deleting it, and reconcile one on
	// reconcileGate before it starts.
	deleteGate, reconcileGate chan struct{}
}

// Store is the on-disk cache of one data directory.
type Store struct {
	dir  string
	held string // key in openDirs
	Meta *Meta
	hot  *ristretto.Cache[string, []byte]
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	blobs map[string]*blobEntry
	lru   lruList // the entries of blobs, least recently used first
	total int64
	dirty map[string]bool
	// busy says what is under way for the files of blobs out of the table
	// (evict.go); settled is broadcast whenever one of those ends.
	busy        map[string]fileState
	settled     *sync.Cond // on mu
	deleteQueue []string   // evicted, for the deleter; stale ones are passed over
	// placing counts, per sha256, the uncommitted batches that placed a new
	// blob file (Place): reconcile leaves those files to their batch.
	placing map[string]int

	stop  chan struct{} // closed by Close
	done  chan struct{} // the flusher returned
	ready chan struct{} // reconcile returned (Ready)
	// The deleter: kick wakes it, quit (closed by Close once nothing else
	// evicts) makes it delete what is queued and return, closing deleterDone.
	kick        chan struct{}
	quit        chan struct{}
	deleterDone chan struct{}

	remote *remoteTier // nil: blobs on local disk only
}

// blobEntry is a blob in the table. Its exported fields are its record in the
// metadata, under "b/<sha256>" (record, decodeBlobRecord).
//
// A million of them are made at Open: the fields are ordered so that it packs
// into 56 bytes.
type blobEntry struct {
	Size  int64 `json:"size"`
	ATime int64 `json:"atime"` // unix nanoseconds of the last open
	inUse int32 // open handles and pins: never evicted while > 0
	// unseen: read from the metadata at Open, and its file not yet seen by
	// reconcile (which drops the entry if the file is not there).
	unseen bool

	sha        string     // its key in Store.blobs
	prev, next *blobEntry // its place in Store.lru
}

// openDirs are the data directories open in this process, by resolved path. Pebble's
// LOCK is an fcntl lock, which never conflicts within one process: a second Open of
// the same directory here would get a non-ErrLocked error, or none at all when the
// path is spelled differently (and would then empty the first Store's tmp/).
var openDirs = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

func holdDir(dir string) (string, error) {
	key, err := filepath.Abs(dir)
	if err == nil {
		key, err = filepath.EvalSymlinks(key)
	}
	if err != nil {
		return "", fmt.Errorf("data directory: %w", err)
	}
	openDirs.Lock()
	defer openDirs.Unlock()
	if openDirs.m[key] {
		return "", fmt.Errorf("%w (%s is already open in this process)", ErrLocked, dir)
	}
	openDirs.m[key] = true
	return key, nil
}

func releaseDir(key string) {
	openDirs.Lock()
	delete(openDirs.m, key)
	openDirs.Unlock()
}

// Open opens (creating if needed) the data directory dir. It returns once the
// blob table is read; the files on disk are squared with it in the background
// (see load.go; Ready says when that is done).
func Open(dir string, opts Options) (_ *Store, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HotMaxItem == 0 {
		opts.HotMaxItem = 64 << 10
	}
	if opts.HotMaxFile == 0 {
		opts.HotMaxFile = 8 << 20
	}
	if opts.FlushEvery == 0 {
		opts.FlushEvery = 30 * time.Second
	}
	for _, sub := range []string{"", "blobs", "tmp", "files"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
	}
	// Every fan-out directory exists, durably, before any blob is renamed into
	// one: a directory made at a commit and lost in a power cut would take the
	// blobs the committed metadata names with it.
	for i := 0; i < 256; i++ {
		if err := os.MkdirAll(filepath.Join(dir, "blobs", fmt.Sprintf("%02x", i)), 0o755); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
	}
	if err := syncDir(filepath.Join(dir, "blobs")); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	held, err := holdDir(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			releaseDir(held)
		}
	}()
	if err := checkFormat(dir, opts.Logger); err != nil {
		return nil, err
	}
	meta, err := openMeta(filepath.Join(dir, "meta"), opts.Logger)
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir: dir, held: held, Meta: meta, opts: opts, log: opts.Logger,
		blobs: map[string]*blobEntry{}, dirty: map[string]bool{}, busy: map[string]fileState{},
		placing: map[string]int{},
		stop:    make(chan struct{}), done: make(chan struct{}), ready: make(chan struct{}),
		kick: make(chan struct{}, 1), quit: make(chan struct{}), deleterDone: make(chan struct{}),
	}
	s.settled = sync.NewCond(&s.mu)
	s.lru.init()
	if opts.Remote != nil {
		s.remote = &remoteTier{store: opts.Remote}
	}
	// Whatever is in tmp/ is an unfinished fill from a process that died: never valid.
	if err := clearDir(filepath.Join(dir, "tmp")); err != nil {
		meta.close()
		return nil, err
	}
	if opts.Memory > 0 {
		s.hot, err = ristretto.NewCache(&ristretto.Config[string, []byte]{
			NumCounters: max(opts.Memory/(8<<10)*10, 1000),
			MaxCost:     opts.Memory,
			BufferItems: 64,
		})
		if err != nil {
			meta.close()
			return nil, err
		}
	}
	loaded, err := s.load()
	if err != nil {
		if s.hot != nil {
			s.hot.Close()
		}
		meta.close()
		return nil, err
	}
	go s.deleter()
	go s.flusher()
	go s.reconcile(loaded)
	return s, nil
}

func checkFormat(dir string, log *slog.Logger) error {
	path := filepath.Join(dir, formatFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		entries, _ := os.ReadDir(filepath.Join(dir, "blobs"))
		if _, statErr := os.Stat(filepath.Join(dir, "meta")); statErr == nil || len(entries) > 0 {
			// Data from before the format file existed is format 1's layout.
			log.Info("data directory has no format file; marking it", "dir", dir, "format", FormatVersion)
		}
		return os.WriteFile(path, []byte(strconv.Itoa(FormatVersion)+"\n"), 0o644)
	}
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("data directory %s: unreadable %s file %q", dir, formatFile, b)
	}
	if v > FormatVersion {
		return fmt.Errorf("%w: %s is format %d, this binary reads up to %d; run the newer condaproxy or use another data directory",
			ErrNewerFormat, dir, v, FormatVersion)
	}
	// v < FormatVersion would migrate here; format 1 is the first.
	return nil
}

func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) blobPath(sha string) string {
	return filepath.Join(s.dir, "blobs", sha[:2], sha)
}

var shaPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Blob is an open, verified blob. Close it when done: until then it is never evicted.
type Blob struct {
	io.ReadSeeker
	Size int64
	// Source is "memory" or "disk", for metrics.
	Source  string
	file    *os.File
	release func()
}

// Close releases the blob.
func (b *Blob) Close() error {
	if b.release != nil {
		b.release()
		b.release = nil
	}
	if b.file != nil {
		return b.file.Close()
	}
	return nil
}

// Has reports whether the blob sha256 is stored.
func (s *Store) Has(sha string) bool {
	s.mu.Lock()
	e, ok := s.blobs[sha]
	unseen := ok && e.unseen
	s.mu.Unlock()
	if !unseen {
		return ok
	}
	// Read from the table at Open and not yet checked against the files (the
	// check runs in the background): look, or a sync right after a crash that
	// took the file would skip it, and an export would list it.
	_, err := os.Stat(s.blobPath(sha))
	return err == nil
}

// Pin keeps the blob sha from eviction until unpin is called (once); ok is
// false when it is not here. A fill pins what it committed until its waiters
// have opened it.
func (s *Store) Pin(sha string) (unpin func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.blobs[sha]
	if !ok {
		return nil, false
	}
	e.inUse++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			e.inUse--
			s.mu.Unlock()
		})
	}, true
}

// OpenBlob opens the blob with that sha256, from memory when it is hot.
func (s *Store) OpenBlob(sha string) (*Blob, error) {
	s.mu.Lock()
	e, ok := s.blobs[sha]
	if !ok {
		s.mu.Unlock()
		return nil, ErrNotFound
	}
	e.inUse++
	s.touchLocked(e, time.Now().UnixNano())
	size := e.Size
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		e.inUse--
		s.mu.Unlock()
	}
	if b, ok := s.hotGet(sha); ok {
		return &Blob{ReadSeeker: bytes.NewReader(b), Size: size, Source: "memory", release: release}, nil
	}
	b, err := s.openFile(s.blobPath(sha), sha, size, s.opts.HotMaxItem)
	if err != nil {
		release()
		if errors.Is(err, fs.ErrNotExist) {
			// Removed behind our back (an operator cleaning the disk): forget it.
			s.forget(sha, e)
			return nil, ErrNotFound
		}
		return nil, err
	}
	b.release = release
	return b, nil
}

// openFile opens path and, when it is at most hotMax bytes, keeps them hot for
// next time. Hot keys are a blob's sha256 or a named file's name: names never look
// like a bare sha256 (they carry a prefix and a '-'), so the two cannot collide.
func (s *Store) openFile(path, hotKey string, size, hotMax int64) (*Blob, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if s.hot != nil && size <= hotMax {
		data := make([]byte, size)
		_, err := io.ReadFull(f, data)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		s.hot.Set(hotKey, data, int64(len(data)))
		return &Blob{ReadSeeker: bytes.NewReader(data), Size: size, Source: "disk"}, nil
	}
	return &Blob{ReadSeeker: f, Size: size, Source: "disk", file: f}, nil
}

func (s *Store) hotGet(key string) ([]byte, bool) {
	if s.hot == nil {
		return nil, false
	}
	return s.hot.Get(key)
}

// touchLocked makes e the most recently used, accessed at now.
func (s *Store) touchLocked(e *blobEntry, now int64) {
	s.lru.moveToBack(e)
	if e.ATime != now {
		e.ATime = now
		s.dirty[e.sha] = true
	}
}

func (s *Store) forget(sha string, seen *blobEntry) {
	s.mu.Lock()
	// Only the entry whose file was found missing, and only when no commit
	// holds the file: a fill may have committed the sha anew since (its file
	// and key must stay).
	e, ok := s.blobs[sha]
	if !ok || e != seen || s.busy[sha] != 0 {
		s.mu.Unlock()
		return
	}
	s.dropLocked(e)
	s.mu.Unlock()
	if s.hot != nil {
		s.hot.Del(sha)
	}
	if err := s.Meta.Delete("b/" + sha); err != nil {
		s.log.Error("forget blob", "sha256", sha, "err", err)
	}
}

// RemoveBlob deletes a blob (an operator's purge), at once: its key with a
// synced write, and its file. A reader that has it open keeps reading the
// unlinked file.
func (s *Store) RemoveBlob(sha string) error {
	if !shaPattern.MatchString(sha) {
		return fmt.Errorf("bad sha256 %q", sha)
	}
	// Claimed, like an eviction's delete, so that a commit of the same bytes
	// renames its file only after this removal (claimFile).
	s.mu.Lock()
	s.claimLocked(sha)
	if e, ok := s.blobs[sha]; ok {
		s.dropLocked(e)
	}
	s.mu.Unlock()
	defer s.unclaim(sha)
	if s.hot != nil {
		s.hot.Del(sha)
	}
	if err := s.Meta.Delete("b/" + sha); err != nil {
		s.log.Error("remove blob record", "sha256", sha, "err", err)
	}
	err := os.Remove(s.blobPath(sha))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Usage returns the bytes and count of package blobs on disk, and the cap. An
// evicted blob is not counted from the moment it is evicted, though its file
// may be on disk a moment longer (evict.go).
func (s *Store) Usage() (bytes int64, count int, limit int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total, len(s.blobs), s.opts.MaxSize
}

// Digest is what a blob must be; empty fields are not checked.
type Digest struct {
	Size   int64 // -1: unknown
	SHA256 string
	MD5    string
}

// Temp is a blob being written. Bytes go to a file in tmp/ and through the hashes;
// only Commit makes them visible.
type Temp struct {
	s      *Store
	local  bool // pulled from the remote tier: not put back there
	shared bool // Share put it in the remote tier already
	f      *os.File
	sha    hash.Hash
	n      int64
	done   bool
}

// NewTemp starts a blob.
func (s *Store) NewTemp() (*Temp, error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "fill-*")
	if err != nil {
		return nil, err
	}
	return &Temp{s: s, f: f, sha: sha256.New()}, nil
}

// Path is the temp file, for readers that follow a fill as it grows.
func (t *Temp) Path() string { return t.f.Name() }

// Write appends p.
func (t *Temp) Write(p []byte) (int, error) {
	n, err := t.f.Write(p)
	t.sha.Write(p[:n])
	t.n += int64(n)
	return n, err
}

// Written is the number of bytes written so far.
func (t *Temp) Written() int64 { return t.n }

// Verify checks the bytes written against want.
func (t *Temp) Verify(want Digest) (sha string, err error) {
	sha = hex.EncodeToString(t.sha.Sum(nil))
	if want.Size >= 0 && t.n != want.Size {
		return sha, &MismatchError{"size", strconv.FormatInt(want.Size, 10), strconv.FormatInt(t.n, 10)}
	}
	if want.SHA256 != "" && !strings.EqualFold(want.SHA256, sha) {
		return sha, &MismatchError{"sha256", want.SHA256, sha}
	}
	if want.MD5 != "" {
		got, err := t.md5Hex()
		if err != nil {
			return sha, err
		}
		if !strings.EqualFold(want.MD5, got) {
			return sha, &MismatchError{"md5", want.MD5, got}
		}
	}
	return sha, nil
}

// md5Hex is the md5 of the bytes written, read back from the temp file. md5
// is asked only of records without a sha256 (old ones) and by an import: a
// fill of a record with a sha256 (nearly all) skips it, which was two thirds
// of a sync's hashing CPU (md5 has no hardware support here, sha256 does).
func (t *Temp) md5Hex() (string, error) {
	h := md5.New()
	if _, err := io.Copy(h, io.NewSectionReader(t.f, 0, t.n)); err != nil {
		return "", fmt.Errorf("read back for md5: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Commit verifies the bytes against want and makes them the blob of their sha256.
// On any error the temp file is gone and nothing is visible.
func (t *Temp) Commit(want Digest) (sha string, err error) {
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	if t.done {
		return "", errors.New("cache: temp blob already finished")
	}
	sha, err = t.Verify(want)
	if err != nil {
		return sha, err
	}
	// fsync before rename: after a power cut the name must not point at missing bytes.
	if err := t.f.Sync(); err != nil {
		return sha, err
	}
	if t.s.remote != nil && !t.local && !t.shared {
		// Shared before it is local: a blob this replica serves is one every
		// replica can. If the object store refuses, nothing is kept.
		if err := t.s.upload(context.Background(), t.f, t.n, sha); err != nil {
			return sha, err
		}
	}
	if err := t.f.Close(); err != nil {
		return sha, err
	}
	dst := t.s.blobPath(sha)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return sha, err
	}
	t.s.claimFile(sha) // added lets it go
	if err := os.Rename(t.f.Name(), dst); err != nil {
		t.s.unclaim(sha)
		return sha, err
	}
	t.done = true
	t.s.added(sha, t.n)
	return sha, nil
}

// Abort drops the temp file. Safe after Commit (then it does nothing).
func (t *Temp) Abort() {
	if t.done {
		return
	}
	t.done = true
	t.f.Close()
	os.Remove(t.f.Name())
}

// added records a committed blob, ends the claim its commit took on the file
// (claimFile) and evicts past the cap. The victims' keys and files are left to
// the deleter: the commit pays for taking them out of the table only.
func (s *Store) added(sha string, size int64) {
	now := time.Now().UnixNano()
	s.mu.Lock()
	if old, ok := s.blobs[sha]; ok {
		s.unclaimLocked(sha)
		old.unseen = false // its file is there: reconcile must not drop it
		s.touchLocked(old, now)
		s.mu.Unlock()
		return
	}
	e := &blobEntry{sha: sha, Size: size, ATime: now}
	s.insertLocked(e)
	victims := s.pickVictimsLocked(sha)
	record := e.record() // readers change e.ATime under s.mu
	s.mu.Unlock()
	// The metadata says "present" only after the file is in place. Not synced:
	// a record lost in a crash costs nothing, since the start-up check adopts
	// a file without one (load.go), and a fill's synced index write right
	// after carries it to the disk anyway (one log). A second synced write per
	// package was a third of a sync's time waiting on the disk.
	// The commit's claim is held until the record is written: an eviction or
	// a purge of this blob in between (they skip or wait for a claimed sha)
	// would otherwise delete the key first and this put bring it back, naming
	// a file that is gone.
	if err := s.Meta.putRaw("b/"+sha, record, false); err != nil {
		s.log.Error("record blob", "sha256", sha, "err", err)
	}
	s.unclaim(sha)
	if victims > 0 {
		s.kickDeleter()
	}
}

func (s *Store) flusher() {
	defer close(s.done)
	t := time.NewTicker(s.opts.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.flush()
			// Blobs let go since the last commit (open, pinned) are over the
			// cap no longer than this.
			s.enforceCap()
		case <-s.stop:
			s.flush()
			return
		}
	}
}

// flush writes changed access times, so LRU order survives a restart.
func (s *Store) flush() {
	s.mu.Lock()
	times := make([]blobEntry, 0, len(s.dirty)) // copies: encoded after the lock
	for sha := range s.dirty {
		if e, ok := s.blobs[sha]; ok {
			times = append(times, blobEntry{sha: sha, Size: e.Size, ATime: e.ATime})
		}
	}
	clear(s.dirty)
	s.mu.Unlock()
	puts := make([]rawRecord, len(times))
	for i := range times {
		puts[i] = rawRecord{"b/" + times[i].sha, times[i].record()}
	}
	if err := s.Meta.writeNoSync(puts, nil); err != nil {
		s.log.Error("flush access times", "err", err)
	}
	// A blob evicted or purged since its time was copied may have had its key
	// deleted before the write above brought it back: delete it again. (One
	// committed anew meanwhile is in the table again and keeps its key; one
	// whose delete is still queued loses it to the deleter.)
	var gone []string
	s.mu.Lock()
	for _, e := range times {
		if _, ok := s.blobs[e.sha]; !ok && s.busy[e.sha] == 0 {
			gone = append(gone, "b/"+e.sha)
		}
	}
	s.mu.Unlock()
	if len(gone) > 0 {
		if err := s.Meta.writeNoSync(nil, gone); err != nil {
			s.log.Error("flush access times", "err", err)
		}
	}
}

// Close flushes and closes the store. The deletes of evicted blobs still
// queued are done first: the data directory is left with their keys and files
// gone.
func (s *Store) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	<-s.ready // reconcile stops at its next directory
	if s.done != nil {
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	}
	// Last, as the others evict. Not bounded in time like the flusher: Pebble
	// must not close under its writes, and file removals are quick (a
	// million is a few seconds).
	close(s.quit)
	<-s.deleterDone
	if s.hot != nil {
		s.hot.Close()
	}
	err := s.Meta.close()
	releaseDir(s.held)
	return err
}

// VerifyBlob hashes a stored blob again. One whose bytes no longer match its name
// (a disk fault, a hand edit) is removed and reported as a *MismatchError.
func (s *Store) VerifyBlob(sha string) error {
	if !shaPattern.MatchString(sha) {
		return fmt.Errorf("bad sha256 %q", sha)
	}
	s.mu.Lock()
	seen := s.blobs[sha]
	s.mu.Unlock()
	f, err := os.Open(s.blobPath(sha))
	if errors.Is(err, fs.ErrNotExist) {
		if seen != nil {
			s.forget(sha, seen)
		}
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		s.RemoveBlob(sha)
		return &MismatchError{What: "sha256", Want: sha, Got: got}
	}
	return nil
}
