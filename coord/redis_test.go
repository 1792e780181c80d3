package coord

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/redis/go-redis/v9"
)

// redisServer is a real redis-server on a loopback port, with no persistence,
// that a test can kill and start again on the same port (as after a crash).
type redisServer struct {
	t    *testing.T
	bin  string
	addr string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testdata.Skipf(t, testdata.Redis, "redis-server is not installed (apt-get install redis-server)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &redisServer{t: t, bin: bin, addr: addr, dir: t.TempDir()}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *redisServer) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.addr)
	s.cmd = exec.Command(s.bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", s.dir)
	s.cmd.Stdout, s.cmd.Stderr = io.Discard, io.Discard
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	s.done = done
	go func() { s.cmd.Wait(); close(done) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", s.addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatal("redis-server did not start")
		}
	}
}

// stop kills the server, as a crash would: no goodbye to its clients.
func (s *redisServer) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// client is one replica's connection to s; it refuses to dial anywhere but
// loopback, so that no test can reach out.
func (s *redisServer) client(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:        s.addr,
		DialTimeout: time.Second,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				panic("test tried to dial " + addr + ": tests stay on loopback")
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// within polls cond every few milliseconds until it holds or the (generous)
// deadline passes.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
	}
}

func testOptions() RedisOptions {
	return RedisOptions{Prefix: "test:", Lease: 2 * time.Second, MaxPoll: 20 * time.Millisecond}
}

// 24 replicas, each with its own client, take one key: one at a time, and all
// of them in the end.
func TestRedisLockerOneHolderAcrossReplicas(t *testing.T) {
	srv := startRedis(t)
	lockers := make([]Locker, 24)
	for i := range lockers {
		lockers[i] = NewRedisLocker(srv.client(t), testOptions())
	}
	lockersHoldOneAtATime(t, lockers, "sha256-of-a-package")
	if n := srv.client(t).Exists(context.Background(), "test:lock:sha256-of-a-package").Val(); n != 0 {
		t.Error("the lock key is left in Redis after every lease was released")
	}
}

// A holder that dies (its client goes, so it neither renews nor releases)
// hears that it lost the lease, and a waiter takes over once Redis lets the
// lease expire. While the holder lives, its renewals keep the waiter out.
func TestRedisLockerTakeoverAfterHolderDies(t *testing.T) {
	srv := startRedis(t)
	o := testOptions()
	holderClient := srv.client(t)
	holder := NewRedisLocker(holderClient, o)
	waiter := NewRedisLocker(srv.client(t), o)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	held, err := holder.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	taken := make(chan Lease, 1)
	go func() {
		lease, err := waiter.Lock(ctx, "k")
		if err != nil {
			t.Error(err)
			close(taken)
			return
		}
		taken <- lease
	}()
	// Two and a half leases: without renewal, the waiter would have it.
	select {
	case <-taken:
		t.Fatal("the waiter took a lease its live holder was renewing")
	case <-held.Lost():
		t.Fatalf("a live holder lost its lease: %v", held.(*redisLease).renewFail)
	case <-time.After(5 * o.Lease / 2):
	}

	holderClient.Close() // the holder dies
	select {
	case <-held.Lost():
		t.Logf("the dead holder was told: %v", held.(*redisLease).renewFail)
	case <-time.After(o.Lease + 10*time.Second):
		t.Fatal("a holder that could not renew was not told it lost the lease")
	}
	var lease Lease
	select {
	case lease = <-taken:
	case <-time.After(o.Lease + 20*time.Second):
		t.Fatal("no waiter took over from a dead holder")
	}
	if lease == nil {
		return
	}
	if v := srv.client(t).Get(ctx, "test:lock:k").Val(); v != lease.(*redisLease).token {
		t.Errorf("the key holds %q, not the new holder's token", v)
	}
	held.Release() // the dead holder's release must not touch the new lease (its client is gone anyway)
	lease.Release()
}

// A holder whose key was taken (expired and set again, as after a Redis
// restart) is told at its next renewal, and its release leaves the new
// holder's key alone.
func TestRedisLeaseLostWhenTaken(t *testing.T) {
	srv := startRedis(t)
	o := testOptions()
	o.Lease = 600 * time.Millisecond
	held, err := NewRedisLocker(srv.client(t), o).Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	other := srv.client(t)
	if err := other.Set(context.Background(), "test:lock:k", "someone-else", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("a holder whose key was taken was not told")
	}
	held.Release()
	if v := other.Get(context.Background(), "test:lock:k").Val(); v != "someone-else" {
		t.Errorf("a stale holder's release changed the key to %q", v)
	}
}

func TestRedisLockerErrors(t *testing.T) {
	srv := startRedis(t)
	o := testOptions()
	l := NewRedisLocker(srv.client(t), o)
	held, err := l.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := l.Lock(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable) {
		t.Errorf("waiting past the context: %v, want the context's error alone", err)
	}
	srv.stop()
	if _, err := l.Lock(context.Background(), "k2"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Lock with Redis gone: %v, want ErrUnavailable", err)
	}
}

// Among 24 replicas, one claim per window.
func TestRedisClaimsOnePerWindow(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	claimers := make([]*RedisClaims, 24)
	for i := range claimers {
		claimers[i] = NewRedisClaims(srv.client(t), testOptions())
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for _, c := range claimers {
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
		t.Fatalf("%d claims won in one window across replicas, want 1", got)
	}
	if ttl := srv.client(t).PTTL(ctx, "test:claim:main/linux-64").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("the claim expires in %v, want within its ttl", ttl)
	}
	// A window ends: a short claim can be won again, by one replica.
	if ok, err := claimers[0].Claim(ctx, "main/noarch", 200*time.Millisecond); !ok || err != nil {
		t.Fatalf("first claim of a new key: %v %v", ok, err)
	}
	within(t, 10*time.Second, "a claim is won again after its window", func() bool {
		ok, err := claimers[1].Claim(ctx, "main/noarch", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
	if _, err := claimers[0].Claim(ctx, "k", 0); err == nil {
		t.Error("a claim with no ttl was accepted")
	}
}

func TestRedisStampsAcrossReplicas(t *testing.T) {
	srv := startRedis(t)
	ctx := context.Background()
	a, b := NewRedisStamps(srv.client(t), testOptions()), NewRedisStamps(srv.client(t), testOptions())
	if _, ok, err := b.Get(ctx, "main/linux-64"); ok || err != nil {
		t.Fatalf("Get before any Stamp: %v %v", ok, err)
	}
	a.Stamp(ctx, "main/linux-64", "aaa")
	a.Stamp(ctx, "main/linux-64", "bbb")
	if v, ok, err := b.Get(ctx, "main/linux-64"); v != "bbb" || !ok || err != nil {
		t.Fatalf("Get on another replica = %q %v %v, want the last stamp", v, ok, err)
	}
	srv.stop()
	if _, _, err := b.Get(ctx, "main/linux-64"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Get with Redis gone: %v, want ErrUnavailable", err)
	}
	if err := a.Stamp(ctx, "main/linux-64", "ccc"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Stamp with Redis gone: %v, want ErrUnavailable", err)
	}
}

// inbox collects what one subscriber received.
type inbox struct {
	mu  sync.Mutex
	got []string
}

func (in *inbox) add(p []byte) {
	in.mu.Lock()
	in.got = append(in.got, string(p))
	in.mu.Unlock()
}

func (in *inbox) has(s string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, g := range in.got {
		if g == s {
			return true
		}
	}
	return false
}

func (in *inbox) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.got)
}

// A message reaches the subscribers on every client, the publisher's own
// included; a subscription ends with its context; a Redis restart does not end
// a subscription.
func TestRedisBusAcrossReplicas(t *testing.T) {
	srv := startRedis(t)
	buses := make([]*RedisBus, 3)
	inboxes := make([]*inbox, 3)
	cancels := make([]context.CancelFunc, 3)
	for i := range buses {
		buses[i] = NewRedisBus(srv.client(t), testOptions())
		inboxes[i] = &inbox{}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cancels[i] = cancel
		if err := buses[i].Subscribe(ctx, "purge", inboxes[i].add); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if err := buses[0].Publish(ctx, "purge", []byte("main/linux-64")); err != nil {
		t.Fatal(err)
	}
	buses[0].Publish(ctx, "elsewhere", []byte("not for them"))
	for i, in := range inboxes {
		within(t, 10*time.Second, fmt.Sprintf("replica %d receives the purge", i), func() bool { return in.has("main/linux-64") })
	}

	srv.stop()
	if err := buses[1].Publish(ctx, "purge", []byte("lost")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Publish with Redis gone: %v, want ErrUnavailable", err)
	}
	srv.start()
	// The subscriptions come back on their own; until they have, a message
	// may be missed, so publish until each has one from after the restart.
	cancels[2]()
	for i := 0; !inboxes[0].has(fmt.Sprint("after ", i-1)) || !inboxes[1].has(fmt.Sprint("after ", i-1)); i++ {
		if i > 1500 {
			t.Fatal("subscriptions did not resume after Redis restarted")
		}
		buses[1].Publish(ctx, "purge", []byte(fmt.Sprint("after ", i)))
		time.Sleep(10 * time.Millisecond)
	}
	if n := inboxes[2].count(); n != 1 {
		t.Errorf("a subscription whose context ended received %d messages, want only the first", n)
	}
}
