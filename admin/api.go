package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
)

// ErrInvalid marks an error an API call answers with 400: a parameter the
// Backend refuses (wrap it).
var ErrInvalid = errors.New("invalid request")

// Paging of GET /api/v1/packages.
const (
	defaultLimit = 50
	maxLimit     = 500
)

// maxBody bounds a write's JSON body.
const maxBody = 1 << 20

// apiCalls are the API's paths and methods, for 405 against 404 on a miss.
var apiCalls = map[string]string{
	"/api/v1/channels": http.MethodGet,
	"/api/v1/packages": http.MethodGet,
	"/api/v1/explain":  http.MethodGet,
	"/api/v1/stats":    http.MethodGet,
	"/api/v1/jobs":     http.MethodGet,
	"/api/v1/sync":     http.MethodPost,
	"/api/v1/purge":    http.MethodPost,
	"/api/v1/clean":    http.MethodPost,
	"/api/v1/export":   http.MethodPost,
	"/api/v1/import":   http.MethodPost,

	"/api/v1/export/commit": http.MethodPost,
}

// mountAPI adds the JSON API under /api/v1. Reads are open to whoever may read the
// channels (Options.CanRead) and to the admin token; writes need what
// Options.writeDenial asks (guard.go). Every error is {"error": "..."}.
func mountAPI(r *gin.Engine, o Options) {
	b := o.Backend
	// A path under /api/ that no route takes answers JSON too, not the text 404.
	// Global middleware also runs in front of the NoRoute handler; a matched route
	// has a FullPath and passes straight through.
	r.Use(func(c *gin.Context) {
		p := c.Request.URL.Path
		if c.FullPath() != "" || !strings.HasPrefix(p, "/api/") {
			c.Next()
			return
		}
		// The messages name no part of the request (admin.go, "Nothing asked is quoted").
		if m, ok := apiCalls[p]; ok && m != c.Request.Method {
			c.Header("Allow", m)
			apiError(c, http.StatusMethodNotAllowed, fmt.Sprintf("%s takes %s only", p, m))
			return
		}
		if strings.HasPrefix(p, "/api/v1/jobs/") && c.Request.Method != http.MethodGet {
			c.Header("Allow", http.MethodGet)
			apiError(c, http.StatusMethodNotAllowed, "/api/v1/jobs/<id> takes GET only")
			return
		}
		apiError(c, http.StatusNotFound, "no such API call (see /api/v1/channels, packages, explain, stats, jobs, sync, purge, clean, export, import)")
	})

	api := r.Group("/api/v1")
	api.Use(func(c *gin.Context) {
		c.Header("Cache-Control", "no-store")
		switch c.Request.Method {
		case http.MethodGet, http.MethodHead:
			if !o.mayRead(c.Request) {
				c.Header("WWW-Authenticate", `Bearer realm="condaproxy"`)
				apiError(c, http.StatusUnauthorized, "a token is required: Authorization: Bearer <token>")
				return
			}
		default:
			if d := o.writeDenial(c.Request); d != nil {
				o.logDenial(c.Request, d)
				if d.status == http.StatusUnauthorized {
					c.Header("WWW-Authenticate", `Bearer realm="condaproxy admin"`)
				}
				apiError(c, d.status, d.reason)
				return
			}
			if c.FullPath() == importPath {
				if !tarBody(c) {
					return
				}
			} else if !jsonBody(c) {
				return
			}
		}
		c.Next()
	})

	api.GET("/channels", func(c *gin.Context) {
		out := b.Channels(c.Request.Context())
		if out == nil {
			out = []ChannelInfo{}
		}
		c.JSON(http.StatusOK, out)
	})

	api.GET("/packages", func(c *gin.Context) {
		ch, sub := c.Query("channel"), c.Query("subdir")
		if ch == "" || sub == "" {
			apiError(c, http.StatusBadRequest, "channel and subdir are required")
			return
		}
		offset, ok := intParam(c, "offset", 0)
		if !ok {
			return
		}
		limit, ok := intParam(c, "limit", defaultLimit)
		if !ok {
			return
		}
		if limit == 0 {
			limit = defaultLimit
		}
		limit = min(limit, maxLimit)
		page, err := b.Packages(c.Request.Context(), ch, sub, c.Query("q"), false, offset, limit)
		if err != nil {
			backendError(c, err)
			return
		}
		if page.Packages == nil {
			page.Packages = []Package{}
		}
		c.JSON(http.StatusOK, page)
	})

	api.GET("/explain", func(c *gin.Context) {
		ch, sub, pkg := c.Query("channel"), c.Query("subdir"), c.Query("package")
		if ch == "" || sub == "" || pkg == "" {
			apiError(c, http.StatusBadRequest, "channel, subdir and package are required")
			return
		}
		out, err := b.Explain(c.Request.Context(), ch, sub, pkg)
		if err != nil {
			backendError(c, err)
			return
		}
		if out == nil {
			out = []Explanation{}
		}
		c.JSON(http.StatusOK, out)
	})

	api.GET("/stats", func(c *gin.Context) {
		c.JSON(http.StatusOK, b.Stats(c.Request.Context()))
	})

	api.POST("/sync", func(c *gin.Context) {
		var req struct {
			Channels []string `json:"channels"`
		}
		if !readBody(c, &req) {
			return
		}
		for _, ch := range req.Channels {
			if ch == "" {
				apiError(c, http.StatusBadRequest, "channels: an empty name")
				return
			}
		}
		job, err := b.StartSync(req.Channels)
		if err != nil {
			backendError(c, err)
			return
		}
		c.Header("Location", "/api/v1/jobs/"+job.ID)
		c.JSON(http.StatusAccepted, job)
	})

	mountMaintenance(api, o)

	api.GET("/jobs", func(c *gin.Context) {
		out := b.Jobs()
		if out == nil {
			out = []Job{}
		}
		c.JSON(http.StatusOK, out)
	})

	api.GET("/jobs/:id", func(c *gin.Context) {
		job, ok := b.Job(c.Param("id"))
		if !ok {
			apiError(c, http.StatusNotFound, "no such job (jobs are kept in memory and lost on restart)")
			return
		}
		c.JSON(http.StatusOK, job)
	})

	// Purge acts on every replica (the proxy fans it out over Redis); see Backend.Purge.
	api.POST("/purge", func(c *gin.Context) {
		var req struct {
			Channel  string `json:"channel"`
			Subdir   string `json:"subdir"`
			Filename string `json:"filename"`
		}
		if !readBody(c, &req) {
			return
		}
		if req.Channel == "" {
			apiError(c, http.StatusBadRequest, "channel is required")
			return
		}
		if req.Filename != "" && req.Subdir == "" {
			apiError(c, http.StatusBadRequest, "a filename needs its subdir")
			return
		}
		if err := b.Purge(c.Request.Context(), req.Channel, req.Subdir, req.Filename); err != nil {
			backendError(c, err)
			return
		}
		what := "repodata"
		if req.Filename != "" {
			what = "file"
		}
		// Only the channel is quoted back: the Backend found it configured.
		c.JSON(http.StatusOK, gin.H{"purged": what, "channel": req.Channel})
	})
}

// mayRead: whoever may read the channels, and the admin.
func (o Options) mayRead(r *http.Request) bool {
	return o.CanRead == nil || o.CanRead(r) || o.hasAdminToken(r)
}

// intParam reads a non-negative integer query parameter; on a bad one it answers
// 400 and reports false.
func intParam(c *gin.Context, name string, def int) (int, bool) {
	v := c.Query(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		apiError(c, http.StatusBadRequest, name+": want a non-negative integer")
		return 0, false
	}
	return n, true
}

// readBody decodes a write's JSON body into v; an empty body leaves v as it is.
// On a bad body it answers 400 and reports false.
func readBody(c *gin.Context, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, maxBody))
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return true
	}
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			apiError(c, http.StatusRequestEntityTooLarge, "the body is too large")
			return false
		}
		apiError(c, http.StatusBadRequest, "bad JSON body: "+jsonProblem(err))
		return false
	}
	return true
}

// jsonProblem says what is wrong with a JSON body without quoting it:
// encoding/json's own messages quote the offending character or value, and
// nothing a request sent is quoted back (admin.go, "Nothing asked is quoted").
func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("not valid JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ) && typ.Field != "":
		// Field is the path of this API's own field names, Type one of its types.
		return fmt.Sprintf("%s: want %s", typ.Field, jsonType(typ.Type))
	case errors.As(err, &typ):
		return "want a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "it ends too early"
	}
	return "not a JSON object of this call's fields"
}

// jsonType names a Go type of a request's fields as JSON calls it.
func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(jsonType(t.Elem()), "a ") + "s"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.Kind().String()
}

// jsonBody refuses a write whose body is not declared JSON, with 415, and
// reports whether it may go on. A cross-site HTML form can post a body that
// reads as JSON (enctype text/plain, or a urlencoded field named after it) with
// no Origin in an older browser; such a post can never say
// "Content-Type: application/json" without a CORS preflight, which this API
// does not answer. A write with no body at all and no Content-Type (curl -X
// POST) carries nothing to smuggle and is let through: a browser sends none
// without an Origin header, which the write guard has checked.
func jsonBody(c *gin.Context) bool {
	ct := c.GetHeader("Content-Type")
	if ct == "" {
		var one [1]byte
		if n, _ := io.ReadFull(c.Request.Body, one[:]); n == 0 {
			return true
		}
	} else if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
		return true
	}
	apiError(c, http.StatusUnsupportedMediaType, "the body of a write must be JSON, sent with Content-Type: application/json")
	return false
}

// backendError answers a Backend error with its status: 400 (ErrInvalid), 404
// (ErrNotFound), 409 (ErrBusy), 410 (ErrGone), 504 (the call took too long), else 502: what the
// Backend cannot do is upstream's failure to answer.
func backendError(c *gin.Context, err error) {
	status := http.StatusBadGateway
	switch {
	case errors.Is(err, ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrBusy):
		status = http.StatusConflict
	case errors.Is(err, ErrGone):
		status = http.StatusGone
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	}
	apiError(c, status, err.Error())
}
