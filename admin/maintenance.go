package admin

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// The maintenance calls: `condaproxy clean`, `export` and `import` through a
// running server (Maintainer). All are writes: the write guard of api.go
// stands in front of them.
//
//	POST /api/v1/clean {"channels", "dry_run"}  202, a job (GET /api/v1/jobs/<id>)
//	POST /api/v1/export {"channels", "delta"}   200, the tar, streamed
//	POST /api/v1/export/commit {"id"}           the client has the whole tar: it counts as exported
//	POST /api/v1/import (application/x-tar)     200, the ended import job; 422 refused;
//	                                            413 past the free space less a reserve;
//	                                            400 broke off or stalled; 408 too slow
//
// An export's answer says it is whole in its trailer, ExportStatusTrailer "ok",
// sent after the tar; an export that fails midway breaks the connection
// instead, so no client takes a cut tar for one that ended. ExportIDHeader
// names the export for its commit.

const (
	importPath = "/api/v1/import"

	// ExportIDHeader names an export through the server, for its commit.
	ExportIDHeader = "Condaproxy-Export-Id"
	// ExportStatusTrailer is "ok" after a whole export tar, and nothing else.
	ExportStatusTrailer = "Condaproxy-Export-Status"
	// TarType is the Content-Type of an export tar, both ways.
	TarType = "application/x-tar"
)

// mountMaintenance adds the maintenance calls. o.Backend is the redacting
// wrapper (New), a Maintainer always: it answers 404 (errNoMaintainer) for a
// Backend that offers none.
func mountMaintenance(api *gin.RouterGroup, o Options) {
	m := o.Backend.(Maintainer)
	api.POST("/clean", func(c *gin.Context) {
		var req struct {
			Channels []string `json:"channels"`
			DryRun   bool     `json:"dry_run"`
		}
		if !readBody(c, &req) || !namesGiven(c, req.Channels) {
			return
		}
		job, err := m.StartClean(req.Channels, req.DryRun)
		if err != nil {
			backendError(c, err)
			return
		}
		c.Header("Location", "/api/v1/jobs/"+job.ID)
		c.JSON(http.StatusAccepted, job)
	})

	api.POST("/export", func(c *gin.Context) {
		var req struct {
			Channels []string `json:"channels"`
			Delta    bool     `json:"delta"`
		}
		if !readBody(c, &req) || !namesGiven(c, req.Channels) {
			return
		}
		id := newExportID()
		w := &lazyTar{c: c, id: id}
		res, err := m.Export(c.Request.Context(), id, req.Channels, req.Delta, w)
		if err != nil {
			if !w.started {
				backendError(c, err)
				return
			}
			// The tar is cut: break the connection, so that the client sees
			// neither the end of the answer nor its trailer.
			o.logger().Warn("admin: an export through the API failed midway; connection dropped", "err", redactText(err.Error(), nil))
			panic(http.ErrAbortHandler)
		}
		w.start()
		c.Writer.Header().Set(ExportStatusTrailer, fmt.Sprintf("ok %d %d", res.Packages, res.Bytes))
	})

	api.POST("/export/commit", func(c *gin.Context) {
		var req struct {
			ID string `json:"id"`
		}
		if !readBody(c, &req) {
			return
		}
		if req.ID == "" {
			apiError(c, http.StatusBadRequest, "id is required")
			return
		}
		if err := m.CommitExport(req.ID); err != nil {
			backendError(c, err)
			return
		}
		c.JSON(http.StatusOK, gin.H{"committed": true})
	})

	api.POST("/import", func(c *gin.Context) {
		idle := o.UploadIdle
		if idle <= 0 {
			idle = 30 * time.Second
		}
		rc := http.NewResponseController(c.Writer)
		body := &idleReader{r: c.Request.Body, rc: rc, idle: idle, now: uploadNow, minRate: UploadMinRate, window: UploadRateWindow}
		job, err := m.Import(c.Request.Context(), body, c.Request.ContentLength)
		rc.SetReadDeadline(time.Time{})
		if err != nil {
			status := 0
			switch {
			case errors.Is(body.err, errUploadSlow):
				status = http.StatusRequestTimeout
				err = fmt.Errorf("%v; nothing was imported", body.err)
			case body.err != nil:
				// The client stopped sending, or stalled: what it sent is gone.
				status = http.StatusBadRequest
				err = fmt.Errorf("the upload broke off or stalled (%v); nothing was imported", body.err)
			case errors.Is(err, ErrRefused):
				status = http.StatusUnprocessableEntity
			case errors.Is(err, ErrTooLarge):
				status = http.StatusRequestEntityTooLarge
			case !errors.Is(err, ErrBusy) && !errors.Is(err, ErrNotFound):
				status = http.StatusInternalServerError // the data directory's failure
			}
			if status == 0 {
				backendError(c, err)
				return
			}
			body := gin.H{"error": err.Error()}
			if job.ID != "" {
				body["job"] = job
			}
			c.AbortWithStatusJSON(status, body)
			return
		}
		c.JSON(http.StatusOK, job)
	})
}

// namesGiven refuses an empty channel name with 400.
func namesGiven(c *gin.Context, names []string) bool {
	for _, ch := range names {
		if ch == "" {
			apiError(c, http.StatusBadRequest, "channels: an empty name")
			return false
		}
	}
	return true
}

func newExportID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lazyTar is an export's answer: its header goes with the first byte of the
// tar, so that an export refused before it writes anything (an unknown
// channel) still answers a JSON error.
type lazyTar struct {
	c       *gin.Context
	id      string
	started bool
}

func (w *lazyTar) start() {
	if w.started {
		return
	}
	w.started = true
	h := w.c.Writer.Header()
	h.Set("Content-Type", TarType)
	h.Set(ExportIDHeader, w.id)
	h.Set("Trailer", ExportStatusTrailer)
	w.c.Status(http.StatusOK)
	w.c.Writer.WriteHeaderNow()
}

func (w *lazyTar) Write(p []byte) (int, error) {
	w.start()
	return w.c.Writer.Write(p)
}

// An upload (POST /api/v1/import) must keep coming: besides the idle bound,
// over each UploadRateWindow the server spends waiting on its client it must
// bring at least UploadMinRate bytes a second, else it fails with 408. Only
// the time spent waiting on the client counts (not the server's own work
// between reads), so a slow disk never fails a client; a client trickling a
// byte now and then to stay under the idle bound fails after one window. So
// an upload of n bytes holds the import (and its channels) at most about
// n/UploadMinRate + UploadRateWindow of waiting on it. Vars for tests.
var (
	UploadMinRate    int64 = 32 << 10 // bytes a second; 0: no minimum
	UploadRateWindow       = time.Minute
	uploadNow              = time.Now
)

// errUploadSlow is an upload below UploadMinRate.
var errUploadSlow = errors.New("the upload was too slow")

// idleReader reads an upload, failing it when the client sends nothing for
// idle (a read deadline on the connection, moved on at each read) or less
// than minRate over a window of waiting. err is the first read error that was
// not the end of the body.
type idleReader struct {
	r       io.Reader
	rc      *http.ResponseController
	idle    time.Duration
	now     func() time.Time
	minRate int64 // bytes a second; 0: no minimum
	window  time.Duration
	waited  time.Duration // waiting on the client in this window
	got     int64         // bytes read in this window
	err     error
}

func (r *idleReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	r.rc.SetReadDeadline(time.Now().Add(r.idle))
	start := r.now()
	n, err := r.r.Read(p)
	r.waited += r.now().Sub(start)
	r.got += int64(n)
	if err == nil && r.minRate > 0 && r.window > 0 && r.waited >= r.window {
		if float64(r.got) < float64(r.minRate)*r.waited.Seconds() {
			err = fmt.Errorf("%w: it brought %d bytes in %v of waiting on it, below the minimum average of %d KiB/s over each %v (with the idle bound of %v)",
				errUploadSlow, r.got, r.waited.Round(time.Second), r.minRate>>10, r.window, r.idle)
		}
		r.waited, r.got = 0, 0
	}
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// tarBody refuses an upload not declared a tar, with 415: as jsonBody does for
// JSON, no cross-site form can send that Content-Type without a preflight.
func tarBody(c *gin.Context) bool {
	if mt, _, err := mime.ParseMediaType(c.GetHeader("Content-Type")); err == nil && mt == TarType {
		return true
	}
	apiError(c, http.StatusUnsupportedMediaType, "the body of an import must be an export tar, sent with Content-Type: "+TarType)
	return false
}
