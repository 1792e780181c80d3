package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Named files hold what the proxy derives and replaces as a whole: upstream
// repodata and the filtered answers made from it. Unlike package blobs they are not
// counted against max_size (evicting them would break serving while upstream is
// down); their owner removes the old one when it writes a new one.

// validFileName: [A-Za-z0-9][A-Za-z0-9._-]{0,200}, no path, no dot first.
func validFileName(name string) bool {
	if len(name) == 0 || len(name) > 201 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

func (s *Store) filePath(name string) (string, error) {
	if !validFileName(name) {
		return "", fmt.Errorf("cache: bad file name %q", name)
	}
	return filepath.Join(s.dir, "files", name), nil
}

// WriteFile writes a named file atomically from what write produces, and returns its
// size and sha256. Readers see the old file or the new one, never a part.
func (s *Store) WriteFile(name string, write func(io.Writer) error) (size int64, sha string, err error) {
	path, err := s.filePath(name)
	if err != nil {
		return 0, "", err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "file-*")
	if err != nil {
		return 0, "", err
	}
	h := sha256.New()
	pw := newPipeWriter(f, h)
	finished := false
	defer func() {
		// Also when write panics (a fault under a mapped document, recovered
		// by the caller's guard): the writer goroutine and the file go too.
		pw.Close()
		if err != nil || !finished {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	cw := &countWriter{w: pw}
	err = write(cw)
	if cerr := pw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, "", err
	}
	if err = f.Sync(); err != nil {
		return 0, "", err
	}
	if err = f.Close(); err != nil {
		return 0, "", err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return 0, "", err
	}
	if s.hot != nil {
		s.hot.Del(name)
	}
	// The name reaches the disk before any state that names it is recorded:
	// after a power cut a state never points at a file that is not there.
	if err = syncDir(filepath.Dir(path)); err != nil {
		return 0, "", err
	}
	finished = true
	return cw.n, hex.EncodeToString(h.Sum(nil)), nil
}

// RenameFile gives a named file another name, atomically; a file already called
// to is replaced.
func (s *Store) RenameFile(from, to string) error {
	src, err := s.filePath(from)
	if err != nil {
		return err
	}
	dst, err := s.filePath(to)
	if err != nil {
		return err
	}
	if s.hot != nil {
		s.hot.Del(from)
		s.hot.Del(to)
	}
	if err := os.Rename(src, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNotFound
		}
		return err
	}
	return syncDir(filepath.Dir(dst))
}

// OpenFile opens a named file, from memory when it is hot.
func (s *Store) OpenFile(name string) (*Blob, error) {
	// Only validated names are ever made hot, so the memory hit needs no check.
	if b, ok := s.hotGet(name); ok {
		return &Blob{ReadSeeker: bytes.NewReader(b), Size: int64(len(b)), Source: "memory"}, nil
	}
	path, err := s.filePath(name)
	if err != nil {
		return nil, err
	}
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return s.openFile(path, name, info.Size(), s.opts.HotMaxFile)
}

// ReadFile returns a named file's bytes.
func (s *Store) ReadFile(name string) ([]byte, error) {
	b, err := s.OpenFile(name)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	// Exactly its size: ReadAll's doubling would hold up to twice a large file.
	data := make([]byte, b.Size)
	if _, err := io.ReadFull(b, data); err != nil {
		return nil, err
	}
	return data, nil
}

// RemoveFile deletes a named file; a missing one is not an error.
func (s *Store) RemoveFile(name string) error {
	path, err := s.filePath(name)
	if err != nil {
		return err
	}
	if s.hot != nil {
		s.hot.Del(name)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// HasFile reports whether a named file exists.
func (s *Store) HasFile(name string) bool {
	path, err := s.filePath(name)
	if err != nil {
		return false
	}
	_, err = os.Stat(path)
	return err == nil
}
