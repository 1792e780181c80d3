// Package admin serves everything that is not a channel: liveness and readiness,
// Prometheus metrics, and (later) the admin API and the web page. It is built on
// gin; the channel-serving path does not depend on it and hands it only the paths
// outside every channel.
package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition: nil when ready.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Options configure the admin handler.
type Options struct {
	// Gatherer is the registry /metrics exposes.
	Gatherer prometheus.Gatherer
	// Ready are the conditions of /readyz (storage open, Redis reachable...).
	Ready []Check
	// Explain answers GET /api/v1/explain; nil: 404.
	Explain func(ctx context.Context, channel, subdir, query string) (any, error)
	// CanRead says whether a request may use the read calls of the API: whoever
	// may read the channels (nil: everyone).
	CanRead func(r *http.Request) bool
}

// New returns the handler for the non-channel paths.
func New(o Options) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok\n") })
	r.HEAD("/healthz", func(c *gin.Context) { c.Status(http.StatusOK) })
	ready := func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
		defer cancel()
		failed := map[string]string{}
		for _, chk := range o.Ready {
			if err := chk.Fn(ctx); err != nil {
				failed[chk.Name] = err.Error()
			}
		}
		if len(failed) > 0 {
			c.JSON(http.StatusServiceUnavailable, gin.H{"ready": false, "failed": failed})
			return
		}
		c.JSON(http.StatusOK, gin.H{"ready": true})
	}
	r.GET("/readyz", ready)
	r.HEAD("/readyz", ready)
	metrics := gin.WrapH(promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	r.GET("/metrics", metrics)
	api := r.Group("/api/v1")
	api.Use(func(c *gin.Context) {
		if o.CanRead != nil && !o.CanRead(c.Request) {
			c.Header("WWW-Authenticate", `Bearer realm="condaproxy"`)
			apiError(c, http.StatusUnauthorized, "a token is required")
			return
		}
		c.Next()
	})
	if o.Explain != nil {
		api.GET("/explain", func(c *gin.Context) {
			ch, sub, pkg := c.Query("channel"), c.Query("subdir"), c.Query("package")
			if ch == "" || sub == "" || pkg == "" {
				apiError(c, http.StatusBadRequest, "channel, subdir and package are required")
				return
			}
			out, err := o.Explain(c.Request.Context(), ch, sub, pkg)
			if err != nil {
				status := http.StatusBadGateway
				if errors.Is(err, ErrNotFound) {
					status = http.StatusNotFound
				}
				apiError(c, status, err.Error())
				return
			}
			c.JSON(http.StatusOK, out)
		})
	}
	r.NoRoute(func(c *gin.Context) { c.String(http.StatusNotFound, "404 not found\n") })
	return r
}

// ErrNotFound marks an error an API call answers with 404 (wrap it).
var ErrNotFound = errors.New("not found")

// apiError is the one shape of every API error: {"error": "..."}.
func apiError(c *gin.Context, status int, msg string) {
	c.AbortWithStatusJSON(status, gin.H{"error": msg})
}
