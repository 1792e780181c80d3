// Package spool is the temp file every blobstore Writer writes through: the
// bytes land on local disk while sha256 and md5 are computed in the same pass,
// so Commit can check them without reading them again, and the disk store can
// rename the file into place or the S3 store upload it as a seekable body.
package spool

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"

	"github.com/condaproxy/condaproxy/blobstore"
)

// Pattern is the name pattern of spool files (os.CreateTemp), so a store that
// owns a temp directory can recognise its leftovers.
const Pattern = "blob-*.tmp"

// File is one object being written. It is used by one goroutine.
type File struct {
	f        *os.File
	sha, md5 hash.Hash
	n        int64
	err      error // the first write error; Verify returns it
	moved    bool  // renamed away: Remove must not delete whatever has the name now
	closed   bool
}

// Create opens a new spool file in dir.
func Create(dir string) (*File, error) {
	f, err := os.CreateTemp(dir, Pattern)
	if err != nil {
		return nil, err
	}
	return &File{f: f, sha: sha256.New(), md5: md5.New()}, nil
}

// Write appends p to the file and the hashes. A failed write sticks: the
// object is missing bytes, so it may never be committed.
func (s *File) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.f.Write(p)
	s.sha.Write(p[:n])
	s.md5.Write(p[:n])
	s.n += int64(n)
	if err != nil {
		s.err = err
	}
	return n, err
}

// Size is the number of bytes written.
func (s *File) Size() int64 { return s.n }

// Verify checks the bytes written against want and returns their sha256 and
// md5, lower-case hex.
func (s *File) Verify(want blobstore.Digest) (sha, md5sum string, err error) {
	if s.err != nil {
		return "", "", s.err
	}
	sha = hex.EncodeToString(s.sha.Sum(nil))
	md5sum = hex.EncodeToString(s.md5.Sum(nil))
	switch {
	case want.Size >= 0 && s.n != want.Size:
		return sha, md5sum, &blobstore.MismatchError{What: "size", Want: strconv.FormatInt(want.Size, 10), Got: strconv.FormatInt(s.n, 10)}
	case want.SHA256 != "" && want.SHA256 != sha:
		return sha, md5sum, &blobstore.MismatchError{What: "sha256", Want: want.SHA256, Got: sha}
	case want.MD5 != "" && want.MD5 != md5sum:
		return sha, md5sum, &blobstore.MismatchError{What: "md5", Want: want.MD5, Got: md5sum}
	}
	return sha, md5sum, nil
}

// SHA256Sum is the raw sha256 of the bytes written, for checksum headers.
func (s *File) SHA256Sum() []byte { return s.sha.Sum(nil) }

// Sync makes the bytes durable.
func (s *File) Sync() error { return s.f.Sync() }

// Name is the file's path.
func (s *File) Name() string { return s.f.Name() }

// Reader reads the bytes written from the start. It has no Close, so an
// HTTP client that closes request bodies leaves the file open for a retry,
// and it seeks, so an upload can be rewound.
func (s *File) Reader() *io.SectionReader { return io.NewSectionReader(s.f, 0, s.n) }

// Moved tells Remove that the file was renamed into place: the temp name is
// free again and may already belong to another writer's file.
func (s *File) Moved() { s.moved = true }

// Remove closes the file and deletes it unless it was moved. It may be
// called more than once.
func (s *File) Remove() {
	if s.closed {
		return
	}
	s.closed = true
	s.f.Close()
	if !s.moved {
		os.Remove(s.f.Name())
	}
}

// Writer is what every store's blobstore.Writer has in common: writes go to a
// spool File, Abort removes it, and Commit refuses a finished writer or a
// cancelled context and verifies the bytes before the store places them. A
// store embeds it and implements Commit with Writer.Commit and its own place.
type Writer struct {
	File *File
	pkg  string // the store's package, first in every error
	done bool
}

// NewWriter opens a spool file in dir for a store's Create; pkg (such as
// "blobstore/disk") starts the errors it returns.
func NewWriter(ctx context.Context, dir, pkg string) (*Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := Create(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: create: %w", pkg, err)
	}
	return &Writer{File: f, pkg: pkg}, nil
}

// Write implements blobstore.Writer.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, blobstore.ErrFinished
	}
	return w.File.Write(p)
}

// Abort implements blobstore.Writer.
func (w *Writer) Abort() {
	w.done = true
	w.File.Remove()
}

// Commit finishes the writer: it checks the bytes written against want and
// hands their sha256 to place, which makes them the store's object and
// returns its name. The spool file is removed afterwards, unless place moved
// it (File.Moved); a writer is finished once Commit returns, whatever it
// returns.
func (w *Writer) Commit(ctx context.Context, want blobstore.Digest, place func(sha string) (string, error)) (string, error) {
	if w.done {
		return "", blobstore.ErrFinished
	}
	defer w.Abort()
	if err := ctx.Err(); err != nil {
		return "", err
	}
	sha, _, err := w.File.Verify(want)
	if err != nil {
		return "", fmt.Errorf("%s: commit: %w", w.pkg, err)
	}
	return place(sha)
}
