package cache

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// names turns sha256s back into the test's letters, for readable failures.
func names(shas []string, letter map[string]string) []string {
	out := make([]string, len(shas))
	for i, sha := range shas {
		if l, ok := letter[sha]; ok {
			out[i] = l
		} else {
			out[i] = sha[:8]
		}
	}
	return out
}

// gate is a test hook channel (Options.deleteGate, reconcileGate) and what
// opens it for good. Register open with t.Cleanup after openT, so that it runs
// before the store's Close, which may wait on it.
func gate() (ch chan struct{}, open func()) {
	ch = make(chan struct{})
	var once sync.Once
	open = func() { once.Do(func() { close(ch) }) }
	return ch, open
}

// busyState is what is under way for sha's file, 0 for nothing.
func busyState(s *Store, sha string) fileState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busy[sha]
}

// waitBusy waits until sha's file is in state want.
func waitBusy(t *testing.T, s *Store, sha string, want fileState) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for busyState(s, sha) != want {
		if time.Now().After(deadline) {
			t.Fatalf("the file of %s is in state %d, want %d", sha[:8], busyState(s, sha), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// storedKeys reads the blob keys of a closed data directory straight from Pebble.
func storedKeys(t *testing.T, dir string) map[string]bool {
	t.Helper()
	m, err := openMeta(filepath.Join(dir, "meta"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	keys := map[string]bool{}
	if err := m.Scan("b/", func(key string, _ []byte) error {
		keys[key[len("b/"):]] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// checkPresent checks that sha is served with want, and that its file and key
// are there (present) or that none of the three is (!present).
func checkPresent(t *testing.T, s *Store, dir, what, sha string, want []byte, present bool) {
	t.Helper()
	got, err := readBlob(s, sha)
	if present && (err != nil || !bytes.Equal(got, want)) {
		t.Errorf("%s: OpenBlob %d bytes, err %v; want its %d bytes", what, len(got), err, len(want))
	}
	if !present && !errors.Is(err, ErrNotFound) {
		t.Errorf("%s: OpenBlob err = %v, want ErrNotFound", what, err)
	}
	if got := exists(blobFilePath(dir, sha)); got != present {
		t.Errorf("%s: file exists = %v, want %v", what, got, present)
	}
	if found, err := s.Meta.Get("b/"+sha, &blobEntry{}); err != nil || found != present {
		t.Errorf("%s: key present = %v (err %v), want %v", what, found, err, present)
	}
}

// TestEvictionOrderLRU: eviction goes by the order of accesses, whatever the
// clock's resolution, and the order survives restarts (through the access
// times Close writes) and goes on from there.
func TestEvictionOrderLRU(t *testing.T) {
	const size = 100
	dir := t.TempDir()
	letter := map[string]string{}
	sha := map[string]string{}
	data := map[string][]byte{}
	for i, l := range []string{"A", "B", "C", "D", "E", "F", "G", "H", "I"} {
		data[l] = content(200+i, size)
		sha[l] = shaOf(data[l])
		letter[sha[l]] = l
	}
	shas := func(ls ...string) []string {
		var out []string
		for _, l := range ls {
			out = append(out, sha[l])
		}
		return out
	}
	wantOrder := func(s *Store, when string, ls ...string) {
		t.Helper()
		if got := lruOrder(s); !slices.Equal(got, shas(ls...)) {
			t.Fatalf("%s: LRU order %v, want %v", when, names(got, letter), ls)
		}
	}
	open := func(s *Store, ls ...string) {
		t.Helper()
		for _, l := range ls {
			// Distinct wall-clock times, so that the order the next start
			// rebuilds from them is this one.
			time.Sleep(time.Microsecond)
			if _, err := readBlob(s, sha[l]); err != nil {
				t.Fatalf("open %s: %v", l, err)
			}
		}
	}
	opts := Options{MaxSize: 4 * size}

	s := openT(t, dir, opts)
	for _, l := range []string{"A", "B", "C", "D"} {
		commit(t, s, data[l])
	}
	open(s, "C", "A", "D", "B")
	wantOrder(s, "after the opens", "C", "A", "D", "B")
	commit(t, s, data["E"])
	wantOrder(s, "E committed", "A", "D", "B", "E")
	open(s, "A")
	commit(t, s, data["F"])
	wantOrder(s, "A opened, F committed", "B", "E", "A", "F")
	waitDeletes(t, s)
	for _, l := range []string{"C", "D"} {
		checkPresent(t, s, dir, l, sha[l], data[l], false)
	}
	s.Close()

	s = openT(t, dir, opts)
	wantOrder(s, "after a restart", "B", "E", "A", "F")
	open(s, "B")
	commit(t, s, data["G"])
	wantOrder(s, "restarted, B opened, G committed", "A", "F", "B", "G")
	s.Close()

	s = openT(t, dir, opts)
	settle(t, s)
	wantOrder(s, "after a second restart", "A", "F", "B", "G")
	commit(t, s, data["H"])
	commit(t, s, data["I"])
	wantOrder(s, "H and I committed", "B", "G", "H", "I")
	waitDeletes(t, s)
	for l := range data {
		checkPresent(t, s, dir, l, sha[l], data[l], slices.Contains([]string{"B", "G", "H", "I"}, l))
	}
	if n, c, _ := s.Usage(); n != 4*size || c != 4 {
		t.Errorf("Usage = %d bytes, %d blobs; want %d, 4", n, c, 4*size)
	}
}

// TestEvictionSkipsInUse: blobs open or pinned at the least recently used end
// are passed over, keep their place, and go first once let go; the cap holds
// again at the flusher's tick without another commit.
func TestEvictionSkipsInUse(t *testing.T) {
	const size = 100
	dir := t.TempDir()
	s := openT(t, dir, Options{MaxSize: 4 * size, FlushEvery: 20 * time.Millisecond})
	letter := map[string]string{}
	sha := map[string]string{}
	for i, l := range []string{"A", "B", "C", "D", "E", "F", "G"} {
		sha[l] = shaOf(content(300+i, size))
		letter[sha[l]] = l
	}
	for _, l := range []string{"A", "B", "C", "D"} {
		commit(t, s, content(300+int(l[0]-'A'), size))
	}
	held, err := s.OpenBlob(sha["B"]) // B to the back, and held open
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"C", "D"} {
		if _, err := readBlob(s, sha[l]); err != nil {
			t.Fatal(err)
		}
	}
	unpin, ok := s.Pin(sha["A"])
	if !ok {
		t.Fatal("Pin(A) failed")
	}
	// Now A (pinned), B (open), C, D: E's commit must take C.
	commit(t, s, content(304, size))
	want := []string{sha["A"], sha["B"], sha["D"], sha["E"]}
	if got := lruOrder(s); !slices.Equal(got, want) {
		t.Fatalf("E committed with A pinned and B open: order %v, want [A B D E]", names(got, letter))
	}

	// Let go, they are the oldest still: F's commit takes A, G's takes B.
	unpin()
	held.Close()
	commit(t, s, content(305, size))
	commit(t, s, content(306, size))
	want = []string{sha["D"], sha["E"], sha["F"], sha["G"]}
	if got := lruOrder(s); !slices.Equal(got, want) {
		t.Fatalf("after F and G: order %v, want [D E F G]", names(got, letter))
	}

	// Every older blob pinned: the commit of H passes the cap (H never goes in
	// its own commit); with no other commit, the flusher's tick brings the
	// store back under it, taking the one blob it may.
	for _, l := range []string{"D", "E", "F", "G"} {
		unpin, ok := s.Pin(sha[l])
		if !ok {
			t.Fatalf("Pin(%s) failed", l)
		}
		defer unpin()
	}
	shaH := commit(t, s, content(400, size))
	deadline := time.Now().Add(10 * time.Second)
	for n, _, _ := s.Usage(); n > 4*size; n, _, _ = s.Usage() {
		if time.Now().After(deadline) {
			t.Fatalf("Usage = %d 10s after the commit, cap %d: the flusher's tick did not evict", n, 4*size)
		}
		time.Sleep(5 * time.Millisecond)
	}
	want = []string{sha["D"], sha["E"], sha["F"], sha["G"]}
	if got := lruOrder(s); !slices.Equal(got, want) || s.Has(shaH) {
		t.Errorf("after the tick: order %v, want the pinned [D E F G]", names(got, letter))
	}
}

// TestRecommitWhileDeletePending: a blob evicted and fetched again before the
// deleter got to its file keeps the new file and its key, whether its delete
// was still queued (the commit cancels it) or in progress (the commit waits
// for it, then renames). The deleter is held at its gate to make both
// interleavings; a deleter that deletes what it was handed, blind to the
// commit, fails this test.
func TestRecommitWhileDeletePending(t *testing.T) {
	const size = 100
	x, a, b := content(500, size), content(501, size), content(502, size)
	shaX, shaA, shaB := shaOf(x), shaOf(a), shaOf(b)
	// xHeld opens a store of room for one blob, commits X then A: X is evicted,
	// and the deleter claims it and waits at its gate.
	xHeld := func(t *testing.T) (s *Store, dir string, openGate func()) {
		dir = t.TempDir()
		g, openGate := gate()
		s = openT(t, dir, Options{MaxSize: size, deleteGate: g})
		t.Cleanup(openGate)
		commit(t, s, x)
		commit(t, s, a)
		waitBusy(t, s, shaX, fileClaimed)
		return s, dir, openGate
	}

	t.Run("queued", func(t *testing.T) {
		s, dir, openGate := xHeld(t)
		commit(t, s, b) // A evicted: queued behind X's batch
		if got := busyState(s, shaA); got != deleteQueued {
			t.Fatalf("A's delete state = %d, want queued (%d)", got, deleteQueued)
		}
		if s.Has(shaA) || !exists(blobFilePath(dir, shaA)) {
			t.Fatalf("after its eviction A: in the table %v (want false), file there %v (want true)", s.Has(shaA), exists(blobFilePath(dir, shaA)))
		}
		commit(t, s, a) // fetched again: evicts B
		openGate()
		waitDeletes(t, s)
		checkPresent(t, s, dir, "A, committed again", shaA, a, true)
		checkPresent(t, s, dir, "X", shaX, x, false)
		checkPresent(t, s, dir, "B", shaB, b, false)
		if n, c, _ := s.Usage(); n != size || c != 1 {
			t.Errorf("Usage = %d bytes, %d blobs; want %d, 1", n, c, size)
		}
		s.Close()
		s = openT(t, dir, Options{MaxSize: size})
		settle(t, s)
		checkPresent(t, s, dir, "A after a restart", shaA, a, true)
	})

	t.Run("in progress", func(t *testing.T) {
		s, dir, openGate := xHeld(t)
		done := make(chan error, 1)
		go func() {
			tmp, err := s.NewTemp()
			if err == nil {
				tmp.Write(x)
				_, err = tmp.Commit(digestOf(x))
			}
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("the commit of X returned (err %v) while X's delete was in progress; it must wait for it", err)
		case <-time.After(100 * time.Millisecond):
		}
		openGate()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		waitDeletes(t, s)
		checkPresent(t, s, dir, "X, committed again", shaX, x, true)
		checkPresent(t, s, dir, "A", shaA, a, false)
	})
}

// TestCloseDrainsDeletes: deletes still pending when Close is called are done
// before it returns: the closed directory has neither the keys nor the files
// of what was evicted.
func TestCloseDrainsDeletes(t *testing.T) {
	const size = 100
	dir := t.TempDir()
	g, openGate := gate()
	s := openT(t, dir, Options{MaxSize: 2 * size, deleteGate: g})
	t.Cleanup(openGate)
	var shas []string
	for i := range 10 {
		shas = append(shas, commit(t, s, content(600+i, size)))
		if i == 2 {
			waitBusy(t, s, shas[0], fileClaimed) // the deleter is held from here
		}
	}
	for _, sha := range shas[:8] {
		if !exists(blobFilePath(dir, sha)) {
			t.Fatalf("an evicted blob's file is gone while the deleter is held")
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (err %v) with 8 deletes pending", err)
	case <-time.After(100 * time.Millisecond):
	}
	openGate()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{shas[8]: true, shas[9]: true}
	if got := storedKeys(t, dir); !maps.Equal(got, want) {
		t.Errorf("keys after Close: %d %v, want the last two", len(got), got)
	}
	files := blobFiles(t, dir)
	if len(files) != 2 || files[shas[8]] != size || files[shas[9]] != size {
		t.Errorf("files after Close: %v, want the last two", files)
	}
}

// TestReconcileInBackground: Open returns before the files are looked at;
// meanwhile an entry whose file is gone answers ErrNotFound and a file without
// an entry is not served. Then the reconciliation adopts and drops, writes it
// down, and holds the cap.
func TestReconcileInBackground(t *testing.T) {
	const size = 100
	dir := t.TempDir()
	a, b, c, d, e, f := content(700, size), content(701, size), content(702, size), content(703, size), content(704, size), content(707, size)
	shaA, shaB, shaC, shaD, shaE, shaF := shaOf(a), shaOf(b), shaOf(c), shaOf(d), shaOf(e), shaOf(f)
	s := openT(t, dir, Options{})
	for _, blob := range [][]byte{a, b, e} {
		commit(t, s, blob)
	}
	s.Close()

	// B and E lose their files, C, D and F come without keys (a crash between
	// a rename and its record); and files that are no blob paths.
	for _, sha := range []string{shaB, shaE} {
		if err := os.Remove(blobFilePath(dir, sha)); err != nil {
			t.Fatal(err)
		}
	}
	for sha, blob := range map[string][]byte{shaC: c, shaD: d, shaF: f} {
		if err := os.WriteFile(blobFilePath(dir, sha), blob, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stray := content(705, size)
	wrongDir := shaOf(stray)
	if wrongDir[:2] == "00" {
		t.Fatal("pick another seed")
	}
	os.WriteFile(filepath.Join(dir, "blobs", "00", wrongDir), stray, 0o644)
	os.WriteFile(filepath.Join(dir, "blobs", shaC[:2], "notes.txt"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(dir, "blobs", shaC[:2], shaOf(content(706, 1))), 0o755)

	g, openGate := gate()
	// The cap fits the table as Open reads it (A, B, E), not what the disk
	// holds (A, C, D, F).
	s = openT(t, dir, Options{MaxSize: 3*size + 50, reconcileGate: g})
	t.Cleanup(openGate)
	// Open has returned; the files have not been looked at, but Has looks
	// at B's (gone) and does not claim it.
	if s.Has(shaB) || s.Has(shaC) || !s.Has(shaA) {
		t.Fatalf("before the reconciliation: Has(A, B, C) = %v, %v, %v; want true (its file is there), false (its file is gone), false (not adopted yet)", s.Has(shaA), s.Has(shaB), s.Has(shaC))
	}
	if n, c, _ := s.Usage(); n != 3*size || c != 3 {
		t.Errorf("before the reconciliation: Usage = %d bytes, %d blobs; want the table's %d, 3", n, c, 3*size)
	}
	// The store is right meanwhile: B's missing file is found at its open.
	if _, err := readBlob(s, shaB); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBlob(B), file gone, before the reconciliation: err = %v, want ErrNotFound", err)
	}
	if _, err := readBlob(s, shaC); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBlob(C), not adopted yet: err = %v, want ErrNotFound", err)
	}
	openGate()
	settle(t, s)

	// Adopted C, D and F are the most recent (adopted now); A, older, goes
	// for the cap; E was dropped.
	checkPresent(t, s, dir, "C (adopted)", shaC, c, true)
	checkPresent(t, s, dir, "D (adopted)", shaD, d, true)
	checkPresent(t, s, dir, "F (adopted)", shaF, f, true)
	checkPresent(t, s, dir, "A (evicted for the cap)", shaA, a, false)
	checkPresent(t, s, dir, "B (file gone)", shaB, b, false)
	checkPresent(t, s, dir, "E (file gone)", shaE, e, false)
	if s.Has(wrongDir) {
		t.Error("a blob in the wrong fan-out directory was adopted")
	}
	if n, c, _ := s.Usage(); n != 3*size || c != 3 {
		t.Errorf("after the reconciliation: Usage = %d bytes, %d blobs; want %d, 3", n, c, 3*size)
	}
	s.Close()
	want := map[string]bool{shaC: true, shaD: true, shaF: true}
	if got := storedKeys(t, dir); !maps.Equal(got, want) {
		t.Errorf("keys after the reconciliation: %v, want C, D and F only", got)
	}
}

// TestCloseDuringReconcile: a Close before the reconciliation is done stops it
// and returns; the next Open does it all.
func TestCloseDuringReconcile(t *testing.T) {
	dir := t.TempDir()
	blob := content(800, 100)
	openT(t, dir, Options{}).Close()
	os.WriteFile(blobFilePath(dir, shaOf(blob)), blob, 0o644)
	g, openGate := gate()
	s := openT(t, dir, Options{reconcileGate: g})
	t.Cleanup(openGate)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits on a reconciliation that has not started")
	}
	s = openT(t, dir, Options{})
	settle(t, s)
	if !s.Has(shaOf(blob)) {
		t.Error("the file was not adopted by the next Open")
	}
}

// TestBlobRecordCodec: records are written as encoding/json writes them and
// read back by hand, and any JSON of the same fields still reads.
func TestBlobRecordCodec(t *testing.T) {
	for _, v := range [][2]int64{
		{0, 0}, {1, -1}, {100, 1_700_000_000_000_000_000}, {math.MaxInt64, math.MinInt64},
		{999_999_999_999_999_999, -999_999_999_999_999_999}, {1_000_000_000_000_000_000, 12},
		{math.MaxInt64 - 1, math.MinInt64 + 1}, {-5, time.Now().UnixNano()},
	} {
		e := &blobEntry{Size: v[0], ATime: v[1]}
		want, _ := json.Marshal(e)
		if got := e.record(); !bytes.Equal(got, want) {
			t.Errorf("record(%v) = %s, json.Marshal gives %s", v, got, want)
		}
		// Read by hand, not by the encoding/json fallback: a million of them
		// at every start.
		size, atime, ok := parseBlobRecord(want)
		if !ok || size != v[0] || atime != v[1] {
			t.Errorf("parse %s = %d, %d, %v; want it read by hand", want, size, atime, ok)
		}
	}
	for _, in := range []string{
		`{"size":9223372036854775808,"atime":1}`, `{"size":1,"atime":-9223372036854775809}`,
		`{"size":10000000000000000000,"atime":1}`, `{"size":-,"atime":1}`,
	} {
		if _, _, ok := parseBlobRecord([]byte(in)); ok {
			t.Errorf("parse %s: ok, want it left to encoding/json", in)
		}
		if _, _, err := decodeBlobRecord([]byte(in)); err == nil {
			t.Errorf("decode %s: no error, want one (out of range or not a number)", in)
		}
	}
	for _, tc := range []struct {
		in          string
		size, atime int64
		ok          bool
	}{
		{`{"size":5,"atime":7}`, 5, 7, true},
		{`{"atime":7,"size":5}`, 5, 7, true},
		{` { "size" : 5 , "atime" : 7 } `, 5, 7, true},
		{`{"size":5,"atime":7,"more":true}`, 5, 7, true},
		{`{"size":5}`, 5, 0, true},
		{`{"size":05,"atime":7}`, 0, 0, false},
		{`{"size":5,"atime":7}x`, 0, 0, false},
		{`{"size":"5","atime":7}`, 0, 0, false},
		{`{"size":5.5,"atime":7}`, 0, 0, false},
		{``, 0, 0, false},
		// Sizes no file has: skipped, the file adopted with its real size.
		{`{"size":-1,"atime":7}`, 0, 0, false},
		{`{ "size": -1, "atime": 7 }`, 0, 0, false},
		{`{"atime":7}`, 0, 0, false},
		{`null`, 0, 0, false},
		{`{}`, 0, 0, false},
		{`{"size":281474976710657,"atime":1}`, 0, 0, false},
	} {
		size, atime, err := decodeBlobRecord([]byte(tc.in))
		if (err == nil) != tc.ok || (tc.ok && (size != tc.size || atime != tc.atime)) {
			t.Errorf("decode %q = %d, %d, err %v; want %d, %d, ok %v", tc.in, size, atime, err, tc.size, tc.atime, tc.ok)
		}
	}
}

// TestLoadRecordsOfEveryShape: a table written by json.Marshal (every version
// before this one), a record spelled otherwise, and an unreadable one whose
// file is adopted again, all load.
func TestLoadRecordsOfEveryShape(t *testing.T) {
	dir := t.TempDir()
	blobs := [][]byte{content(900, 100), content(901, 200), content(902, 300)}
	s := openT(t, dir, Options{})
	for _, b := range blobs {
		commit(t, s, b)
	}
	if err := s.Meta.Put("b/"+shaOf(blobs[0]), blobEntry{Size: 100, ATime: 42}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	m, err := openMeta(filepath.Join(dir, "meta"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	m.putRaw("b/"+shaOf(blobs[1]), []byte(`{ "atime": 43, "size": 200 }`), true)
	m.putRaw("b/"+shaOf(blobs[2]), []byte(`not json`), true)
	m.putRaw("b/not-a-sha", []byte(`{"size":1,"atime":1}`), true)
	m.close()

	s = openT(t, dir, Options{})
	if n, c, _ := s.Usage(); n != 300 || c != 2 {
		t.Errorf("as Open returns: Usage = %d bytes, %d blobs; want 300, 2 (the unreadable record skipped)", n, c)
	}
	settle(t, s)
	for _, b := range blobs {
		checkPresent(t, s, dir, fmt.Sprintf("blob of %d bytes", len(b)), shaOf(b), b, true)
	}
	var e blobEntry
	if ok, err := s.Meta.Get("b/"+shaOf(blobs[2]), &e); !ok || err != nil || e.Size != 300 {
		t.Errorf("the unreadable record, after adoption: %+v %v %v; want size 300", e, ok, err)
	}
	if n, c, _ := s.Usage(); n != 600 || c != 3 {
		t.Errorf("Usage = %d bytes, %d blobs; want 600, 3", n, c)
	}
}

// TestConcurrentRecommitAndEvict: fills of a few blobs over and over on a cap
// that holds some of them, so that blobs are fetched again while their delete
// is queued or in progress, with readers and purges beside them (run with
// -race). Readers get whole blobs or ErrNotFound; at the end the table, the
// files and the keys agree, blob for blob.
func TestConcurrentRecommitAndEvict(t *testing.T) {
	const size, nblobs, maxSize = 1000, 12, 4000
	dir := t.TempDir()
	s := openT(t, dir, Options{MaxSize: maxSize, FlushEvery: 5 * time.Millisecond})
	all := make([][]byte, nblobs)
	shas := make([]string, nblobs)
	for i := range all {
		all[i] = content(1100+i, size)
		shas[i] = shaOf(all[i])
	}
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for k := range 150 {
				i := (k*7 + w*5) % nblobs
				tmp, err := s.NewTemp()
				if err != nil {
					errs <- err
					return
				}
				tmp.Write(all[i])
				if _, err := tmp.Commit(digestOf(all[i])); err != nil {
					errs <- err
					return
				}
				if k%40 == 39 && w == 0 {
					if err := s.RemoveBlob(shas[(i+3)%nblobs]); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	for r := range 4 {
		wg.Go(func() {
			for k := range 400 {
				i := (k*3 + r) % nblobs
				got, err := readBlob(s, shas[i])
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil || !bytes.Equal(got, all[i]) {
					errs <- fmt.Errorf("blob %d: %d bytes, err %v", i, len(got), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitDeletes(t, s)
	n, c, _ := s.Usage()
	if n > maxSize {
		t.Errorf("Usage = %d, over the cap %d", n, maxSize)
	}
	files := blobFiles(t, dir)
	inTable := map[string]bool{}
	for _, sha := range shas {
		if s.Has(sha) {
			inTable[sha] = true
			if files[sha] != size {
				t.Errorf("%s is in the table, its file has %d bytes", sha[:8], files[sha])
			}
		}
	}
	if len(files) != c || int64(len(files))*size != n {
		t.Errorf("Usage = %d bytes in %d blobs, disk has %d files: %v", n, c, len(files), files)
	}
	if got := lruOrder(s); len(got) != c {
		t.Errorf("the LRU list has %d entries, the table %d", len(got), c)
	}
	s.Close()
	if got := storedKeys(t, dir); !maps.Equal(got, inTable) {
		t.Errorf("keys %d, table %d: they differ", len(got), len(inTable))
	}
}

// TestLoadOrderAtScale: a table of several slabs, read in as many parts as
// there are CPUs (tried with 1, 3 and 16), comes back in the order of its
// access times, ties in key order; then the reconciliation, walking the slabs
// directory by directory, drops exactly the entries whose file is missing.
func TestLoadOrderAtScale(t *testing.T) {
	n := 2*slabEntries + 123
	dir := t.TempDir()
	openT(t, dir, Options{}).Close()
	m, err := openMeta(filepath.Join(dir, "meta"), quiet)
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		sha   string
		atime int64
	}
	recs := make([]rec, n)
	var puts []rawRecord
	now := time.Now().UnixNano()
	for i := range recs {
		// Every third time repeats: ties are ordered by sha256.
		recs[i] = rec{benchSHA(i), now - int64((i*7919)%n/3)*int64(time.Millisecond)}
		e := &blobEntry{Size: 10, ATime: recs[i].atime}
		puts = append(puts, rawRecord{"b/" + recs[i].sha, e.record()})
	}
	if err := m.writeNoSync(puts, nil); err != nil {
		t.Fatal(err)
	}
	m.close()
	slices.SortFunc(recs, func(a, b rec) int {
		if a.atime != b.atime {
			return cmp.Compare(a.atime, b.atime)
		}
		return strings.Compare(a.sha, b.sha)
	})
	want := make([]string, n)
	for i, r := range recs {
		want[i] = r.sha
	}

	for _, procs := range []int{1, 3, 16} {
		prev := runtime.GOMAXPROCS(procs)
		g, openGate := gate()
		s := openT(t, dir, Options{reconcileGate: g})
		t.Cleanup(openGate)
		runtime.GOMAXPROCS(prev)
		if got := lruOrder(s); !slices.Equal(got, want) {
			i := 0
			for i < min(len(got), n) && got[i] == want[i] {
				i++
			}
			t.Fatalf("%d CPUs: %d entries, first difference at %d; want %d in access time order", procs, len(got), i, n)
		}
		if _, c, _ := s.Usage(); c != n {
			t.Fatalf("%d CPUs: %d blobs, want %d", procs, c, n)
		}
		s.Close()
	}

	// Files for all but every 1000th entry.
	missing := map[string]bool{}
	for i := range n {
		sha := benchSHA(i)
		if i%1000 == 0 {
			missing[sha] = true
			continue
		}
		if err := os.WriteFile(blobFilePath(dir, sha), bytes.Repeat([]byte("x"), 10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := openT(t, dir, Options{})
	settle(t, s)
	if _, c, _ := s.Usage(); c != n-len(missing) {
		t.Errorf("after the reconciliation: %d blobs, want %d", c, n-len(missing))
	}
	for i := range n {
		if sha := benchSHA(i); s.Has(sha) == missing[sha] {
			t.Fatalf("blob %d: Has = %v, its file missing %v", i, s.Has(sha), missing[sha])
		}
	}
	if got := len(lruOrder(s)); got != n-len(missing) {
		t.Errorf("the LRU list has %d entries, want %d", got, n-len(missing))
	}
}
