package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/condaproxy/condaproxy/blobstore"
)

// The remote tier: with several replicas, package blobs live in a shared object
// store (Options.Remote) and each replica's data directory keeps a local tier of
// the ones it served lately, under max_size and LRU as before. A blob reaches the
// object store only once verified, from the verified file, by a conditional
// create (blobstore); a replica that misses locally pulls it from there, verified
// again by its name, before serving it. A replica started empty so serves what
// the others cached, without asking upstream.
//
// Eviction is local only: the object store is the shared copy. A purge (an
// operator dropping a file) removes it from both.

// ErrUnavailable is the remote tier failing: a miss cannot be answered now
// (503 with Retry-After); what the local tier holds is still served.
var ErrUnavailable = blobstore.ErrUnavailable

// remoteTimeout bounds one transfer to or from the object store.
const remoteTimeout = 10 * time.Minute

type remoteTier struct {
	store blobstore.Store
	pulls singleflight.Group // one pull per blob at a time
}

// Share verifies the bytes against want and puts them in the object store, so
// that Commit then only makes them local: a caller holding a lock that readers
// wait on (a fill) uploads before taking it. ctx ends the upload (a shutdown).
// Without a remote tier it only verifies.
func (t *Temp) Share(ctx context.Context, want Digest) error {
	sha, err := t.Verify(want)
	if err != nil {
		t.Abort()
		return err
	}
	if t.s.remote == nil || t.local || t.shared {
		return nil
	}
	if err := t.s.upload(ctx, t.f, t.n, sha); err != nil {
		t.Abort()
		return err
	}
	t.shared = true
	return nil
}

// upload puts the verified temp file's bytes in the object store under sha.
func (s *Store) upload(ctx context.Context, f io.ReaderAt, size int64, sha string) error {
	ctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	w, err := s.remote.store.Create(ctx)
	if err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	if _, err := io.Copy(w, io.NewSectionReader(f, 0, size)); err != nil {
		w.Abort()
		return fmt.Errorf("object store: %w", err)
	}
	if _, err := w.Commit(ctx, blobstore.Digest{Size: size, SHA256: sha}); err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	return nil
}

// uploadFile is upload from a file on disk.
func (s *Store) uploadFile(path string, size int64, sha string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.upload(context.Background(), f, size, sha)
}

// Pull makes sure the blob sha is in the local tier, copying it from the object
// store when it is there. It reports whether the blob is now local; a blob the
// object store lacks is (false, nil). Without a remote tier it is Has.
func (s *Store) Pull(ctx context.Context, sha string) (bool, error) {
	if s.Has(sha) {
		return true, nil
	}
	if s.remote == nil || !shaPattern.MatchString(sha) {
		return false, nil
	}
	v, err, _ := s.remote.pulls.Do(sha, func() (any, error) {
		if s.Has(sha) {
			return true, nil
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), remoteTimeout)
		defer cancel()
		info, err := s.remote.store.Stat(ctx, sha)
		if errors.Is(err, blobstore.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		r, err := s.remote.store.Open(ctx, sha, 0, -1)
		if errors.Is(err, blobstore.ErrNotFound) {
			return false, nil // purged since the Stat
		}
		if err != nil {
			return false, err
		}
		defer r.Close()
		t, err := s.NewTemp()
		if err != nil {
			return false, err
		}
		t.local = true // it came from there: no need to put it back
		if _, err := io.Copy(t, r); err != nil {
			t.Abort()
			return false, fmt.Errorf("object store: read %s: %w", sha, err)
		}
		// Verified against its own name: the object store is shared, not trusted.
		if _, err := t.Commit(Digest{Size: info.Size, SHA256: sha}); err != nil {
			var mm *MismatchError
			if errors.As(err, &mm) {
				// Not the bytes its name says (changed in the bucket behind
				// the replicas' backs): gone, so that the next fill fetches
				// from upstream and puts the right ones back.
				s.log.Error("a blob in the object store does not match its name; removed", "sha256", sha, "err", err)
				if derr := s.remote.store.Delete(ctx, sha); derr != nil {
					return false, derr
				}
				return false, nil
			}
			return false, err
		}
		return true, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// Shared reports whether the object store holds the blob sha (false without a
// remote tier): a cheap look, no bytes moved.
func (s *Store) Shared(ctx context.Context, sha string) (bool, error) {
	_, ok, err := s.SharedSize(ctx, sha)
	return ok, err
}

// PurgeBlob removes the blob sha everywhere: the object store (so no replica
// pulls it again) and the local tier.
func (s *Store) PurgeBlob(ctx context.Context, sha string) error {
	if s.remote != nil && shaPattern.MatchString(sha) {
		if err := s.remote.store.Delete(ctx, sha); err != nil {
			return fmt.Errorf("object store: %w", err)
		}
	}
	return s.RemoveBlob(sha)
}

// HasRemote reports whether the store has an object store behind it.
func (s *Store) HasRemote() bool { return s.remote != nil }

// ShareBytes puts b in the object store under its sha256 (a conditional
// create: there already is as good), without keeping it in the local tier:
// small content-addressed things other replicas may ask for (shards). Without
// a remote tier it does nothing.
func (s *Store) ShareBytes(ctx context.Context, b []byte) error {
	if s.remote == nil {
		return nil
	}
	sum := sha256.Sum256(b)
	return s.upload(ctx, bytes.NewReader(b), int64(len(b)), hex.EncodeToString(sum[:]))
}

// SharedSize is the size of the blob sha in the object store, and whether it
// is there (false without a remote tier): a look before a pull.
func (s *Store) SharedSize(ctx context.Context, sha string) (int64, bool, error) {
	if s.remote == nil || !shaPattern.MatchString(sha) {
		return 0, false, nil
	}
	info, err := s.remote.store.Stat(ctx, sha)
	if errors.Is(err, blobstore.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return info.Size, true, nil
}
