// Package disk is the blobstore.Store of one process: objects are files under
// a directory, dir/xx/<sha256> (xx its first two hex digits, so no directory
// holds more than 1/256 of them), and writes go through dir/tmp.
//
// A commit is temp file → verify → fsync → rename → fsync of the directory: a
// rename is atomic, so a reader opens the whole file or none, and the two
// fsyncs make a committed object survive a power cut, which the metadata
// naming it (written after Commit returns) relies on. tmp is emptied at Open,
// so a process killed mid-write leaves nothing behind; a lock on the directory
// keeps a second Store, in this process or another, from emptying tmp under a
// live one.
package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/condaproxy/condaproxy/blobstore"
	"github.com/condaproxy/condaproxy/blobstore/internal/spool"
	"github.com/condaproxy/condaproxy/internal/fsdir"
)

// Store keeps objects under one directory.
type Store struct {
	dir  string
	tmp  string
	lock *os.File
}

var _ blobstore.Store = (*Store)(nil)

// Open opens (creating if needed) the store in dir and empties dir/tmp. It
// fails if another Store holds dir. Close releases it.
func Open(dir string) (*Store, error) {
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("blobstore/disk: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("blobstore/disk: %s: %w", dir, err)
	}
	// Whatever is in tmp was being written by a process that is gone (the
	// lock says no live Store has dir): never verified, never visible.
	if err := emptyDir(tmp); err != nil {
		lock.Close()
		return nil, fmt.Errorf("blobstore/disk: empty %s: %w", tmp, err)
	}
	return &Store{dir: dir, tmp: tmp, lock: lock}, nil
}

// Close releases the directory. Writers still open must not commit after it.
func (s *Store) Close() error { return s.lock.Close() }

func emptyDir(dir string) error {
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

func (s *Store) path(sha string) string { return filepath.Join(s.dir, sha[:2], sha) }

// Stat implements blobstore.Store.
func (s *Store) Stat(ctx context.Context, sha string) (blobstore.Info, error) {
	if !blobstore.ValidName(sha) {
		return blobstore.Info{}, fmt.Errorf("blobstore/disk: stat: %w", blobstore.ErrInvalidName)
	}
	fi, err := os.Stat(s.path(sha))
	if err != nil {
		return blobstore.Info{}, s.pathErr("stat", sha, err)
	}
	return blobstore.Info{SHA256: sha, Size: fi.Size()}, nil
}

func (s *Store) pathErr(op, sha string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore/disk: %s %s: %w", op, sha, blobstore.ErrNotFound)
	}
	return fmt.Errorf("blobstore/disk: %s %s: %w", op, sha, err)
}

// Open implements blobstore.Store. The file stays readable to the end even if
// the object is deleted meanwhile.
func (s *Store) Open(ctx context.Context, sha string, off, n int64) (io.ReadCloser, error) {
	if !blobstore.ValidName(sha) {
		return nil, fmt.Errorf("blobstore/disk: open: %w", blobstore.ErrInvalidName)
	}
	f, err := os.Open(s.path(sha))
	if err != nil {
		return nil, s.pathErr("open", sha, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, s.pathErr("open", sha, err)
	}
	size := fi.Size()
	if off < 0 || off > size {
		f.Close()
		return nil, fmt.Errorf("blobstore/disk: open %s at %d of %d bytes: %w", sha, off, size, blobstore.ErrOutOfRange)
	}
	if n < 0 || n > size-off {
		n = size - off
	}
	return &section{io.NewSectionReader(f, off, n), f}, nil
}

type section struct {
	*io.SectionReader
	f *os.File
}

func (r *section) Close() error { return r.f.Close() }

// Create implements blobstore.Store.
func (s *Store) Create(ctx context.Context) (blobstore.Writer, error) {
	w, err := spool.NewWriter(ctx, s.tmp, "blobstore/disk")
	if err != nil {
		return nil, err
	}
	return &writer{Writer: w, s: s}, nil
}

type writer struct {
	*spool.Writer
	s *Store
}

func (w *writer) Commit(ctx context.Context, want blobstore.Digest) (string, error) {
	return w.Writer.Commit(ctx, want, w.place)
}

// place renames the verified spool file to the object's name.
func (w *writer) place(sha string) (string, error) {
	sp := w.File
	final := w.s.path(sha)
	// Another writer committed these bytes already: nothing to do. A file of
	// the wrong size there (damaged outside this store) is replaced below.
	if fi, err := os.Stat(final); err == nil && fi.Size() == sp.Size() {
		return sha, nil
	}
	if err := sp.Sync(); err != nil {
		return "", fmt.Errorf("blobstore/disk: commit %s: %w", sha, err)
	}
	sub := filepath.Dir(final)
	if err := os.Mkdir(sub, 0o755); err == nil {
		// A new directory entry is durable only once its parent is synced.
		if err := fsdir.Sync(w.s.dir); err != nil {
			return "", fmt.Errorf("blobstore/disk: commit %s: %w", sha, err)
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("blobstore/disk: commit %s: %w", sha, err)
	}
	// Concurrent committers of one sha may both get here; each rename
	// replaces identical bytes atomically, and a reader holds whichever inode
	// it opened.
	if err := os.Rename(sp.Name(), final); err != nil {
		return "", fmt.Errorf("blobstore/disk: commit %s: %w", sha, err)
	}
	sp.Moved()
	if err := fsdir.Sync(sub); err != nil {
		return "", fmt.Errorf("blobstore/disk: commit %s: %w", sha, err)
	}
	return sha, nil
}

// Delete implements blobstore.Store. The directory is not synced: a delete
// lost in a power cut leaves a verified object, which is harmless.
func (s *Store) Delete(ctx context.Context, sha string) error {
	if !blobstore.ValidName(sha) {
		return fmt.Errorf("blobstore/disk: delete: %w", blobstore.ErrInvalidName)
	}
	if err := os.Remove(s.path(sha)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore/disk: delete %s: %w", sha, err)
	}
	return nil
}

// Walk implements blobstore.Store. Names that are not objects (tmp, the lock
// file, anything put there by hand) are skipped.
func (s *Store) Walk(ctx context.Context, fn func(blobstore.Info) error) error {
	subs, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("blobstore/disk: walk: %w", err)
	}
	for _, sub := range subs {
		if !sub.IsDir() || !isHex2(sub.Name()) {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(s.dir, sub.Name()))
		if err != nil {
			return fmt.Errorf("blobstore/disk: walk: %w", err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			name := e.Name()
			if !e.Type().IsRegular() || !blobstore.ValidName(name) || name[:2] != sub.Name() {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since the listing
			}
			if err != nil {
				return fmt.Errorf("blobstore/disk: walk: %w", err)
			}
			if err := fn(blobstore.Info{SHA256: name, Size: fi.Size()}); err != nil {
				return err
			}
		}
	}
	return nil
}

func isHex2(s string) bool {
	return len(s) == 2 && isHex(s[0]) && isHex(s[1])
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }
