package cache

import "sync"

// Mapped is a named file mapped read-only into memory (a stored upstream
// repodata of hundreds of megabytes): its pages live in the page cache, which
// the kernel can drop, not on the Go heap, and Drop lets a sequential reader
// give back what it has read, so the resident part stays a small window.
//
// Everything that aliases Bytes must be copied before Close: a read after it
// is a fault, not garbage.
type Mapped struct {
	data   []byte
	mapped bool // false: read whole onto the heap (no mmap here); Drop does nothing
	once   sync.Once
	unmap  func()
}

// Bytes is the file's content.
func (m *Mapped) Bytes() []byte { return m.data }

// Drop tells the kernel the bytes before offset are not needed soon. They stay
// readable: a later read faults them in again from the file. The window after
// offset is mapped ahead of the reader, as the kernel's own read-ahead would
// for read(2).
func (m *Mapped) Drop(offset int) {
	if m.mapped {
		dropPages(m.data, offset)
		populate(m.data, offset, offset+mapAhead)
	}
}

// mapAhead is how much Drop maps ahead of the reader: a little more than the
// distance between two calls of a scan (repodata's behindStep, 4 MiB).
const mapAhead = 6 << 20

// Close unmaps the file. Safe to call more than once.
func (m *Mapped) Close() {
	m.once.Do(m.unmap)
}

// Map maps the named file (see Mapped).
func (s *Store) Map(name string) (*Mapped, error) {
	data, unmap, mapped, err := s.mapFile(name)
	if err != nil {
		return nil, err
	}
	return &Mapped{data: data, mapped: mapped, unmap: unmap}, nil
}
