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

// A last byte that breaks the digest ends the transfer short: nothing is kept,
// and the mismatch is counted before the waiter hears of it.
func TestMismatchBreaksTransfer(t *testing.T) {
	store := openStore(t, nil)
	g := newGroup(t, store, nil)
	body := append(bytes.Repeat([]byte("a"), 300<<10), 'z')
	want := digest(body)
	body[len(body)-1] = 'Z'
	pr, pw := io.Pipe()
	var mismatches atomic.Int32
	f := g.Start(context.Background(), "k", func(ctx context.Context, f *Fill) (string, error) {
		return g.Download(ctx, f, Download{Body: pr, Size: int64(len(body)), Want: want,
			OnMismatch: func() { mismatches.Add(1) }})
	})
	srv := serveFill(g, f)
	defer srv.Close()
	// Headers go out with the first bytes: send them before asking.
	go func() { pw.Write(body[:len(body)-1]); pw.Write(body[len(body)-1:]); pw.Close() }()
	// The transfer breaks off: mid-body, or before the headers when the fill
	// failed before this client attached.
	if resp, err := http.Get(srv.URL); err == nil {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("a wrong file was served whole (%d bytes, status %d)", len(b), resp.StatusCode)
		}
	}
	_, ferr := wait(t, f)
	if !errors.As(ferr, new(*cache.MismatchError)) {
		t.Fatalf("fill error %v, want a mismatch", ferr)
	}
	if mismatches.Load() != 1 || store.Has(want.SHA256) {
		t.Fatalf("mismatches counted %d (want 1), kept %v", mismatches.Load(), store.Has(want.SHA256))
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

// A failed fill is not joined: the next ask starts a fresh attempt.
func TestFailedFillRetried(t *testing.T) {
	g := newGroup(t, openStore(t, nil), nil)
	var runs atomic.Int32
	run := func(context.Context, *Fill) (string, error) {
		if runs.Add(1) == 1 {
			return "", errors.New("upstream broke")
		}
		return "ok", nil
	}
	if _, err := wait(t, g.Start(context.Background(), "k", run)); err == nil {
		t.Fatal("first attempt: no error")
	}
	if sha, err := wait(t, g.Start(context.Background(), "k", run)); err != nil || sha != "ok" {
		t.Fatalf("second attempt: %q %v", sha, err)
	}
}
