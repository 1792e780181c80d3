// Package upstream fetches files from the channels the proxy mirrors, over HTTP(S)
// or from file:// trees, with conditional requests and bounded retries.
//
// It never logs or returns a secret: every URL in an error or log line goes through
// config.RedactURL, so a /t/<token>/ path or a password stays out of logs. It does
// not cache, verify or interpret what it fetches; the caller does.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/condaproxy/condaproxy/config"
)

// ErrNotFound is an upstream 404 or 410, or a missing file:// path.
var ErrNotFound = errors.New("not found upstream")

// Error is an upstream failure other than not-found, after retries.
type Error struct {
	URL    string // redacted
	Status int    // 0 when no HTTP answer came (network error, timeout)
	Err    error
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("upstream %s: HTTP %d", e.URL, e.Status)
	}
	return fmt.Sprintf("upstream %s: %v", e.URL, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Conditional carries the validators of a cached copy.
type Conditional struct {
	ETag         string
	LastModified string
}

// Response is a successful answer: 200 with a body, or 304 without.
type Response struct {
	Status       int
	Body         io.ReadCloser // nil on 304
	Size         int64         // -1 when unknown
	ETag         string
	LastModified string
}

// Client fetches from upstreams. The zero value is not usable; use New.
type Client struct {
	http    *http.Client
	retries int
	backoff time.Duration
	log     *slog.Logger
	agent   string
	// Observe, if set, is called after every attempt, for metrics.
	Observe func(host string, status int, d time.Duration, err error)
}

// Options configure a Client; zero values take the documented defaults.
type Options struct {
	// Retries after the first attempt on 5xx, 429 and network errors; default 3.
	Retries int
	// Backoff is the first wait; it doubles each retry, with jitter. Default 250ms.
	Backoff time.Duration
	// HeaderTimeout bounds the wait for response headers; default 30s.
	HeaderTimeout time.Duration
	// Transport replaces the default transport (tests).
	Transport http.RoundTripper
	Logger    *slog.Logger
	UserAgent string
}

// New returns a Client.
func New(o Options) *Client {
	if o.Retries == 0 {
		o.Retries = 3
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Backoff == 0 {
		o.Backoff = 250 * time.Millisecond
	}
	if o.HeaderTimeout == 0 {
		o.HeaderTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.UserAgent == "" {
		o.UserAgent = "condaproxy"
	}
	tr := o.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = o.HeaderTimeout
		t.MaxIdleConnsPerHost = 32
		t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr = t
	}
	return &Client{
		http: &http.Client{
			Transport:     tr,
			CheckRedirect: checkRedirect,
		},
		retries: o.Retries, backoff: o.Backoff, log: o.Logger, agent: o.UserAgent,
	}
}

// checkRedirect follows a redirect (a CDN, a moved channel) but not to another
// scheme, nor from https down to http, nor in a loop. The target learns nothing the
// upstream's own host was told: no Referer (it would carry a /t/<token>/ path) and
// no Authorization off that host. net/http keeps Authorization for a subdomain or
// another port of the same name; this does not.
func checkRedirect(req *http.Request, via []*http.Request) error {
	req.Header.Del("Referer")
	if !onHostOf(req.URL, via[0].URL) {
		req.Header.Del("Authorization")
	}
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	switch req.URL.Scheme {
	case "https":
	case "http":
		for _, r := range via {
			if r.URL.Scheme == "https" {
				return errors.New("refused a redirect from https down to http")
			}
		}
	default:
		return errors.New("refused a redirect to a scheme other than http or https")
	}
	return nil
}

const maxRedirects = 10

// Get fetches rel, a slash path below src's base (see Source.Resolve). A 404 or 410
// is ErrNotFound (not retried); 5xx, 429 and network errors are retried with
// backoff, then returned as *Error. A path that is not plainly below the base is
// ErrBadPath, and nothing is fetched.
func (c *Client) Get(ctx context.Context, src Source, rel string, cond Conditional) (*Response, error) {
	u, err := src.Resolve(rel)
	if err != nil {
		return nil, err
	}
	return c.GetURL(ctx, src, u, cond)
}

// GetURL fetches u, a URL under one of src's PackageBase directories, as Get does.
// It checks src.Allows(u) first, so no URL from a repodata document reaches another
// host or a local file whatever the caller did with it.
func (c *Client) GetURL(ctx context.Context, src Source, u *url.URL, cond Conditional) (*Response, error) {
	if err := src.Allows(u); err != nil {
		return nil, err
	}
	if u.Scheme == "file" {
		return getFile(u, cond)
	}
	var lastErr error
	for attempt := 0; attempt <= c.retries; attempt++ {
		if attempt > 0 {
			wait := c.backoff << (attempt - 1)
			wait += time.Duration(rand.Int64N(int64(wait)/2 + 1))
			select {
			case <-ctx.Done():
				return nil, &Error{URL: config.RedactURL(u.String()), Err: ctx.Err()}
			case <-time.After(wait):
			}
		}
		resp, err := c.attempt(ctx, src, u, cond)
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return resp, err
		}
		lastErr = err
		c.log.Warn("upstream attempt failed", "url", config.RedactURL(u.String()), "attempt", attempt+1, "err", err)
	}
	return nil, lastErr
}

func retryable(err error) bool {
	var ue *Error
	if !errors.As(err, &ue) {
		return false
	}
	return ue.Status == 0 || ue.Status == http.StatusTooManyRequests || ue.Status >= 500
}

func (c *Client) attempt(ctx context.Context, src Source, u *url.URL, cond Conditional) (*Response, error) {
	redacted := config.RedactURL(u.String())
	// The credentials travel in the Authorization header, set here for the
	// upstream's own host only, and never in the request URL: net/http would quote
	// a URL's user:password in its errors, and send it wherever that URL goes.
	target := *u
	target.User = nil
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return nil, &Error{URL: redacted, Err: errors.New("bad request URL")}
	}
	req.Header.Set("User-Agent", c.agent)
	if cond.ETag != "" {
		req.Header.Set("If-None-Match", cond.ETag)
	}
	if cond.LastModified != "" {
		req.Header.Set("If-Modified-Since", cond.LastModified)
	}
	// Not to a CEP-15 base_url elsewhere either (a CDN, or a host a hostile
	// repodata names).
	if user, pass, ok := src.credentials(); ok && src.ownHost(u) {
		req.SetBasicAuth(user, pass)
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	if c.Observe != nil {
		c.Observe(u.Host, status, time.Since(start), err)
	}
	if err != nil {
		// net/http's error text contains the URL, token and all: replace it.
		return nil, &Error{URL: redacted, Err: scrub(err)}
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return &Response{Status: 200, Body: resp.Body, Size: resp.ContentLength,
			ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}, nil
	case resp.StatusCode == http.StatusNotModified:
		resp.Body.Close()
		return &Response{Status: 304, Size: -1, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}, nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		drain(resp.Body)
		return nil, ErrNotFound
	default:
		drain(resp.Body)
		return nil, &Error{URL: redacted, Status: resp.StatusCode}
	}
}

// scrub keeps the cause of a transport error but not the URL it quotes.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return errors.New("timeout")
		}
		return errors.New(ue.Err.Error())
	}
	return err
}

func drain(body io.ReadCloser) {
	io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}

// getFile serves a file:// upstream: a local channel tree (an untarred export, a USB
// disk). Its validator is the modification time. u has passed Source.Allows: its
// cleaned path is below the upstream's directory, and that cleaned path is opened.
func getFile(u *url.URL, cond Conditional) (*Response, error) {
	redacted := config.RedactURL(u.String())
	f, err := os.Open(filepath.Clean(filepath.FromSlash(u.Path)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		// The *PathError would repeat the path; the URL already names it.
		return nil, &Error{URL: redacted, Err: errors.Unwrap(err)}
	}
	info, err := f.Stat()
	if err != nil || info.IsDir() {
		f.Close()
		if err == nil {
			return nil, ErrNotFound
		}
		return nil, &Error{URL: redacted, Err: errors.Unwrap(err)}
	}
	lm := info.ModTime().UTC().Format(http.TimeFormat)
	if cond.LastModified != "" && cond.LastModified == lm {
		f.Close()
		return &Response{Status: 304, Size: -1, LastModified: lm}, nil
	}
	return &Response{Status: 200, Body: f, Size: info.Size(), LastModified: lm}, nil
}
