package proxy

import (
	"hash/maphash"
	"unsafe"
)

// nameIndex maps the filenames of one published answer to a value: the served
// packages (to their pkgRef) or the hidden ones (to the rule that hid it).
// conda-forge's linux-64 has ~700k records, and a Go map[string]pkgRef spends
// a string header, an allocation per name and the map's own overhead on each,
// and doubles as it grows (~170 bytes a record, and twice that while it grows:
// more than a 300 MB build's whole memory budget). Here the names are packed in
// byte chunks, the values in fixed-size chunks of entries (growing never copies
// nor leaves a half-empty doubled array behind), and an open-addressing table
// of uint32 indexes finds them: ~8 bytes a record beyond the name and the
// value. It is filled while a build runs, then only read (by any number of
// goroutines) once sealed.
type nameIndex[V any] struct {
	names [][]byte         // chunks of nameChunk bytes (or one name longer than that)
	ents  [][]nameEntry[V] // chunks of entChunk entries
	count int              // entries added
	slots []uint32         // index+1 into the entries; 0 is empty
	seed  maphash.Seed
	n     int // distinct names
}

type nameEntry[V any] struct {
	chunk, off, len uint32 // the name is names[chunk][off:off+len]
	v               V
}

const (
	nameChunk = 1 << 20
	entChunk  = 1 << 13
)

// add records name with v; a name given twice keeps the last value, as a map
// assignment would. Only before seal.
func (x *nameIndex[V]) add(name string, v V) {
	last := len(x.names) - 1
	if last < 0 || len(x.names[last])+len(name) > cap(x.names[last]) {
		x.names = append(x.names, make([]byte, 0, max(nameChunk, len(name))))
		last++
	}
	off := len(x.names[last])
	x.names[last] = append(x.names[last], name...)
	if x.count%entChunk == 0 {
		x.ents = append(x.ents, make([]nameEntry[V], 0, entChunk))
	}
	c := &x.ents[len(x.ents)-1]
	*c = append(*c, nameEntry[V]{chunk: uint32(last), off: uint32(off), len: uint32(len(name)), v: v})
	x.count++
}

func (x *nameIndex[V]) entry(i int) *nameEntry[V] { return &x.ents[i/entChunk][i%entChunk] }

// seal builds the lookup table; add must not be called after it.
func (x *nameIndex[V]) seal() {
	x.seed = maphash.MakeSeed()
	size := 8
	for size < x.count*2 {
		size *= 2
	}
	x.slots = make([]uint32, size)
	mask := uint64(size - 1)
	x.n = 0
	for i := 0; i < x.count; i++ {
		name := x.name(i)
		for h := maphash.String(x.seed, name) & mask; ; h = (h + 1) & mask {
			j := x.slots[h]
			if j == 0 {
				x.slots[h] = uint32(i + 1)
				x.n++
				break
			}
			if x.name(int(j-1)) == name {
				x.slots[h] = uint32(i + 1) // the later one wins
				break
			}
		}
	}
}

// name returns entry i's name. It aliases a chunk, which never changes once
// written, so it may be kept.
func (x *nameIndex[V]) name(i int) string {
	e := x.entry(i)
	if e.len == 0 {
		return ""
	}
	return unsafe.String(&x.names[e.chunk][e.off], int(e.len))
}

// get returns name's value. A nil or unsealed index has none.
func (x *nameIndex[V]) get(name string) (V, bool) {
	var zero V
	if x == nil || len(x.slots) == 0 {
		return zero, false
	}
	mask := uint64(len(x.slots) - 1)
	for h := maphash.String(x.seed, name) & mask; ; h = (h + 1) & mask {
		j := x.slots[h]
		if j == 0 {
			return zero, false
		}
		if x.name(int(j-1)) == name {
			return x.entry(int(j - 1)).v, true
		}
	}
}

// has reports whether name is in the index.
func (x *nameIndex[V]) has(name string) bool {
	_, ok := x.get(name)
	return ok
}

// size is the number of distinct names.
func (x *nameIndex[V]) size() int {
	if x == nil {
		return 0
	}
	return x.n
}

// each calls f for every distinct name and its value, in no set order, until
// f returns false.
func (x *nameIndex[V]) each(f func(name string, v V) bool) {
	if x == nil {
		return
	}
	for _, j := range x.slots {
		if j != 0 && !f(x.name(int(j-1)), x.entry(int(j-1)).v) {
			return
		}
	}
}
