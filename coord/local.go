package coord

import (
	"context"
	"errors"
	"sync"
	"time"
)

// neverLost is the Lost channel of leases that cannot be lost.
var neverLost = make(chan struct{})

// LocalLocker is a keyed mutex: one holder per key within this process.
type LocalLocker struct {
	mu   sync.Mutex
	keys map[string]*localKey
}

// localKey is one key's mutex; refs counts holders and waiters, so that the
// entry is dropped with the last of them and the map does not grow with every
// file ever fetched.
type localKey struct {
	held chan struct{} // a token in it means held; capacity 1
	refs int
}

func NewLocalLocker() *LocalLocker {
	return &LocalLocker{keys: map[string]*localKey{}}
}

func (l *LocalLocker) Lock(ctx context.Context, key string) (Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	k := l.keys[key]
	if k == nil {
		k = &localKey{held: make(chan struct{}, 1)}
		l.keys[key] = k
	}
	k.refs++
	l.mu.Unlock()
	select {
	case k.held <- struct{}{}:
		return &localLease{locker: l, key: key, k: k}, nil
	case <-ctx.Done():
		l.unref(key, k)
		return nil, ctx.Err()
	}
}

func (l *LocalLocker) unref(key string, k *localKey) {
	l.mu.Lock()
	if k.refs--; k.refs == 0 {
		delete(l.keys, key)
	}
	l.mu.Unlock()
}

type localLease struct {
	locker *LocalLocker
	key    string
	k      *localKey
	once   sync.Once
}

func (l *localLease) Release() {
	l.once.Do(func() {
		<-l.k.held
		l.locker.unref(l.key, l.k)
	})
}

func (l *localLease) Lost() <-chan struct{} { return neverLost }

// errTTL refuses a claim that could never expire or is shorter than Redis can
// express (a millisecond), in both implementations alike.
var errTTL = errors.New("coord: claim ttl must be at least 1ms")

// LocalClaims is a map of claim expiries.
type LocalClaims struct {
	mu     sync.Mutex
	until  map[string]time.Time
	claims int              // claims since the last sweep of expired entries
	now    func() time.Time // time.Now; tests replace it
}

func NewLocalClaims() *LocalClaims {
	return &LocalClaims{until: map[string]time.Time{}, now: time.Now}
}

func (c *LocalClaims) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, errTTL
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	// Sweep now and then so that keys claimed once do not stay forever; once
	// per as many claims as there are entries keeps it amortised O(1).
	if c.claims++; c.claims > len(c.until) {
		for k, u := range c.until {
			if !now.Before(u) {
				delete(c.until, k)
			}
		}
		c.claims = 0
	}
	if u, ok := c.until[key]; ok && now.Before(u) {
		return false, nil
	}
	c.until[key] = now.Add(ttl)
	return true, nil
}

// LocalStamps is a map.
type LocalStamps struct {
	mu     sync.RWMutex
	values map[string]string
}

func NewLocalStamps() *LocalStamps {
	return &LocalStamps{values: map[string]string{}}
}

func (s *LocalStamps) Stamp(ctx context.Context, key, value string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.values[key] = value
	s.mu.Unlock()
	return nil
}

func (s *LocalStamps) Get(ctx context.Context, key string) (string, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	s.mu.RLock()
	v, ok := s.values[key]
	s.mu.RUnlock()
	return v, ok, nil
}

// LocalBus calls the subscribers of a topic directly, in Publish, one after
// the other: within one process there is nothing to wait for, and the
// publisher knows on return that every subscriber has run.
type LocalBus struct {
	mu   sync.Mutex
	subs map[string]map[*localSub]struct{}
}

// localSub serialises calls to one subscriber, as Bus promises, when several
// goroutines publish at once.
type localSub struct {
	ctx context.Context // the subscription's; it ends with it
	mu  sync.Mutex
	fn  func([]byte)
}

func NewLocalBus() *LocalBus {
	return &LocalBus{subs: map[string]map[*localSub]struct{}{}}
}

func (b *LocalBus) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	subs := make([]*localSub, 0, len(b.subs[topic]))
	for s := range b.subs[topic] {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	// Called outside b.mu, so that a subscriber may subscribe, or publish on
	// another topic (on its own it would wait for itself).
	for _, s := range subs {
		p := append([]byte(nil), payload...)
		s.mu.Lock()
		// Checked here too: the entry leaves the map in the background, and
		// a subscriber whose context ended must not be called any more.
		if s.ctx.Err() == nil {
			s.fn(p)
		}
		s.mu.Unlock()
	}
	return nil
}

func (b *LocalBus) Subscribe(ctx context.Context, topic string, fn func([]byte)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s := &localSub{ctx: ctx, fn: fn}
	b.mu.Lock()
	if b.subs[topic] == nil {
		b.subs[topic] = map[*localSub]struct{}{}
	}
	b.subs[topic][s] = struct{}{}
	b.mu.Unlock()
	context.AfterFunc(ctx, func() {
		b.mu.Lock()
		delete(b.subs[topic], s)
		if len(b.subs[topic]) == 0 {
			delete(b.subs, topic)
		}
		b.mu.Unlock()
	})
	return nil
}
