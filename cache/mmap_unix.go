//go:build unix

package cache

import (
	"os"
	"syscall"
)

// MapFile maps a named file into memory read-only: a reader of a whole served
// document (a 300 MB repodata.json) holds its pages in the page cache, which
// the kernel can drop, not on the heap. unmap must be called once the bytes
// and everything aliasing them are no longer used.
func (s *Store) MapFile(name string) (data []byte, unmap func(), err error) {
	path, err := s.filePath(name)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil, ErrNotFound
	}
	if err != nil {
		return nil, nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	info, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if info.Size() == 0 {
		return []byte{}, func() {}, nil
	}
	data, err = syscall.Mmap(int(f.Fd()), 0, int(info.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() { syscall.Munmap(data) }, nil
}
