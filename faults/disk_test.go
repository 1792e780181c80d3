package faults

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"github.com/condaproxy/condaproxy/internal/testdata"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestFullDisk runs condaproxy with its data directory on a small tmpfs and fills
// the disk under it. A package bigger than the space left must fail cleanly: the
// client gets an error or a broken transfer, never a complete-looking wrong file;
// nothing of it is recorded (no blob, nothing left in tmp/, and once space is back
// the same request goes to upstream again and fills right); and while the disk is
// full to the last byte the server goes on serving what it has: a package cached
// earlier, and repodata whose revalidation cannot be stored.
func TestFullDisk(t *testing.T) {
	mnt := mountTmpfs(t)
	ch := newChannel(t)
	big := ch.add("linux-64", "big", "1.0", synthetic(7, 2<<20), func(int) bool { return true })
	small := ch.file("linux-64", "zlib-1.2.11-h7b6447c_3.conda")
	// Listed from generation 1 on: the revalidation made with the disk full brings a
	// new document to store.
	late := ch.add("linux-64", "late", "1.0", synthetic(8, 10<<10), func(g int) bool { return g >= 1 })
	s := setup{path: filepath.Join(t.TempDir(), "condaproxy.yaml"), data: filepath.Join(mnt, "data"),
		upstream: ch.srv.URL, cache: "  metadata_ttl: 1s"}
	srv := startServer(t, s)
	base := srv.base + "/fault/linux-64/"
	bigPath := "/linux-64/" + big.fn

	// Before the disk fills: repodata in every form and the small package are cached.
	for _, form := range repodataForms {
		checkRepodata(t, base, form)
	}
	if got := mustGet(t, base+small.fn); !bytes.Equal(got, small.data) {
		t.Fatalf("GET %s before the disk is full: %d bytes, want upstream's %d", small.fn, len(got), len(small.data))
	}

	// 256 KiB left, for a 2 MiB package.
	filler := filepath.Join(mnt, "filler")
	free := fillDisk(t, filler, mnt, 256<<10)
	t.Logf("disk filled: %d bytes free for a %d-byte package", free, len(big.data))
	ch.setGen(1) // the next revalidation brings a document that must be stored, too
	resp, body, err := do(http.MethodGet, base+big.fn, "")
	switch {
	case resp == nil:
		t.Logf("fill on a full disk: no answer (%v)", err)
	case err != nil:
		t.Logf("fill on a full disk: %d, transfer broken off after %d bytes (%v)", resp.StatusCode, len(body), err)
	case resp.StatusCode != http.StatusOK:
		t.Logf("fill on a full disk: %d %.200s", resp.StatusCode, body)
	case !bytes.Equal(body, big.data):
		t.Errorf("fill on a full disk: a complete 200 answer of %d bytes (sha256 %s) that is not the package (%d bytes, %s)",
			len(body), sha256hex(body), len(big.data), big.sha)
	default:
		t.Logf("fill on a full disk: the package was streamed whole though it could not be cached")
	}
	if ch.hitCount(bigPath) == 0 {
		t.Logf("upstream was not asked for %s (refused before fetching)", big.fn)
	}

	// Nothing recorded: tmp/ empties, no blob of it.
	if left := waitTmpEmpty(t, s.data, 5*time.Second); len(left) > 0 {
		t.Errorf("tmp/ still holds %v after the failed fill", left)
	}
	if checkBlobs(t, s.data, ch.sizes())[big.sha] {
		t.Fatalf("the blob of %s exists: the disk was not full enough for this test (%d bytes were free)", big.fn, free)
	}

	// Full to the last byte: what is cached still serves, repodata too, even when
	// its revalidation brings a new document there is no room for.
	fillDisk(t, filler, mnt, 0)
	revalidations := ch.hitCount("/linux-64/repodata.json.zst") + ch.hitCount("/linux-64/repodata.json")
	time.Sleep(1100 * time.Millisecond) // past metadata_ttl
	for i := range 3 {
		if srv.Exited() {
			t.Fatalf("the server died with the disk full: %v\n%s", srv.Err(), srv.Out.String())
		}
		if got := mustGet(t, base+small.fn); got != nil && !bytes.Equal(got, small.data) {
			t.Errorf("GET %s with the disk full: %d bytes, want upstream's %d", small.fn, len(got), len(small.data))
		}
		for _, form := range repodataForms {
			checkRepodata(t, base, form)
		}
		if i < 2 {
			time.Sleep(300 * time.Millisecond) // let the background revalidation fail
		}
	}
	if ch.hitCount("/linux-64/repodata.json.zst")+ch.hitCount("/linux-64/repodata.json") == revalidations {
		t.Errorf("no revalidation reached upstream while the disk was full: what this test checks did not happen")
	}
	if left := waitTmpEmpty(t, s.data, 5*time.Second); len(left) > 0 {
		t.Errorf("tmp/ still holds %v after revalidations on a full disk", left)
	}

	// Space is back: the same package is fetched from upstream again and fills.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	hits := ch.hitCount(bigPath)
	if got := mustGet(t, base+big.fn); got != nil && !bytes.Equal(got, big.data) {
		t.Errorf("GET %s after freeing space: %d bytes (sha256 %s), want upstream's %d (%s)",
			big.fn, len(got), sha256hex(got), len(big.data), big.sha)
	}
	if ch.hitCount(bigPath) == hits {
		t.Errorf("GET %s after freeing space was answered without asking upstream: the failed fill was recorded", big.fn)
	}
	if left := waitTmpEmpty(t, s.data, 5*time.Second); len(left) > 0 {
		t.Errorf("tmp/ still holds %v after the fill", left)
	}
	if !checkBlobs(t, s.data, ch.sizes())[big.sha] {
		t.Errorf("no blob of %s after it was served whole", big.fn)
	}

	// And it stays: after a restart both packages come from the cache.
	if err := srv.Stop(35 * time.Second); err != nil {
		t.Errorf("serve: %v", err)
	}
	if t.Failed() {
		t.Logf("output of the server that saw the disk full:\n%s", srv.Out.String())
	}
	srv = startServer(t, s)
	if left := tmpEntries(t, s.data); len(left) > 0 {
		t.Errorf("tmp/ holds %v once the server is up", left)
	}
	hits = ch.hitCount(bigPath)
	base = srv.base + "/fault/linux-64/"
	for _, p := range []*pkg{small, big} {
		if got := mustGet(t, base+p.fn); got != nil && !bytes.Equal(got, p.data) {
			t.Errorf("GET %s after a restart: %d bytes, want upstream's %d", p.fn, len(got), len(p.data))
		}
	}
	if ch.hitCount(bigPath) != hits {
		t.Errorf("GET %s after a restart went to upstream: the fill made with space back was not kept", big.fn)
	}
	// The revalidation that could not be stored on the full disk is made again
	// (the restart forgets the failure's backoff): the document that lists late,
	// which upstream has listed since then, comes into service.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, err := get(base + "repodata.json")
		doc, derr := decodeRepodata("repodata.json", body)
		if err == nil && code == http.StatusOK && derr == nil {
			if _, ok := doc.records()[late.fn]; ok {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("10 s after a restart with space back, repodata.json does not list %s, which upstream has listed since the disk was full (%d %v %v)",
				late.fn, code, err, derr)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := srv.Stop(35 * time.Second); err != nil {
		t.Errorf("serve: %v", err)
	}
	if t.Failed() {
		t.Logf("server output:\n%s", srv.Out.String())
	}
}

// TestFullDiskUnbuiltRepodataForms: with the disk full, a subdir whose
// repodata.json is cached must serve its other forms too (repodata.json.zst is the
// one rattler, pixi and recent conda ask for first), even when nobody asked for them
// before the disk filled: they are encodings of a document the proxy holds, not
// something to fetch.
func TestFullDiskUnbuiltRepodataForms(t *testing.T) {
	mnt := mountTmpfs(t)
	ch := newChannel(t)
	s := setup{path: filepath.Join(t.TempDir(), "condaproxy.yaml"), data: filepath.Join(mnt, "data"),
		upstream: ch.srv.URL, cache: "  metadata_ttl: 10m"}
	srv := startServer(t, s)
	base := srv.base + "/fault/linux-64/"
	checkRepodata(t, base, "repodata.json")
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler, mnt, 0)
	for _, form := range repodataForms {
		checkRepodata(t, base, form)
	}
	checkGzipRepodata(t, base+"repodata.json")
	if srv.Exited() {
		t.Fatalf("the server died with the disk full: %v", srv.Err())
	}
	// With space back, every form serves.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for _, form := range repodataForms {
		checkRepodata(t, base, form)
	}
	checkGzipRepodata(t, base+"repodata.json")
	if err := srv.Stop(35 * time.Second); err != nil {
		t.Errorf("serve: %v", err)
	}
	if t.Failed() {
		t.Logf("server output:\n%s", srv.Out.String())
	}
}

// checkGzipRepodata asks for repodata.json as conda does, with Accept-Encoding:
// gzip, and fails the test unless a whole document comes back.
func checkGzipRepodata(t *testing.T, url string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("GET %s (Accept-Encoding: gzip): %v", url, err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s (Accept-Encoding: gzip): %d %v: %.200s", url, resp.StatusCode, err, body)
		return
	}
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err == nil {
			body, err = io.ReadAll(zr)
		}
		if err != nil {
			t.Errorf("GET %s (Accept-Encoding: gzip): a broken gzip answer: %v", url, err)
			return
		}
	}
	if !json.Valid(body) {
		t.Errorf("GET %s (Accept-Encoding: gzip): not a whole JSON document (%d bytes)", url, len(body))
	}
}

// mountTmpfs mounts an 8 MiB tmpfs on a temp dir for a data directory whose disk
// the test can fill in a moment, and unmounts it when the test ends. It skips the
// test when not root or when the mount is refused (a container without the
// capability): a full disk cannot be made otherwise without risk to the machine.
func mountTmpfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testdata.Skipf(t, testdata.Root, "needs root to mount a tmpfs; CI runs as root")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m"); err != nil {
		testdata.Skipf(t, testdata.Root, "cannot mount a tmpfs on %s: %v", mnt, err)
	}
	// Registered before any server starts, so it runs after the servers' cleanups
	// have stopped them (cleanups run last first).
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount the tmpfs at %s: %v", mnt, err)
		}
	})
	return mnt
}

// repodataForms are the forms of a subdir's repodata a client may fetch.
var repodataForms = []string{"repodata.json", "repodata.json.zst", "repodata.json.bz2", "current_repodata.json"}

// checkRepodata fetches one form of the subdir's repodata and fails the test unless
// it is a whole document that lists packages.
func checkRepodata(t *testing.T, base, form string) {
	t.Helper()
	body := mustGet(t, base+form)
	if body == nil {
		return
	}
	doc, err := decodeRepodata(form, body)
	if err != nil {
		t.Errorf("GET %s%s: %v", base, form, err)
	} else if len(doc.records()) == 0 {
		t.Errorf("GET %s%s: no records", base, form)
	}
}

// fillDisk grows the file path, on the filesystem mounted at mnt, until at most
// leave bytes are free there (0: until the filesystem refuses a byte more), and
// returns the bytes left free.
func fillDisk(t *testing.T, path, mnt string, leave int64) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4<<10)
	for {
		free := freeBytes(t, mnt)
		if free <= leave {
			return free
		}
		n := min(int64(len(chunk)), free-leave)
		if _, err := f.Write(chunk[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return freeBytes(t, mnt)
			}
			t.Fatal(err)
		}
	}
}

// freeBytes is what an unprivileged writer may still put on the filesystem at mnt.
func freeBytes(t *testing.T, mnt string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}
