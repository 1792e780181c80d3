// Package admin serves everything that is not a channel: liveness and readiness,
// Prometheus metrics, the admin API (JSON under /api/v1) and the operators' web
// page at /. It is built on gin; the channel-serving path does not depend on it
// and hands it only the paths outside every channel.
//
// It never shows a secret: upstream URLs come redacted from the Backend and every
// text of the Backend's is masked once more on the way out (redact.go); tokens
// are compared in constant time and never logged, echoed or put in a URL (one
// exception: a channel directory page opened below /t/<token>/ shows that URL,
// token included, in its .condarc snippet, as the browser's address bar does;
// dirpages.go). Who may write is guard.go's.
//
// Nothing asked is quoted. An answer never quotes a value the request named (a
// channel, subdir, package, filename, job id, search text, header) unless it is
// public: masking the secrets in a text that quotes a guess would show *** exactly
// where the guess is a secret, and so answer it. The Backend's texts go through
// redact.go's withheld, which masks the asked values like secrets; admin's own
// messages name no value at all. The page's forms show their visitor's own input
// back as typed (a search field), never masked, so the same for any guess.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition: nil when ready.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
	// Degrades: a failure leaves the replica ready (200), its body saying
	// "NAME: degraded". Redis is such a check: when it is down every replica
	// goes on alone, and a load balancer must not drop them all at once.
	Degrades bool
}

// Options configure the admin handler.
type Options struct {
	// Gatherer is the registry /metrics exposes.
	Gatherer prometheus.Gatherer
	// Ready are the conditions of /readyz (storage open, Redis reachable...).
	Ready []Check
	// Backend answers the API and the page; nil: only health and metrics.
	Backend Backend
	// CanRead says whether a request may use the read calls: whoever may read the
	// channels (nil: everyone).
	CanRead func(r *http.Request) bool
	// AdminToken guards the writes (POST, DELETE): "Authorization: Bearer <it>".
	// Empty: writes are allowed from a client on the proxy's own host only (see
	// guard.go for what that takes).
	AdminToken string
	// ClientTokens are auth.tokens, for the page's .condarc snippets (shown
	// masked, never in full).
	ClientTokens bool
	// PublicURL is the configuration's public_url, the address clients use. Its
	// host counts as one of this proxy's own names for loopback trust, and its
	// origin as this proxy's own for browser writes (behind a reverse proxy that
	// rewrites Host).
	PublicURL string
	// Logger receives refused writes and recovered panics; nil: slog.Default().
	Logger *slog.Logger
	// Secrets are the configuration's secrets (config.Config.Secrets): no answer
	// of the API or the page quotes one, whatever text it passes on.
	Secrets []string
	// UploadIdle fails an upload (POST /api/v1/import) that sends nothing for
	// this long: a stalled client must not hold its channels. Default 30 s.
	UploadIdle time.Duration
}

// ErrNotFound marks an error an API call answers with 404 (wrap it).
var ErrNotFound = errors.New("not found")

// ErrBusy marks a sync refused because one runs for a channel (409).
var ErrBusy = errors.New("a sync is running")

// ErrRefused marks an import refused as a whole (422): the cache is as it was.
var ErrRefused = errors.New("import refused")

// ErrTooLarge marks an upload past what the server takes (413).
var ErrTooLarge = errors.New("too large")

// ErrGone marks what the server had but let go of (410): an export that waited
// too long for its commit.
var ErrGone = errors.New("gone")

// New returns the handler for the non-channel paths.
func New(o Options) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(recovery(o.logger()))
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok\n") })
	r.HEAD("/healthz", func(c *gin.Context) { c.Status(http.StatusOK) })
	ready := func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
		defer cancel()
		failed, degraded := map[string]string{}, map[string]string{}
		var status []string
		for _, chk := range o.Ready {
			err := chk.Fn(ctx)
			switch {
			case err == nil:
				status = append(status, chk.Name+": ok")
			case chk.Degrades:
				degraded[chk.Name] = err.Error()
				status = append(status, chk.Name+": degraded")
			default:
				failed[chk.Name] = err.Error()
				status = append(status, chk.Name+": failed")
			}
		}
		body := gin.H{"ready": len(failed) == 0, "status": strings.Join(status, ", ")}
		if len(degraded) > 0 {
			body["degraded"] = degraded
		}
		if len(failed) > 0 {
			body["failed"] = failed
			c.JSON(http.StatusServiceUnavailable, body)
			return
		}
		c.JSON(http.StatusOK, body)
	}
	r.GET("/readyz", ready)
	r.HEAD("/readyz", ready)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{})))
	if o.Backend != nil {
		o.Backend = newRedacting(o.Backend, append(slices.Clone(o.Secrets), o.AdminToken))
		mountAPI(r, o)
		mountWeb(r, o)
	}
	r.NoRoute(func(c *gin.Context) { c.String(http.StatusNotFound, "404 not found\n") })
	return r
}

// apiError is the one shape of every API error: {"error": "..."}.
func apiError(c *gin.Context, status int, msg string) {
	c.AbortWithStatusJSON(status, gin.H{"error": msg})
}

// recovery answers 500 when a handler panics and logs the panic with the
// request's method and path only: its headers, query and form may carry tokens
// (gin's own Recovery dumps the headers when the client has gone).
func recovery(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			rec := recover()
			if rec == nil {
				return
			}
			if rec == http.ErrAbortHandler {
				panic(rec) // net/http's way to drop a connection: not a failure
			}
			log.Error("admin: panic", "method", c.Request.Method, "path", redactText(c.Request.URL.Path, nil),
				"panic", fmt.Sprint(rec), "stack", string(debug.Stack()))
			if strings.HasPrefix(c.Request.URL.Path, "/api/") {
				apiError(c, http.StatusInternalServerError, "internal error (logged by the server)")
				return
			}
			c.AbortWithStatus(http.StatusInternalServerError)
		}()
		c.Next()
	}
}
