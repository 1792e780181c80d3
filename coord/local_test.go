package coord

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lockersHoldOneAtATime has n goroutines take key from their own Locker
// (replicas) or a shared one, each once, and checks that no two hold it at once
// and that all get it.
func lockersHoldOneAtATime(t *testing.T, lockers []Locker, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var holders, most, done atomic.Int32
	var wg sync.WaitGroup
	for i, l := range lockers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease, err := l.Lock(ctx, key)
			if err != nil {
				t.Errorf("replica %d: Lock: %v", i, err)
				return
			}
			n := holders.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(2 * time.Millisecond) // long enough for the others to try
			select {
			case <-lease.Lost():
				t.Errorf("replica %d: lease lost while held", i)
			default:
			}
			holders.Add(-1)
			lease.Release()
			done.Add(1)
		}()
	}
	wg.Wait()
	if got, want := int(done.Load()), len(lockers); got != want {
		t.Errorf("%d of %d replicas got the lock", got, want)
	}
	if m := most.Load(); m != 1 {
		t.Errorf("%d holders at once, want 1", m)
	}
}

func TestLocalLockerOneHolder(t *testing.T) {
	l := NewLocalLocker()
	lockers := make([]Locker, 24)
	for i := range lockers {
		lockers[i] = l
	}
	lockersHoldOneAtATime(t, lockers, "sha")
	if n := len(l.keys); n != 0 {
		t.Errorf("%d keys left in the map after every lease was released", n)
	}
}

func TestLocalLockerContext(t *testing.T) {
	l := NewLocalLocker()
	held, err := l.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Lock(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock on a held key: %v, want the context's deadline", err)
	}
	other, err := l.Lock(context.Background(), "other")
	if err != nil {
		t.Fatalf("another key is independent: %v", err)
	}
	other.Release()
	held.Release()
	held.Release() // twice is harmless
	again, err := l.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	again.Release()
	select {
	case <-again.Lost():
		t.Error("a local lease reports lost")
	default:
	}
	if n := len(l.keys); n != 0 {
		t.Errorf("%d keys left in the map", n)
	}
}

func TestLocalClaimsOnePerWindow(t *testing.T) {
	c := NewLocalClaims()
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	ctx := context.Background()
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := c.Claim(ctx, "main/linux-64", time.Minute); err != nil {
				t.Error(err)
			} else if ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := wins.Load(); got != 1 {
		t.Fatalf("%d claims won in one window, want 1", got)
	}
	for _, step := range []struct {
		advance time.Duration
		want    bool
	}{
		{59 * time.Second, false},
		{time.Second, true}, // the window has passed
		{time.Second, false},
	} {
		now = now.Add(step.advance)
		if got, _ := c.Claim(ctx, "main/linux-64", time.Minute); got != step.want {
			t.Errorf("after %v more: Claim %v, want %v", step.advance, got, step.want)
		}
	}
	if ok, _ := c.Claim(ctx, "main/noarch", time.Minute); !ok {
		t.Error("another key is independent")
	}
	if _, err := c.Claim(ctx, "k", 0); err == nil {
		t.Error("a claim with no ttl was accepted")
	}
	// Expired entries go: after a window, as many claims as there are entries
	// sweep them.
	now = now.Add(time.Hour)
	for range len(c.until) + 1 {
		c.Claim(ctx, "a", time.Minute)
	}
	if _, ok := c.until["main/linux-64"]; ok {
		t.Error("an expired claim is still in the map")
	}
}

func TestLocalStamps(t *testing.T) {
	s := NewLocalStamps()
	ctx := context.Background()
	if _, ok, err := s.Get(ctx, "main/linux-64"); ok || err != nil {
		t.Fatalf("Get before Stamp: %v %v", ok, err)
	}
	s.Stamp(ctx, "main/linux-64", "aaa")
	s.Stamp(ctx, "main/linux-64", "bbb")
	if v, ok, err := s.Get(ctx, "main/linux-64"); v != "bbb" || !ok || err != nil {
		t.Fatalf("Get = %q %v %v, want the last stamp", v, ok, err)
	}
}

func TestLocalBus(t *testing.T) {
	b := NewLocalBus()
	var got [3][]string
	var cancels [3]context.CancelFunc
	for i := range got {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		if err := b.Subscribe(ctx, "purge", func(p []byte) { got[i] = append(got[i], string(p)) }); err != nil {
			t.Fatal(err)
		}
	}
	b.Publish(context.Background(), "purge", []byte("one"))
	b.Publish(context.Background(), "other", []byte("not for us"))
	cancels[1]()
	b.Publish(context.Background(), "purge", []byte("two"))
	// Publish has returned: every subscriber has run.
	for i, want := range []string{"one two", "one", "one two"} {
		if s := strings.Join(got[i], " "); s != want {
			t.Errorf("subscriber %d got %q, want %q", i, s, want)
		}
	}
	cancels[0]()
	cancels[2]()
	// The entries go in the background; Publish skips them already.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		b.mu.Lock()
		n := len(b.subs)
		b.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriptions left after their contexts ended: %d topics", n)
		}
	}
}
