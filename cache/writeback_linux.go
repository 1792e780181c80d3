package cache

import (
	"os"
	"syscall"
)

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE: start writing back the dirty
// pages of the range, without waiting for them.
const syncFileRangeWrite = 2

// startWriteback starts writing back f[off:off+n]; a failure only means the
// fsync at the end does all of the work, so it is ignored.
func startWriteback(f *os.File, off, n int64) {
	syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, f.Fd(), uintptr(off), uintptr(n), syncFileRangeWrite, 0, 0)
}
