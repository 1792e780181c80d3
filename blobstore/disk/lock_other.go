//go:build !unix

package disk

import (
	"os"
	"path/filepath"
)

// lockDir only creates dir/LOCK where flock is missing: condaproxy runs on
// Unix, and this keeps the package building elsewhere.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
}
