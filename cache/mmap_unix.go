//go:build unix

package cache

import (
	"os"
	"syscall"
)

// mapFile maps a named file read-only; mapped is false for an empty file,
// which has no mapping.
func (s *Store) mapFile(name string) (data []byte, unmap func(), mapped bool, err error) {
	path, err := s.filePath(name)
	if err != nil {
		return nil, nil, false, err
	}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil, false, ErrNotFound
	}
	if err != nil {
		return nil, nil, false, err
	}
	defer f.Close() // the mapping outlives the descriptor
	info, err := f.Stat()
	if err != nil {
		return nil, nil, false, err
	}
	if info.Size() == 0 {
		return []byte{}, func() {}, false, nil
	}
	data, err = syscall.Mmap(int(f.Fd()), 0, int(info.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, false, err
	}
	return data, func() { syscall.Munmap(data) }, true, nil
}

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
	syscall.Madvise(data[:n], syscall.MADV_DONTNEED)
}

// madvPopulateRead is MADV_POPULATE_READ (Linux 5.14): map the pages of a
// range in one call instead of one fault per few pages. Older kernels refuse it
// with EINVAL, which costs nothing: the pages then fault in as they are read.
const madvPopulateRead = 22

// populate maps the resident pages of data[from:to] ahead of a sequential
// reader. A scan that gives its pages back behind it faults every page in
// again on its next pass; a fault per 64 KiB was a sixth of a 300 MB build's
// CPU.
func populate(data []byte, from, to int) {
	page := os.Getpagesize()
	from &^= page - 1
	to = min(to, len(data))
	if from >= to {
		return
	}
	syscall.Madvise(data[from:to], madvPopulateRead)
}
