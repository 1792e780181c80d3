package coord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hooks records what a Health reported.
type hooks struct {
	mu        sync.Mutex
	changes   []bool
	fallbacks map[string]int
}

func (h *hooks) options() HealthOptions {
	h.fallbacks = map[string]int{}
	return HealthOptions{
		Interval: 50 * time.Millisecond,
		OnChange: func(up bool, reason error) {
			h.mu.Lock()
			h.changes = append(h.changes, up)
			h.mu.Unlock()
		},
		OnFallback: func(op string) {
			h.mu.Lock()
			h.fallbacks[op]++
			h.mu.Unlock()
		},
	}
}

func (h *hooks) fellBack(op string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fallbacks[op]
}

func (h *hooks) changed() []bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.changes)
}

// lockerFunc is a Locker made of a function, for a remote that fails on demand.
type lockerFunc func(ctx context.Context, key string) (Lease, error)

func (f lockerFunc) Lock(ctx context.Context, key string) (Lease, error) { return f(ctx, key) }

func TestFallbackLockerGoesLocalWhenRemoteIsUnavailable(t *testing.T) {
	var hk hooks
	o := hk.options()
	o.Interval = time.Hour // only the operations move the state here
	h := NewHealth(func(context.Context) error { return nil }, o)
	defer h.Close()
	var remoteCalls atomic.Int32
	remoteErr := fmt.Errorf("%w: connection refused", ErrUnavailable)
	remote := lockerFunc(func(ctx context.Context, key string) (Lease, error) {
		remoteCalls.Add(1)
		return nil, remoteErr
	})
	l := FallbackLocker(NewLocalLocker(), remote, h)

	held, err := l.Lock(context.Background(), "k")
	if err != nil {
		t.Fatalf("Lock with the remote unavailable: %v, want the local lease", err)
	}
	if h.Up() || h.Readiness() != "redis: degraded" {
		t.Errorf("after a failed remote: Up %v, %q", h.Up(), h.Readiness())
	}
	if got := hk.changed(); !slices.Equal(got, []bool{true, false}) {
		t.Errorf("OnChange calls %v, want [true false]", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Lock(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second Lock of a key held locally: %v, want to wait", err)
	}
	held.Release()
	again, err := l.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	again.Release()
	if n := remoteCalls.Load(); n != 1 {
		t.Errorf("the remote was asked %d times, want once: once down, it is skipped until a ping says up", n)
	}
	if n := hk.fellBack("lock"); n != 2 {
		t.Errorf("OnFallback(lock) %d times, want 2 (the Lock that timed out never got past the local lock)", n)
	}

	// Any other error of the remote is the caller's, and leaves no local lease.
	h.set(true, nil)
	remoteErr = context.Canceled
	if _, err := l.Lock(context.Background(), "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock: %v, want the remote's error", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	remoteErr = fmt.Errorf("%w: down", ErrUnavailable)
	if lease, err := l.Lock(ctx2, "k"); err != nil {
		t.Errorf("the local lease was not released after the remote failed: %v", err)
	} else {
		lease.Release()
	}
}

// replica is one condaproxy replica's coordination in a test.
type replica struct {
	set   *Set
	hooks *hooks
	inbox *inbox
}

// Three replicas on one Redis: locks, claims, stamps and purges hold across
// them; Redis killed, they go on alone and say so; Redis back, they join
// again.
func TestReplicasRideOutRedisRestart(t *testing.T) {
	srv := startRedis(t)
	o := testOptions()
	o.Lease = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rs := make([]*replica, 3)
	for i := range rs {
		r := &replica{hooks: &hooks{}, inbox: &inbox{}}
		r.set = NewRedis(srv.client(t), o, r.hooks.options())
		t.Cleanup(r.set.Close)
		if err := r.set.Bus.Subscribe(ctx, "purge", r.inbox.add); err != nil {
			t.Fatal(err)
		}
		rs[i] = r
	}
	for i, r := range rs {
		if !r.set.Health.Up() || r.set.Health.Readiness() != "redis: ok" {
			t.Fatalf("replica %d: %q at start", i, r.set.Health.Readiness())
		}
	}

	// Up: one holder across replicas, one claim, stamps and purges shared.
	held, err := rs[0].set.Locker.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := rs[1].set.Locker.Lock(short, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("another replica took a held key: %v", err)
	}
	cancelShort()
	if ok, _ := rs[0].set.Claims.Claim(ctx, "main/linux-64", time.Minute); !ok {
		t.Error("first claim refused")
	}
	if ok, _ := rs[1].set.Claims.Claim(ctx, "main/linux-64", time.Minute); ok {
		t.Error("a second replica won the same claim")
	}
	rs[0].set.Stamps.Stamp(ctx, "main/linux-64", "gen-1")
	if v, ok, err := rs[2].set.Stamps.Get(ctx, "main/linux-64"); v != "gen-1" || !ok || err != nil {
		t.Errorf("stamp on another replica: %q %v %v", v, ok, err)
	}
	if err := rs[0].set.Bus.Publish(ctx, "purge", []byte("first")); err != nil {
		t.Fatal(err)
	}
	if !rs[0].inbox.has("first") {
		t.Error("the publishing replica had not purged when Publish returned")
	}
	for i, r := range rs {
		within(t, 10*time.Second, fmt.Sprintf("replica %d receives the purge", i), func() bool { return r.inbox.has("first") })
	}

	// Redis killed: every replica says so, and goes on alone.
	srv.stop()
	for i, r := range rs {
		within(t, 10*time.Second, fmt.Sprintf("replica %d sees Redis down", i), func() bool { return !r.set.Health.Up() })
		if got := r.set.Health.Readiness(); got != "redis: degraded" {
			t.Errorf("replica %d: %q", i, got)
		}
	}
	select {
	case <-held.Lost():
	case <-time.After(o.Lease + 10*time.Second):
		t.Error("a holder that could not renew with Redis gone was not told")
	}
	local, err := rs[1].set.Locker.Lock(ctx, "k")
	if err != nil {
		t.Fatalf("Lock with Redis down: %v, want the local lock", err)
	}
	if rs[1].hooks.fellBack("lock") == 0 {
		t.Error("a lock that fell back was not reported")
	}
	if ok, err := rs[1].set.Claims.Claim(ctx, "main/noarch", time.Minute); !ok || err != nil {
		t.Errorf("Claim with Redis down: %v %v, want the local claim", ok, err)
	}
	if v, ok, err := rs[2].set.Stamps.Get(ctx, "main/linux-64"); v != "gen-1" || !ok || err != nil {
		t.Errorf("Get with Redis down: %q %v %v, want the stamp last seen", v, ok, err)
	}
	if err := rs[1].set.Bus.Publish(ctx, "purge", []byte("alone")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Publish with Redis down: %v, want ErrUnavailable", err)
	}
	if !rs[1].inbox.has("alone") {
		t.Error("with Redis down, the publishing replica did not purge")
	}
	for i, r := range rs {
		// A slow ping under load may add a flap; the order is what counts.
		if got := r.hooks.changed(); len(got) < 2 || !got[0] || got[len(got)-1] {
			t.Errorf("replica %d: OnChange %v, want up, then down", i, got)
		}
	}

	// Redis back: they say so, take locks in Redis again, and hear purges.
	srv.start()
	for i, r := range rs {
		within(t, 20*time.Second, fmt.Sprintf("replica %d sees Redis back", i), func() bool { return r.set.Health.Up() })
		if got := r.set.Health.Readiness(); got != "redis: ok" {
			t.Errorf("replica %d: %q", i, got)
		}
		if got := r.hooks.changed(); len(got) < 3 || !got[0] || !slices.Contains(got, false) || !got[len(got)-1] {
			t.Errorf("replica %d: OnChange %v, want up, down, up", i, got)
		}
	}
	for n := 0; ; n++ {
		if n > 1500 {
			t.Fatal("subscriptions did not resume after Redis restarted")
		}
		msg := fmt.Sprint("after ", n)
		// Redis may be up to the pinger before a subscription is back: a
		// message may be missed meanwhile, so publish until one arrives.
		if err := rs[2].set.Bus.Publish(ctx, "purge", []byte(msg)); err != nil && !errors.Is(err, ErrUnavailable) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if rs[0].inbox.has(msg) && rs[1].inbox.has(msg) {
			break
		}
	}
	shared, err := rs[0].set.Locker.Lock(ctx, "k2")
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.client(t).Exists(ctx, "test:lock:k2").Val(); n != 1 {
		t.Error("with Redis back, a lock was not taken in Redis")
	}
	short, cancelShort = context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := rs[1].set.Locker.Lock(short, "k2"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("with Redis back, another replica took a held key: %v", err)
	}
	cancelShort()
	shared.Release()
	local.Release()
	held.Release()
}
