package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A host that answers 429 with Retry-After is asked once, not once per Get and
// retry, until the time it named; then it is asked again.
func TestRetryAfterThrottlesTheHost(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer other.Close()

	var mu sync.Mutex
	hooked := map[string]int{}
	c := New(Options{Retries: 3, Backoff: time.Millisecond})
	c.Throttled = func(host string) {
		mu.Lock()
		hooked[host]++
		mu.Unlock()
	}
	src := source(t, srv.URL+"/chan")
	host := srv.Listener.Addr().String()
	ctx := context.Background()

	_, err := c.Get(ctx, src, "noarch/repodata.json", Conditional{})
	var ue *Error
	if !errors.As(err, &ue) || ue.Status != 429 || ue.RetryAfter != time.Second || errors.Is(err, ErrThrottled) {
		t.Fatalf("first answer: %v, want *Error 429 with RetryAfter 1s", err)
	}
	u, _ := src.Resolve("linux-64/x.conda")
	for i := range 4 {
		var err error
		if i%2 == 0 {
			_, err = c.Get(ctx, src, "noarch/repodata.json", Conditional{})
		} else {
			_, err = c.GetURL(ctx, src, u, Conditional{})
		}
		if !errors.As(err, &ue) || ue.Status != 429 || ue.RetryAfter <= 0 || ue.RetryAfter > time.Second || !errors.Is(err, ErrThrottled) {
			t.Errorf("within the wait: %v, want a throttled *Error 429", err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the throttled host was asked %d times, want 1", n)
	}
	mu.Lock()
	if hooked[host] != 5 || len(hooked) != 1 {
		t.Errorf("Throttled hook: %v, want %s 5 times (1 answer, 4 skipped)", hooked, host)
	}
	mu.Unlock()

	// Another host is not held back.
	if resp, err := c.Get(ctx, source(t, other.URL), "x", Conditional{}); err != nil {
		t.Errorf("another host: %v", err)
	} else {
		resp.Body.Close()
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := c.Get(ctx, src, "noarch/repodata.json", Conditional{})
		if err == nil {
			resp.Body.Close()
			break
		}
		if !errors.Is(err, ErrThrottled) || time.Now().After(deadline) {
			t.Fatalf("after the wait: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("asked %d times in all, want 2", n)
	}
}

// A 503 with an HTTP-date Retry-After counts too; a redirect into a throttled host
// (a CDN that pushed back) is not followed until its wait is over.
func TestRetryAfterDateAndRedirect(t *testing.T) {
	var cdnCalls atomic.Int32
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cdnCalls.Add(1)
		w.Header().Set("Retry-After", time.Now().Add(time.Minute).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer cdn.Close()
	own := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, cdn.URL+r.URL.Path, http.StatusFound)
	}))
	defer own.Close()
	c := New(Options{Retries: 3, Backoff: time.Millisecond})
	src := source(t, own.URL)
	var ue *Error
	_, err := c.Get(context.Background(), src, "a", Conditional{})
	if !errors.As(err, &ue) || ue.Status != 503 || ue.RetryAfter < 50*time.Second || ue.RetryAfter > time.Minute {
		t.Fatalf("first: %v, want *Error 503 with about a minute to wait", err)
	}
	_, err = c.Get(context.Background(), src, "b", Conditional{})
	if !errors.Is(err, ErrThrottled) || !errors.As(err, &ue) || ue.Status != 503 || ue.URL != own.URL+"/b" {
		t.Errorf("second: %v, want a throttled *Error 503 for %s/b", err, own.URL)
	}
	if n := cdnCalls.Load(); n != 1 {
		t.Errorf("the CDN was asked %d times, want 1", n)
	}
}

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"":                     0,
		"0":                    0,
		"-5":                   0,
		"1.5":                  0,
		"junk":                 0,
		" 120 ":                2 * time.Minute,
		"600":                  10 * time.Minute,
		"99999999999999999999": 10 * time.Minute,
		now.Add(30 * time.Second).Format(http.TimeFormat): 30 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
		now.Add(48 * time.Hour).Format(http.TimeFormat):   10 * time.Minute,
	} {
		if got := retryAfter(h, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", h, got, want)
		}
	}
}

// A 429 or 503 without Retry-After is retried as before, and throttles nothing.
func TestNoRetryAfterNoThrottle(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c := New(Options{Retries: 2, Backoff: time.Millisecond})
	c.Throttled = func(string) { t.Error("Throttled called without a Retry-After") }
	u, _ := url.Parse(srv.URL)
	for range 2 {
		var ue *Error
		if _, err := c.Get(context.Background(), source(t, u.String()), "x", Conditional{}); !errors.As(err, &ue) || ue.Status != 503 || ue.RetryAfter != 0 {
			t.Errorf("%v, want *Error 503", err)
		}
	}
	if n := calls.Load(); n != 6 {
		t.Errorf("asked %d times, want 2×(1+2)", n)
	}
}
