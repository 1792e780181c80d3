// Package blobstore is where package blobs and published repodata live once
// verified: a content-addressed store in which every object is named by the
// sha256 of its bytes. One process keeps it on local disk (package disk);
// several replicas share it in an S3-compatible object store (package s3). Both
// pass one conformance suite (package blobstoretest), so the proxy never needs
// to know which one it holds.
//
// What the package must never do: make bytes visible under a name before their
// size and digests were checked, or show a partial object to a reader. Bytes go
// to a local temp file while they are hashed, and only Commit, after the check,
// publishes them, in one step that a reader sees whole or not at all. Because a
// name is the sha256 of the bytes, two writers of one name write the same bytes:
// whoever commits second has nothing to do and succeeds.
//
// It knows nothing of conda, HTTP or upstreams; callers map its errors (ErrNotFound,
// ErrOutOfRange, ErrUnavailable, *MismatchError) to answers.
//
// Why each method of Store exists, and nothing more:
//   - Stat answers "is it here, and how big" without reading bytes: a request is
//     served or filled on that answer, a fill looks again after taking its lock,
//     and the size is the response's Content-Length.
//   - Open reads a range: clients resume downloads with Range headers, and a
//     1 GiB package asked for its last megabyte must not be read whole from an
//     object store that bills by the byte.
//   - Create is the only way in. Its Writer hashes on the way to a temp file so
//     a fill can stream to a client while it writes, and Commit verifies before
//     anything is visible; the temp file is also the seekable body an S3 upload
//     needs.
//   - Delete serves purges and evictions.
//   - Walk lists what is held: a replica started empty rebuilds its view from
//     it, and a sweep finds blobs that nothing names any more.
package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Store is a content-addressed blob store. Its methods are safe for
// concurrent use; a Writer is used by one goroutine.
type Store interface {
	// Stat returns the size of the object named sha, or ErrNotFound.
	Stat(ctx context.Context, sha string) (Info, error)
	// Open reads n bytes of the object sha from offset off, or fewer if the
	// object ends first; n < 0 reads to the end. An offset equal to the size
	// reads nothing; one past it is ErrOutOfRange. An absent object is
	// ErrNotFound.
	Open(ctx context.Context, sha string, off, n int64) (io.ReadCloser, error)
	// Create starts a new object. Nothing is visible until its Writer commits.
	Create(ctx context.Context) (Writer, error)
	// Delete removes the object sha. An absent object is not an error: the
	// caller's intent, that it be gone, holds. A reader that already opened it
	// may still finish.
	Delete(ctx context.Context, sha string) error
	// Walk calls fn for every committed object, in no particular order, and
	// stops at the first error fn returns, which Walk returns. Objects
	// committed or deleted while it runs may or may not be seen.
	Walk(ctx context.Context, fn func(Info) error) error
}

// Writer receives the bytes of one object. It is used by one goroutine.
type Writer interface {
	io.Writer
	// Commit checks the bytes written against want and only then makes them
	// visible under their sha256, which it returns. A mismatch is a
	// *MismatchError and leaves nothing. An object that already exists under
	// that sha256 holds the same bytes, so committing it again succeeds.
	// Either way the Writer is finished: its temp file is gone.
	Commit(ctx context.Context, want Digest) (sha string, err error)
	// Abort drops the bytes written. It does nothing once the Writer is
	// finished, so a deferred Abort is always safe.
	Abort()
}

// Info describes a committed object.
type Info struct {
	SHA256 string // lower-case hex, the object's name
	Size   int64
}

// Digest is what a Writer's bytes must be. Empty strings are not checked, nor
// a negative Size: a record without a size still gets its sha256 checked.
// Size 0 is checked, so a zero Digest{} promises an empty object (as it does
// in package cache); say Size: -1 when the size is unknown.
type Digest struct {
	Size   int64
	SHA256 string // lower-case hex
	MD5    string // lower-case hex; old repodata records carry only this
}

// Errors. Implementations wrap them with the object they concern; test with
// errors.Is.
var (
	// ErrNotFound: no object has that name.
	ErrNotFound = errors.New("blob not found")
	// ErrOutOfRange: a read starts past the end of the object, or before 0.
	ErrOutOfRange = errors.New("offset out of range")
	// ErrUnavailable: the store did not answer (down, unreachable, or a
	// server error). Worth retrying later; a proxy answers 503.
	ErrUnavailable = errors.New("blob store unavailable")
	// ErrInvalidName: the name is not 64 lower-case hex digits, so no object
	// can have it. A caller's bug, not a miss.
	ErrInvalidName = errors.New("blob name is not a lower-case hex sha256")
	// ErrFinished: the Writer was already committed or aborted.
	ErrFinished = errors.New("blob writer already finished")
)

// MismatchError is a Commit whose bytes are not what was wanted.
type MismatchError struct {
	What      string // "size", "sha256" or "md5"
	Want, Got string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s mismatch: want %s, got %s", e.What, e.Want, e.Got)
}

// ValidName reports whether sha can name an object: 64 lower-case hex
// digits. Implementations check it before building a path or key from it.
func ValidName(sha string) bool {
	if len(sha) != 64 {
		return false
	}
	for i := 0; i < len(sha); i++ {
		c := sha[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
