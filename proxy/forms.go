package proxy

import (
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"

	"github.com/condaproxy/condaproxy/policy/matchspec"
)

// compareVersions orders two version strings as conda does; a version conda cannot
// parse sorts below every valid one, so it never becomes "current".
func compareVersions(a, b string) int {
	va, ea := matchspec.ParseVersion(a)
	vb, eb := matchspec.ParseVersion(b)
	switch {
	case ea == nil && eb == nil:
		return va.Compare(vb)
	case ea != nil && eb != nil:
		return strings.Compare(a, b)
	case ea != nil:
		return -1
	default:
		return 1
	}
}

// gzipTo writes r gzip-compressed: repodata.json for clients that send
// Accept-Encoding: gzip (conda, rattler), a fifth of the bytes on the wire.
func gzipTo(w io.Writer, r io.Reader) error {
	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	if _, err := io.Copy(zw, r); err != nil {
		return err
	}
	return zw.Close()
}
