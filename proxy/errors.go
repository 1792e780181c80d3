package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/fill"
	"github.com/condaproxy/condaproxy/repodata"
	"github.com/condaproxy/condaproxy/upstream"
)

// httpError is an error with the status and the text a client may see.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// The error vocabulary of the request path. Everything a handler returns is mapped
// to a status in writeError, and nothing else reaches a client: internal error text
// (paths, upstream URLs with tokens) stays in the logs.
var (
	errNotFound       = &httpError{http.StatusNotFound, "not found"}
	errUnauthorized   = &httpError{http.StatusUnauthorized, "a token is required: use /t/<token>/ or Authorization: Bearer <token>"}
	errMethod         = &httpError{http.StatusMethodNotAllowed, "only GET and HEAD"}
	errUpstream       = &httpError{http.StatusBadGateway, "upstream failed and no cached copy is available"}
	errChecksum       = &httpError{http.StatusBadGateway, "upstream sent bytes that do not match the repodata; nothing was cached"}
	errURITooLong     = &httpError{http.StatusRequestURITooLong, "request target too long (limits.max_url)"}
	errHeaderTooLarge = &httpError{http.StatusRequestHeaderFieldsTooLarge, "request header too large (limits.max_request_header)"}
)

// fillError is a fill's failure as a sync reports it: a mismatch says what the
// client would have heard.
func fillError(err error) error {
	if errors.As(err, new(*cache.MismatchError)) {
		return errChecksum
	}
	return err
}

// hiddenError is a package the channel's filter hides.
type hiddenError struct{ rule string }

func (e *hiddenError) Error() string { return "hidden by the channel's filter: " + e.rule }

// writeError answers err. Expected outcomes (404, 403) log at Info; failures at Warn.
// red masks the configured secrets in what the body says of an upstream failure.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, red *config.Redactor, err error) {
	status, msg := classify(err)
	if status == http.StatusBadGateway || status == http.StatusGatewayTimeout {
		// An operator reading a client's failed solve should learn which upstream
		// URL failed and how, without the server's logs. upstream.Error names the
		// URL redacted (token path, user:password) and its error scrubbed of the
		// source's secrets; red masks any configured secret left (a token in a
		// query string, say).
		if d := upstreamDetail(err, red); d != "" {
			msg += ": " + d
		}
	}
	// The path may hold a client token (/t/<token>/...), valid or guessed.
	switch {
	case status >= 500:
		log.Warn("request failed", "path", redactTokenPath(r.URL.Path), "status", status, "err", err)
	case status != http.StatusNotFound:
		log.Info("request refused", "path", redactTokenPath(r.URL.Path), "status", status, "err", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="condaproxy"`)
	}
	if status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "10")
	}
	if status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", "GET, HEAD")
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Del("ETag")
	h.Del("Content-Encoding")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	if err == errNoShards {
		// Looked at again on the next solve, not never (no-store) nor for days.
		h.Set("Cache-Control", "no-cache")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, "%d %s\n", status, msg)
	}
}

// upstreamDetail is what the upstream failure in err's chain says
// ("upstream https://host/ch/noarch/repodata.json: HTTP 503"), redacted by red,
// on one line of at most maxDetail bytes (upstream.Line), or "". Redacted before
// it is cut: a cut through a secret would leave its prefix unmasked.
func upstreamDetail(err error, red *config.Redactor) string {
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		return ""
	}
	return upstream.Line(red.String(ue.Error()), maxDetail)
}

// maxDetail bounds the upstream failure quoted in an error body.
const maxDetail = 512

func classify(err error) (int, string) {
	var he *httpError
	var hidden *hiddenError
	var ue *upstream.Error
	switch {
	case errors.As(err, &he):
		return he.status, he.msg
	case errors.As(err, &hidden):
		return http.StatusForbidden, hidden.Error()
	case errors.Is(err, upstream.ErrBadPath):
		// A path that would not stay below the upstream (a files channel's path).
		return http.StatusBadRequest, errBadPath.msg
	case errors.Is(err, upstream.ErrRefused):
		return http.StatusBadGateway, "upstream named a location the proxy may not fetch from"
	case errors.Is(err, fill.ErrShuttingDown):
		return http.StatusServiceUnavailable, "shutting down"
	case errors.As(err, new(*cache.MismatchError)):
		return errChecksum.status, errChecksum.msg
	case errors.As(err, new(*fill.TooLargeError)), errors.Is(err, repodata.ErrTooLarge):
		return http.StatusBadGateway, "upstream sent a file larger than this proxy's limits allow; nothing was cached"
	case errors.Is(err, upstream.ErrNotFound):
		return http.StatusNotFound, "not found upstream"
	case errors.As(err, &ue):
		return http.StatusBadGateway, errUpstream.msg
	case errors.Is(err, cache.ErrUnavailable):
		// The shared object store is down: what this replica holds is still
		// served; a miss must wait.
		return http.StatusServiceUnavailable, "the object store is unavailable; try again shortly"
	case errors.Is(err, context.Canceled):
		// The client went away while waiting; nobody reads this answer.
		return 499, "client closed the request"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "upstream took too long"
	default:
		return http.StatusInternalServerError, "internal error"
	}
}
