package cache

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// stage writes b to a new temp and seals it.
func stage(t *testing.T, s *Store, b []byte) *Staged {
	t.Helper()
	tmp, err := s.NewTemp()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write(b); err != nil {
		t.Fatal(err)
	}
	st, err := tmp.Seal(digestOf(b))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return st
}

func countFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(entries)
}

// Sealed blobs hold no file open, stay in tmp/ until placed or discarded, and
// keep their digests; a seal that does not verify leaves nothing.
func TestSealHoldsNoFileOpen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	settle(t, s) // the check after Open holds directories open while it runs
	before := countFDs(t)
	var staged []*Staged
	for i := 0; i < 300; i++ {
		staged = append(staged, stage(t, s, content(i, 100+i)))
	}
	if n := countFDs(t); n != before {
		t.Errorf("300 sealed blobs: %d files open, %d before", n, before)
	}
	if n := len(tmpNames(t, dir)); n != 300 {
		t.Errorf("tmp/ holds %d files, want the 300 staged", n)
	}
	b := content(7, 107)
	if st := staged[7]; st.SHA256() != shaOf(b) || st.MD5() != digestOf(b).MD5 || st.Size() != 107 {
		t.Errorf("staged digests %s %s %d, want those of its bytes", st.SHA256(), st.MD5(), st.Size())
	}
	if got, err := staged[7].ReadAll(); err != nil || !bytes.Equal(got, b) {
		t.Errorf("ReadAll: %v", err)
	}
	for _, st := range staged {
		st.Discard()
	}
	if n := len(tmpNames(t, dir)); n != 0 {
		t.Errorf("tmp/ holds %d files after Discard", n)
	}

	tmp, _ := s.NewTemp()
	tmp.Write([]byte("not what was promised"))
	_, err := tmp.Seal(digestOf([]byte("something else entirely")))
	var mm *MismatchError
	if !errors.As(err, &mm) {
		t.Errorf("Seal of the wrong bytes: %v, want a MismatchError", err)
	}
	if n := len(tmpNames(t, dir)); n != 0 {
		t.Errorf("a failed Seal left tmp/ %v", tmpNames(t, dir))
	}
	if n := countFDs(t); n != before {
		t.Errorf("a failed Seal left a file open: %d, %d before", n, before)
	}
}

// Placed blobs and the batch's other writes become visible together, at Commit.
func TestPlaceVisibleAtCommit(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	old := content(1, 500)
	oldSHA := commit(t, s, old)
	fresh := content(2, 700)
	b := s.Meta.NewBatch()
	defer b.Close()
	if err := s.Place(b, []*Staged{stage(t, s, old), stage(t, s, fresh)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Put("x/entry", "names "+shaOf(fresh)); err != nil {
		t.Fatal(err)
	}
	var v string
	if ok, _ := s.Meta.Get("x/entry", &v); ok || s.Has(shaOf(fresh)) {
		t.Errorf("before Commit: entry visible %v, blob in the table %v; want neither", ok, s.Has(shaOf(fresh)))
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Meta.Get("x/entry", &v); !ok {
		t.Error("after Commit the batch's entry is missing")
	}
	for _, want := range [][]byte{old, fresh} {
		if got, err := readBlob(s, shaOf(want)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("blob %s after Commit: %v", shaOf(want)[:8], err)
		}
	}
	if size, count, _ := s.Usage(); size != 1200 || count != 2 {
		t.Errorf("Usage %d bytes, %d blobs; want 1200, 2", size, count)
	}
	var e blobEntry
	if ok, _ := s.Meta.Get("b/"+shaOf(fresh), &e); !ok || e.Size != 700 {
		t.Errorf("the placed blob's record: %v %+v", ok, e)
	}
	if n := len(tmpNames(t, dir)); n != 0 {
		t.Errorf("tmp/ holds %v after Commit", tmpNames(t, dir))
	}
	s.mu.Lock()
	inUse := s.blobs[oldSHA].inUse
	s.mu.Unlock()
	if inUse != 0 {
		t.Errorf("the blob that was already stored is still pinned (%d) after Commit", inUse)
	}
	// And after a restart.
	s.Close()
	s = openT(t, dir, Options{})
	if got, err := readBlob(s, shaOf(fresh)); err != nil || !bytes.Equal(got, fresh) {
		t.Errorf("placed blob after a restart: %v", err)
	}
}

// A batch closed without Commit takes back what Place added; blobs that were
// stored before stay.
func TestPlaceUndoneWithoutCommit(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	old := content(1, 500)
	oldSHA := commit(t, s, old)
	before := blobFiles(t, dir)
	fresh := content(2, 700)
	b := s.Meta.NewBatch()
	if err := s.Place(b, []*Staged{stage(t, s, old), stage(t, s, fresh)}); err != nil {
		t.Fatal(err)
	}
	b.Put("x/entry", 1)
	b.Close()
	if got := blobFiles(t, dir); len(got) != len(before) || got[oldSHA] != 500 {
		t.Errorf("blobs/ after an uncommitted batch: %v, want %v", got, before)
	}
	if s.Has(shaOf(fresh)) || !s.Has(oldSHA) {
		t.Errorf("table after an uncommitted batch: fresh %v, old %v", s.Has(shaOf(fresh)), s.Has(oldSHA))
	}
	if ok, _ := s.Meta.Get("b/"+shaOf(fresh), new(blobEntry)); ok {
		t.Error("the uncommitted blob has a record")
	}
	if ok, _ := s.Meta.Get("x/entry", new(int)); ok {
		t.Error("the uncommitted batch's entry is visible")
	}
	s.mu.Lock()
	inUse := s.blobs[oldSHA].inUse
	s.mu.Unlock()
	if inUse != 0 {
		t.Errorf("the stored blob is still pinned (%d) after the batch was dropped", inUse)
	}
}

// While a batch is pending, a blob it will name is never evicted, even when it
// is the least recently used.
func TestPlacePinsStoredBlobs(t *testing.T) {
	s := openT(t, t.TempDir(), Options{MaxSize: 1000})
	old := content(1, 600)
	oldSHA := commit(t, s, old)
	setATime(t, s, oldSHA, 1) // the oldest there is
	b := s.Meta.NewBatch()
	defer b.Close()
	if err := s.Place(b, []*Staged{stage(t, s, old)}); err != nil {
		t.Fatal(err)
	}
	other := content(2, 600)
	commit(t, s, other) // 1200 > 1000: something must go, not the pinned one
	if !s.Has(oldSHA) {
		t.Fatal("a blob pinned by a pending batch was evicted")
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if size, _, _ := s.Usage(); size > 1000 {
		t.Errorf("after the batch, the store holds %d bytes past its cap of 1000", size)
	}
}

// A crash between Place and Commit leaves verified blobs no index names; the
// next Open adopts them as blobs like any other, counted against the cap.
func TestPlacedBlobsAdoptedAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	fresh := content(3, 900)
	b := s.Meta.NewBatch()
	if err := s.Place(b, []*Staged{stage(t, s, fresh)}); err != nil {
		t.Fatal(err)
	}
	// The process dies here: no Commit, no Close of the batch.
	s.Close()
	s = openT(t, dir, Options{})
	settle(t, s) // adoption happens after Open returns
	if got, err := readBlob(s, shaOf(fresh)); err != nil || !bytes.Equal(got, fresh) {
		t.Errorf("a blob placed before a crash, after a restart: %v", err)
	}
	if size, count, _ := s.Usage(); size != 900 || count != 1 {
		t.Errorf("Usage %d bytes, %d blobs; want the adopted blob counted", size, count)
	}
}
