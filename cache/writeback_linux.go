package cache

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback starts writing back f[off:off+n] (SYNC_FILE_RANGE_WRITE:
// without waiting for it); a failure only means the fsync at the end does all
// of the work, so it is ignored.
func startWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
