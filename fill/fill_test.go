package fill

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/blobstore"
	"github.com/condaproxy/condaproxy/blobstore/disk"
	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/coord"
)

func openStore(t *testing.T, remote blobstore.Store) *cache.Store {
	t.Helper()
	o := cache.Options{Logger: slog.New(slog.DiscardHandler)}
	if remote != nil {
		o.Remote = remote
	}
	s, err := cache.Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newGroup is a Group whose background work is tracked by wg.
func newGroup(t *testing.T, store *cache.Store, locker coord.Locker) *Group {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	return New(Options{Store: store, Locker: locker, Background: func(fn func()) bool {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
		return true
	}})
}

func digest(b []byte) cache.Digest {
	sum := sha256.Sum256(b)
	return cache.Digest{Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
}

func wait(t *testing.T, f *Fill) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.Wait(ctx)
}

// gatedRemote is a real disk object store whose uploads wait for release:
// the time between "every byte is here" and "the blob is committed".
type gatedRemote struct {
	*disk.Store
	entered chan struct{}
	release chan struct{}
}

func (g *gatedRemote) Create(ctx context.Context) (blobstore.Writer, error) {
	close(g.entered)
	<-g.release
	return g.Store.Create(ctx)
}

func serveFill(g *Group, f *Fill) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.Serve(w, r, f, func(http.ResponseWriter, string, string, bool) {}); err != nil {
			panic(http.ErrAbortHandler) // as proxy does: the client must see a broken transfer
		}
	}))
}

// A waiter streams the bytes as they land but never holds the last one before
// the blob is verified and committed: upstream has sent every byte, the upload
// to the shared store is held, and the waiter still lacks the last one.
func TestStreamWithholdsLastByteUntilCommitted(t *testing.T) {
	d, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	remote := &gatedRemote{Store: d, entered: make(chan struct{}), release: make(chan struct{})}
	store := openStore(t, remote)
	g := newGroup(t, store, nil)
	var once sync.Once
	release := func() { once.Do(func() { close(remote.release) }) }
	t.Cleanup(release) // before the Group's cleanup waits for the fill
	body := append(bytes.Repeat([]byte("a"), 300<<10), 'z')
	want := digest(body)
	f := g.Start(context.Background(), "k", func(ctx context.Context, f *Fill) (string, error) {
		sha, err := g.Download(ctx, f, Download{Body: bytes.NewReader(body), Size: int64(len(body)), Want: want})
		if err != nil {
			return "", err
		}
		return f.Committed(sha)
	})
	srv := serveFill(g, f)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make([]byte, len(body)-1)
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatalf("read what arrived so far: %v", err)
	}
	<-remote.entered // every byte is written and hashed; the commit waits
	more := make(chan error, 1)
	go func() { _, err := io.ReadFull(resp.Body, make([]byte, 1)); more <- err }()
	select {
	case err := <-more:
		t.Fatalf("the last byte came before the blob was committed (err %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-more; err != nil {
		t.Fatalf("last byte after the commit: %v", err)
	}
	if _, err := wait(t, f); err != nil || !store.Has(want.SHA256) {
		t.Fatalf("fill: %v, kept %v", err, store.Has(want.SHA256))
	}
}

// A last byte that breaks the digest ends the transfer short, mid-body: the
// client has every byte but the last and then a broken connection; nothing is
// kept, and the mismatch is counted before the waiter hears of it.
func TestMismatchBreaksTransfer(t *testing.T) {
	store := openStore(t, nil)
	g := newGroup(t, store, nil)
	body := append(bytes.Repeat([]byte("a"), 300<<10), 'z')
	want := digest(body)
	body[len(body)-1] = 'Z'
	pr, pw := io.Pipe()
	defer pw.Close()
	var mismatches atomic.Int32
	heard := make(chan int32, 1)
	f := g.Start(context.Background(), "k", func(ctx context.Context, f *Fill) (string, error) {
		return g.Download(ctx, f, Download{Body: pr, Size: int64(len(body)), Want: want,
			OnMismatch: func() { mismatches.Add(1) }})
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := g.Serve(w, r, f, func(http.ResponseWriter, string, string, bool) {})
		if err != nil {
			heard <- mismatches.Load() // what the metric said when the waiter heard
			panic(http.ErrAbortHandler)
		}
	}))
	defer srv.Close()
	// Headers go out with the first bytes: send them before asking.
	go pw.Write(body[:len(body)-1])
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make([]byte, len(body)-1)
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatalf("the bytes before the last: %v", err)
	}
	pw.Write(body[len(body)-1:]) // the wrong last byte
	pw.Close()
	if n, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("a wrong file was served whole (%d more bytes, no error)", len(n))
	}
	if _, err := wait(t, f); !errors.As(err, new(*cache.MismatchError)) {
		t.Fatalf("fill error %v, want a mismatch", err)
	}
	if n := <-heard; n != 1 {
		t.Errorf("the waiter heard of the mismatch with %d counted, want 1", n)
	}
	if store.Has(want.SHA256) {
		t.Error("the wrong bytes were kept")
	}
}

// Two replicas (two Groups, two local tiers on one shared store, one lock):
// many concurrent asks make one fetch, every one gets the blob, and the
// AfterCommit of every asker runs, joiners' too.
func TestOneFetchAcrossReplicas(t *testing.T) {
	remote, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	locker := coord.NewLocalLocker()
	stores := []*cache.Store{openStore(t, remote), openStore(t, remote)}
	groups := []*Group{newGroup(t, stores[0], locker), newGroup(t, stores[1], locker)}
	body := bytes.Repeat([]byte("conda"), 100<<10)
	want := digest(body)
	var fetches, indexed atomic.Int32
	fetch := func(g *Group) Func {
		return g.Blob(want.SHA256, want.SHA256, func(ctx context.Context, f *Fill) (string, error) {
			fetches.Add(1)
			time.Sleep(20 * time.Millisecond) // the others pile up on the lock
			sha, err := g.Download(ctx, f, Download{Body: bytes.NewReader(body), Size: int64(len(body)), Want: want})
			if err != nil {
				return "", err
			}
			return f.Committed(sha)
		})
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := groups[i%2]
			f := g.Start(context.Background(), "sha|"+want.SHA256, fetch(g))
			f.AfterCommit(func(string) error { indexed.Add(1); return nil })
			sha, err := wait(t, f)
			if err == nil && sha != want.SHA256 {
				err = errors.New("wrong sha " + sha)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d upstream fetches, want 1", n)
	}
	if n := indexed.Load(); n != 16 {
		t.Errorf("AfterCommit ran %d times, want 16 (every asker's)", n)
	}
	for i, s := range stores {
		if !s.Has(want.SHA256) {
			t.Errorf("replica %d does not hold the blob", i)
		}
	}
}

// An upstream file past the limit is refused by its Content-Length, or by what
// it sends when it states none, and nothing is kept.
func TestDownloadLimit(t *testing.T) {
	store := openStore(t, nil)
	g := newGroup(t, store, nil)
	for _, size := range []int64{2048, -1} {
		f := g.Start(context.Background(), "big", func(ctx context.Context, f *Fill) (string, error) {
			return g.Download(ctx, f, Download{Body: bytes.NewReader(make([]byte, 2048)), Size: size,
				Want: cache.Digest{Size: -1}, Limit: 1024})
		})
		if _, err := wait(t, f); !errors.As(err, new(*TooLargeError)) {
			t.Errorf("Content-Length %d: %v, want a TooLargeError", size, err)
		}
	}
	if _, n, _ := store.Usage(); n != 0 {
		t.Errorf("%d blobs kept after refused downloads", n)
	}
}

// Once the owner stops taking work, a new fill fails at once with
// ErrShuttingDown and leaves nothing in the table.
func TestStartAfterShutdown(t *testing.T) {
	g := New(Options{Store: openStore(t, nil), Background: func(func()) bool { return false }})
	f := g.Start(context.Background(), "k", func(context.Context, *Fill) (string, error) {
		t.Error("ran after shutdown")
		return "", nil
	})
	if _, err := wait(t, f); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("%v, want ErrShuttingDown", err)
	}
	if !g.Idle() {
		t.Error("a refused fill stayed in the table")
	}
}

// A failed fill still in the table (winding down: its Func has not returned)
// is not joined: the next ask starts a fresh attempt.
func TestFailedFillRetried(t *testing.T) {
	store := openStore(t, nil)
	g := newGroup(t, store, nil)
	body := []byte("the right bytes")
	var runs atomic.Int32
	failedOnce := make(chan struct{})
	windDown := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(windDown) }) }) // before the Group's cleanup waits
	f1 := g.Start(context.Background(), "k", func(ctx context.Context, f *Fill) (string, error) {
		runs.Add(1)
		// A mismatch marks the fill failed at once; the Func goes on a while.
		_, err := g.Download(ctx, f, Download{Body: bytes.NewReader([]byte("wrong")), Size: 5, Want: digest(body)})
		close(failedOnce)
		<-windDown
		return "", err
	})
	<-failedOnce
	if g.Idle() {
		t.Fatal("degenerate: the failed fill already left the table")
	}
	f2 := g.Start(context.Background(), "k", func(ctx context.Context, f *Fill) (string, error) {
		runs.Add(1)
		sha, err := g.Download(ctx, f, Download{Body: bytes.NewReader(body), Size: int64(len(body)), Want: digest(body)})
		if err != nil {
			return "", err
		}
		return f.Committed(sha)
	})
	if f2 == f1 {
		t.Fatal("a failed fill was joined")
	}
	if sha, err := wait(t, f2); err != nil || sha != digest(body).SHA256 {
		t.Fatalf("the fresh attempt: %q %v", sha, err)
	}
	once.Do(func() { close(windDown) })
	if _, err := wait(t, f1); err == nil {
		t.Error("the failed fill reported success")
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("%d runs, want 2", n)
	}
}

// The pin a fill holds on its blob (for its waiters) is let go when it ends:
// a blob larger than the cap goes at the next commit after that.
func TestFillLetsItsBlobGo(t *testing.T) {
	s2, err := cache.Open(t.TempDir(), cache.Options{MaxSize: 100, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	g := newGroup(t, s2, nil)
	big := bytes.Repeat([]byte("b"), 300)
	f := g.Start(context.Background(), "big", func(ctx context.Context, f *Fill) (string, error) {
		sha, err := g.Download(ctx, f, Download{Body: bytes.NewReader(big), Size: 300, Want: digest(big)})
		if err != nil {
			return "", err
		}
		return f.Committed(sha)
	})
	sha, err := wait(t, f)
	if err != nil {
		t.Fatal(err)
	}
	waitIdle(t, g)
	small := []byte("small")
	tmp, err := s2.NewTemp()
	if err != nil {
		t.Fatal(err)
	}
	tmp.Write(small)
	if _, err := tmp.Commit(digest(small)); err != nil {
		t.Fatal(err)
	}
	if s2.Has(sha) {
		t.Error("the fill ended and no one waits, yet its blob is still pinned past the cap")
	}
}

func waitIdle(t *testing.T, g *Group) {
	t.Helper()
	for i := 0; !g.Idle(); i++ {
		if i > 1000 {
			t.Fatal("the group never went idle")
		}
		time.Sleep(time.Millisecond)
	}
}
