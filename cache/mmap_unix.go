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
