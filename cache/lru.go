package cache

// lruList is the blob table's eviction order: a doubly linked list threaded
// through the entries themselves, least recently used at the front. An access
// moves its entry to the back and an eviction takes from the front, each in
// O(1), so a commit into a full cache never sorts or scans the table.
//
// Access times come from the wall clock at each access, so the order of the
// list is the order of ATime, which load rebuilds from the stored times after a
// restart. Only a clock stepped backwards makes them differ: the list then keeps
// the true order of the accesses, and the next start the clock's.
//
// Every entry in Store.blobs is in the list and no other is; both change under
// Store.mu only.
type lruList struct {
	root blobEntry // sentinel: root.next is the front, root.prev the back
}

func (l *lruList) init() {
	l.root.next = &l.root
	l.root.prev = &l.root
}

// front is the least recently used entry, nil when the list is empty.
func (l *lruList) front() *blobEntry { return l.after(&l.root) }

// after is the entry after e towards the back, nil at the back.
func (l *lruList) after(e *blobEntry) *blobEntry {
	if e.next == &l.root {
		return nil
	}
	return e.next
}

// back is the most recently used entry, nil when the list is empty.
func (l *lruList) back() *blobEntry {
	if l.root.prev == &l.root {
		return nil
	}
	return l.root.prev
}

// before is the entry before e towards the front, nil at the front.
func (l *lruList) before(e *blobEntry) *blobEntry {
	if e.prev == &l.root {
		return nil
	}
	return e.prev
}

func (l *lruList) pushBack(e *blobEntry) { l.insertAfter(e, l.root.prev) }

// insertAfter links e, which is in no list, after at (the sentinel: at the front).
func (l *lruList) insertAfter(e, at *blobEntry) {
	e.prev = at
	e.next = at.next
	at.next.prev = e
	at.next = e
}

func (l *lruList) remove(e *blobEntry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}

// moveToBack makes e the most recently used.
func (l *lruList) moveToBack(e *blobEntry) {
	if l.root.prev == e {
		return
	}
	l.remove(e)
	l.pushBack(e)
}
