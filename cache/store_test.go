package cache

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCommitVerified: a blob becomes visible only with the size and digests it was
// promised; a mismatch is reported by what failed and leaves nothing behind.
func TestCommitVerified(t *testing.T) {
	data := content(1, 3000)
	good := digestOf(data)
	other := digestOf(content(2, 3000))

	t.Run("accepted", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			want Digest
		}{
			{"all fields", good},
			{"size unknown", Digest{Size: -1, SHA256: good.SHA256}},
			{"sha256 only, upper case", Digest{Size: -1, SHA256: strings.ToUpper(good.SHA256)}},
			{"md5 only", Digest{Size: good.Size, MD5: good.MD5}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := t.TempDir()
				s := openT(t, dir, Options{})
				tmp, err := s.NewTemp()
				if err != nil {
					t.Fatal(err)
				}
				// Written in pieces, as a download arrives.
				for p := data; len(p) > 0; p = p[min(len(p), 700):] {
					if _, err := tmp.Write(p[:min(len(p), 700)]); err != nil {
						t.Fatal(err)
					}
				}
				if got, want := tmp.Written(), int64(len(data)); got != want {
					t.Errorf("Written() = %d, want %d", got, want)
				}
				sha, err := tmp.Commit(tc.want)
				if err != nil {
					t.Fatalf("Commit: %v", err)
				}
				if got, want := sha, good.SHA256; got != want {
					t.Errorf("sha = %s, want %s", got, want)
				}
				got, err := readBlob(s, sha)
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("OpenBlob: %d bytes, err %v; want the %d bytes written", len(got), err, len(data))
				}
				if !s.Has(sha) {
					t.Error("Has = false after Commit")
				}
				if n, c, _ := s.Usage(); n != int64(len(data)) || c != 1 {
					t.Errorf("Usage = %d bytes, %d blobs; want %d, 1", n, c, len(data))
				}
				if got := tmpNames(t, dir); len(got) != 0 {
					t.Errorf("tmp/ = %v after Commit, want empty", got)
				}
				// Committing the same bytes again (two fills racing) counts once.
				commit(t, s, data)
				if n, c, _ := s.Usage(); n != int64(len(data)) || c != 1 {
					t.Errorf("Usage after duplicate = %d bytes, %d blobs; want %d, 1", n, c, len(data))
				}
				// A finished Temp cannot be committed again.
				if _, err := tmp.Commit(tc.want); err == nil {
					t.Error("second Commit of one Temp succeeded")
				}
			})
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			want     Digest
			wantWhat string
		}{
			{"short", Digest{Size: good.Size + 1, SHA256: good.SHA256}, "size"},
			{"long", Digest{Size: good.Size - 1}, "size"},
			{"wrong sha256", Digest{Size: good.Size, SHA256: other.SHA256}, "sha256"},
			{"wrong md5", Digest{Size: good.Size, SHA256: good.SHA256, MD5: other.MD5}, "md5"},
			{"wrong md5 only", Digest{Size: -1, MD5: other.MD5}, "md5"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := t.TempDir()
				s := openT(t, dir, Options{})
				tmp, err := s.NewTemp()
				if err != nil {
					t.Fatal(err)
				}
				tmp.Write(data)
				sha, err := tmp.Commit(tc.want)
				var me *MismatchError
				if !errors.As(err, &me) {
					t.Fatalf("Commit err = %v, want *MismatchError", err)
				}
				if got, want := me.What, tc.wantWhat; got != want {
					t.Errorf("MismatchError.What = %q, want %q (%v)", got, want, err)
				}
				if got := blobFiles(t, dir); len(got) != 0 {
					t.Errorf("blobs/ = %v, want nothing", got)
				}
				if got := tmpNames(t, dir); len(got) != 0 {
					t.Errorf("tmp/ = %v, want empty", got)
				}
				if n, c, _ := s.Usage(); n != 0 || c != 0 {
					t.Errorf("Usage = %d bytes, %d blobs; want 0, 0", n, c)
				}
				if s.Has(sha) {
					t.Error("Has(actual sha) = true after refused Commit")
				}
				if _, err := readBlob(s, sha); !errors.Is(err, ErrNotFound) {
					t.Errorf("OpenBlob err = %v, want ErrNotFound", err)
				}
			})
		}
	})

	t.Run("aborted", func(t *testing.T) {
		dir := t.TempDir()
		s := openT(t, dir, Options{})
		tmp, err := s.NewTemp()
		if err != nil {
			t.Fatal(err)
		}
		tmp.Write(data)
		tmp.Abort()
		if got := tmpNames(t, dir); len(got) != 0 {
			t.Errorf("tmp/ = %v after Abort, want empty", got)
		}
		if _, err := tmp.Commit(good); err == nil {
			t.Error("Commit after Abort succeeded")
		}
		if got := blobFiles(t, dir); len(got) != 0 {
			t.Errorf("blobs/ = %v, want nothing", got)
		}
	})
}

// TestRestartKeepsBlobs: what was committed is there, byte for byte and counted,
// after the Store is closed and the directory opened again.
func TestRestartKeepsBlobs(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	want := map[string][]byte{}
	var total int64
	for i, n := range []int{0, 1, 4096, 100_000} {
		b := content(10+i, n)
		want[commit(t, s, b)] = b
		total += int64(n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	if n, c, _ := s.Usage(); n != total || c != len(want) {
		t.Errorf("Usage after reopen = %d bytes, %d blobs; want %d, %d", n, c, total, len(want))
	}
	for sha, b := range want {
		got, err := readBlob(s, sha)
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("blob %s after reopen: %d bytes, err %v; want %d bytes", sha[:8], len(got), err, len(b))
		}
	}
}

// TestRestartKeepsLRU: access times reach Pebble, so the LRU order after a restart
// is the order of the last run's reads, not the order of commits.
//
// Determinism: access times are unix seconds, so the test seeds distinct old times
// through the exported Meta (Put on "b/<sha>" while no entry is dirty, then Close,
// which flushes only dirty entries) and lets real OpenBlobs give blobs "now"; where
// two reads must differ, it waits for the next second between them.
func TestRestartKeepsLRU(t *testing.T) {
	a, b, c := content(20, 100), content(21, 100), content(22, 100)
	shaA, shaB, shaC := shaOf(a), shaOf(b), shaOf(c)
	for _, tc := range []struct {
		name        string
		open        []string // read in the second run
		wantEvicted string
	}{
		{"no reads: seeded order", nil, shaA},
		{"A read", []string{shaA}, shaB},
		{"B read", []string{shaB}, shaA},
		{"A then B read", []string{shaA, shaB}, shaA},
		{"B then A read", []string{shaB, shaA}, shaB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{})
			commit(t, s, a)
			commit(t, s, b)
			for sha, atime := range map[string]int64{shaA: 1000, shaB: 2000} {
				if err := s.Meta.Put("b/"+sha, blobEntry{Size: 100, ATime: atime}); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()

			// Second run: the reads under test.
			s = openT(t, dir, Options{})
			for i, sha := range tc.open {
				if i > 0 {
					next := time.Unix(time.Now().Unix()+1, 0)
					time.Sleep(time.Until(next))
				}
				bl, err := s.OpenBlob(sha)
				if err != nil {
					t.Fatal(err)
				}
				bl.Close()
			}
			s.Close()

			// Third run, with a cap that fits two of the three blobs.
			s = openT(t, dir, Options{MaxSize: 250})
			commit(t, s, c)
			if !s.Has(shaC) {
				t.Error("the new blob was evicted")
			}
			evicted := ""
			for _, sha := range []string{shaA, shaB} {
				if !s.Has(sha) {
					if evicted != "" {
						t.Errorf("both A and B evicted")
					}
					evicted = sha
				}
			}
			if evicted == "" {
				t.Fatalf("nothing evicted; Usage over cap")
			}
			if evicted != tc.wantEvicted {
				t.Errorf("evicted %s, want %s", name(evicted, shaA, shaB), name(tc.wantEvicted, shaA, shaB))
			}
			if n, _, _ := s.Usage(); n > 250 {
				t.Errorf("Usage = %d, over the cap 250", n)
			}
		})
	}
}

func name(sha, a, b string) string {
	switch sha {
	case a:
		return "A"
	case b:
		return "B"
	}
	return sha[:8]
}

// TestEviction: past the cap the least recently used blob goes, never one that is
// open, and an evicted blob is gone from disk, the table and the metadata.
// Access times are set with setATime (see there) so the order is deterministic.
func TestEviction(t *testing.T) {
	const size, maxSize = 100, 250
	for _, tc := range []struct {
		name        string
		atimes      [2]int64 // of A and B, the blobs present before C is committed
		holdA       bool     // A open (OpenBlob without Close) while C is committed
		holdB       bool
		wantEvicted string // "A", "B" or "C"
	}{
		{"oldest goes", [2]int64{10, 20}, false, false, "A"},
		{"order is atime, not commit order", [2]int64{20, 10}, false, false, "B"},
		{"open oldest stays", [2]int64{10, 20}, true, false, "B"},
		// The newcomer is about to be served to the client that asked: it
		// stays over the cap until the next commit (TestNewestOverCapServed).
		{"open oldest stays, other open too: nothing goes yet", [2]int64{10, 20}, true, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{MaxSize: maxSize})
			// Settled first: the reconciliation after Open may enforce the cap
			// (when it adopted files), as the flusher's tick does, and would
			// take the blob "nothing goes yet" leaves over the cap unpinned.
			settle(t, s)
			data := map[string][]byte{"A": content(30, size), "B": content(31, size), "C": content(32, size)}
			sha := map[string]string{}
			for _, k := range []string{"A", "B"} {
				sha[k] = commit(t, s, data[k])
			}
			var held []*Blob
			for k, hold := range map[string]bool{"A": tc.holdA, "B": tc.holdB} {
				if hold {
					bl, err := s.OpenBlob(sha[k])
					if err != nil {
						t.Fatal(err)
					}
					held = append(held, bl)
				}
			}
			// After the opens, which set atime to now.
			setATime(t, s, sha["A"], tc.atimes[0])
			setATime(t, s, sha["B"], tc.atimes[1])
			sha["C"] = commit(t, s, data["C"])
			// The victim left the table at once; its file and key go in the
			// background.
			waitDeletes(t, s)

			for _, k := range []string{"A", "B", "C"} {
				gone := k == tc.wantEvicted
				if got, want := s.Has(sha[k]), !gone; got != want {
					t.Errorf("Has(%s) = %v, want %v", k, got, want)
				}
				if got, want := exists(blobFilePath(dir, sha[k])), !gone; got != want {
					t.Errorf("file of %s exists = %v, want %v", k, got, want)
				}
				found, err := s.Meta.Get("b/"+sha[k], &blobEntry{})
				if err != nil || found != !gone {
					t.Errorf("metadata of %s present = %v (err %v), want %v", k, found, err, !gone)
				}
				got, err := readBlob(s, sha[k])
				if gone && !errors.Is(err, ErrNotFound) {
					t.Errorf("OpenBlob(%s) err = %v, want ErrNotFound", k, err)
				}
				if !gone && (err != nil || !bytes.Equal(got, data[k])) {
					t.Errorf("OpenBlob(%s): %d bytes, err %v", k, len(got), err)
				}
			}
			// A held blob still reads in full through the handle taken before.
			for _, bl := range held {
				var buf bytes.Buffer
				if _, err := buf.ReadFrom(bl); err != nil || buf.Len() != size {
					t.Errorf("held blob read %d bytes, err %v", buf.Len(), err)
				}
				bl.Close()
			}
			want := 2
			if tc.wantEvicted == "" {
				want = 3
			}
			if n, c, _ := s.Usage(); n != int64(want*size) || c != want {
				t.Errorf("Usage = %d bytes, %d blobs; want %d, %d", n, c, want*size, want)
			}
		})
	}
}

// TestNewestOverCapServed: a blob larger than the whole cap (a big package on a
// small local tier) survives its own commit; pinned (as its fill pins it for
// the clients waiting), it survives other commits too; unpinned, the next
// commit evicts it.
func TestNewestOverCapServed(t *testing.T) {
	s := openT(t, t.TempDir(), Options{MaxSize: 100})
	// Settled first, for the same reason as in TestEviction: the commit and
	// the pin below are two steps (a fill takes them one after the other).
	settle(t, s)
	big := content(40, 300)
	shaBig := commit(t, s, big)
	unpin, ok := s.Pin(shaBig)
	if !ok {
		t.Fatal("the blob just committed, larger than the cap, is gone")
	}
	commit(t, s, content(41, 50)) // another fill's commit
	if got, err := readBlob(s, shaBig); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("pinned, after another commit: %d bytes, %v", len(got), err)
	}
	unpin()
	unpin() // once only
	shaLast := commit(t, s, content(42, 50))
	if s.Has(shaBig) || !s.Has(shaLast) {
		t.Errorf("unpinned, after the next commit: big held %v (want false), the newest %v (want true)", s.Has(shaBig), s.Has(shaLast))
	}
	if _, ok := s.Pin(strings.Repeat("0", 64)); ok {
		t.Error("pinned a blob that is not here")
	}
}

// TestReopenWithSmallerCap: a cap lowered between runs holds once the check
// after Open is done, not only after the next fill (found by this test; see
// load: it is not enforced before that check, which may drop records whose
// file a crash took and which must not cost real blobs).
func TestReopenWithSmallerCap(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	var shas []string
	for i := range 5 {
		shas = append(shas, commit(t, s, content(40+i, 100)))
		setATime(t, s, shas[i], int64(100+i))
	}
	s.Close()
	s = openT(t, dir, Options{MaxSize: 250})
	settle(t, s)
	if n, c, limit := s.Usage(); n > limit || c != 2 {
		t.Errorf("Usage = %d bytes, %d blobs, cap %d; want 200 bytes, 2 blobs", n, c, limit)
	}
	for i, sha := range shas {
		if got, want := s.Has(sha), i >= 3; got != want {
			t.Errorf("Has(blob %d, atime %d) = %v, want %v", i, 100+i, got, want)
		}
	}
	if got := len(blobFiles(t, dir)); got != 2 {
		t.Errorf("%d files under blobs/, want 2", got)
	}
}

// TestCrashLeftovers: what a killed process leaves is reconciled at Open — unfinished
// fills vanish, a verified file renamed in just before the crash is adopted, and an
// entry whose file is gone is dropped.
func TestCrashLeftovers(t *testing.T) {
	blob := content(50, 5000)
	sha := shaOf(blob)
	for _, tc := range []struct {
		name      string
		leave     func(t *testing.T, dir string) // after a clean first run
		wantBlob  bool
		wantUsage int64
	}{
		{"unfinished fill in tmp", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "tmp", "fill-123"), blob[:1000], 0o644)
			os.MkdirAll(filepath.Join(dir, "tmp", "odd", "nested"), 0o755)
			os.WriteFile(filepath.Join(dir, "tmp", "odd", "nested", "x"), blob, 0o644)
		}, false, 0},
		{"file without metadata", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Dir(blobFilePath(dir, sha)), 0o755)
			if err := os.WriteFile(blobFilePath(dir, sha), blob, 0o644); err != nil {
				t.Fatal(err)
			}
		}, true, int64(len(blob))},
		{"metadata without file", func(t *testing.T, dir string) {
			s := openT(t, dir, Options{})
			commit(t, s, blob)
			s.Close()
			if err := os.Remove(blobFilePath(dir, sha)); err != nil {
				t.Fatal(err)
			}
		}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			openT(t, dir, Options{}).Close()
			tc.leave(t, dir)

			s := openT(t, dir, Options{})
			if got := tmpNames(t, dir); len(got) != 0 {
				t.Errorf("tmp/ = %v after Open, want empty", got)
			}
			settle(t, s) // adoption and drops happen after Open returns
			if got := s.Has(sha); got != tc.wantBlob {
				t.Errorf("Has = %v, want %v", got, tc.wantBlob)
			}
			got, err := readBlob(s, sha)
			if tc.wantBlob && (err != nil || !bytes.Equal(got, blob)) {
				t.Errorf("OpenBlob: %d bytes, err %v; want %d bytes", len(got), err, len(blob))
			}
			if !tc.wantBlob && !errors.Is(err, ErrNotFound) {
				t.Errorf("OpenBlob err = %v, want ErrNotFound", err)
			}
			if n, _, _ := s.Usage(); n != tc.wantUsage {
				t.Errorf("Usage = %d, want %d", n, tc.wantUsage)
			}
			// The reconciliation is written down: the metadata now agrees with the disk.
			var e blobEntry
			found, err := s.Meta.Get("b/"+sha, &e)
			if err != nil || found != tc.wantBlob || (found && e.Size != int64(len(blob))) {
				t.Errorf("metadata: found %v size %d err %v; want found %v size %d", found, e.Size, err, tc.wantBlob, len(blob))
			}
		})
	}

	// The same repair while running: a file removed behind the store's back.
	t.Run("file removed while open", func(t *testing.T) {
		dir := t.TempDir()
		s := openT(t, dir, Options{})
		commit(t, s, blob)
		os.Remove(blobFilePath(dir, sha))
		if _, err := readBlob(s, sha); !errors.Is(err, ErrNotFound) {
			t.Errorf("OpenBlob err = %v, want ErrNotFound", err)
		}
		if n, c, _ := s.Usage(); n != 0 || c != 0 || s.Has(sha) {
			t.Errorf("Usage = %d bytes, %d blobs, Has %v; want 0, 0, false", n, c, s.Has(sha))
		}
	})
}

// TestFormat: the FORMAT file is written on a fresh directory, and a newer format is
// refused (naming the directory) without touching what is there.
func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		name      string
		format    string // "" = no FORMAT file
		legacy    bool   // a meta/ dir exists from before FORMAT
		wantErr   error  // nil: opens
		anyErr    bool   // an error that is not wantErr
		wantAfter string // FORMAT content afterwards
	}{
		{"fresh", "", false, nil, false, "1\n"},
		{"pre-format data", "", true, nil, false, "1\n"},
		{"current", "1\n", false, nil, false, "1\n"},
		{"newer", "99\n", false, ErrNewerFormat, false, "99\n"},
		{"newer, no newline", "2", false, ErrNewerFormat, false, "2"},
		{"garbage", "one", false, nil, true, "one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.format != "" {
				os.WriteFile(filepath.Join(dir, "FORMAT"), []byte(tc.format), 0o644)
			}
			if tc.legacy {
				openT(t, dir, Options{}).Close()
				os.Remove(filepath.Join(dir, "FORMAT"))
			}
			// Something a newer version would own: must survive a refusal.
			os.MkdirAll(filepath.Join(dir, "tmp"), 0o755)
			os.WriteFile(filepath.Join(dir, "tmp", "theirs"), []byte("x"), 0o644)

			s, err := Open(dir, Options{Logger: quiet})
			if s != nil {
				defer s.Close()
			}
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Open err = %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), dir) {
					t.Errorf("error %q does not name the directory %s", err, dir)
				}
			case tc.anyErr:
				if err == nil || errors.Is(err, ErrNewerFormat) {
					t.Fatalf("Open err = %v, want a non-ErrNewerFormat error", err)
				}
			default:
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
			}
			b, _ := os.ReadFile(filepath.Join(dir, "FORMAT"))
			if got := string(b); got != tc.wantAfter {
				t.Errorf("FORMAT = %q, want %q", got, tc.wantAfter)
			}
			if err != nil {
				if !exists(filepath.Join(dir, "tmp", "theirs")) {
					t.Error("refused Open emptied tmp/")
				}
				if exists(filepath.Join(dir, "meta")) {
					t.Error("refused Open created meta/")
				}
				// A refused Open releases the directory: fixed, it opens.
				os.WriteFile(filepath.Join(dir, "FORMAT"), []byte("1\n"), 0o644)
				openT(t, dir, Options{}).Close()
			}
		})
	}
}

// TestLockedInProcess: a second Store on an open directory, however the path is
// spelled, is refused with ErrLocked and leaves the first one's fills alone. (Pebble's
// fcntl lock alone does not do this within one process; see openDirs. The
// cross-process case is in TestKillMidWrite.)
func TestLockedInProcess(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spell func(t *testing.T, dir string) string
	}{
		{"same path", func(t *testing.T, dir string) string { return dir }},
		{"trailing dot", func(t *testing.T, dir string) string { return dir + "/." }},
		{"through a subdir", func(t *testing.T, dir string) string { return dir + "/blobs/.." }},
		{"symlink", func(t *testing.T, dir string) string {
			link := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(dir, link); err != nil {
				t.Skip(err)
			}
			return link
		}},
		{"relative", func(t *testing.T, dir string) string {
			wd, _ := os.Getwd()
			rel, err := filepath.Rel(wd, dir)
			if err != nil {
				t.Skip(err)
			}
			return rel
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first := openT(t, dir, Options{})
			fill, err := first.NewTemp()
			if err != nil {
				t.Fatal(err)
			}
			data := content(60, 1000)
			fill.Write(data)

			second, err := Open(tc.spell(t, dir), Options{Logger: quiet})
			if second != nil {
				second.Close()
			}
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("second Open err = %v, want ErrLocked", err)
			}
			// The refused Open did not empty tmp/ under the running fill.
			if _, err := fill.Commit(digestOf(data)); err != nil {
				t.Fatalf("first store's fill after refused Open: %v", err)
			}
			first.Close()
			again := openT(t, tc.spell(t, dir), Options{})
			if !again.Has(shaOf(data)) {
				t.Error("reopened store lacks the fill")
			}
		})
	}
}

// TestHotCache: a small blob is read from disk once and then from memory; one over
// HotMaxItem always from disk. The bytes are the same either way.
func TestHotCache(t *testing.T) {
	for _, tc := range []struct {
		name       string
		size       int
		wantSource []string
	}{
		{"small", 1000, []string{"disk", "memory", "memory"}},
		{"at the limit", 4096, []string{"disk", "memory"}},
		{"over the limit", 4097, []string{"disk", "disk"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openT(t, t.TempDir(), Options{Memory: 1 << 20, HotMaxItem: 4096})
			data := content(70, tc.size)
			sha := commit(t, s, data)
			for i, want := range tc.wantSource {
				bl, err := s.OpenBlob(sha)
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				buf.ReadFrom(bl)
				bl.Close()
				if got := bl.Source; got != want {
					t.Errorf("open %d: Source = %q, want %q", i, got, want)
				}
				if !bytes.Equal(buf.Bytes(), data) || bl.Size != int64(len(data)) {
					t.Errorf("open %d: %d bytes (Size %d), want %d", i, buf.Len(), bl.Size, len(data))
				}
				s.hot.Wait() // ristretto admits asynchronously
			}
			// An evicted/removed blob is not served from memory.
			if err := s.RemoveBlob(sha); err != nil {
				t.Fatal(err)
			}
			s.hot.Wait()
			if _, err := readBlob(s, sha); !errors.Is(err, ErrNotFound) {
				t.Errorf("OpenBlob after RemoveBlob err = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestConcurrentOpenAndEvict: readers and fills racing (run with -race) see only
// whole blobs or ErrNotFound, and once everything is closed the store is under its
// cap and its table agrees with the files.
func TestConcurrentOpenAndEvict(t *testing.T) {
	for _, memory := range []int64{0, 1 << 20} {
		t.Run(fmt.Sprintf("memory=%d", memory), func(t *testing.T) {
			const maxSize = 40 << 10
			dir := t.TempDir()
			s := openT(t, dir, Options{MaxSize: maxSize, Memory: memory, HotMaxItem: 2048})
			const writers, perWriter, readers, perReader = 4, 40, 8, 300
			all := make([][]byte, writers*perWriter)
			shas := make([]string, len(all))
			for i := range all {
				all[i] = content(1000+i, 500+i*37%4000)
				shas[i] = shaOf(all[i])
			}
			errs := make(chan error, writers+readers)
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := w * perWriter; i < (w+1)*perWriter; i++ {
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
					}
				})
			}
			for r := range readers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(r), 0))
					var held []*Blob
					for range perReader {
						i := rng.IntN(len(all))
						bl, err := s.OpenBlob(shas[i])
						if errors.Is(err, ErrNotFound) {
							continue
						}
						if err != nil {
							errs <- err
							return
						}
						var buf bytes.Buffer
						if _, err := buf.ReadFrom(bl); err != nil || !bytes.Equal(buf.Bytes(), all[i]) {
							errs <- fmt.Errorf("blob %d: read %d bytes (err %v), want %d", i, buf.Len(), err, len(all[i]))
						}
						// Hold a few open for a while, so eviction meets open blobs.
						held = append(held, bl)
						if len(held) > 3 {
							held[0].Close()
							held = held[1:]
						}
						s.Usage()
					}
					for _, bl := range held {
						bl.Close()
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			n, c, limit := s.Usage()
			if n > limit {
				t.Errorf("Usage = %d bytes, over the cap %d", n, limit)
			}
			waitDeletes(t, s)
			files := blobFiles(t, dir)
			var onDisk int64
			for _, size := range files {
				onDisk += size
			}
			if len(files) != c || onDisk != n {
				t.Errorf("Usage = %d bytes in %d blobs, disk has %d bytes in %d files", n, c, onDisk, len(files))
			}
			s.Close()
			s = openT(t, dir, Options{MaxSize: maxSize})
			if n2, c2, _ := s.Usage(); n2 != n || c2 != c {
				t.Errorf("after reopen Usage = %d bytes, %d blobs; before %d, %d", n2, c2, n, c)
			}
			settle(t, s)
			if n2, c2, _ := s.Usage(); n2 != n || c2 != c {
				t.Errorf("after reopen and reconciliation Usage = %d bytes, %d blobs; before %d, %d", n2, c2, n, c)
			}
		})
	}
}
