// Package fill runs the downloads that put verified bytes into the cache: one
// fill per key in this process, streamed to every client that asks while it runs,
// and (with Blob) one upstream fetch per content address across replicas.
//
// x/sync/singleflight would merge the fetches but hand the result to the waiters
// only at the end; here every waiter streams the bytes as they land. Waiters read
// the fill's temp file up to what has been written, always one byte short of the
// end until the digest matched: if it does not, the transfer is broken off and no
// client ever holds a complete-looking wrong file.
//
// What is fetched, from where and what it is checked against is the caller's
// (package proxy); this package only knows keys, temp files and digests.
package fill

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/coord"
)

// Func does one fill's work and returns the sha256 of the committed blob. ctx
// outlives the request that started it (the fill goes on when the client leaves)
// and ends with the Group's Timeout or its owner's shutdown.
type Func func(ctx context.Context, f *Fill) (sha string, err error)

// ErrShuttingDown is a fill asked for once the Group's owner stopped taking work.
var ErrShuttingDown = errors.New("shutting down")

// Options configure a Group.
type Options struct {
	// Store is where fills commit; required to run one (a Group made only to
	// exist, as in a server built to parse routes, may have none).
	Store *cache.Store
	// Locker is the lock Blob takes around an upstream fetch: coord's in-process
	// locker alone, Redis's across replicas. Nil: in-process.
	Locker coord.Locker
	// Timeout bounds one fill; default 30 minutes.
	Timeout time.Duration
	// Background runs fn detached from any request, tracked for its owner's
	// shutdown; it reports false, running nothing, once that began. Required.
	Background func(fn func()) bool
	// Guard runs fn as a unit of work whose panic fails it alone. Nil: none.
	Guard func(unit string, fn func() error) error
	// Base ends every fill when cancelled (its owner's shutdown). Nil: never.
	Base context.Context
	// InFlight follows the number of fills running (a Prometheus gauge). Nil: none.
	InFlight interface {
		Inc()
		Dec()
	}
}

// Group is the table of fills in progress, by key.
type Group struct {
	o     Options
	mu    sync.Mutex
	fills map[string]*Fill
}

// New returns an empty Group.
func New(o Options) *Group {
	if o.Background == nil {
		panic("fill: Options.Background is required")
	}
	if o.Locker == nil {
		o.Locker = coord.NewLocalLocker()
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Minute
	}
	if o.Guard == nil {
		o.Guard = func(_ string, fn func() error) error { return fn() }
	}
	if o.Base == nil {
		o.Base = context.Background()
	}
	return &Group{o: o, fills: map[string]*Fill{}}
}

// Start returns the fill for key, starting run in the background if none is in
// progress (or the one there already failed).
func (g *Group) Start(ctx context.Context, key string, run Func) *Fill {
	g.mu.Lock()
	if f, ok := g.fills[key]; ok {
		// Not f.mu: a fill holds it across its commit (fsync, rename), and
		// every Start of every key waits on g.mu meanwhile.
		if !f.failed.Load() {
			g.mu.Unlock()
			return f
		}
		// A failed fill still winding down: this request deserves a fresh attempt.
	}
	f := newFill()
	g.fills[key] = f
	g.mu.Unlock()

	g.inFlight(1)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.o.Timeout)
	stop := context.AfterFunc(g.o.Base, cancel)
	end := func(sha string, err error) {
		stop()
		cancel()
		g.inFlight(-1)
		// Out of the table before the waiters wake: a request that comes after
		// this sees the committed blob, or starts a fresh attempt after a failure.
		g.mu.Lock()
		if g.fills[key] == f {
			delete(g.fills, key)
		}
		g.mu.Unlock()
		f.finish(sha, err)
	}
	started := g.o.Background(func() {
		var sha string
		err := g.o.Guard("fill", func() (err error) { sha, err = run(fctx, f); return err })
		end(sha, err)
	})
	if !started {
		end("", ErrShuttingDown)
	}
	return f
}

func (g *Group) inFlight(d int) {
	switch {
	case g.o.InFlight == nil:
	case d > 0:
		g.o.InFlight.Inc()
	default:
		g.o.InFlight.Dec()
	}
}

// Idle reports whether no fill is running.
func (g *Group) Idle() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.fills) == 0
}

// Writing reports whether some fill has written bytes to its temp file.
func (g *Group) Writing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range g.fills {
		f.mu.Lock()
		w := f.started && f.written > 0
		f.mu.Unlock()
		if w {
			return true
		}
	}
	return false
}

// Blob decorates fetch, the upstream download of the blob sha, with the cache
// and the lock around it: a blob already here or in the shared store is taken
// from there; otherwise fetch runs holding the Locker's lock of lockKey, after a
// second look in the store (another fill, here or on another replica, may have
// committed it while this one waited). sha "" (a record with md5 only) skips the
// looks; lockKey then names the file.
func (g *Group) Blob(sha, lockKey string, fetch Func) Func {
	return func(ctx context.Context, f *Fill) (string, error) {
		store := g.o.Store
		if sha != "" {
			if ok, err := store.Pull(ctx, sha); err != nil {
				return "", err
			} else if ok {
				return f.pinned(store, sha)
			}
		}
		lease, err := g.o.Locker.Lock(ctx, "fill:"+lockKey)
		if err != nil {
			return "", fmt.Errorf("take the fill lock: %w", err)
		}
		defer lease.Release()
		if sha != "" {
			if shared, err := store.Shared(ctx, sha); err != nil {
				return "", err
			} else if shared || store.Has(sha) {
				// Put there while we waited. The lock is for upstream fetches,
				// not for copies from the store: the next waiter need not wait
				// for this one's pull.
				lease.Release()
				if ok, err := store.Pull(ctx, sha); err != nil {
					return "", err
				} else if ok {
					return f.pinned(store, sha)
				}
				return "", fmt.Errorf("blob %s (%s): gone from the shared store while it was pulled: %w", sha, lockKey, cache.ErrNotFound)
			}
		}
		return fetch(ctx, f)
	}
}

// Fill is one fill in progress, shared by every client that asks for its key.
type Fill struct {
	mu   sync.Mutex
	cond *sync.Cond

	started  bool   // upstream answered; path and size are set
	path     string // the temp file being written
	size     int64  // expected bytes, -1 when unknown
	written  int64
	verified bool   // the bytes matched and are the blob sha: readers may have all of them
	done     bool   // the fill is over
	err      error  // set with done on failure
	sha      string // the committed blob
	// failed is done with an error, read without mu (Group.Start).
	failed atomic.Bool
	// lastModified is upstream's Last-Modified for the bytes being written.
	lastModified string

	// after run once the blob is in place (Committed), with its sha256: the
	// index entries of every path that asked for it (a fill keyed by sha256
	// serves several). ran says they did.
	after []func(sha string) error
	ran   bool

	// unpin lets the committed blob go again (cache.Store.Pin): it is held
	// from the commit until the fill is over and every waiter in Serve or
	// Wait has left, so that no other fill's commit evicts it between the
	// commit and a waiter's open (a blob larger than the cap, say).
	unpin   func()
	waiters int
}

func newFill() *Fill {
	f := &Fill{size: -1}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// Size is the size the fill expects; when upstream stated none, the bytes
// written so far (all of them once Download returned).
func (f *Fill) Size() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.size < 0 {
		return f.written
	}
	return f.size
}

// Streamed reports whether the fill downloaded bytes (it did not find the blob
// in a store).
func (f *Fill) Streamed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started
}

// AfterCommit has fn run with the committed sha256 once the blob is in place:
// later, when the fill's Func calls Committed, or now if that already happened
// (and not at all if the fill failed).
func (f *Fill) AfterCommit(fn func(sha string) error) error {
	f.mu.Lock()
	if !f.ran {
		f.after = append(f.after, fn)
		f.mu.Unlock()
		return nil
	}
	sha, err := f.sha, f.err
	f.mu.Unlock()
	if err != nil || sha == "" {
		return nil // failed: nothing to run for
	}
	return fn(sha)
}

// Committed runs what AfterCommit added, the blob sha being in place; what is
// added later runs at once. A Func returns through it.
func (f *Fill) Committed(sha string) (string, error) {
	f.mu.Lock()
	f.ran = true
	f.sha = sha
	after := f.after
	f.after = nil
	f.mu.Unlock()
	var first error
	for _, fn := range after {
		if err := fn(sha); err != nil && first == nil {
			first = err
		}
	}
	return sha, first
}

func (f *Fill) start(path string, size int64, lastModified string) {
	f.mu.Lock()
	f.started, f.path, f.size, f.lastModified = true, path, size, lastModified
	f.mu.Unlock()
	f.cond.Broadcast()
}

func (f *Fill) advance(n int64) {
	f.mu.Lock()
	f.written = n
	f.mu.Unlock()
	f.cond.Broadcast()
}

func (f *Fill) finish(sha string, err error) {
	f.mu.Lock()
	f.done, f.sha, f.err = true, sha, err
	if err != nil {
		f.failed.Store(true)
	}
	unpin := f.unpinLocked()
	f.mu.Unlock()
	f.cond.Broadcast()
	unpin()
}

// pinned is Committed for a blob already in the store (pulled, or there), held
// for the waiters like one Download committed.
func (f *Fill) pinned(store *cache.Store, sha string) (string, error) {
	if unpin, ok := store.Pin(sha); ok {
		f.mu.Lock()
		f.unpin = unpin
		f.mu.Unlock()
	}
	return f.Committed(sha)
}

// enter and leave count a waiter (Serve, Wait) in and out.
func (f *Fill) enter() {
	f.mu.Lock()
	f.waiters++
	f.mu.Unlock()
}

func (f *Fill) leave() {
	f.mu.Lock()
	f.waiters--
	unpin := f.unpinLocked()
	f.mu.Unlock()
	unpin()
}

// unpinLocked returns what lets the blob go once the fill is over and no
// waiter is left (a no-op otherwise). Called with mu held; the caller runs it
// after unlocking (it takes the store's lock).
func (f *Fill) unpinLocked() func() {
	if !f.done || f.waiters > 0 || f.unpin == nil {
		return func() {}
	}
	unpin := f.unpin
	f.unpin = nil
	return unpin
}

// waitLocked waits, with f.mu held, until ready holds or ctx is done: a waiter
// whose client left stops waiting (and frees its goroutine and file) instead of
// staying until the fill ends.
func (f *Fill) waitLocked(ctx context.Context, ready func() bool) error {
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

// Wait waits for the fill to end, or ctx; it returns the committed sha256.
func (f *Fill) Wait(ctx context.Context) (sha string, err error) {
	f.enter()
	defer f.leave()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.waitLocked(ctx, func() bool { return f.done }); err != nil {
		return "", err
	}
	return f.sha, f.err
}
