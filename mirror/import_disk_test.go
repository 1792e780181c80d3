//go:build linux

package mirror

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/internal/testdata"
)

// mountTmpfs mounts a tmpfs of size bytes on a temp dir, for a data directory
// whose disk the test fills in a moment, and unmounts it when the test ends. A
// full disk cannot be made otherwise without risk to the machine, so the test
// is skipped when it cannot mount (not root, or a container without the
// capability); CI runs as root.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testdata.Skipf(t, testdata.Root, "needs root to mount a tmpfs; CI runs as root")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		testdata.Skipf(t, testdata.Root, "cannot mount a tmpfs on %s: %v", mnt, err)
	}
	// Registered before the store is opened, so it runs after the store's
	// cleanup has closed it (cleanups run last first).
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount the tmpfs at %s: %v", mnt, err)
		}
	})
	return mnt
}

// freeOn is what an unprivileged writer may still put on dir's file system.
func freeOn(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fillTo grows the file path until at most leave bytes are free on its file
// system.
func fillTo(t *testing.T, path string, leave int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		free := freeOn(t, filepath.Dir(path))
		if free <= leave {
			return
		}
		if _, err := f.Write(chunk[:min(int64(len(chunk)), free-leave)]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// An import on a data directory without room for it fails cleanly, whether the
// commit's check of free space stops it (packages staged, but too little room
// left to commit them safely: a full disk in the middle of the metadata commit
// would stop the process) or the disk fills while the tar is staged. Either
// way the error is the data directory's, cache.ErrNoSpace, not a refused tar;
// nothing changes; and the store goes on importing and serving.
func TestImportDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, 100<<20)
	e := seededIn(t, "", filepath.Join(mnt, "data"), 0)

	t.Run("no room to commit", func(t *testing.T) {
		// Packages that stage (they fit), but leave less free than the margin
		// CheckFree keeps for the commit's repodata and metadata: before the
		// check, this import went on into a commit a full disk could break.
		free := freeOn(t, mnt)
		const margin = 16 << 20 // cache.Store.CheckFree's
		need := free - margin + 4<<20
		if need <= 0 || need+2<<20 > free {
			t.Fatalf("%d bytes free on a 100 MiB tmpfs: no size of import stages but cannot commit", free)
		}
		pkgs := bigPkgs("linux-64", "huge", 4, int(need/4))
		err := refusedWhole(t, e, genTar(t, "gen", pkgs), pkgs, "free")
		t.Logf("%d bytes free, %d bytes of packages: %v", free, need, err)
		if !errors.Is(err, cache.ErrNoSpace) || errors.Is(err, ErrRefused) {
			t.Errorf("Import: %v; want cache.ErrNoSpace, and not a refused tar", err)
		}
	})

	t.Run("disk full while staging", func(t *testing.T) {
		filler := filepath.Join(mnt, "filler")
		fillTo(t, filler, 1<<20)
		defer os.Remove(filler)
		pkgs := bigPkgs("linux-64", "wide", 2, 2<<20)
		err := refusedWhole(t, e, genTar(t, "gen", pkgs), pkgs, "no space left on device", "gen/linux-64/")
		t.Logf("1 MiB free, 4 MiB of packages: %v", err)
		var pe *fs.PathError
		if errors.Is(err, ErrRefused) || !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, cache.ErrNoSpace) || !errors.As(err, &pe) {
			t.Errorf("Import: %v; want the write's own error (ENOSPC), cache.ErrNoSpace, and not a refused tar", err)
		}
	})

	// Room again, and the store imports and serves as before.
	pkgs := genPkgs("linux-64", "after", 2)
	importsWhole(t, e, genTar(t, "gen", pkgs), pkgs)
	for _, p := range earlier {
		if code, _ := e.get("/gen/" + p.subdir + "/" + p.filename()); code != 200 {
			t.Errorf("GET %s/%s, of the earlier import: %d", p.subdir, p.filename(), code)
		}
	}
}
