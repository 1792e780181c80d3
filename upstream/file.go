package upstream

import (
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/condaproxy/condaproxy/config"
)

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
