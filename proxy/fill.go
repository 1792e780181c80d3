package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/upstream"
)

// A fill is one upstream download into the cache, shared by every client that asks
// for the same file while it runs.
//
// x/sync/singleflight would merge the fetches but hand the result to the waiters
// only at the end; here every waiter streams the bytes as they land. Waiters read
// the fill's temp file up to what has been written, always one byte short of the
// end until the digest matched: if it does not, the transfer is broken off and no
// client ever holds a complete-looking wrong file.
type fill struct {
	mu   sync.Mutex
	cond *sync.Cond

	started   bool   // upstream answered; path and size are set
	path      string // the temp file being written
	size      int64  // expected bytes, -1 when unknown
	written   int64
	committed bool   // the bytes matched and are the blob sha: readers may have all of them
	done      bool   // the fill is over
	err       error  // set with done on failure
	sha       string // the committed blob
	// lastModified is upstream's Last-Modified for the bytes being written.
	lastModified string

	// indexes write the package index entries of the paths that asked for this
	// blob (a fill keyed by sha256 serves several); indexed says they ran.
	indexes []func(sha string) error
	indexed bool
}

// addIndex has index run with the committed sha256 once the fill is in place:
// later by indexAll, or now if that already ran.
func (f *fill) addIndex(index func(sha string) error) error {
	f.mu.Lock()
	if !f.indexed {
		f.indexes = append(f.indexes, index)
		f.mu.Unlock()
		return nil
	}
	sha, err := f.sha, f.err
	f.mu.Unlock()
	if err != nil || sha == "" {
		return nil // failed: nothing to index
	}
	return index(sha)
}

// indexAll runs every index added so far, with the blob in place; those added
// later run at once (addIndex).
func (f *fill) indexAll(sha string) error {
	f.mu.Lock()
	f.indexed = true
	f.sha = sha
	indexes := f.indexes
	f.indexes = nil
	f.mu.Unlock()
	var first error
	for _, index := range indexes {
		if err := index(sha); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func newFill() *fill {
	f := &fill{size: -1}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *fill) start(path string, size int64, lastModified string) {
	f.mu.Lock()
	f.started, f.path, f.size, f.lastModified = true, path, size, lastModified
	f.mu.Unlock()
	f.cond.Broadcast()
}

func (f *fill) advance(n int64) {
	f.mu.Lock()
	f.written = n
	f.mu.Unlock()
	f.cond.Broadcast()
}

func (f *fill) finish(sha string, err error) {
	f.mu.Lock()
	f.done, f.sha, f.err = true, sha, err
	f.mu.Unlock()
	f.cond.Broadcast()
}

// waitLocked waits, with f.mu held, until ready holds or ctx is done: a waiter
// whose client left stops waiting (and frees its goroutine and file) instead of
// staying until the fill ends.
func (f *fill) waitLocked(ctx context.Context, ready func() bool) error {
	if ready() {
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	})
	defer stop()
	for !ready() {
		if err := ctx.Err(); err != nil {
			return err
		}
		f.cond.Wait()
	}
	return nil
}

// wait waits for the fill to end, or ctx; it returns the committed sha256.
func (f *fill) wait(ctx context.Context) (sha string, started bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.waitLocked(ctx, func() bool { return f.done }); err != nil {
		return "", false, err
	}
	return f.sha, f.started, f.err
}

// startFill returns the fill for key, starting run in the background if none is in
// progress. run gets a context that outlives the request (the fill goes on when the
// client leaves) with the server's fill timeout, and returns the committed sha256.
func (s *Server) startFill(ctx context.Context, key string, run func(ctx context.Context, f *fill) (string, error)) *fill {
	s.fillsMu.Lock()
	if f, ok := s.fills[key]; ok {
		f.mu.Lock()
		failed := f.done && f.err != nil
		f.mu.Unlock()
		if !failed {
			s.fillsMu.Unlock()
			return f
		}
		// A failed fill still winding down: this request deserves a fresh attempt.
	}
	f := newFill()
	s.fills[key] = f
	s.fillsMu.Unlock()

	s.metrics.FillsInFlight.Inc()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.fillTTL)
	stop := context.AfterFunc(s.base, cancel)
	started := s.background(func() {
		defer func() {
			stop()
			cancel()
			s.metrics.FillsInFlight.Dec()
		}()
		var sha string
		err := s.guard("fill", func() (err error) { sha, err = run(fctx, f); return err })
		// Remove from the table before waking waiters: a request that comes after
		// this sees the committed blob, or starts a fresh attempt after a failure.
		s.fillsMu.Lock()
		if s.fills[key] == f {
			delete(s.fills, key)
		}
		s.fillsMu.Unlock()
		f.finish(sha, err)
	})
	if !started {
		stop()
		cancel()
		s.metrics.FillsInFlight.Dec()
		s.fillsMu.Lock()
		if s.fills[key] == f {
			delete(s.fills, key)
		}
		s.fillsMu.Unlock()
		f.finish("", errShuttingDown)
	}
	return f
}

// download streams resp into a new blob for f and commits it if it matches want.
// want.Size < 0 takes upstream's Content-Length as the size to check. limit > 0
// bounds a file whose size no repodata states (metadata, installers): an upstream
// that claims or sends more is refused before the disk fills.
func (s *Server) download(ctx context.Context, f *fill, resp *upstream.Response, want cache.Digest, channel string, limit int64) (sha string, err error) {
	defer resp.Body.Close()
	if want.Size >= 0 && resp.Size >= 0 && resp.Size != want.Size {
		s.metrics.ChecksumFailures.WithLabelValues(channel).Inc()
		return "", &cache.MismatchError{What: "size", Want: strconv.FormatInt(want.Size, 10), Got: strconv.FormatInt(resp.Size, 10) + " (Content-Length)"}
	}
	if want.Size < 0 {
		want.Size = resp.Size
	}
	if limit > 0 && want.Size > limit {
		return "", &tooLargeError{limit: limit, got: strconv.FormatInt(want.Size, 10) + " bytes (Content-Length)"}
	}
	tmp, err := s.store.NewTemp()
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			// Say the fill failed before the temp file goes, so that no reader
			// attaching now looks for it.
			f.finish("", err)
		}
		tmp.Abort() // no-op after a commit
	}()
	f.start(tmp.Path(), want.Size, resp.LastModified)
	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := tmp.Write(buf[:n]); err != nil {
				return "", err // a full disk ends here; nothing is kept
			}
			if want.Size >= 0 && tmp.Written() > want.Size {
				s.metrics.ChecksumFailures.WithLabelValues(channel).Inc()
				return "", &cache.MismatchError{What: "size", Want: strconv.FormatInt(want.Size, 10), Got: "more"}
			}
			if limit > 0 && tmp.Written() > limit {
				return "", &tooLargeError{limit: limit, got: "more"}
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
		var mm *cache.MismatchError
		if errors.As(err, &mm) {
			s.metrics.ChecksumFailures.WithLabelValues(channel).Inc()
		}
		return "", err
	}
	// Commit under the fill's lock: a waiter that attaches opens the temp path under
	// the same lock, so it never finds the path already renamed away.
	f.mu.Lock()
	sha, err = tmp.Commit(want)
	var mm *cache.MismatchError
	if errors.As(err, &mm) {
		// Counted before anyone hears of it, so the metric never lags an answer.
		s.metrics.ChecksumFailures.WithLabelValues(channel).Inc()
	}
	if err == nil {
		f.committed, f.sha = true, sha
	} else {
		f.done, f.err = true, err // Commit removed the temp file: nobody may look for it
	}
	f.mu.Unlock()
	f.cond.Broadcast()
	return sha, err
}

// serveFill answers a client from a fill in progress: streaming for a plain GET of
// known size, otherwise (Range, unknown size) once the blob is committed. headers
// sets the response headers from what the fill knows: the committed sha256 ("" while
// it streams) and upstream's Last-Modified.
func (s *Server) serveFill(w http.ResponseWriter, r *http.Request, f *fill, headers func(h http.Header, sha, lastModified string)) error {
	ctx := r.Context()
	f.mu.Lock()
	if err := f.waitLocked(ctx, func() bool { return f.started || f.done }); err != nil {
		f.mu.Unlock()
		return err
	}
	var file *os.File
	if !f.done && !f.committed && f.size >= 0 && r.Header.Get("Range") == "" && r.Method != http.MethodHead {
		// The temp file exists while the fill is neither committed nor over: both
		// change under f.mu, which we hold.
		var err error
		if file, err = os.Open(f.path); err != nil {
			f.mu.Unlock()
			return err
		}
	}
	if file == nil {
		if err := f.waitLocked(ctx, func() bool { return f.done || f.committed }); err != nil {
			f.mu.Unlock()
			return err
		}
		sha, err, lm := f.sha, f.err, f.lastModified
		f.mu.Unlock()
		if err != nil {
			return fillError(err)
		}
		blob, err := s.store.OpenBlob(sha)
		if err != nil {
			return err
		}
		defer blob.Close()
		headers(w.Header(), sha, lm)
		setSource(w, "upstream")
		http.ServeContent(w, r, "", zeroTime, blob.ReadSeeker)
		return nil
	}
	size, lm := f.size, f.lastModified
	f.mu.Unlock()
	defer file.Close()
	headers(w.Header(), "", lm)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("X-Condaproxy-Cache", "miss")
	setSource(w, "upstream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	var pos int64
	for pos < size {
		f.mu.Lock()
		var avail int64
		werr := f.waitLocked(ctx, func() bool {
			avail = f.written
			if !f.committed {
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
			return fillError(err) // headers are out: ServeHTTP breaks the connection
		}
		if _, err := io.Copy(w, io.NewSectionReader(file, pos, avail-pos)); err != nil {
			return nil // the client left; the fill goes on without it
		}
		rc.Flush()
		pos = avail
	}
	return nil
}

func fillError(err error) error {
	var mm *cache.MismatchError
	if errors.As(err, &mm) {
		return errChecksum
	}
	return err
}

// tooLargeError is an upstream file past the bound set for its kind.
type tooLargeError struct {
	limit int64
	got   string
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("upstream file is larger than the limit of %d bytes (limits.max_metadata, or cache.max_size for a files channel): %s", e.limit, e.got)
}
