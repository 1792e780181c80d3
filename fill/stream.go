package fill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/condaproxy/condaproxy/cache"
)

// Download is one upstream answer to stream into a fill's blob.
type Download struct {
	Body io.Reader // read to its end or the first error; the caller closes it
	// Size is upstream's Content-Length, -1 when it sent none.
	Size         int64
	LastModified string
	// Want is what the bytes must match; Want.Size < 0 takes Size.
	Want cache.Digest
	// Limit > 0 bounds a file whose size no repodata states (metadata,
	// installers): an upstream that claims or sends more is refused before the
	// disk fills.
	Limit int64
	// OnMismatch counts a digest or size mismatch; it runs before any waiter
	// hears of it, so a metric never lags an answer. Nil: none.
	OnMismatch func()
}

// TooLargeError is an upstream file past the Limit set for its kind.
type TooLargeError struct {
	Limit int64
	Got   string
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("upstream file is larger than the limit of %d bytes set for its kind: %s", e.Limit, e.Got)
}

// Download streams d into a new blob for f and commits it if it matches d.Want:
// shared with the other replicas first (cache.Temp.Share), then placed here.
// Nothing partial or unverified is kept, whatever fails.
func (g *Group) Download(ctx context.Context, f *Fill, d Download) (sha string, err error) {
	defer func() {
		if err != nil {
			// Failed now, whatever the Func does next: no new asker joins it,
			// and no reader attaching looks for the temp file.
			f.finish("", err)
		}
	}()
	want := d.Want
	mismatch := func(err error) error {
		var mm *cache.MismatchError
		if errors.As(err, &mm) && d.OnMismatch != nil {
			d.OnMismatch()
		}
		return err
	}
	if want.Size >= 0 && d.Size >= 0 && d.Size != want.Size {
		return "", mismatch(&cache.MismatchError{What: "size", Want: strconv.FormatInt(want.Size, 10), Got: strconv.FormatInt(d.Size, 10) + " (Content-Length)"})
	}
	if want.Size < 0 {
		want.Size = d.Size
	}
	if d.Limit > 0 && want.Size > d.Limit {
		return "", &TooLargeError{Limit: d.Limit, Got: strconv.FormatInt(want.Size, 10) + " bytes (Content-Length)"}
	}
	tmp, err := g.o.Store.NewTemp()
	if err != nil {
		return "", err
	}
	defer tmp.Abort() // no-op after a commit; runs before the finish above
	f.start(tmp.Path(), want.Size, d.LastModified)
	buf := make([]byte, 256<<10)
	for {
		n, rerr := d.Body.Read(buf)
		if n > 0 {
			if _, err := tmp.Write(buf[:n]); err != nil {
				return "", err // a full disk ends here; nothing is kept
			}
			if want.Size >= 0 && tmp.Written() > want.Size {
				return "", mismatch(&cache.MismatchError{What: "size", Want: strconv.FormatInt(want.Size, 10), Got: "more"})
			}
			if d.Limit > 0 && tmp.Written() > d.Limit {
				return "", &TooLargeError{Limit: d.Limit, Got: "more"}
			}
			f.advance(tmp.Written())
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", rerr
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
	// Shared first, outside the fill's lock: an upload to a slow object store
	// must not hold every waiter (and every new request for this file) meanwhile.
	if err = tmp.Share(ctx, want); err != nil {
		return "", mismatch(err)
	}
	// Commit under the fill's lock: a waiter that attaches opens the temp path under
	// the same lock, so it never finds the path already renamed away.
	f.mu.Lock()
	sha, err = tmp.Commit(want)
	if err != nil {
		mismatch(err)
		f.done, f.err = true, err // Commit removed the temp file: nobody may look for it
		f.failed.Store(true)
	} else {
		f.verified, f.sha = true, sha
		// Held for the waiters (see Fill.unpin). Commit spared it from its own
		// eviction; only a commit in between these two lines could take it.
		if unpin, ok := g.o.Store.Pin(sha); ok {
			f.unpin = unpin
		}
	}
	f.mu.Unlock()
	f.cond.Broadcast()
	return sha, err
}

// Headers sets the answer's headers from what the fill knows: the committed
// sha256 ("" while it streams) and upstream's Last-Modified. streaming says the
// bytes follow as they arrive (not from the committed blob).
type Headers func(w http.ResponseWriter, sha, lastModified string, streaming bool)

// Serve answers a client from f: streaming for a plain GET of known size,
// otherwise (Range, HEAD, unknown size) once the blob is committed. An error
// after the headers went out means the transfer must be broken off (the caller
// panics http.ErrAbortHandler): the client holds less than the whole file.
func (g *Group) Serve(w http.ResponseWriter, r *http.Request, f *Fill, headers Headers) error {
	f.enter()
	defer f.leave()
	ctx := r.Context()
	f.mu.Lock()
	if err := f.waitLocked(ctx, func() bool { return f.started || f.done }); err != nil {
		f.mu.Unlock()
		return err
	}
	var file *os.File
	if !f.done && !f.verified && f.size >= 0 && r.Header.Get("Range") == "" && r.Method != http.MethodHead {
		// The temp file exists while the fill is neither committed nor over: both
		// change under f.mu, which we hold.
		var err error
		if file, err = os.Open(f.path); err != nil {
			f.mu.Unlock()
			return err
		}
	}
	if file == nil {
		if err := f.waitLocked(ctx, func() bool { return f.done || f.verified }); err != nil {
			f.mu.Unlock()
			return err
		}
		sha, err, lm := f.sha, f.err, f.lastModified
		f.mu.Unlock()
		if err != nil {
			return err
		}
		blob, err := g.o.Store.OpenBlob(sha)
		if err != nil {
			return err
		}
		defer blob.Close()
		headers(w, sha, lm, false)
		http.ServeContent(w, r, "", time.Time{}, blob.ReadSeeker)
		return nil
	}
	size, lm := f.size, f.lastModified
	f.mu.Unlock()
	defer file.Close()
	headers(w, "", lm, true)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	var pos int64
	for pos < size {
		f.mu.Lock()
		var avail int64
		werr := f.waitLocked(ctx, func() bool {
			avail = f.written
			if !f.verified {
				avail = min(avail, size-1) // the last byte waits for the digest
			}
			return avail > pos || f.done
		})
		err := f.err
		f.mu.Unlock()
		if werr != nil {
			return nil // the client left; the fill goes on without it
		}
		if err != nil {
			return err // headers are out: the caller breaks the connection
		}
		if _, err := io.Copy(w, io.NewSectionReader(file, pos, avail-pos)); err != nil {
			return nil // the client left; the fill goes on without it
		}
		rc.Flush()
		pos = avail
	}
	return nil
}
