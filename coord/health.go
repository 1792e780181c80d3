package coord

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// HealthOptions configure a Health. Zero values take the defaults given.
type HealthOptions struct {
	// Interval is the time between two pings. 1s if zero.
	Interval time.Duration
	// Timeout bounds one ping. 1s if zero.
	Timeout time.Duration
	// OnChange is called with the first state and then with every change, one
	// call at a time and in order: the hook for the condaproxy_redis_up gauge
	// and for a log line. reason says why Redis counts as down; nil when up.
	OnChange func(up bool, reason error)
	// OnFallback is called each time a Fallback decorator went on without
	// Redis, with the operation ("lock", "claim", "stamp", "get", "publish",
	// "subscribe"): the hook for a counter of degraded operations.
	OnFallback func(op string)
}

// Health says whether Redis can be used, for the Fallback decorators and for
// /readyz. It pings Redis every Interval; an operation that finds Redis gone
// marks it down at once, so that the next ones fall back without waiting for a
// timeout each, and the next ping that succeeds brings it back.
//
// Health never makes a replica unready: a replica without Redis still serves,
// and a load balancer that dropped every replica whose Redis went away would
// drop them all at once.
type Health struct {
	ping func(context.Context) error
	o    HealthOptions

	up    atomic.Bool
	mu    sync.Mutex // orders state changes and their OnChange calls
	known bool       // a first state was reported

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewHealth pings once before it returns, so that Up is right from the start,
// then every Interval until Close.
func NewHealth(ping func(context.Context) error, o HealthOptions) *Health {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	h := &Health{ping: ping, o: o, stop: make(chan struct{}), done: make(chan struct{})}
	h.check()
	go h.run()
	return h
}

func (h *Health) run() {
	defer close(h.done)
	t := time.NewTicker(h.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			h.check()
		}
	}
}

func (h *Health) check() {
	ctx, cancel := context.WithTimeout(context.Background(), h.o.Timeout)
	err := h.ping(ctx)
	cancel()
	h.set(err == nil, err)
}

func (h *Health) set(up bool, reason error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.known && h.up.Load() == up {
		return
	}
	h.known = true
	h.up.Store(up)
	if h.o.OnChange != nil {
		h.o.OnChange(up, reason)
	}
}

// Up reports whether Redis answered the last ping and no operation has failed
// on it since.
func (h *Health) Up() bool { return h.up.Load() }

// Readiness is the line for /readyz's body.
func (h *Health) Readiness() string {
	if h.Up() {
		return "redis: ok"
	}
	return "redis: degraded"
}

// fellBack records that op went on without Redis: because it just failed on it
// (err, which marks Redis down), or because Redis was known to be down (nil).
func (h *Health) fellBack(op string, err error) {
	if err != nil {
		h.set(false, err)
	}
	if h.o.OnFallback != nil {
		h.o.OnFallback(op)
	}
}

// Close stops the pings and waits for the last one.
func (h *Health) Close() {
	h.closeOnce.Do(func() { close(h.stop) })
	<-h.done
}
