package proxy

import (
	"io"
	"net/http"
	"strconv"
	"time"
)

// serveWhole answers a plain GET or HEAD of a whole stored body (a hot
// repodata answer, a cached package) without http.ServeContent, and reports
// whether it did. ServeContent parses and formats what a plain request does
// not need (Range, the If-* preconditions, the modification time per request);
// on a 4 KiB answer over loopback that was a fifth of the handler's time.
// Any request with a Range or a precondition (conda's If-None-Match
// revalidations included), or an answer with a Content-Encoding, goes to
// ServeContent as before, so their semantics stay the standard library's.
// lastModified is the Last-Modified value, formatted once (empty: none).
func serveWhole(w http.ResponseWriter, r *http.Request, body io.Reader, size int64, lastModified string) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	rh := r.Header
	for _, k := range conditionalHeaders {
		if _, ok := rh[k]; ok {
			return false
		}
	}
	h := w.Header()
	if _, ok := h["Content-Encoding"]; ok {
		return false
	}
	// Canonical keys assigned directly: Header.Set would canonicalize each.
	if lastModified != "" {
		h["Last-Modified"] = []string{lastModified}
	}
	h["Accept-Ranges"] = acceptRanges
	h["Content-Length"] = []string{strconv.FormatInt(size, 10)}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		// A file goes out with sendfile (the ResponseWriter's ReadFrom), bytes
		// in one write.
		io.CopyN(w, body, size)
	}
	return true
}

var (
	conditionalHeaders = []string{"Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range"}
	acceptRanges       = []string{"bytes"}
)

// httpTime is t as an HTTP date, or "" for the zero time.
func httpTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(http.TimeFormat)
}
