package mirror

// Tests of Import's staging and commit: bounded memory and file descriptors
// whatever a tar claims or holds, and an all-or-nothing commit, with a crash at
// each step played by copying the data directory as the commit stands there.
// The tars are generated: tiny packages with a matching repodata, so that a tar
// of thousands of packages is cheap to build.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/repodata"
)

// genPkg is a generated package: its place and its bytes.
type genPkg struct {
	subdir, name string
	data         []byte
}

func (p genPkg) filename() string { return p.name + "-1.0-0.tar.bz2" }

// record is the package's repodata record, with its true checksums and size.
func (p genPkg) record() map[string]any {
	return map[string]any{"name": p.name, "version": "1.0", "build": "0", "build_number": 0,
		"depends": []string{}, "subdir": p.subdir, "size": len(p.data), "sha256": sha(p.data), "md5": md5hex(p.data)}
}

func md5hex(b []byte) string {
	m := md5.Sum(b)
	return hex.EncodeToString(m[:])
}

// genPkgs makes n packages in subdir named <prefix><i>, each a few dozen bytes.
func genPkgs(subdir, prefix string, n int) []genPkg {
	out := make([]genPkg, n)
	for i := range out {
		name := fmt.Sprintf("%s%d", prefix, i)
		out[i] = genPkg{subdir, name, []byte(fmt.Sprintf("generated package %s/%s, not a real archive\n", subdir, name))}
	}
	return out
}

// genTar is an export tar of channel ch holding pkgs, laid out as Export lays it
// out: the manifest, channeldata.json, then per subdir repodata.json,
// repodata.json.zst and the packages, with each repodata listing exactly its
// subdir's packages.
func genTar(t testing.TB, ch string, pkgs []genPkg) []byte {
	t.Helper()
	bySub := map[string][]genPkg{}
	for _, p := range pkgs {
		bySub[p.subdir] = append(bySub[p.subdir], p)
	}
	var subs []string
	for s := range bySub {
		subs = append(subs, s)
	}
	sort.Strings(subs)
	var entries []entry
	add := func(name string, data []byte) { entries = append(entries, entry{name, data}) }
	cd, _ := json.Marshal(map[string]any{"channeldata_version": 1, "packages": map[string]any{}, "subdirs": subs})
	add(ch+"/channeldata.json", cd)
	for _, sub := range subs {
		recs := map[string]any{}
		for _, p := range bySub[sub] {
			recs[p.filename()] = p.record()
		}
		doc, _ := json.Marshal(map[string]any{"info": map[string]any{"subdir": sub}, "packages": recs,
			"packages.conda": map[string]any{}, "repodata_version": 1})
		var zst bytes.Buffer
		if err := repodata.Compress(&zst, bytes.NewReader(doc), "zst"); err != nil {
			t.Fatal(err)
		}
		add(ch+"/"+sub+"/repodata.json", doc)
		add(ch+"/"+sub+"/repodata.json.zst", zst.Bytes())
		for _, p := range bySub[sub] {
			add(ch+"/"+sub+"/"+p.filename(), p.data)
		}
	}
	m := Manifest{Format: manifestFormat, Version: 1, Created: time.Unix(0, 0).UTC(), Source: "generated"}
	for _, en := range entries {
		m.Files = append(m.Files, ManifestFile{Path: en.name, Size: int64(len(en.data)), SHA256: sha(en.data)})
	}
	return writeEntries(m, append([]entry{{ManifestName, nil}}, entries...))
}

func importTar(e *env, tb []byte, o ImportOptions) (*ImportReport, error) {
	if o.Known == nil {
		o.Known = known("gen")
	}
	return Import(context.Background(), e.srv, e.store, bytes.NewReader(tb), o)
}

// answers is what a client sees of channel gen: each subdir's records, and
// whether each package is served.
func (e *env) answers(pkgs []genPkg) string {
	e.t.Helper()
	var b strings.Builder
	for _, sub := range []string{"noarch", "linux-64", "osx-64"} {
		code, body := e.get("/gen/" + sub + "/repodata.json")
		var doc struct {
			Packages map[string]json.RawMessage `json:"packages"`
		}
		json.Unmarshal(body, &doc)
		var fns []string
		for fn := range doc.Packages {
			fns = append(fns, fn)
		}
		sort.Strings(fns)
		fmt.Fprintf(&b, "%s: %d %v\n", sub, code, fns)
	}
	for _, p := range pkgs {
		code, body := e.get("/gen/" + p.subdir + "/" + p.filename())
		fmt.Fprintf(&b, "%s/%s: %d %v\n", p.subdir, p.filename(), code, code == 200 && bytes.Equal(body, p.data))
	}
	return b.String()
}

// index is the package index and import states: what decides what is served.
func (e *env) index() string {
	var b strings.Builder
	e.store.Meta.Scan("", func(key string, val []byte) error {
		if strings.HasPrefix(key, "p/") || (strings.HasPrefix(key, "u/") && strings.HasSuffix(key, "|import")) {
			fmt.Fprintf(&b, "%s %s\n", key, val)
		}
		return nil
	})
	return b.String()
}

// A tar whose manifest and headers claim 4 GiB entries it does not hold is
// refused with no more memory than a few buffers: packages and repodata are
// streamed to disk while hashed, never buffered at their claimed size.
func TestImportFalseClaimsBoundedMemory(t *testing.T) {
	e := newEnv(t, chanYAML("gen"))
	const claim = 4 << 30
	body := bytes.Repeat([]byte("x"), 1<<20) // what the tar really holds of the entry
	// short is a tar whose entry name claims 4 GiB (manifest and tar header
	// agree) and ends after 1 MiB of it.
	short := func(name string) []byte {
		m := Manifest{Format: manifestFormat, Version: 1, Files: []ManifestFile{{Path: name, Size: claim, SHA256: strings.Repeat("0", 64)}}}
		mb, _ := json.Marshal(m)
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: ManifestName, Mode: 0o644, Size: int64(len(mb)), Typeflag: tar.TypeReg})
		tw.Write(mb)
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: claim, Typeflag: tar.TypeReg})
		tw.Write(body)
		tw.Flush()
		return buf.Bytes()
	}
	cases := []struct {
		name, entry string
		o           ImportOptions
		want        []string
	}{
		{"repodata past limits.max_repodata", "gen/linux-64/repodata.json", ImportOptions{}, []string{"gen/linux-64/repodata.json", "max_repodata"}},
		{"repodata under a raised limit, short", "gen/linux-64/repodata.json", ImportOptions{MaxRepodata: 8 << 30}, []string{"gen/linux-64/repodata.json", "truncated"}},
		{"repodata.json.zst, short", "gen/linux-64/repodata.json.zst", ImportOptions{MaxRepodata: 8 << 30}, []string{"gen/linux-64/repodata.json.zst", "truncated"}},
		{"package, short", "gen/linux-64/big-1.0-0.conda", ImportOptions{}, []string{"gen/linux-64/big-1.0-0.conda", "truncated"}},
		{"channeldata past limits.max_metadata", "gen/channeldata.json", ImportOptions{}, []string{"gen/channeldata.json", "max_metadata"}},
	}
	before := e.state()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := short(c.entry)
			peak, alloc := measureHeap(func() {
				_, err := importTar(e, tb, c.o)
				if !errors.Is(err, ErrRefused) {
					t.Fatalf("Import: %v, want ErrRefused", err)
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Import error %q does not name %q", err, w)
					}
				}
			})
			t.Logf("%s: peak heap in use %d KB above the start, %d KB allocated in all", c.name, peak>>10, alloc>>10)
			if peak > 100e6 || alloc > 100e6 {
				t.Errorf("a tar claiming a 4 GiB %s drove the heap %.0f MB up (%.0f MB allocated); want well under 100 MB",
					c.entry, float64(peak)/1e6, float64(alloc)/1e6)
			}
			if after := e.state(); after != before {
				t.Errorf("the refused import changed the cache:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// measureHeap runs fn and returns the highest HeapInuse seen above the level
// before it (sampled, so a lower bound of the true peak) and the bytes fn
// allocated in all (exact, and an upper bound of any peak fn caused).
func measureHeap(fn func()) (peak, alloc uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, total := ms.HeapInuse, ms.TotalAlloc
	var top atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > top.Load() {
				top.Store(ms.HeapInuse - base)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	wg.Wait()
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > base && ms.HeapInuse-base > top.Load() {
		top.Store(ms.HeapInuse - base)
	}
	return top.Load(), ms.TotalAlloc - total
}

// memDir is a data directory on a memory file system where there is one, else
// on disk: an import syncs every file it writes, which on a disk shared with
// other work costs more than all the rest, and is not what these tests measure.
func memDir(t testing.TB) string {
	dir, err := os.MkdirTemp("/dev/shm", "condaproxy-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(entries)
}

// An import of thousands of packages holds a constant number of files open:
// each package is staged in a closed file, not an open one.
func TestImportManyPackagesBoundedFDs(t *testing.T) {
	const n = 3000
	pkgs := genPkgs("linux-64", "p", n)
	pkgs = append(pkgs, genPkgs("noarch", "q", 10)...)
	tb := genTar(t, "gen", pkgs)
	e := newEnvIn(t, chanYAML("gen"), memDir(t))
	base := openFDs(t)
	var staged int
	var most atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the most seen during staging and commit; sampled
		defer wg.Done()
		for {
			if d, err := os.ReadDir("/proc/self/fd"); err == nil && int64(len(d)) > most.Load() {
				most.Store(int64(len(d)))
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	rep, err := importTar(e, tb, ImportOptions{fault: func(step string) error {
		if step == "blobs" { // every package staged and placed, nothing committed yet
			staged = openFDs(t)
		}
		return nil
	}})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Packages != len(pkgs) {
		t.Errorf("imported %d packages, want %d", rep.Packages, len(pkgs))
	}
	t.Logf("%d packages: %d files open before the import, %d with all of them staged, at most %d seen", len(pkgs), base, staged, most.Load())
	if staged-base > 16 || most.Load()-int64(base) > 32 {
		t.Errorf("importing %d packages: %d files open with them staged, %d at most, %d before; want a constant few more",
			len(pkgs), staged, most.Load(), base)
	}
	for _, p := range []genPkg{pkgs[0], pkgs[n-1], pkgs[n]} {
		if code, body := e.get("/gen/" + p.subdir + "/" + p.filename()); code != 200 || !bytes.Equal(body, p.data) {
			t.Errorf("GET %s/%s after the import: %d", p.subdir, p.filename(), code)
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(e.data, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ holds %d files after the import", len(tmp))
	}
}

// copyTree copies a data directory as it stands: what a process killed at this
// instant leaves on disk (Pebble's synced writes are in its WAL).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) { // removed while walking
				return nil
			}
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A commit stopped at any step, by an error or a crash, leaves the previous
// import served and none of the new one; stopped after its metadata batch, all
// of the new one. Never a mix of subdirs.
func TestImportCommitAllOrNothing(t *testing.T) {
	old := append(genPkgs("linux-64", "a", 3), genPkgs("noarch", "a", 2)...)
	newer := append(append(genPkgs("linux-64", "b", 3), genPkgs("noarch", "b", 2)...), genPkgs("osx-64", "b", 2)...)
	all := append(append([]genPkg(nil), old...), newer...)
	oldTar, newTar := genTar(t, "gen", old), genTar(t, "gen", newer)
	yaml := chanYAML("gen")

	// The two states a commit may leave.
	ref := newEnv(t, yaml)
	if _, err := importTar(ref, oldTar, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	oldAnswers, oldIndex := ref.answers(all), ref.index()
	if _, err := importTar(ref, newTar, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	newAnswers, newIndex := ref.answers(all), ref.index()
	if oldAnswers == newAnswers || !strings.Contains(newAnswers, "osx-64: 200 [b0-1.0-0.tar.bz2 b1-1.0-0.tar.bz2]") ||
		!strings.Contains(newAnswers, "linux-64: 200 [a0-1.0-0.tar.bz2 a1-1.0-0.tar.bz2 a2-1.0-0.tar.bz2 b0-1.0-0.tar.bz2") {
		t.Fatalf("the reference imports: the second should add to the first\nold:\n%s\nnew:\n%s", oldAnswers, newAnswers)
	}
	ref.close()

	// CommitImport's steps, in order: the subdirs sorted, then the blobs, then
	// the batch.
	steps := []string{"subdir gen/linux-64", "subdir gen/noarch", "subdir gen/osx-64", "blobs", "committed"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			e := newEnv(t, yaml)
			if _, err := importTar(e, oldTar, ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			e.answers(all) // answers built from the old import, to be replaced
			before := e.state()
			crashed := filepath.Join(t.TempDir(), "data")
			injected := errors.New("injected at " + step)
			_, err := importTar(e, newTar, ImportOptions{fault: func(s string) error {
				if s != step {
					return nil
				}
				copyTree(t, e.data, crashed)
				return injected
			}})
			if !errors.Is(err, injected) {
				t.Fatalf("Import: %v, want the injected error", err)
			}
			wantAnswers, wantIndex := oldAnswers, oldIndex
			if step == "committed" {
				// The batch is durable: the import happened, whatever the error
				// after it says. (This process stopped before dropping its
				// answers; the crash copy below shows what a restart serves.)
				wantAnswers, wantIndex = newAnswers, newIndex
			} else {
				if after := e.state(); after != before {
					t.Errorf("an error at %q changed the cache:\nbefore:\n%s\nafter:\n%s", step, before, after)
				}
				if got := e.answers(all); got != wantAnswers {
					t.Errorf("after an error at %q the proxy answers\n%s\nwant the old import's\n%s", step, got, wantAnswers)
				}
			}
			if got := stripTimes(e.index()); got != stripTimes(wantIndex) {
				t.Errorf("after an error at %q the index is\n%s\nwant\n%s", step, got, wantIndex)
			}
			e.close()

			// The data directory as a crash at that step would leave it.
			c := &env{t: t, data: crashed, cfg: e.cfg}
			c.open()
			defer c.close()
			if got := c.answers(all); got != wantAnswers {
				t.Errorf("a crash at %q leaves a proxy that answers\n%s\nwant\n%s", step, got, wantAnswers)
			}
			if got := stripTimes(c.index()); got != stripTimes(wantIndex) {
				t.Errorf("a crash at %q leaves the index\n%s\nwant\n%s", step, got, wantIndex)
			}
			if tmp, _ := os.ReadDir(filepath.Join(crashed, "tmp")); len(tmp) != 0 {
				t.Errorf("after a crash at %q and a restart, tmp/ holds %d files", step, len(tmp))
			}
			// Importing the tar again after the crash completes it.
			if _, err := importTar(c, newTar, ImportOptions{}); err != nil {
				t.Fatalf("importing again after a crash at %q: %v", step, err)
			}
			if got := c.answers(all); got != newAnswers {
				t.Errorf("importing again after a crash at %q: the proxy answers\n%s\nwant\n%s", step, got, newAnswers)
			}
			var imported []string
			for _, en := range mustReadDir(t, filepath.Join(crashed, "files")) {
				if strings.HasPrefix(en, "import-") {
					imported = append(imported, en)
				}
			}
			if len(imported) != 3 {
				t.Errorf("after importing again, files/ holds imported repodata %v; want one a subdir", imported)
			}
		})
	}

	// A real failure in the second subdir: its previous import's file no longer
	// parses. The first subdir's work is undone with the rest.
	t.Run("second subdir fails", func(t *testing.T) {
		e := newEnv(t, yaml)
		if _, err := importTar(e, oldTar, ImportOptions{}); err != nil {
			t.Fatal(err)
		}
		var st struct{ File string }
		if ok, _ := e.store.Meta.Get("u/gen|noarch|import", &st); !ok {
			t.Fatal("no import state for gen/noarch")
		}
		if err := os.WriteFile(filepath.Join(e.data, "files", st.File), []byte(`{"packages": {`), 0o644); err != nil {
			t.Fatal(err)
		}
		before, index := e.state(), e.index()
		_, err := importTar(e, newTar, ImportOptions{})
		if err == nil || !strings.Contains(err.Error(), "gen/noarch") {
			t.Fatalf("Import over a damaged earlier import of gen/noarch: %v, want an error naming it", err)
		}
		if after := e.state(); after != before {
			t.Errorf("the failed import changed the cache:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if got := e.index(); got != index {
			t.Errorf("the failed import changed the index:\n%s\nwant\n%s", got, index)
		}
	})
}

// stripTimes drops the times an index entry carries (when it was imported), so
// two imports of the same tar compare equal.
func stripTimes(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		key, val, _ := strings.Cut(line, " ")
		var m map[string]any
		if json.Unmarshal([]byte(val), &m) == nil {
			delete(m, "cached_at")
			delete(m, "checked_at")
			delete(m, "file") // a new name each import
			v, _ := json.Marshal(m)
			val = string(v)
		}
		fmt.Fprintf(&b, "%s %s\n", key, val)
	}
	return b.String()
}

func mustReadDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// A repodata.json that does not parse, or nests past repodata.MaxDepth, refuses
// the import whole, naming the entry; the manifest agrees with the bad bytes, so
// only the parse can catch them.
func TestImportRefusesUnparsableRepodata(t *testing.T) {
	pkgs := append(genPkgs("linux-64", "r", 2), genPkgs("noarch", "r", 1)...)
	good := genTar(t, "gen", pkgs)
	const victim = "gen/noarch/repodata.json"
	with := func(doc []byte) []byte {
		m, entries := readEntries(t, good)
		for i := range entries {
			if entries[i].name == victim {
				entries[i].data = doc
			}
		}
		for i := range m.Files {
			if m.Files[i].Path == victim {
				m.Files[i].Size, m.Files[i].SHA256 = int64(len(doc)), sha(doc)
			}
		}
		return writeEntries(m, entries)
	}
	_, entries := readEntries(t, good)
	var doc []byte
	for _, en := range entries {
		if en.name == victim {
			doc = en.data
		}
	}
	deep := strings.Repeat("[", repodata.MaxDepth+1) + strings.Repeat("]", repodata.MaxDepth+1)
	cases := map[string][]byte{
		"not JSON":         []byte("this is not repodata"),
		"cut short":        doc[:len(doc)/2],
		"nested too deep":  []byte(`{"info": {"subdir": "noarch"}, "extra": ` + deep + `}`),
		"record too deep":  bytes.Replace(doc, []byte(`"depends":[]`), []byte(`"depends":[],"x":`+deep), 1),
		"record no name":   bytes.Replace(doc, []byte(`"name":"r0",`), nil, 1),
		"a path as a name": bytes.Replace(doc, []byte(`"r0-1.0-0.tar.bz2"`), []byte(`"../r0-1.0-0.tar.bz2"`), 1),
	}
	e := newEnv(t, chanYAML("gen"))
	before := e.state()
	for name, d := range cases {
		t.Run(name, func(t *testing.T) {
			if bytes.Equal(d, doc) {
				t.Fatal("the case did not change the document")
			}
			_, err := importTar(e, with(d), ImportOptions{})
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), victim) {
				t.Errorf("Import: %v, want ErrRefused naming %s", err, victim)
			}
			if after := e.state(); after != before {
				t.Errorf("the refused import changed the cache:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
	if _, err := importTar(e, good, ImportOptions{}); err != nil {
		t.Errorf("the intact tar: %v", err)
	}
}

// FuzzImport: whatever the bytes, Import does not panic, and either succeeds or
// leaves the cache as it was; after a success every index entry has its blob.
// One store serves every iteration of a worker (opening Pebble costs more than
// an import of a small tar); the limits are small so that claims cost nothing.
func FuzzImport(f *testing.F) {
	pkgs := append(genPkgs("linux-64", "f", 2), genPkgs("noarch", "f", 1)...)
	seed := genTar(f, "gen", pkgs)
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add(seed[:len(seed)-1024]) // the end-of-archive blocks and a little more gone
	for _, off := range []int{100, 600, 1500, len(seed) / 2, len(seed) - 1100} {
		b := bytes.Clone(seed)
		b[off] ^= 0x20
		f.Add(b)
	}
	// The same packages under another channel, and a second generation.
	f.Add(genTar(f, "other", pkgs))
	f.Add(genTar(f, "gen", append(pkgs, genPkgs("osx-64", "g", 1)...)))
	e := newEnvIn(f, chanYAML("gen")+"  - name: other\n", memDir(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		before := e.state()
		_, err := Import(context.Background(), e.srv, e.store, bytes.NewReader(data),
			ImportOptions{Known: known("gen", "other"), MaxRepodata: 1 << 20, MaxMetadata: 64 << 10})
		if err != nil {
			if after := e.state(); after != before {
				t.Fatalf("a failed import (%v) changed the cache:\nbefore:\n%s\nafter:\n%s", err, before, after)
			}
			return
		}
		e.store.Meta.Scan("p/", func(key string, val []byte) error {
			var pe struct{ SHA256 string }
			json.Unmarshal(val, &pe)
			if !e.store.Has(pe.SHA256) {
				t.Errorf("after a successful import, %s names blob %s, which is not stored", key, pe.SHA256)
			}
			return nil
		})
	})
}
