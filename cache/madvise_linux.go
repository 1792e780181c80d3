package cache

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropPages gives back the resident pages of the mapping data that lie wholly
// before offset. MADV_DONTNEED on a shared read-only file mapping only unmaps
// the pages from this process: the page cache keeps them, and a later read of
// them faults them in again with the same bytes. Only ever called on a
// mapping (on anonymous memory it would zero the pages).
func dropPages(data []byte, offset int) {
	page := os.Getpagesize()
	n := min(offset, len(data)) &^ (page - 1)
	if n <= 0 {
		return
	}
	unix.Madvise(data[:n], unix.MADV_DONTNEED)
}

// populate maps the resident pages of data[from:to] ahead of a sequential
// reader, in one call (MADV_POPULATE_READ, Linux 5.14) instead of one fault
// per few pages: a scan that gives its pages back behind it faults every page
// in again on its next pass, and those faults were a sixth of a 300 MB
// build's CPU. Older kernels refuse it with EINVAL, which costs nothing: the
// pages then fault in as they are read.
func populate(data []byte, from, to int) {
	page := os.Getpagesize()
	from &^= page - 1
	to = min(to, len(data))
	if from >= to {
		return
	}
	unix.Madvise(data[from:to], unix.MADV_POPULATE_READ)
}
