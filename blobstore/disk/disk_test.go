package disk

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/condaproxy/condaproxy/blobstore"
	"github.com/condaproxy/condaproxy/blobstore/blobstoretest"
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store { return openStore(t, t.TempDir()) })
}

// The layout is what an operator sees and what a later import of an old data
// directory relies on: dir/xx/<sha256>, and nothing left in tmp.
func TestLayout(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	o := blobstoretest.NewObject(1, 1000)
	blobstoretest.Put(t, s, o)
	sha := o.Want.SHA256
	data, err := os.ReadFile(filepath.Join(dir, sha[:2], sha))
	if err != nil || string(data) != string(o.Data) {
		t.Fatalf("dir/%s/%s: %d bytes, %v", sha[:2], sha, len(data), err)
	}
	checkTmpEmpty(t, dir)
}

func checkTmpEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("tmp holds %d files, want none", len(entries))
	}
}

// A failed or aborted write leaves no temp file behind while the process runs.
func TestNoTempLeftover(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	o := blobstoretest.NewObject(2, 1000)
	ctx := context.Background()

	w, _ := s.Create(ctx)
	w.Write(o.Data)
	w.Abort()

	w, _ = s.Create(ctx)
	w.Write(o.Data)
	if _, err := w.Commit(ctx, blobstore.Digest{Size: 1}); err == nil {
		t.Fatal("a size mismatch committed")
	}

	w, _ = s.Create(ctx)
	w.Write(o.Data)
	w.Commit(ctx, o.Want)
	w, _ = s.Create(ctx)
	w.Write(o.Data)
	w.Commit(ctx, o.Want) // already there
	checkTmpEmpty(t, dir)
}

// A process killed mid-write leaves its temp file; the next Open removes it,
// and it was never visible.
func TestOpenEmptiesTmp(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	o := blobstoretest.NewObject(3, 1000)
	w, _ := s.Create(context.Background())
	w.Write(o.Data)
	if got := blobstoretest.Objects(t, s); len(got) != 0 {
		t.Fatalf("an uncommitted write is listed: %v", got)
	}
	s.Close() // the process dies: no Abort
	os.Mkdir(filepath.Join(dir, "tmp", "leftover-dir"), 0o755)

	s = openStore(t, dir)
	checkTmpEmpty(t, dir)
	if got := blobstoretest.Objects(t, s); len(got) != 0 {
		t.Errorf("after reopening: %v", got)
	}
}

// Two stores on one directory would empty each other's tmp.
func TestSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if s2, err := Open(dir); err == nil {
		s2.Close()
		t.Fatal("a second Open of one directory succeeded")
	} else if !strings.Contains(err.Error(), dir) {
		t.Errorf("the error does not name the directory: %v", err)
	}
	s.Close()
	openStore(t, dir) // released by Close
}

// Files in the directory that are not objects are not listed.
func TestWalkSkipsStrangers(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	o := blobstoretest.NewObject(4, 10)
	blobstoretest.Put(t, s, o)
	sha := o.Want.SHA256
	os.WriteFile(filepath.Join(dir, sha[:2], "notes.txt"), nil, 0o644)
	os.MkdirAll(filepath.Join(dir, "ff"), 0o755)
	os.WriteFile(filepath.Join(dir, "ff", "00"+sha[2:]), nil, 0o644) // in the wrong directory
	os.MkdirAll(filepath.Join(dir, "zz"), 0o755)
	os.WriteFile(filepath.Join(dir, "zz", sha), nil, 0o644)
	if got := blobstoretest.Objects(t, s); len(got) != 1 || got[sha] != 10 {
		t.Errorf("Walk: got %v, want only %s", got, sha)
	}
}

// An object damaged outside the store (a truncated file) is replaced by the
// next commit of its bytes, not taken as already there.
func TestCommitHealsDamagedObject(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	o := blobstoretest.NewObject(5, 1000)
	blobstoretest.Put(t, s, o)
	sha := o.Want.SHA256
	if err := os.Truncate(filepath.Join(dir, sha[:2], sha), 10); err != nil {
		t.Fatal(err)
	}
	blobstoretest.Put(t, s, o)
	if got, err := blobstoretest.ReadAll(s, sha, 0, -1); err != nil || string(got) != string(o.Data) {
		t.Errorf("after the second commit: %d bytes, %v", len(got), err)
	}
}
