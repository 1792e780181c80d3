// Package upstream fetches files from the channels the proxy mirrors, over HTTP(S)
// or from file:// trees, with conditional requests and bounded retries.
//
// Every fetch stays inside its upstream: Source.Resolve joins a plain relative path
// below the base (a client path is never parsed as a URL), and GetURL, the one way
// every request goes out, refuses any URL Source.Allows does not (another host than
// the upstream's own and its configured Hosts, an https→http downgrade, a file://
// path outside the tree). Redirects tell their target nothing: no Referer, and no
// credentials off the upstream's own host.
//
// An upstream that stalls fails the transfer after Options.IdleTimeout without a
// byte. One that pushes back (429 or 503 with Retry-After) is not asked again, by
// any request, until the time it named.
//
// It never logs or returns a secret: every URL in an error or log line goes through
// config.RedactURL, and net/http's error texts, which quote the URL, are replaced
// by their cause. It does not cache, verify or interpret what it fetches; the
// caller does.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/condaproxy/condaproxy/config"
)

// ErrNotFound is an upstream 404 or 410, or a missing file:// path.
var ErrNotFound = errors.New("not found upstream")

// ErrThrottled is the cause of an *Error for a request that was not sent because
// its host asked, with Retry-After, to be left alone until later.
var ErrThrottled = errors.New("not asked: the host said to retry later")

// Error is an upstream failure other than not-found, after retries.
type Error struct {
	URL    string // redacted
	Status int    // 0 when no HTTP answer came (network error, timeout)
	// RetryAfter is set when the host answered 429 or 503 with Retry-After, or is
	// still within such a wait (then Err is ErrThrottled): no request to it goes out
	// before then.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("upstream " + e.URL + ": ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "HTTP %d", e.Status)
		if e.RetryAfter > 0 {
			fmt.Fprintf(&b, ", retry after %v", roundUp(e.RetryAfter))
		}
		if e.Err != nil {
			b.WriteString(": ")
		}
	}
	if e.Err != nil {
		// The cause is partly the upstream's own text (a status line, a header,
		// a redirect's Location, a certificate's names): one bounded line, in
		// every log and error answer that quotes it.
		b.WriteString(Line(e.Err.Error(), maxCause))
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// maxCause bounds the cause an Error quotes.
const maxCause = 512

// Line returns s as one line of at most max bytes (plus "…" when cut, on a rune
// boundary): every control, format and line or paragraph separator character,
// and every invalid byte, becomes a space, so text from a remote party can
// neither start a line of its own in a log or a terminal nor turn the text
// around (U+202E).
func Line(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// roundUp gives whole seconds, up: "retry after 0s" would read as "now".
func roundUp(d time.Duration) time.Duration {
	if r := d.Truncate(time.Second); r != d {
		return r + time.Second
	}
	return d
}

// Conditional carries the validators of a cached copy.
type Conditional struct {
	ETag         string
	LastModified string
}

// Response is a successful answer: 200 with a body, or 304 without.
type Response struct {
	Status       int
	Body         io.ReadCloser // nil on 304; Close it, even after an error
	Size         int64         // -1 when unknown
	ETag         string
	LastModified string
}

// Client fetches from upstreams. The zero value is not usable; use New.
type Client struct {
	http          *http.Client
	retries       int
	backoff       time.Duration
	headerTimeout time.Duration
	idleTimeout   time.Duration
	log           *slog.Logger
	agent         string
	redact        *config.Redactor // Options.Secrets
	throttles     throttles
	// Observe, if set, is called after every attempt, for metrics. err is the
	// redacted *Error, or nil for any HTTP answer.
	Observe func(host string, status int, d time.Duration, err error)
	// Throttled, if set, is called with the host (lower case, port only when not
	// the default) for every 429/503 with Retry-After received, and for every
	// request not sent because of one.
	Throttled func(host string)
}

// Options configure a Client; zero values take the documented defaults.
type Options struct {
	// Retries after the first attempt on 5xx, 429 and network errors; default 3.
	// A 429 or 503 with Retry-After is not retried.
	Retries int
	// Backoff is the first wait; it doubles each retry, with jitter. Default 250ms.
	Backoff time.Duration
	// HeaderTimeout bounds the wait for response headers, from dialling on
	// (redirects included); default 30s.
	HeaderTimeout time.Duration
	// IdleTimeout fails a body read that gets no byte for this long; default 30s
	// (config limits.upstream_idle_timeout).
	IdleTimeout time.Duration
	// Transport replaces the default transport (tests).
	Transport http.RoundTripper
	Logger    *slog.Logger
	UserAgent string
	// Secrets are every secret of the configuration (config.Config.Secrets):
	// masked in an error's cause, with the request's own, before the cause is
	// cut to one bounded line (a cut through a secret would leave its prefix).
	Secrets []string
}

// maxResponseHeaderBytes bounds an upstream's response headers: a hostile or broken
// upstream must not make the proxy buffer megabytes before a single body byte.
const maxResponseHeaderBytes = 256 << 10

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
	if o.IdleTimeout == 0 {
		o.IdleTimeout = config.DefaultUpstreamIdleTimeout
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
		t.MaxResponseHeaderBytes = maxResponseHeaderBytes
		t.MaxIdleConnsPerHost = 32
		// The proxy verifies and serves the bytes upstream sent: a transparently
		// gunzipped body would be a size nobody declared (a gzip bomb).
		t.DisableCompression = true
		tr = t
	}
	c := &Client{
		retries: o.Retries, backoff: o.Backoff, log: o.Logger, agent: o.UserAgent,
		headerTimeout: o.HeaderTimeout, idleTimeout: o.IdleTimeout, redact: config.NewRedactor(o.Secrets),
	}
	if t, ok := tr.(*http.Transport); ok && o.Transport == nil {
		t.DialContext = guardedDial(defaultDialer())
	}
	c.http = &http.Client{Transport: tr, CheckRedirect: c.checkRedirect}
	return c
}

const maxRedirects = 10

// checkRedirect follows a redirect (a CDN, a moved channel) but not to another
// scheme, nor from https down to http, nor in a loop, nor to a host that asked to be
// left alone. The target learns nothing the upstream's own host was told: no
// Referer (it would carry a /t/<token>/ path) and no Authorization off that host.
// net/http keeps Authorization for a subdomain or another port of the same name;
// this does not.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
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
	if err := checkTarget(req.Context(), req.URL); err != nil {
		return err
	}
	// The URL is filled in by attempt, which knows the one it may print.
	return c.throttledError(req.Context(), req.URL, "")
}

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
// host or a local file whatever the caller did with it (ErrRefused).
func (c *Client) GetURL(ctx context.Context, src Source, u *url.URL, cond Conditional) (*Response, error) {
	if err := src.Allows(u); err != nil {
		return nil, err
	}
	// The dialer and the redirect check read it: src's hosts may be internal
	// addresses, no other host may (trust.go).
	ctx = withSource(ctx, src)
	if u.Scheme == "file" {
		return getFile(src, u, cond)
	}
	redacted := config.RedactURL(u.String())
	secrets := secretsOf(src, u)
	var lastErr error
	for attempt := 0; attempt <= c.retries; attempt++ {
		if attempt > 0 {
			wait := c.backoff << (attempt - 1)
			wait += time.Duration(rand.Int64N(int64(wait)/2 + 1))
			select {
			case <-ctx.Done():
				return nil, &Error{URL: redacted, Err: ctx.Err()}
			case <-time.After(wait):
			}
		}
		// Checked before every attempt: another request may have been told to wait
		// while this one backed off.
		if err := c.throttledError(ctx, u, redacted); err != nil {
			return nil, err
		}
		resp, err := c.attempt(ctx, src, u, redacted, secrets, cond)
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return resp, err
		}
		lastErr = err
		c.log.Warn("upstream attempt failed", "url", redacted, "attempt", attempt+1, "err", err)
	}
	return nil, lastErr
}

func retryable(err error) bool {
	var ue *Error
	if !errors.As(err, &ue) || ue.RetryAfter > 0 {
		return false
	}
	return ue.Status == 0 || ue.Status == http.StatusTooManyRequests || ue.Status >= 500
}

func (c *Client) attempt(ctx context.Context, src Source, u *url.URL, redacted string, secrets []string, cond Conditional) (*Response, error) {
	// The credentials travel in the Authorization header, set here for the
	// upstream's own host only, and never in the request URL: net/http would quote
	// a URL's user:password in its errors, and send it wherever that URL goes.
	target := *u
	target.User = nil
	ctx, wd := watch(ctx, c.headerTimeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		wd.release()
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
	if err != nil {
		wd.release()
		var throttled *Error
		switch {
		case errors.As(err, &throttled) && throttled.RetryAfter > 0:
			// A redirect into a host that is still throttled.
			throttled.URL = redacted
			err = throttled
		case wd.fired.Load():
			err = &Error{URL: redacted, Err: &IdleError{Idle: c.headerTimeout, Headers: true}}
		default:
			err = &Error{URL: redacted, Err: scrub(err, secrets, c.redact)}
		}
		c.observe(src, u, 0, time.Since(start), err)
		return nil, err
	}
	c.observe(src, u, resp.StatusCode, time.Since(start), nil)
	switch resp.StatusCode {
	case http.StatusOK:
		wd.disarm() // re-armed for each read of the body
		body := &idleBody{body: resp.Body, w: wd, idle: c.idleTimeout, redacted: redacted, secrets: secrets, redact: c.redact}
		return &Response{Status: 200, Body: body, Size: resp.ContentLength,
			ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}, nil
	case http.StatusNotModified:
		c.drain(resp.Body, wd)
		if cond == (Conditional{}) {
			// Nothing was asked to be compared: a 304 here has no meaning, and a
			// caller must never be handed a bodiless "success" it did not ask for.
			return nil, &Error{URL: redacted, Status: resp.StatusCode, Err: errors.New("304 Not Modified to a request without validators")}
		}
		return &Response{Status: 304, Size: -1, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}, nil
	case http.StatusNotFound, http.StatusGone:
		c.drain(resp.Body, wd)
		return nil, ErrNotFound
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		c.drain(resp.Body, wd)
		if d := retryAfter(resp.Header.Get("Retry-After"), time.Now()); d > 0 {
			// The host that answered is the one that asked for the wait, a redirect
			// target (a CDN) included.
			host := hostKey(resp.Request.URL)
			c.throttles.set(host, resp.StatusCode, time.Now().Add(d))
			c.throttled(src.label(host))
			c.log.Warn("upstream asked to retry later; not asking it again before then",
				"url", redacted, "host", host, "status", resp.StatusCode, "retry_after", d)
			return nil, &Error{URL: redacted, Status: resp.StatusCode, RetryAfter: d}
		}
		return nil, &Error{URL: redacted, Status: resp.StatusCode}
	default:
		c.drain(resp.Body, wd)
		return nil, &Error{URL: redacted, Status: resp.StatusCode}
	}
}

func (c *Client) observe(src Source, u *url.URL, status int, d time.Duration, err error) {
	if c.Observe != nil {
		c.Observe(src.label(hostKey(u)), status, d, err)
	}
}

// drain reads a little of a body nobody wants, so that its connection can be
// reused, without waiting on a stalled upstream for longer than the idle timeout.
func (c *Client) drain(body io.ReadCloser, wd *watchdog) {
	wd.arm(c.idleTimeout)
	io.CopyN(io.Discard, body, 64<<10)
	body.Close()
	wd.release()
}

// scrub keeps the cause of a transport error but not the URL net/http quotes in it,
// nor any secret of the request that may still show, nor any configured secret
// (red).
func scrub(err error, secrets []string, red *config.Redactor) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	clean := tokenSegment.ReplaceAllString(msg, "/t/"+config.Mask)
	for _, s := range secrets {
		clean = strings.ReplaceAll(clean, s, config.Mask)
	}
	clean = red.String(clean)
	if clean == msg {
		return err
	}
	// Not wrapped: unwrapping would give the secret back.
	return errors.New(clean)
}

// tokenSegment finds a /t/<token>/ path segment, the way a channel URL carries a token.
var tokenSegment = regexp.MustCompile(`/t/([^/]+)`)

// secretsOf lists what must never show in an error about fetching u from src: its
// password, the password of a user:password@ in either URL, and their tokens.
// Values shorter than 3 characters are left out; masking them would garble every
// message and hide nothing worth hiding.
func secretsOf(src Source, u *url.URL) []string {
	var out []string
	add := func(s string) {
		if len(s) >= 3 {
			out = append(out, s, url.PathEscape(s), url.QueryEscape(s))
		}
	}
	add(src.Password)
	for _, v := range []*url.URL{src.Base, u} {
		if v == nil {
			continue
		}
		if v.User != nil {
			p, _ := v.User.Password()
			add(p)
		}
		for _, m := range tokenSegment.FindAllStringSubmatch(v.Path, -1) {
			add(m[1])
		}
	}
	return out
}
