// Package coord is what replicas of condaproxy coordinate through: a lock per
// missing file so that one replica fetches it, a claim per subdir so that one
// replica revalidates its repodata per metadata_ttl, small stamps that say which
// generation was published last, a bus that carries purges to every replica, and
// the health of the engine behind all of it.
//
// Each role is a small interface with two implementations: an in-process one,
// which is all a single replica needs, and a Redis one, which makes the role hold
// across replicas. The Fallback* decorators put them together so that Redis is
// an improvement and never a dependency: while Redis cannot be reached, a replica
// coordinates with itself alone (the single-replica behaviour) and says so
// through Health; when Redis is back, it joins the others again. Redis is never
// a store of record here: it holds leases, claims, stamps and messages, all of
// which may be lost (Redis runs without persistence) at the cost of some
// duplicated work, never of a wrong answer, because the blob store commits only
// verified content under its sha256 with a conditional create.
//
// # How the locks stack
//
// A fill takes, outermost first:
//
//  1. the fill group (singleflight keyed by the file's sha256, in the caller):
//     free, and streams one fetch to every waiter in the process, so most
//     requests never reach a lock at all;
//  2. LocalLocker, a keyed mutex: it comes before Redis so that one goroutine
//     per replica, not every request, polls Redis for a key, and so that a
//     replica never holds a key twice while Redis comes and goes (a fill begun
//     under the local lock during an outage still excludes the next fill of the
//     same file in this replica once Redis is back);
//  3. RedisLocker, a lease with renewal, skipped while Health says Redis is down:
//     innermost because it is the only layer that costs a round trip and the
//     only one that can fail, and when it fails the layers above still give the
//     single-replica guarantee;
//  4. then, holding the lock, the caller looks in the store again before it
//     fetches: the previous holder has most likely just committed the file.
//
// FallbackLocker(local, remote, health) is layers 2 and 3 together; Set.Locker
// is that stack for a replica.
//
// This package must never decide what is served: it only says who does the work.
package coord

import (
	"context"
	"errors"
	"time"
)

// ErrUnavailable wraps every error that means "the shared engine could not be
// reached or did not answer": the Fallback decorators fall back on it, and a
// caller of a bare Redis implementation can tell it from a cancelled context.
var ErrUnavailable = errors.New("coord: redis unavailable")

// A Locker gives out one Lease per key at a time.
type Locker interface {
	// Lock blocks until the caller holds key or ctx is done (then it returns
	// ctx's error and holds nothing).
	Lock(ctx context.Context, key string) (Lease, error)
}

// A Lease is a held lock.
type Lease interface {
	// Release gives the lock up; it may be called more than once.
	Release()
	// Lost is closed when the lease could not be kept (it could not be renewed
	// in time, or someone else holds the key now). From then on another holder
	// may exist, and the holder must stop claiming exclusivity: it may finish
	// work whose result is safe to duplicate (a verified, conditional commit),
	// but must not act as the only one. A lease that cannot be lost returns a
	// channel that is never closed.
	Lost() <-chan struct{}
}

// A Claimer hands out freshness claims: one per key per window.
type Claimer interface {
	// Claim reports true to exactly one caller per key until ttl has passed
	// since the claim that succeeded; the others get false and should serve
	// what the winner publishes. ttl must be positive. A claim is not given
	// back: a winner that fails leaves the key claimed for ttl, during which the
	// others go on serving what they have.
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// Stamps keeps one small value per key, such as the sha256 of the repodata
// generation last published for a subdir, so that other replicas serve it
// without revalidating. The last Stamp wins.
type Stamps interface {
	Stamp(ctx context.Context, key, value string) error
	// Get returns the value last stamped for key; ok is false if there is none.
	Get(ctx context.Context, key string) (value string, ok bool, err error)
}

// A Bus carries small messages, such as purges, to every subscriber of a topic.
// Delivery is at most once: a subscriber cut off from the bus misses what was
// published meanwhile, so a handler must be idempotent and state that must not
// be missed belongs in Stamps.
type Bus interface {
	Publish(ctx context.Context, topic string, payload []byte) error
	// Subscribe calls fn with every payload published on topic until ctx is
	// done. Calls to one subscription's fn never overlap; fn must not keep or
	// modify payload after it returns.
	Subscribe(ctx context.Context, topic string, fn func(payload []byte)) error
}
