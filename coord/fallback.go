package coord

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// The Fallback decorators put an in-process implementation (local) and a
// shared one (remote) together: remote while Health says it is up, local when
// it is down or an operation finds it unavailable. Any other error of remote,
// a cancelled context above all, is returned as it is.

// FallbackLocker always takes local first, then remote while Health is up
// (see the package comment for why in that order). When remote is unavailable,
// the local lease alone is returned: the replica goes on filling, excluding
// only itself, and another replica may fetch the same file meanwhile, which
// costs a download but never a wrong file (commits are verified and
// conditional). The lease is lost when the remote one is.
func FallbackLocker(local, remote Locker, h *Health) Locker {
	return &fallbackLocker{local: local, remote: remote, h: h}
}

type fallbackLocker struct {
	local, remote Locker
	h             *Health
}

func (f *fallbackLocker) Lock(ctx context.Context, key string) (Lease, error) {
	held, err := f.local.Lock(ctx, key)
	if err != nil {
		return nil, err
	}
	if !f.h.Up() {
		f.h.fellBack("lock", nil)
		return held, nil
	}
	shared, err := f.remote.Lock(ctx, key)
	switch {
	case err == nil:
		return &stackedLease{local: held, shared: shared}, nil
	case errors.Is(err, ErrUnavailable):
		f.h.fellBack("lock", err)
		return held, nil
	default:
		held.Release()
		return nil, err
	}
}

type stackedLease struct{ local, shared Lease }

// Release gives the shared lease up first, so that this replica's next holder
// never overlaps with this one in Redis.
func (l *stackedLease) Release() {
	l.shared.Release()
	l.local.Release()
}

func (l *stackedLease) Lost() <-chan struct{} { return l.shared.Lost() }

// FallbackClaims claims in remote while it is up, else in local: during an
// outage each replica revalidates on its own, once per ttl, as a lone replica
// does.
func FallbackClaims(local, remote Claimer, h *Health) Claimer {
	return &fallbackClaims{local: local, remote: remote, h: h}
}

type fallbackClaims struct {
	local, remote Claimer
	h             *Health
}

func (f *fallbackClaims) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if f.h.Up() {
		ok, err := f.remote.Claim(ctx, key, ttl)
		if !errors.Is(err, ErrUnavailable) {
			return ok, err
		}
		f.h.fellBack("claim", err)
	} else {
		f.h.fellBack("claim", nil)
	}
	return f.local.Claim(ctx, key, ttl)
}

// FallbackStamps writes every stamp to local as well as remote, and keeps in
// local what it reads from remote: during an outage, and after Redis restarted
// empty, a replica still knows the last generation it published or saw, which
// the blob store still holds.
func FallbackStamps(local, remote Stamps, h *Health) Stamps {
	return &fallbackStamps{local: local, remote: remote, h: h}
}

type fallbackStamps struct {
	local, remote Stamps
	h             *Health
}

func (f *fallbackStamps) Stamp(ctx context.Context, key, value string) error {
	if err := f.local.Stamp(ctx, key, value); err != nil {
		return err
	}
	if !f.h.Up() {
		f.h.fellBack("stamp", nil)
		return nil
	}
	err := f.remote.Stamp(ctx, key, value)
	if errors.Is(err, ErrUnavailable) {
		f.h.fellBack("stamp", err)
		return nil
	}
	return err
}

func (f *fallbackStamps) Get(ctx context.Context, key string) (string, bool, error) {
	if !f.h.Up() {
		f.h.fellBack("get", nil)
		return f.local.Get(ctx, key)
	}
	v, ok, err := f.remote.Get(ctx, key)
	switch {
	case errors.Is(err, ErrUnavailable):
		f.h.fellBack("get", err)
		return f.local.Get(ctx, key)
	case err != nil:
		return "", false, err
	case !ok:
		return f.local.Get(ctx, key)
	}
	if err := f.local.Stamp(ctx, key, v); err != nil {
		return "", false, err
	}
	return v, true, nil
}

// FallbackBus delivers every message to this replica's subscribers itself,
// directly and before Publish returns, and to the other replicas through
// remote: so a purge has run here when Publish returns whether or not Redis is
// up, and this replica does not depend on its own subscription being connected
// to hear its own purges. Messages go to remote with the publishing replica's
// id in front, so that a replica skips its own when Redis echoes them back.
//
// Publish returns an error wrapping ErrUnavailable when the message reached
// this replica only: the caller can tell an operator that the others were not
// told (they will not be later: the bus does not queue).
func FallbackBus(local, remote Bus, h *Health) Bus {
	return &fallbackBus{local: local, remote: remote, h: h, origin: newToken()}
}

type fallbackBus struct {
	local, remote Bus
	h             *Health
	origin        string // this replica's id on the bus; newToken's fixed length
}

func (f *fallbackBus) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := f.local.Publish(ctx, topic, payload); err != nil {
		return err
	}
	if !f.h.Up() {
		f.h.fellBack("publish", nil)
		return fmt.Errorf("published on this replica only: %w", ErrUnavailable)
	}
	err := f.remote.Publish(ctx, topic, append([]byte(f.origin), payload...))
	if errors.Is(err, ErrUnavailable) {
		f.h.fellBack("publish", err)
		return fmt.Errorf("published on this replica only: %w", err)
	}
	return err
}

// Subscribe subscribes to remote even while Health says it is down: the
// remote subscription goes on trying and joins when Redis is back. Calls to fn
// from local and remote are serialised, as Bus promises.
func (f *fallbackBus) Subscribe(ctx context.Context, topic string, fn func([]byte)) error {
	var mu sync.Mutex
	call := func(p []byte) {
		mu.Lock()
		defer mu.Unlock()
		fn(p)
	}
	if err := f.local.Subscribe(ctx, topic, call); err != nil {
		return err
	}
	err := f.remote.Subscribe(ctx, topic, func(p []byte) {
		if len(p) < len(f.origin) || string(p[:len(f.origin)]) == f.origin {
			return // ours, delivered already; or not from a FallbackBus
		}
		call(p[len(f.origin):])
	})
	if errors.Is(err, ErrUnavailable) {
		f.h.fellBack("subscribe", err)
		return nil
	}
	return err
}
