package cache

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Open reads the blob table from the metadata, and only that: with a million
// blobs, reading a million directory entries and a lstat each would keep the
// proxy from serving for as long. The files are squared with the table after
// Open returns, by reconcile, in the background. Until it ends the store is
// right, if not complete:
//   - an entry whose file is gone (a key whose file removal reached the disk
//     and whose delete did not, an operator's rm) is still counted, and forgotten
//     by the first OpenBlob that finds no file (ErrNotFound: fetched again);
//   - a file without an entry (renamed into place just before a crash, before
//     its key was written; placed by an import that never committed; evicted,
//     with its key deleted and its removal lost) is not served yet: a request
//     for it fetches it again, and its commit renames the same bytes over it.

// slabEntries is how many entries load allocates at once, and their sha256s
// in one string: a million small objects, and a million strings, would be most
// of what Open costs (allocation, and page faults on the fresh heap). An entry
// or a key keeps its whole slab alive, so a slab's memory goes only with the
// last of its blobs: at most the size of the table as it was loaded.
const slabEntries = 4096

// loadedEntries are the entries read at Open, in key order, that is by fan-out
// directory: reconcile checks those of one directory against its listing. The
// last slab of each part of the scan (loadPart) may be short.
type loadedEntries struct {
	slabs [][]blobEntry
	n     int
}

// entryRef names a loaded entry by slab and place in it, in key order.
type entryRef int32

func refOf(slab, i int) entryRef { return entryRef(slab*slabEntries + i) }

func (l *loadedEntries) at(r entryRef) *blobEntry {
	return &l.slabs[r/slabEntries][r%slabEntries]
}

// atimeOf is an entry's place in the eviction order: a slice of them sorts
// without following a pointer per comparison, and the ref breaks ties in key
// order, so that equal times give the same order at every start.
type atimeOf struct {
	atime int64
	ref   entryRef
}

func compareATime(a, b atimeOf) int {
	return cmp.Or(cmp.Compare(a.atime, b.atime), cmp.Compare(a.ref, b.ref))
}

// loadPart is one part of the table, read by a goroutine of its own: the keys
// from "b/"+lo up to "b/"+hi.
type loadPart struct {
	lo, hi string
	slabs  [][]blobEntry
	order  []atimeOf // sorted; refs count from this part's first slab
	n, bad int
	err    error
}

// load reads the blob table, orders it for eviction by the stored access times
// and enforces the cap. It returns the entries for reconcile.
//
// The table is read in as many parts as there are CPUs, by sha256 ranges,
// each part sorting its own entries; they are merged here. Reading and
// decoding a million records is most of a start.
func (s *Store) load() (*loadedEntries, error) {
	const hexDigits = "0123456789abcdef"
	parts := make([]*loadPart, min(max(runtime.GOMAXPROCS(0), 1), 16))
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := p*16/len(parts), (p+1)*16/len(parts)
		part := &loadPart{lo: hexDigits[lo : lo+1], hi: "\xff"}
		if hi < 16 {
			part.hi = hexDigits[hi : hi+1]
		}
		parts[p] = part
		wg.Go(func() { part.read(s.Meta) })
	}
	wg.Wait()

	loaded := &loadedEntries{}
	bad := 0
	for _, part := range parts {
		if part.err != nil {
			return nil, part.err
		}
		// Refs of later parts move past the slabs before them.
		shift := entryRef(len(loaded.slabs) * slabEntries)
		for i := range part.order {
			part.order[i].ref += shift
		}
		loaded.slabs = append(loaded.slabs, part.slabs...)
		loaded.n += part.n
		bad += part.bad
	}
	if bad > 0 {
		s.log.Warn("unreadable blob records skipped; their files are adopted again", "count", bad)
	}

	blobs := make(map[string]*blobEntry, loaded.n)
	var total int64
	for _, slab := range loaded.slabs {
		for j := range slab {
			e := &slab[j]
			blobs[e.sha] = e
			total += e.Size
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs, s.total = blobs, total
	// The parts' sorted runs merged into the list: least recently used first.
	for {
		var next *loadPart // the part whose next entry is the least recently used
		for _, part := range parts {
			if len(part.order) > 0 && (next == nil || compareATime(part.order[0], next.order[0]) < 0) {
				next = part
			}
		}
		if next == nil {
			break
		}
		s.lru.pushBack(loaded.at(next.order[0].ref))
		next.order = next.order[1:]
	}
	// A cap lowered since the last run is enforced once reconcile has checked
	// the entries against the files, not here: records whose file a crash took
	// (a lost unsynced delete) still count now, and evicting for them would
	// take real blobs.
	return loaded, nil
}

// read reads the part's records into slabs, and sorts them by access time.
func (part *loadPart) read(m *Meta) {
	// The order is gathered a slab's worth at a time and put together once at
	// the end: appending to one slice of a million would copy it over and
	// over as it grows.
	var chunks [][]atimeOf
	var shas *strings.Builder // the sha256s of the last slab, end to end
	// A Builder's String is its bytes, not a copy of them.
	named := func() {
		if shas == nil {
			return
		}
		slab := part.slabs[len(part.slabs)-1]
		names := shas.String()
		for j := range slab {
			slab[j].sha = names[j*64 : (j+1)*64]
		}
	}
	part.err = m.scanRange("b/"+part.lo, "b/"+part.hi, func(key, val []byte) error {
		sha := key[len("b/"):]
		if !isSHA(sha) {
			return nil // never written by a store; no blob path names it
		}
		size, atime, err := decodeBlobRecord(val)
		if err != nil {
			// Its file, if there, is adopted by reconcile and the record
			// written again.
			part.bad++
			return nil
		}
		if part.n%slabEntries == 0 {
			named()
			part.slabs = append(part.slabs, make([]blobEntry, 0, slabEntries))
			chunks = append(chunks, make([]atimeOf, 0, slabEntries))
			shas = &strings.Builder{}
			shas.Grow(slabEntries * 64)
		}
		last := len(part.slabs) - 1
		part.slabs[last] = append(part.slabs[last], blobEntry{Size: size, ATime: atime, unseen: true})
		chunks[last] = append(chunks[last], atimeOf{atime, refOf(last, len(part.slabs[last])-1)})
		shas.Write(sha)
		part.n++
		return nil
	})
	named()
	part.order = make([]atimeOf, 0, part.n)
	for _, c := range chunks {
		part.order = append(part.order, c...)
	}
	slices.SortFunc(part.order, compareATime)
}

// reconcile squares the blob table with the files, one fan-out directory at a
// time, from names alone: a file without an entry is adopted (only these are
// lstat'ed, for their size; they were verified before their rename), and an
// entry that was read at Open and whose file is not there is dropped. Then the
// cap is enforced again, since adoptions add to the total. It stops early at
// Close; the next Open starts again. It closes s.ready when done.
func (s *Store) reconcile(loaded *loadedEntries) {
	defer close(s.ready)
	if s.opts.reconcileGate != nil {
		select {
		case <-s.opts.reconcileGate:
		case <-s.stop:
			return
		}
	}
	start := time.Now()
	adopted, dropped := 0, 0
	slab, i := 0, 0 // the next loaded entry in key order
	var inDir []*blobEntry
	for d := 0; d < 256; d++ {
		select {
		case <-s.stop:
			return
		default:
		}
		// Keys are lower-case hex, so key order is fan-out order: the
		// entries of directory d come next.
		prefix := fmt.Sprintf("%02x", d)
		inDir = inDir[:0]
		for slab < len(loaded.slabs) {
			if i == len(loaded.slabs[slab]) {
				slab, i = slab+1, 0
				continue
			}
			e := &loaded.slabs[slab][i]
			if e.sha[:2] != prefix {
				break
			}
			inDir = append(inDir, e)
			i++
		}
		a, dr := s.reconcileDir(prefix, inDir)
		adopted += a
		dropped += dr
	}
	if adopted > 0 {
		s.log.Info("adopted blobs written before a crash", "count", adopted)
	}
	if dropped > 0 {
		s.log.Info("dropped blob records whose file is gone", "count", dropped)
	}
	// The cap, on the entries now known to have a file (and the files
	// adopted): a cap lowered since the last run holds from here.
	s.enforceCap()
	s.log.Debug("blob table reconciled with the files", "took", time.Since(start), "adopted", adopted, "dropped", dropped)
}

// reconcileDir reconciles the fan-out directory prefix; loaded are the
// entries read at Open whose sha256 starts with it.
func (s *Store) reconcileDir(prefix string, loaded []*blobEntry) (adopted, dropped int) {
	dir := filepath.Join(s.dir, "blobs", prefix)
	names, err := readNames(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Which files are there is unknown: nothing is dropped on a guess.
		s.log.Error("reconcile blobs", "dir", dir, "err", err)
		return 0, 0
	}

	// Decided under the lock, against the table as it is now; what needs I/O
	// is claimed, so that a commit of the same sha256 waits for it (claimFile).
	var orphans, gone []string
	s.mu.Lock()
	for _, name := range names {
		if len(name) != 64 || name[:2] != prefix || !isSHA([]byte(name)) {
			continue // not a blob path: never served, never counted
		}
		if e, ok := s.blobs[name]; ok {
			e.unseen = false
			continue
		}
		if s.busy[name] != 0 || s.placing[name] > 0 {
			// Evicted, its delete to come; being removed; or placed for an
			// import's batch, visible with it or removed if it is dropped.
			continue
		}
		s.busy[name] = fileClaimed
		orphans = append(orphans, name)
	}
	for _, e := range loaded {
		// An entry committed again since Open is seen (added); one evicted or
		// forgotten since is no longer this one in the table; one whose file
		// a commit is renaming into place right now is left to it.
		if e.unseen && s.blobs[e.sha] == e && s.busy[e.sha] == 0 {
			s.dropLocked(e)
			s.busy[e.sha] = fileClaimed
			gone = append(gone, e.sha)
		}
	}
	s.mu.Unlock()

	if len(gone) > 0 {
		if err := s.deleteRecords(gone); err != nil {
			s.log.Error("reconcile blobs: delete records", "err", err)
		}
		s.unclaim(gone...)
	}
	if len(orphans) == 0 {
		return 0, len(gone)
	}
	now := time.Now().UnixNano()
	var fresh []*blobEntry
	var puts []rawRecord
	for _, sha := range orphans {
		info, err := os.Lstat(filepath.Join(dir, sha))
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		e := &blobEntry{sha: sha, Size: info.Size(), ATime: now}
		fresh = append(fresh, e)
		puts = append(puts, rawRecord{"b/" + sha, e.record()})
	}
	if err := s.Meta.writeNoSync(puts, nil); err != nil {
		// Adopted all the same: the next Open adopts them again.
		s.log.Error("reconcile blobs: record adopted blobs", "err", err)
	}
	s.mu.Lock()
	for _, e := range fresh {
		// Nothing enters the table while its file is claimed (a commit
		// waits in claimFile); checked all the same, since a second entry
		// would count the blob twice.
		if _, ok := s.blobs[e.sha]; ok {
			continue
		}
		s.insertLocked(e)
		adopted++
	}
	s.unclaimLocked(orphans...)
	s.mu.Unlock()
	return adopted, len(gone)
}

// readNames lists the names in dir, unsorted and without a stat each.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// Ready is closed once the blob table has been squared with the files on disk,
// which Open leaves to the background (see the comment above loadedEntries):
// from then on a file left without its record by a crash is served, and the
// cap counts it. Tests and benchmarks that look at adoption wait for it; a
// server need not.
func (s *Store) Ready() <-chan struct{} { return s.ready }

// isSHA reports whether b is a sha256 as blob paths spell it: 64 lower-case
// hex digits.
func isSHA(b []byte) bool {
	if len(b) != 64 {
		return false
	}
	var bad byte
	for _, c := range b {
		bad |= notLowerHex[c] // no branch per byte: a million keys at Open
	}
	return bad == 0
}

var notLowerHex = func() (t [256]byte) {
	for i := range t {
		t[i] = 1
	}
	for _, c := range "0123456789abcdef" {
		t[c] = 0
	}
	return t
}()

// The record of a blob is the JSON of blobEntry: {"size":N,"atime":N}.

// record is e's record, as json.Marshal writes it.
func (e *blobEntry) record() []byte {
	b := make([]byte, 0, 48)
	b = append(b, `{"size":`...)
	b = strconv.AppendInt(b, e.Size, 10)
	b = append(b, `,"atime":`...)
	b = strconv.AppendInt(b, e.ATime, 10)
	return append(b, '}')
}

// decodeBlobRecord reads a record. Records as record writes them (and as every
// version has, through json.Marshal) are read by hand, a million of them in a
// fraction of what encoding/json takes; anything else goes through
// encoding/json, so that any valid JSON of the same fields still reads.
//
// A size that cannot be a file's (missing, negative, past maxRecordSize) is an
// error: the record is skipped and its file adopted with its real size. One
// negative size would make the store's total negative and stop eviction for
// good; a too small one would serve a blob cut short.
func decodeBlobRecord(val []byte) (size, atime int64, err error) {
	if size, atime, ok := parseBlobRecord(val); ok {
		if size < 0 || size > maxRecordSize {
			return 0, 0, fmt.Errorf("blob record: size %d", size)
		}
		return size, atime, nil
	}
	var r struct {
		Size  *int64 `json:"size"`
		ATime int64  `json:"atime"`
	}
	if err := json.Unmarshal(val, &r); err != nil {
		return 0, 0, err
	}
	if r.Size == nil || *r.Size < 0 || *r.Size > maxRecordSize {
		return 0, 0, fmt.Errorf("blob record without a usable size: %.64q", val)
	}
	return *r.Size, r.ATime, nil
}

// maxRecordSize bounds a recorded blob size: 256 TiB, far past any package,
// and far from overflowing the store's total of a million of them.
const maxRecordSize = 1 << 48

// parseBlobRecord reads exactly {"size":N,"atime":N}; ok is false for anything
// else.
func parseBlobRecord(b []byte) (size, atime int64, ok bool) {
	if b, ok = bytes.CutPrefix(b, []byte(`{"size":`)); !ok {
		return 0, 0, false
	}
	if size, b, ok = parseInt(b); !ok {
		return 0, 0, false
	}
	if b, ok = bytes.CutPrefix(b, []byte(`,"atime":`)); !ok {
		return 0, 0, false
	}
	if atime, b, ok = parseInt(b); !ok {
		return 0, 0, false
	}
	return size, atime, len(b) == 1 && b[0] == '}'
}

// parseInt reads a JSON integer that fits an int64 from the front of b (access
// times in nanoseconds have 19 digits); anything else is left to encoding/json.
func parseInt(b []byte) (int64, []byte, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	i := 0
	var n uint64
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		if i == 19 {
			return 0, nil, false // past 19 digits: past any int64
		}
		n = n*10 + uint64(b[i]-'0') // 19 digits fit in a uint64
		i++
	}
	if i == 0 || (b[0] == '0' && i > 1) {
		return 0, nil, false
	}
	switch {
	case !neg && n <= math.MaxInt64:
		return int64(n), b[i:], true
	case neg && n <= math.MaxInt64+1:
		return int64(-n), b[i:], true // -(MaxInt64+1) wraps to MinInt64
	}
	return 0, nil, false
}
