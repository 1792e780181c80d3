package cache

import (
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	"slices"
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
	total int64
	dirty map[string]bool

	stop chan struct{}
	done chan struct{}

	remote *remoteTier // nil: blobs on local disk only
}

type blobEntry struct {
	Size  int64 `json:"size"`
	ATime int64 `json:"atime"` // unix nanoseconds of the last open
	inUse int   // open handles and pins: never evicted while > 0
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

// Open opens (creating if needed) the data directory dir.
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
		blobs: map[string]*blobEntry{}, dirty: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
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
	if err := s.load(); err != nil {
		if s.hot != nil {
			s.hot.Close()
		}
		meta.close()
		return nil, err
	}
	go s.flusher()
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

// load reads the blob table and reconciles it with the files: a file renamed into
// place just before a crash, before its metadata was written, is adopted (it was
// verified before the rename); an entry whose file is gone is dropped.
func (s *Store) load() error {
	err := s.Meta.Scan("b/", func(key string, val []byte) error {
		var e blobEntry
		if err := json.Unmarshal(val, &e); err != nil {
			return err
		}
		s.blobs[strings.TrimPrefix(key, "b/")] = &e
		return nil
	})
	if err != nil {
		return err
	}
	onDisk := map[string]int64{}
	err = filepath.WalkDir(filepath.Join(s.dir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !shaPattern.MatchString(d.Name()) {
			return nil // not ours: never served, never counted
		}
		onDisk[d.Name()] = info.Size()
		return nil
	})
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	fix := map[string]any{}
	for sha, size := range onDisk {
		if _, ok := s.blobs[sha]; !ok {
			e := &blobEntry{Size: size, ATime: now}
			s.blobs[sha] = e
			fix["b/"+sha] = e
		}
	}
	for sha := range s.blobs {
		if _, ok := onDisk[sha]; !ok {
			delete(s.blobs, sha)
			if err := s.Meta.Delete("b/" + sha); err != nil {
				return err
			}
		}
	}
	for _, e := range s.blobs {
		s.total += e.Size
	}
	if len(fix) > 0 {
		s.log.Info("adopted blobs written before a crash", "count", len(fix))
		if err := s.Meta.putBatch(fix); err != nil {
			return err
		}
	}
	// A cap lowered since the last run is enforced now, not at the next fill.
	s.mu.Lock()
	victims := s.pickVictimsLocked("")
	s.mu.Unlock()
	s.evict(victims)
	return nil
}

// evict removes the blobs pickVictimsLocked took out of the table.
func (s *Store) evict(victims []string) {
	for _, v := range victims {
		if err := s.RemoveBlob(v); err != nil {
			s.log.Error("evict blob", "sha256", v, "err", err)
		} else {
			s.log.Debug("evicted blob", "sha256", v)
		}
	}
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
	defer s.mu.Unlock()
	_, ok := s.blobs[sha]
	return ok
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
	if now := time.Now().UnixNano(); e.ATime != now {
		e.ATime = now
		s.dirty[sha] = true
	}
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
			s.forget(sha)
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

func (s *Store) forget(sha string) {
	s.mu.Lock()
	if e, ok := s.blobs[sha]; ok {
		s.total -= e.Size
		delete(s.blobs, sha)
		delete(s.dirty, sha)
	}
	s.mu.Unlock()
	if s.hot != nil {
		s.hot.Del(sha)
	}
	if err := s.Meta.Delete("b/" + sha); err != nil {
		s.log.Error("forget blob", "sha256", sha, "err", err)
	}
}

// RemoveBlob deletes a blob (an operator's purge). A reader that has it open keeps
// reading the unlinked file.
func (s *Store) RemoveBlob(sha string) error {
	if !shaPattern.MatchString(sha) {
		return fmt.Errorf("bad sha256 %q", sha)
	}
	s.forget(sha)
	err := os.Remove(s.blobPath(sha))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Usage returns the bytes and count of package blobs on disk, and the cap.
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
	md5    hash.Hash
	n      int64
	done   bool
}

// NewTemp starts a blob.
func (s *Store) NewTemp() (*Temp, error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "fill-*")
	if err != nil {
		return nil, err
	}
	return &Temp{s: s, f: f, sha: sha256.New(), md5: md5.New()}, nil
}

// Path is the temp file, for readers that follow a fill as it grows.
func (t *Temp) Path() string { return t.f.Name() }

// Write appends p.
func (t *Temp) Write(p []byte) (int, error) {
	n, err := t.f.Write(p)
	t.sha.Write(p[:n])
	t.md5.Write(p[:n])
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
		if got := hex.EncodeToString(t.md5.Sum(nil)); !strings.EqualFold(want.MD5, got) {
			return sha, &MismatchError{"md5", want.MD5, got}
		}
	}
	return sha, nil
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
	if err := os.Rename(t.f.Name(), dst); err != nil {
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

// added records a committed blob and evicts past the cap.
func (s *Store) added(sha string, size int64) {
	now := time.Now().UnixNano()
	s.mu.Lock()
	if old, ok := s.blobs[sha]; ok {
		old.ATime = now
		s.mu.Unlock()
		return
	}
	e := &blobEntry{Size: size, ATime: now}
	s.blobs[sha] = e
	s.total += size
	victims := s.pickVictimsLocked(sha)
	record := *e // readers change e.ATime under s.mu; marshal a copy
	s.mu.Unlock()
	// The metadata says "present" only after the file is in place.
	if err := s.Meta.Put("b/"+sha, &record); err != nil {
		s.log.Error("record blob", "sha256", sha, "err", err)
	}
	s.evict(victims)
}

// pickVictimsLocked chooses the least recently used blobs that are not open (nor
// pinned) until the store is back under its cap, and takes them out of the
// table. newest, the blob being committed, never goes in its own commit: its
// fill pins it next (Pin) for the clients waiting to be served it, and a blob
// larger than the whole cap would otherwise be gone before it was ever served.
// The cap is passed by open and pinned blobs at most, and enforced again as
// they are let go (at the next commit, or the flusher's next tick).
func (s *Store) pickVictimsLocked(newest string) []string {
	if s.opts.MaxSize <= 0 || s.total <= s.opts.MaxSize {
		return nil
	}
	type cand struct {
		sha   string
		atime int64
	}
	var cands []cand
	for sha, e := range s.blobs {
		if e.inUse == 0 && sha != newest {
			cands = append(cands, cand{sha, e.ATime})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int { return cmp.Compare(a.atime, b.atime) })
	var victims []string
	for _, c := range cands {
		if s.total <= s.opts.MaxSize {
			break
		}
		e := s.blobs[c.sha]
		s.total -= e.Size
		delete(s.blobs, c.sha)
		delete(s.dirty, c.sha)
		victims = append(victims, c.sha)
	}
	// RemoveBlob's forget finds them gone from the table and only deletes files and keys.
	return victims
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
			s.mu.Lock()
			victims := s.pickVictimsLocked("")
			s.mu.Unlock()
			s.evict(victims)
		case <-s.stop:
			s.flush()
			return
		}
	}
}

// flush writes changed access times, so LRU order survives a restart.
func (s *Store) flush() {
	s.mu.Lock()
	kv := make(map[string]any, len(s.dirty))
	for sha := range s.dirty {
		if e, ok := s.blobs[sha]; ok {
			cp := *e
			kv["b/"+sha] = &cp
		}
	}
	clear(s.dirty)
	s.mu.Unlock()
	if len(kv) > 0 {
		if err := s.Meta.putBatch(kv); err != nil {
			s.log.Error("flush access times", "err", err)
		}
	}
}

// Close flushes and closes the store.
func (s *Store) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	if s.done != nil {
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	}
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
	f, err := os.Open(s.blobPath(sha))
	if errors.Is(err, fs.ErrNotExist) {
		s.forget(sha)
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
