package cache

import (
	"errors"
	"syscall"
)

// isLockErr reports whether Pebble failed to open because its LOCK file is held:
// a second process on the same data directory.
func isLockErr(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
}
