// Package blobstoretest is the one conformance suite every blobstore.Store
// passes: the promises the proxy relies on (verify before visible, never a
// partial object, content-addressed commits that cannot clobber) are tested
// once, here, rather than once per implementation and differently each time.
package blobstoretest

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/blobstore"
)

// Run runs the suite. newStore returns an empty store for one subtest and
// arranges its cleanup with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s blobstore.Store)
	}{
		{"CommitStatOpen", testCommitStatOpen},
		{"Ranges", testRanges},
		{"EmptyObject", testEmptyObject},
		{"UncheckedDigest", testUncheckedDigest},
		{"Mismatch", testMismatch},
		{"Abort", testAbort},
		{"FinishedWriter", testFinishedWriter},
		{"CanceledCommit", testCanceledCommit},
		{"CommitExisting", testCommitExisting},
		{"ConcurrentCommits", testConcurrentCommits},
		{"NoPartialReads", testNoPartialReads},
		{"Delete", testDelete},
		{"Walk", testWalk},
		{"OutOfRange", testOutOfRange},
		{"Unknown", testUnknown},
		{"InvalidName", testInvalidName},
		{"Big", testBig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// Object is test content with its digest.
type Object struct {
	Data []byte
	Want blobstore.Digest
}

// NewObject returns n pseudo-random bytes, the same for the same seed.
func NewObject(seed uint64, n int) Object {
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return ObjectOf(data)
}

// ObjectOf returns data with its digest.
func ObjectOf(data []byte) Object {
	s := sha256.Sum256(data)
	m := md5.Sum(data)
	return Object{data, blobstore.Digest{Size: int64(len(data)), SHA256: hex.EncodeToString(s[:]), MD5: hex.EncodeToString(m[:])}}
}

// Put writes o in one Write and commits it with its full digest.
func Put(t testing.TB, s blobstore.Store, o Object) {
	t.Helper()
	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer w.Abort()
	if _, err := w.Write(o.Data); err != nil {
		t.Fatalf("Write: %v", err)
	}
	sha, err := w.Commit(context.Background(), o.Want)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if sha != o.Want.SHA256 {
		t.Fatalf("Commit returned %s, want %s", sha, o.Want.SHA256)
	}
}

// ReadAll reads the range off, n of object sha.
func ReadAll(s blobstore.Store, sha string, off, n int64) ([]byte, error) {
	r, err := s.Open(context.Background(), sha, off, n)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// Objects lists the store with Walk, by name.
func Objects(t testing.TB, s blobstore.Store) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	err := s.Walk(context.Background(), func(i blobstore.Info) error {
		if _, dup := got[i.SHA256]; dup {
			t.Errorf("Walk: %s twice", i.SHA256)
		}
		got[i.SHA256] = i.Size
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return got
}

// checkAbsent fails unless o is invisible to Stat, Open and Walk.
func checkAbsent(t *testing.T, s blobstore.Store, sha string) {
	t.Helper()
	if _, err := s.Stat(context.Background(), sha); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat: got %v, want ErrNotFound", err)
	}
	if _, err := ReadAll(s, sha, 0, -1); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Open: got %v, want ErrNotFound", err)
	}
	if got := Objects(t, s); len(got) != 0 {
		t.Errorf("Walk: got %v, want nothing", got)
	}
}

func testCommitStatOpen(t *testing.T, s blobstore.Store) {
	ctx := context.Background()
	o := NewObject(1, 100_000)
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Several writes, as a fill streaming from upstream makes them.
	for p := o.Data; len(p) > 0; {
		k := min(len(p), 7_000)
		if n, err := w.Write(p[:k]); err != nil || n != k {
			t.Fatalf("Write: %d, %v", n, err)
		}
		p = p[k:]
	}
	sha, err := w.Commit(ctx, o.Want)
	if err != nil {
		t.Fatal(err)
	}
	if sha != o.Want.SHA256 {
		t.Fatalf("Commit: got %s, want %s", sha, o.Want.SHA256)
	}
	info, err := s.Stat(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	if want := (blobstore.Info{SHA256: sha, Size: int64(len(o.Data))}); info != want {
		t.Errorf("Stat: got %+v, want %+v", info, want)
	}
	got, err := ReadAll(s, sha, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, o.Data) {
		t.Errorf("Open: got %d bytes, not the ones written", len(got))
	}
}

func testRanges(t *testing.T, s blobstore.Store) {
	o := NewObject(2, 10_000)
	Put(t, s, o)
	size := int64(len(o.Data))
	for _, tc := range []struct {
		off, n   int64
		from, to int64 // the bytes expected: Data[from:to]
	}{
		{0, -1, 0, size},
		{0, size, 0, size},
		{0, 1, 0, 1},
		{1, -1, 1, size},
		{1234, 100, 1234, 1334},
		{size - 1, -1, size - 1, size},
		{size - 1, 1, size - 1, size},
		{size - 10, 100, size - 10, size}, // a range past the end is cut short
		{0, 0, 0, 0},
		{500, 0, 500, 500},
		{size, -1, size, size}, // at the end: nothing, not an error
		{size, 5, size, size},
		{0, 1 << 62, 0, size},
	} {
		got, err := ReadAll(s, o.Want.SHA256, tc.off, tc.n)
		if err != nil {
			t.Errorf("Open(%d, %d): %v", tc.off, tc.n, err)
			continue
		}
		if want := o.Data[tc.from:tc.to]; !bytes.Equal(got, want) {
			t.Errorf("Open(%d, %d): got %d bytes, want %d (bytes %d-%d)", tc.off, tc.n, len(got), len(want), tc.from, tc.to)
		}
	}
}

func testEmptyObject(t *testing.T, s blobstore.Store) {
	o := ObjectOf(nil)
	Put(t, s, o)
	info, err := s.Stat(context.Background(), o.Want.SHA256)
	if err != nil || info.Size != 0 {
		t.Fatalf("Stat: %+v, %v", info, err)
	}
	for _, n := range []int64{-1, 0, 10} {
		got, err := ReadAll(s, o.Want.SHA256, 0, n)
		if err != nil || len(got) != 0 {
			t.Errorf("Open(0, %d): %d bytes, %v", n, len(got), err)
		}
	}
	if _, err := ReadAll(s, o.Want.SHA256, 1, -1); !errors.Is(err, blobstore.ErrOutOfRange) {
		t.Errorf("Open(1, -1): got %v, want ErrOutOfRange", err)
	}
}

func testUncheckedDigest(t *testing.T, s blobstore.Store) {
	o := NewObject(3, 5000)
	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(o.Data)
	sha, err := w.Commit(context.Background(), blobstore.Digest{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	if sha != o.Want.SHA256 {
		t.Errorf("Commit: got %s, want the bytes' sha256 %s", sha, o.Want.SHA256)
	}
	if got := Objects(t, s); got[sha] != 5000 || len(got) != 1 {
		t.Errorf("Walk: got %v", got)
	}
}

func testMismatch(t *testing.T, s blobstore.Store) {
	o := NewObject(4, 3000)
	other := NewObject(5, 3000)
	for _, tc := range []struct {
		what string
		want blobstore.Digest
	}{
		{"size", blobstore.Digest{Size: 2999, SHA256: o.Want.SHA256, MD5: o.Want.MD5}},
		{"size", blobstore.Digest{Size: 3001, SHA256: o.Want.SHA256}},
		{"size", blobstore.Digest{SHA256: o.Want.SHA256}}, // Size 0 is checked
		{"sha256", blobstore.Digest{Size: 3000, SHA256: other.Want.SHA256, MD5: o.Want.MD5}},
		{"sha256", blobstore.Digest{Size: -1, SHA256: other.Want.SHA256}},
		{"md5", blobstore.Digest{Size: 3000, SHA256: o.Want.SHA256, MD5: other.Want.MD5}},
		{"md5", blobstore.Digest{Size: -1, MD5: other.Want.MD5}},
	} {
		w, err := s.Create(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w.Write(o.Data)
		sha, err := w.Commit(context.Background(), tc.want)
		var mm *blobstore.MismatchError
		if !errors.As(err, &mm) || mm.What != tc.what {
			t.Errorf("Commit(%+v): got %q, %v; want a %s mismatch", tc.want, sha, err, tc.what)
		}
		checkAbsent(t, s, o.Want.SHA256)
		checkAbsent(t, s, other.Want.SHA256)
	}
}

func testAbort(t *testing.T, s blobstore.Store) {
	o := NewObject(6, 3000)
	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(o.Data)
	checkAbsent(t, s, o.Want.SHA256) // written, not committed
	w.Abort()
	checkAbsent(t, s, o.Want.SHA256)
	w.Abort() // twice is fine
}

func testFinishedWriter(t *testing.T, s blobstore.Store) {
	o := NewObject(7, 100)
	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(o.Data)
	if _, err := w.Commit(context.Background(), o.Want); err != nil {
		t.Fatal(err)
	}
	w.Abort() // after a commit: nothing happens
	if _, err := s.Stat(context.Background(), o.Want.SHA256); err != nil {
		t.Fatalf("Abort after Commit removed the object: %v", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, blobstore.ErrFinished) {
		t.Errorf("Write after Commit: got %v, want ErrFinished", err)
	}
	if _, err := w.Commit(context.Background(), o.Want); !errors.Is(err, blobstore.ErrFinished) {
		t.Errorf("second Commit: got %v, want ErrFinished", err)
	}

	w, err = s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if _, err := w.Commit(context.Background(), blobstore.Digest{Size: -1}); !errors.Is(err, blobstore.ErrFinished) {
		t.Errorf("Commit after Abort: got %v, want ErrFinished", err)
	}
}

func testCanceledCommit(t *testing.T, s blobstore.Store) {
	o := NewObject(8, 3000)
	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(o.Data)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Commit(ctx, o.Want); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit with a canceled context: got %v, want context.Canceled", err)
	}
	checkAbsent(t, s, o.Want.SHA256)
}

func testCommitExisting(t *testing.T, s blobstore.Store) {
	o := NewObject(9, 4000)
	Put(t, s, o)
	Put(t, s, o)
	if got := Objects(t, s); len(got) != 1 || got[o.Want.SHA256] != 4000 {
		t.Errorf("Walk: got %v, want one object", got)
	}
}

func testConcurrentCommits(t *testing.T, s blobstore.Store) {
	const writers = 24
	o := NewObject(10, 256<<10)
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			w, err := s.Create(context.Background())
			if err != nil {
				errs[i] = err
				return
			}
			defer w.Abort()
			for p := o.Data; len(p) > 0; p = p[min(len(p), 32<<10):] {
				if _, err := w.Write(p[:min(len(p), 32<<10)]); err != nil {
					errs[i] = err
					return
				}
			}
			sha, err := w.Commit(context.Background(), o.Want)
			if err == nil && sha != o.Want.SHA256 {
				err = fmt.Errorf("committed as %s", sha)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if got := Objects(t, s); len(got) != 1 || got[o.Want.SHA256] != int64(len(o.Data)) {
		t.Errorf("Walk: got %v, want one object of %d bytes", got, len(o.Data))
	}
	got, err := ReadAll(s, o.Want.SHA256, 0, -1)
	if err != nil || !bytes.Equal(got, o.Data) {
		t.Errorf("Open: %d bytes, %v; want the bytes written", len(got), err)
	}
}

// testNoPartialReads reads an object over and over, with Stat and Open, while
// it is slowly written and committed: every read sees it absent or whole.
func testNoPartialReads(t *testing.T, s blobstore.Store) {
	o := NewObject(11, 4<<20)
	sha := o.Want.SHA256
	var (
		stop          = make(chan struct{})
		absent, whole atomic.Int64
		wg            sync.WaitGroup
	)
	look := func() {
		info, err := s.Stat(context.Background(), sha)
		switch {
		case errors.Is(err, blobstore.ErrNotFound):
			absent.Add(1)
		case err != nil:
			t.Errorf("Stat: %v", err)
		case info.Size != int64(len(o.Data)):
			t.Errorf("Stat: a partial object, %d of %d bytes", info.Size, len(o.Data))
		}
		got, err := ReadAll(s, sha, 0, -1)
		switch {
		case errors.Is(err, blobstore.ErrNotFound):
			absent.Add(1)
		case err != nil:
			t.Errorf("Open: %v", err)
		case !bytes.Equal(got, o.Data):
			t.Errorf("Open: a partial object, %d of %d bytes", len(got), len(o.Data))
		default:
			whole.Add(1)
		}
	}
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				look()
			}
		})
	}
	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 64 << 10
	for p := o.Data; len(p) > 0; p = p[chunk:] {
		w.Write(p[:chunk])
		time.Sleep(2 * time.Millisecond)
	}
	if _, err := w.Commit(context.Background(), o.Want); err != nil {
		t.Fatal(err)
	}
	// Keep reading until a reader has seen the object whole.
	deadline := time.Now().Add(30 * time.Second)
	for whole.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if absent.Load() == 0 || whole.Load() == 0 {
		t.Errorf("readers saw the object absent %d times and whole %d times; want both", absent.Load(), whole.Load())
	}
}

func testDelete(t *testing.T, s blobstore.Store) {
	ctx := context.Background()
	a, b := NewObject(12, 1000), NewObject(13, 1000)
	Put(t, s, a)
	Put(t, s, b)
	if err := s.Delete(ctx, a.Want.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, a.Want.SHA256); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat after Delete: got %v, want ErrNotFound", err)
	}
	if _, err := ReadAll(s, a.Want.SHA256, 0, -1); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Open after Delete: got %v, want ErrNotFound", err)
	}
	if got := Objects(t, s); len(got) != 1 || got[b.Want.SHA256] != 1000 {
		t.Errorf("Walk after Delete: got %v, want only the other object", got)
	}
	if err := s.Delete(ctx, a.Want.SHA256); err != nil {
		t.Errorf("Delete of an absent object: %v", err)
	}
	// Deleted, then committed again: a purge followed by a new fill.
	Put(t, s, a)
	if got, err := ReadAll(s, a.Want.SHA256, 0, -1); err != nil || !bytes.Equal(got, a.Data) {
		t.Errorf("Open after a new commit: %d bytes, %v", len(got), err)
	}
}

func testWalk(t *testing.T, s blobstore.Store) {
	if got := Objects(t, s); len(got) != 0 {
		t.Fatalf("Walk of an empty store: %v", got)
	}
	want := map[string]int64{}
	for i := range 20 {
		o := NewObject(uint64(100+i), 100*i)
		Put(t, s, o)
		want[o.Want.SHA256] = int64(len(o.Data))
	}
	got := Objects(t, s)
	if len(got) != len(want) {
		t.Errorf("Walk: got %d objects, want %d", len(got), len(want))
	}
	for sha, size := range want {
		if got[sha] != size {
			t.Errorf("Walk: %s: got size %d, want %d", sha, got[sha], size)
		}
	}
	// fn's error stops the walk and comes back unchanged.
	stopErr := errors.New("stop here")
	calls := 0
	err := s.Walk(context.Background(), func(blobstore.Info) error {
		calls++
		return stopErr
	})
	if !errors.Is(err, stopErr) || calls != 1 {
		t.Errorf("Walk with a failing fn: %v after %d calls; want %v after 1", err, calls, stopErr)
	}
}

func testOutOfRange(t *testing.T, s blobstore.Store) {
	o := NewObject(14, 1000)
	Put(t, s, o)
	for _, tc := range []struct{ off, n int64 }{{1001, -1}, {1001, 1}, {5000, 0}, {-1, -1}, {-1, 10}} {
		if _, err := ReadAll(s, o.Want.SHA256, tc.off, tc.n); !errors.Is(err, blobstore.ErrOutOfRange) {
			t.Errorf("Open(%d, %d): got %v, want ErrOutOfRange", tc.off, tc.n, err)
		}
	}
}

func testUnknown(t *testing.T, s blobstore.Store) {
	Put(t, s, NewObject(15, 10))
	unknown := NewObject(16, 10).Want.SHA256
	if _, err := s.Stat(context.Background(), unknown); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat: got %v, want ErrNotFound", err)
	}
	for _, r := range [][2]int64{{0, -1}, {0, 5}, {3, -1}, {100, 1}} {
		if _, err := ReadAll(s, unknown, r[0], r[1]); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Open(%d, %d): got %v, want ErrNotFound", r[0], r[1], err)
		}
	}
}

func testInvalidName(t *testing.T, s blobstore.Store) {
	ctx := context.Background()
	o := NewObject(17, 10)
	Put(t, s, o)
	for _, name := range []string{
		"",
		"tmp",
		o.Want.SHA256[:63],
		o.Want.SHA256 + "0",
		"../" + o.Want.SHA256[3:],
		o.Want.SHA256[:62] + "/x",
		"ABCDEF" + o.Want.SHA256[6:],
	} {
		if _, err := s.Stat(ctx, name); !errors.Is(err, blobstore.ErrInvalidName) {
			t.Errorf("Stat(%q): got %v, want ErrInvalidName", name, err)
		}
		if _, err := s.Open(ctx, name, 0, -1); !errors.Is(err, blobstore.ErrInvalidName) {
			t.Errorf("Open(%q): got %v, want ErrInvalidName", name, err)
		}
		if err := s.Delete(ctx, name); !errors.Is(err, blobstore.ErrInvalidName) {
			t.Errorf("Delete(%q): got %v, want ErrInvalidName", name, err)
		}
	}
	if _, err := s.Stat(ctx, o.Want.SHA256); err != nil {
		t.Errorf("the valid object after invalid deletes: %v", err)
	}
}

// testBig streams 20 MiB in and out without holding a second copy: the
// object is checked by hashing what Open returns.
func testBig(t *testing.T, s blobstore.Store) {
	const size = 20 << 20
	o := NewObject(18, size)
	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if n, err := io.Copy(w, bytes.NewReader(o.Data)); err != nil || n != size {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if _, err := w.Commit(context.Background(), o.Want); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(context.Background(), o.Want.SHA256, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	r.Close()
	if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != o.Want.SHA256 {
		t.Errorf("Open: %d bytes, %v; want %d bytes with the right sha256", n, err, size)
	}
	// A range in the middle and one at the end: a resumed download.
	for _, r := range [][2]int64{{size/2 - 3, 1 << 20}, {size - 1000, -1}} {
		got, err := ReadAll(s, o.Want.SHA256, r[0], r[1])
		end := size
		if r[1] >= 0 {
			end = int(r[0] + r[1])
		}
		if err != nil || !bytes.Equal(got, o.Data[r[0]:end]) {
			t.Errorf("Open(%d, %d): %d bytes, %v", r[0], r[1], len(got), err)
		}
	}
}
