package upstream

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/condaproxy/condaproxy/config"
)

// getFile serves a file:// upstream: a local channel tree (an untarred export, a USB
// disk). Its validator is the modification time. u has passed Source.Allows: its
// cleaned path is below the upstream's directory. It is opened within that
// directory (os.OpenInRoot), so a symbolic link in the tree that points out of it
// (notices.json -> /etc/shadow) is refused, not followed.
func getFile(src Source, u *url.URL, cond Conditional) (*Response, error) {
	redacted := config.RedactURL(u.String())
	root := filepath.Clean(filepath.FromSlash(src.Base.Path))
	rel, err := filepath.Rel(root, filepath.Clean(filepath.FromSlash(u.Path)))
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, &Error{URL: redacted, Err: fmt.Errorf("outside the upstream's tree: %w", ErrRefused)}
	}
	f, err := os.OpenInRoot(root, rel)
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
