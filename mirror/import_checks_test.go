package mirror

// Regression tests of the import review: tars whose every digest holds (the
// manifest agrees with every entry) but which an import must still refuse as
// a whole, leaving what was imported before served as it was; the manifest's
// bounds; and the errors of the data directory and of the tar's own file told
// from a bad tar.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// rewriteTar passes every entry of tb but the manifest through edit, and makes
// the manifest agree with the edited bytes: only the checks past the
// manifest's can refuse the result.
func rewriteTar(t *testing.T, tb []byte, edit func(name string, data []byte) []byte) []byte {
	t.Helper()
	m, entries := readEntries(t, tb)
	for i := 1; i < len(entries); i++ {
		d := edit(entries[i].name, bytes.Clone(entries[i].data))
		if bytes.Equal(d, entries[i].data) {
			continue
		}
		entries[i].data = d
		for j := range m.Files {
			if m.Files[j].Path == entries[i].name {
				m.Files[j].Size, m.Files[j].SHA256 = int64(len(d)), sha(d)
			}
		}
	}
	return writeEntries(m, entries)
}

// earlier is what the test envs import first, so that a refused import has a
// served state to leave alone.
var earlier = append(genPkgs("noarch", "old", 2), genPkgs("linux-64", "old", 1)...)

// seeded is an env for yaml ("": channel gen) holding the earlier import.
func seeded(t *testing.T, yaml string, maxSize int64) *env {
	t.Helper()
	return seededIn(t, yaml, memDir(t), maxSize)
}

// seededIn is seeded with the data directory in dir.
func seededIn(t *testing.T, yaml, dir string, maxSize int64) *env {
	t.Helper()
	if yaml == "" {
		yaml = chanYAML("gen")
	}
	e := newEnvSized(t, yaml, dir, maxSize)
	if _, err := importTar(e, genTar(t, "gen", earlier), ImportOptions{}); err != nil {
		t.Fatalf("the earlier import: %v", err)
	}
	return e
}

// refusedWhole imports bad into e and fails the test unless the import fails
// with an error naming each of want and leaves e as it was: the same blobs,
// index, import states and files, tmp/ empty, and the same answers to a client
// for the earlier import's packages and pkgs. It returns the error.
func refusedWhole(t *testing.T, e *env, bad []byte, pkgs []genPkg, want ...string) error {
	t.Helper()
	all := append(slices.Clone(earlier), pkgs...)
	state, index, answers := e.state(), e.index(), e.answers(all)
	_, err := importTar(e, bad, ImportOptions{})
	if err == nil {
		t.Errorf("Import succeeded; want it refused naming %q\nthe proxy now answers\n%s", want, e.answers(all))
		return nil
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Import error %q does not name %q", err, w)
		}
	}
	if after := e.state(); after != state {
		t.Errorf("the refused import changed the cache:\nbefore:\n%s\nafter:\n%s", state, after)
	}
	if after := e.index(); after != index {
		t.Errorf("the refused import changed the index:\nbefore:\n%s\nafter:\n%s", index, after)
	}
	if after := e.answers(all); after != answers {
		t.Errorf("after the refused import the proxy answers\n%s\nwant, as before it,\n%s", after, answers)
	}
	return err
}

// importsWhole imports good into e and fails the test unless every package of
// it is served: the refusals before it were for what they were given.
func importsWhole(t *testing.T, e *env, good []byte, pkgs []genPkg) {
	t.Helper()
	if _, err := importTar(e, good, ImportOptions{}); err != nil {
		t.Fatalf("the intact tar: %v", err)
	}
	for _, p := range pkgs {
		if code, body := e.get("/gen/" + p.subdir + "/" + p.filename()); code != 200 || !bytes.Equal(body, p.data) {
			t.Errorf("GET %s/%s after importing the intact tar: %d", p.subdir, p.filename(), code)
		}
	}
}

// A repodata.json listing one filename twice, first with another package's
// sha256 and size, then with its own: the check of the package against
// its record sees one record and a client could be served the other. Refused.
func TestImportRefusesFilenameListedTwice(t *testing.T) {
	pkgs := genPkgs("linux-64", "dup", 3)
	good := genTar(t, "gen", pkgs)
	victim, other := pkgs[1], pkgs[0]
	fake := victim.record()
	fake["sha256"], fake["size"] = sha(other.data), len(other.data)
	fb, _ := json.Marshal(fake)
	key := []byte(`"` + victim.filename() + `":`)
	bad := rewriteTar(t, good, func(name string, d []byte) []byte {
		if name != "gen/linux-64/repodata.json" {
			return d
		}
		i := bytes.Index(d, key)
		if i < 0 {
			t.Fatalf("no record of %s in %s", victim.filename(), d)
		}
		return slices.Concat(d[:i], key, fb, []byte(","), d[i:])
	})
	e := seeded(t, "", 0)
	refusedWhole(t, e, bad, pkgs, victim.filename(), "twice")
	importsWhole(t, e, good, pkgs)
}

// A record with the file's true sha256 but an md5 that is not the file's: an
// md5-only record elsewhere would be matched to this blob by the false md5.
// Refused.
func TestImportRefusesRecordMD5NotTheFiles(t *testing.T) {
	pkgs := genPkgs("linux-64", "md5", 3)
	good := genTar(t, "gen", pkgs)
	victim, other := pkgs[2], pkgs[0]
	bad := rewriteTar(t, good, func(name string, d []byte) []byte {
		if name != "gen/linux-64/repodata.json" {
			return d
		}
		if !bytes.Contains(d, []byte(md5hex(victim.data))) {
			t.Fatalf("no md5 of %s in %s", victim.filename(), d)
		}
		return bytes.Replace(d, []byte(md5hex(victim.data)), []byte(md5hex(other.data)), 1)
	})
	e := seeded(t, "", 0)
	refusedWhole(t, e, bad, pkgs, victim.filename(), "md5")
	importsWhole(t, e, good, pkgs)
}

// A manifest entry without a sha256 (or with one that is not 64 hex digits),
// or without a size, would let whatever bytes the tar holds under its name
// pass the manifest's check. Refused by the manifest's reading, naming the
// entry, before any entry is staged.
func TestImportRefusesManifestEntryWithoutDigest(t *testing.T) {
	pkgs := append(genPkgs("linux-64", "m", 2), genPkgs("noarch", "m", 1)...)
	good := genTar(t, "gen", pkgs)
	pkg := "gen/linux-64/" + pkgs[0].filename()
	// withEntry is good with the manifest's entry of path changed by edit, as
	// JSON, so that a member can be dropped as well as changed.
	withEntry := func(path string, edit func(f map[string]any)) []byte {
		m, entries := readEntries(t, good)
		var raw map[string]any
		mb, _ := json.Marshal(m)
		json.Unmarshal(mb, &raw)
		found := false
		for _, f := range raw["files"].([]any) {
			if f := f.(map[string]any); f["path"] == path {
				edit(f)
				found = true
			}
		}
		if !found {
			t.Fatalf("the manifest has no entry %s", path)
		}
		mb, _ = json.Marshal(raw)
		entries[0].data = mb
		return writeRaw(entries)
	}
	cases := []struct {
		name, path string
		edit       func(f map[string]any)
	}{
		{"package, empty sha256", pkg, func(f map[string]any) { f["sha256"] = "" }},
		{"package, no sha256", pkg, func(f map[string]any) { delete(f, "sha256") }},
		{"package, sha256 too short", pkg, func(f map[string]any) { f["sha256"] = f["sha256"].(string)[:63] }},
		{"package, sha256 not hex", pkg, func(f map[string]any) { f["sha256"] = strings.Repeat("z", 64) }},
		{"package, no size", pkg, func(f map[string]any) { delete(f, "size") }},
		{"package, negative size", pkg, func(f map[string]any) { f["size"] = -1 }},
		{"repodata.json, empty sha256", "gen/linux-64/repodata.json", func(f map[string]any) { f["sha256"] = "" }},
		{"repodata.json.zst, empty sha256", "gen/noarch/repodata.json.zst", func(f map[string]any) { f["sha256"] = "" }},
		{"channeldata.json, empty sha256", "gen/channeldata.json", func(f map[string]any) { f["sha256"] = "" }},
	}
	e := seeded(t, "", 0)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := refusedWhole(t, e, withEntry(c.path, c.edit), pkgs, c.path, "manifest")
			if !errors.Is(err, ErrRefused) {
				t.Errorf("Import: %v, want ErrRefused", err)
			}
			if err != nil && strings.Contains(err.Error(), "cache:") {
				t.Errorf("Import: %v; want the manifest's reading to refuse it, not the store", err)
			}
		})
	}
	importsWhole(t, e, good, pkgs)
}

// writeRaw writes entries as a tar as they are, the manifest's bytes too.
func writeRaw(entries []entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, en := range entries {
		tw.WriteHeader(&tar.Header{Name: en.name, Mode: 0o644, Size: int64(len(en.data)), Typeflag: tar.TypeReg})
		tw.Write(en.data)
	}
	tw.Close()
	return buf.Bytes()
}

// A subdir whose name is not a subdir's ('|' is the index's own separator), or
// one the channel's platforms leave out: kept, it would never be served, or
// be read back as other keys. Refused.
func TestImportRefusesSubdirNotServed(t *testing.T) {
	t.Run("not a subdir name", func(t *testing.T) {
		pkgs := append(genPkgs("linux-64", "s", 1), genPkgs("evil|x", "s", 1)...)
		e := seeded(t, "", 0)
		refusedWhole(t, e, genTar(t, "gen", pkgs), pkgs, "gen/evil|x")
		importsWhole(t, e, genTar(t, "gen", pkgs[:1]), pkgs[:1])
	})
	t.Run("outside the channel's platforms", func(t *testing.T) {
		yaml := "cache:\n  memory: 8MiB\nchannels:\n  - name: gen\n    platforms: [linux-64]\n"
		pkgs := append(genPkgs("linux-64", "s", 1), genPkgs("osx-64", "s", 1)...)
		e := seeded(t, yaml, 0)
		refusedWhole(t, e, genTar(t, "gen", pkgs), pkgs, "gen/osx-64")
		importsWhole(t, e, genTar(t, "gen", pkgs[:1]), pkgs[:1])
	})
}

// bigPkgs makes n packages in subdir of size bytes each, each its own bytes.
func bigPkgs(subdir, prefix string, n, size int) []genPkg {
	out := genPkgs(subdir, prefix, n)
	for i := range out {
		d := make([]byte, size)
		copy(d, out[i].data)
		for j := len(out[i].data); j < size; j++ {
			d[j] = byte(j * (i + 7))
		}
		out[i].data = d
	}
	return out
}

// An import whose new packages exceed cache.max_size would evict its own
// packages as it commits them (before the fix, two of these three were gone at
// its end), and on an air-gapped site what is evicted cannot be fetched again.
// Refused whole, naming max_size; one that fits imports.
func TestImportRefusesMoreThanMaxSize(t *testing.T) {
	const maxSize = 100 << 10
	pkgs := bigPkgs("linux-64", "big", 3, 40<<10)
	e := seeded(t, "", maxSize)
	refusedWhole(t, e, genTar(t, "gen", pkgs), pkgs, "max_size")
	importsWhole(t, e, genTar(t, "gen", pkgs[:2]), pkgs[:2])
}

// manifestEntry is file i of a generated manifest as Export writes it
// (indented), of a path as long as real ones, its number padded to pad digits.
func manifestEntry(i, pad int) []byte {
	p := fmt.Sprintf("conda-forge/linux-64/package-%0*d-1.2.3-py311h1234567_0.conda", pad, i)
	b, _ := json.MarshalIndent(ManifestFile{Path: p, Size: 1 << 20, SHA256: strings.Repeat("ab", 32)}, "  ", " ")
	return b
}

// writeManifestTar writes a tar holding only a manifest of n entries to w, as
// it goes (never the whole manifest in memory), and returns the manifest's
// size. Every entry has the same length, so the size is known first.
func writeManifestTar(w io.Writer, n int) (int64, error) {
	head := []byte(`{"format": "condaproxy-export", "version": 1, "files": [`)
	tail := []byte("]}")
	const pad = 8
	per := int64(len(manifestEntry(0, pad)))
	size := int64(len(head)+len(tail)) + int64(n)*per + int64(max(n-1, 0))
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: ManifestName, Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		return size, err
	}
	bw := &bytes.Buffer{}
	bw.Write(head)
	for i := range n {
		if i > 0 {
			bw.WriteByte(',')
		}
		bw.Write(manifestEntry(i, pad))
		if bw.Len() > 64<<10 {
			if _, err := tw.Write(bw.Bytes()); err != nil {
				return size, err
			}
			bw.Reset()
		}
	}
	bw.Write(tail)
	if _, err := tw.Write(bw.Bytes()); err != nil {
		return size, err
	}
	return size, tw.Close()
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// A manifest listing more files than an import takes is refused as soon as it
// lists one more, having read no further: memory stays at the bound whatever
// the manifest claims (before, a 256 MiB manifest of 8.7 million tiny entries
// took 2.75 GB of heap). The bound is lowered here, so that the test is quick;
// what a file costs under it is measured below, at the real scale of a path.
func TestImportManifestTooManyFiles(t *testing.T) {
	e := newEnvIn(t, chanYAML("gen"), memDir(t))
	const bound, listed = 20_000, 1_000_000
	pr, pw := io.Pipe()
	var size int64
	done := make(chan error, 1)
	go func() {
		var err error
		size, err = writeManifestTar(pw, listed)
		pw.CloseWithError(err)
		done <- err
	}()
	src := &countingReader{r: pr}
	before := e.state()
	var err error
	peak, alloc := measureHeap(func() {
		_, err = Import(context.Background(), e.srv, e.store, src, ImportOptions{Known: known("gen"), maxFiles: bound})
	})
	pr.CloseWithError(errors.New("the import is over"))
	<-done
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), fmt.Sprintf("more than %d files", bound)) {
		t.Fatalf("Import of a manifest listing %d files, bound %d: %v; want ErrRefused naming the bound", listed, bound, err)
	}
	t.Logf("a %d MB manifest of %d files, bound %d: refused after reading %d KB, peak heap %d KB, %d KB allocated",
		size>>20, listed, bound, src.n>>10, peak>>10, alloc>>10)
	if per := size / listed; src.n > (bound+bound/2)*per+1<<20 {
		t.Errorf("read %d bytes of the tar before refusing; want no more than the bound's %d entries of %d bytes", src.n, bound, per)
	}
	if peak > 16<<20 {
		t.Errorf("refusing %d files past a bound of %d: peak heap %d MB; want the bound's few MB", listed, bound, peak>>20)
	}
	if after := e.state(); after != before {
		t.Errorf("the refused import changed the cache:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// What a manifest costs while an import holds it: less than its own bytes,
// decoded a file at a time (before, the whole document was buffered, then
// decoded to strings and a map beside it: about ten times its size). Measured
// on files of the paths real exports have; at maxManifestFiles, the bound's
// cost follows.
func TestImportManifestCompact(t *testing.T) {
	const files = 40_000
	var tb bytes.Buffer
	size, err := writeManifestTar(&tb, files)
	if err != nil {
		t.Fatal(err)
	}

	// What the index keeps, collected garbage aside.
	tr := tar.NewReader(bytes.NewReader(tb.Bytes()))
	if _, err := tr.Next(); err != nil {
		t.Fatal(err)
	}
	manifest, _ := io.ReadAll(tr)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	x, err := readManifest(bytes.NewReader(manifest), maxManifestFiles)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	kept := int64(ms.HeapAlloc) - int64(base)
	runtime.KeepAlive(x)
	runtime.KeepAlive(manifest)
	t.Logf("a manifest of %d files, %d bytes (%d a file): the index keeps %d bytes a file; at the bound of %d files, %d MB",
		files, size, size/files, kept/files, maxManifestFiles, kept/files*maxManifestFiles>>20)
	if kept > size*3/4 {
		t.Errorf("the index of a %d-byte manifest of %d files keeps %d bytes (%d a file); want well under the manifest's size",
			size, files, kept, kept/files)
	}

	// The peak of a whole import, garbage not yet collected included: the
	// collector lets the heap grow to about twice what is kept between its
	// cycles.
	e := newEnvIn(t, chanYAML("gen"), memDir(t))
	peak, _ := measureHeap(func() {
		_, err = Import(context.Background(), e.srv, e.store, bytes.NewReader(tb.Bytes()), ImportOptions{Known: known("gen")})
	})
	// The tar holds the manifest alone: read whole, then refused for the
	// files it does not hold.
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not in the tar") {
		t.Fatalf("Import: %v, want ErrRefused for the files the tar does not hold", err)
	}
	t.Logf("Import's peak heap: %d KB, %d bytes a file", peak>>10, peak/files)
	if peak > 3*uint64(size) {
		t.Errorf("importing a %d-byte manifest of %d files took %d bytes of heap at its peak (%d a file); want less than three times its size",
			size, files, peak, peak/files)
	}
}

// failingReader reads r, then fails with err after n bytes, as a file on a
// failing disk does.
type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// The tar's own file failing to read (EIO from its disk) is not a bad tar: the
// error says what failed, and is no refusal. Wherever it comes, in the
// manifest, between entries or in one.
func TestImportTarReadErrorIsNotARefusal(t *testing.T) {
	pkgs := bigPkgs("linux-64", "io", 2, 64<<10)
	tb := genTar(t, "gen", pkgs)
	e := seeded(t, "", 0)
	for _, at := range []int{700, 3000, len(tb) / 2, len(tb) - 2048} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			eio := &fs.PathError{Op: "read", Path: "/media/export.tar", Err: syscall.EIO}
			before := e.state()
			_, err := Import(context.Background(), e.srv, e.store, &failingReader{bytes.NewReader(tb), at, eio}, ImportOptions{Known: known("gen")})
			if err == nil || errors.Is(err, ErrRefused) || !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "/media/export.tar") {
				t.Errorf("Import failing to read the tar at byte %d: %v; want the read error itself, no refusal", at, err)
			}
			if after := e.state(); after != before {
				t.Errorf("the failed import changed the cache:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}
