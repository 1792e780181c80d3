package upstream

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxRetryAfter caps a host's Retry-After: a typo or a hostile answer must not
// silence an upstream for a day.
const maxRetryAfter = 10 * time.Minute

// maxThrottled bounds the table of throttled hosts.
const maxThrottled = 1024

// throttles remembers the hosts that answered 429 or 503 with Retry-After, and
// until when: nothing is sent to them before, so that a busy upstream is not met
// with a retry storm from every fill at once. The proxy serves its last good copy
// meanwhile.
type throttles struct {
	mu    sync.Mutex
	hosts map[string]throttle
}

type throttle struct {
	until  time.Time
	status int
}

// set records that host asked for a wait until then; a later wait already known
// stands.
func (t *throttles) set(host string, status int, until time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hosts == nil {
		t.hosts = map[string]throttle{}
	}
	if cur, ok := t.hosts[host]; ok && cur.until.After(until) {
		return
	}
	if len(t.hosts) >= maxThrottled {
		// Redirects to ever new hosts must not grow the table: drop the waits
		// that passed, then, if still full, any.
		now := time.Now()
		for h, th := range t.hosts {
			if !now.Before(th.until) || len(t.hosts) >= maxThrottled {
				delete(t.hosts, h)
			}
		}
	}
	t.hosts[host] = throttle{until: until, status: status}
}

// get returns host's wait if it has not passed yet; a passed one is forgotten.
func (t *throttles) get(host string, now time.Time) (throttle, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	th, ok := t.hosts[host]
	if !ok {
		return throttle{}, false
	}
	if !now.Before(th.until) {
		delete(t.hosts, host)
		return throttle{}, false
	}
	return th, true
}

// throttledError is the *Error for a request to u's host while that host's wait
// lasts (counted with the Throttled hook), or nil.
func (c *Client) throttledError(ctx context.Context, u *url.URL, redacted string) error {
	host := hostKey(u)
	now := time.Now()
	th, ok := c.throttles.get(host, now)
	if !ok {
		return nil
	}
	src, _ := ctx.Value(trustKey{}).(Source)
	c.throttled(src.label(host))
	return &Error{URL: redacted, Status: th.status, RetryAfter: th.until.Sub(now), Err: ErrThrottled}
}

// throttled calls the Throttled hook with label, a host name src trusts or
// "other" (Source.label).
func (c *Client) throttled(label string) {
	if c.Throttled != nil {
		c.Throttled(label)
	}
}

// retryAfter reads a Retry-After header, in seconds or as an HTTP date, capped at
// maxRetryAfter; 0 when absent, unreadable or already passed.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if strings.Trim(h, "0123456789") == "" {
		n, err := strconv.ParseUint(h, 10, 64)
		if err != nil || n > uint64(maxRetryAfter/time.Second) { // err: too many digits
			return maxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(h)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), maxRetryAfter)
}
