//go:build unix

package cache

import "syscall"

// freeBytes is the space an unprivileged writer may still use on dir's file system.
func freeBytes(dir string) (int64, error) {
	free, _, err := DiskSpace(dir)
	return free, err
}

// DiskSpace is the space an unprivileged writer may still use on dir's file
// system (what an upload to the data directory can take at most), and the
// file system's size.
func DiskSpace(dir string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}
