package faults

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/internal/testproc"
)

// The import rounds of TestSIGKILLAtRandomPoints. Every round that imports
// brings a tar of its own, a new version of the same filenames in every subdir
// of the channel (same names, other bytes): the served repodata tells, subdir by
// subdir, which import its records come from. Each version's bytes are new to
// the data directory, and small: a few hundred KiB of served imports beside
// what upstream lists stay well under max_size, so none is evicted (an
// imported package has no upstream to come back from).

const (
	importPkgs    = 24      // packages a tar brings to each subdir
	importPkgSize = 1 << 10 // bytes, about: an import's time goes to files, not bytes
)

// The stages of an import a kill can land in, as its data directory shows them.
const (
	stageStarting  = "starting"         // nothing staged: exec, opening the store, the manifest
	stageStaging   = "staging"          // some of the tar's files staged in tmp/
	stageVerifying = "verifying"        // every file staged, no subdir's repodata written
	stageRepodata  = "writing repodata" // the commit has written some subdir's repodata file
	stagePlacing   = "placing packages" // the commit has renamed some staged packages into blobs/
	stageCommitted = "after the commit" // the new import is served
	stageDone      = "done"             // ended by itself before the kill
)

// importTargets are where killImport aims. "any moment" is a random time within
// a whole import's duration.
var importTargets = []string{stageStarting, stageStaging, stageRepodata, stagePlacing, stageCommitted, "any moment"}

// imports are the tars the rounds import and what the data directory serves of
// them.
type imports struct {
	ch      *channel
	dir     string
	subdirs []string
	tars    map[int]string  // version → its tar; version 0 is nothing imported
	made    int             // the last version made
	files   map[string]*pkg // "subdir/filename/sha256" → the file of one version
	version map[string]int  // sha256 → its version
	staged  int             // the files an import stages: packages, and a repodata.json a subdir
	took    time.Duration   // the longest import run to its end (tryWhole)

	cur     int            // the version every subdir served at the last check
	pending *importRound   // the import of this round, until checked
	landed  map[string]int // where the kills of imports landed
	aims    []string       // the targets of the next rounds
}

// importRound is one import a round ran, and what its data directory held when
// it died.
type importRound struct {
	from, to int
	target   string
	exited   bool // ended by itself (so it must have succeeded)
	all      int  // the files it stages, staged all at once
	tmp      int  // staged files in tmp/ after its death
	wrote    int  // subdir repodata files it had written (files/import-*)
}

func versionName(v int) string {
	if v == 0 {
		return "none"
	}
	return fmt.Sprintf("v%d", v)
}

// newImports makes the tars of the rounds in dir, as they are asked for.
func newImports(ch *channel, dir string) *imports {
	return &imports{ch: ch, dir: dir, subdirs: ch.subdirs, tars: map[int]string{}, files: map[string]*pkg{},
		version: map[string]int{}, landed: map[string]int{}, staged: len(ch.subdirs) * (importPkgs + 1)}
}

// fresh writes the tar of a version never made before and returns it. Its
// files are bytes the data directory may rightly hold, and the channel is told
// so.
func (im *imports) fresh(t *testing.T) int {
	t.Helper()
	im.made++
	v := im.made
	var pkgs []*pkg
	for si, sub := range im.subdirs {
		for j := range importPkgs {
			data := synthetic(uint64(1_000_000+v*10_000+si*100+j), importPkgSize+v*16+j)
			p := makePkg(sub, fmt.Sprintf("imported%02d", j), "1.0", data)
			pkgs = append(pkgs, p)
			im.files[sub+"/"+p.fn+"/"+p.sha] = p
			im.version[p.sha] = v
		}
	}
	im.tars[v] = filepath.Join(im.dir, fmt.Sprintf("import-v%d.tar", v))
	im.ch.also(writeImportTar(t, im.tars[v], "fault", im.subdirs, pkgs))
	return v
}

// writeImportTar writes an export tar of channel laid out as `condaproxy export`
// lays it out (the manifest, channeldata.json, then each subdir's repodata.json,
// repodata.json.zst and packages) and returns the sha256 and size of every file.
func writeImportTar(t *testing.T, path, channel string, subdirs []string, pkgs []*pkg) map[string]int64 {
	t.Helper()
	type file struct {
		name string
		data []byte
	}
	cd, _ := json.Marshal(map[string]any{"channeldata_version": 1, "packages": map[string]any{}, "subdirs": subdirs})
	files := []file{{channel + "/channeldata.json", cd}}
	for _, sub := range subdirs {
		recs := map[string]any{}
		var its []*pkg
		for _, p := range pkgs {
			if p.sub == sub {
				recs[p.fn] = p.rec
				its = append(its, p)
			}
		}
		doc, _ := json.Marshal(map[string]any{"info": map[string]any{"subdir": sub}, "repodata_version": 1,
			"packages": recs, "packages.conda": map[string]any{}})
		dir := channel + "/" + sub + "/"
		files = append(files, file{dir + "repodata.json", doc}, file{dir + "repodata.json.zst", zenc.EncodeAll(doc, nil)})
		for _, p := range its {
			files = append(files, file{dir + p.fn, p.data})
		}
	}
	type entry struct {
		Path   string `json:"path"`
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	}
	m := struct {
		Format  string    `json:"format"`
		Version int       `json:"version"`
		Created time.Time `json:"created"`
		Source  string    `json:"source"`
		Files   []entry   `json:"files"`
	}{Format: "condaproxy-export", Version: 1, Created: time.Now().UTC(), Source: "faults test"}
	sizes := map[string]int64{}
	for _, f := range files {
		m.Files = append(m.Files, entry{f.name, int64(len(f.data)), sha256hex(f.data)})
		sizes[sha256hex(f.data)] = int64(len(f.data))
	}
	mb, _ := json.MarshalIndent(m, "", " ")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	for _, f := range append([]file{{"manifest.json", mb}}, files...) {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return sizes
}

// tryWhole imports both tars to their end into a directory of its own, one
// over the other, and checks what is served then: a failed import in the
// rounds is the kill's doing. It times them, for kills aimed at any moment.
func (im *imports) tryWhole(t *testing.T, ch *channel, work string) {
	t.Helper()
	s := setup{path: filepath.Join(work, "scratch.yaml"), data: filepath.Join(work, "scratch"),
		upstream: ch.srv.URL, cache: killCache}
	s.write(t, testproc.FreePort(t))
	var took []time.Duration
	var last int
	for range 2 {
		v := im.fresh(t)
		last = v
		began := time.Now()
		p := startProc(t, "import", "-c", s.path, im.tars[v])
		if err := p.Wait(time.Minute); err != nil {
			t.Fatalf("import of %s into a directory of its own: %v\n%s", versionName(v), err, p.Out.String())
		}
		took = append(took, time.Since(began))
		im.took = max(im.took, time.Since(began))
	}
	srv := startServer(t, s)
	if v, detail := im.served(t, srv.base); v != last {
		t.Fatalf("after importing two tars to their end, one over the other, the subdirs serve: %s; want %s in every one",
			detail, versionName(last))
	}
	checkServes(t, srv.base, s.data, ch, im)
	if err := srv.Stop(35 * time.Second); err != nil {
		t.Fatalf("scratch server: %v\n%s", err, srv.Out.String())
	}
	t.Logf("an import of %d subdirs of %d packages, run to its end: %v into an empty directory, %v over the other",
		len(im.subdirs), importPkgs, took[0].Round(time.Millisecond), took[1].Round(time.Millisecond))
}

// file is the file of subdir/fn whose sha256 is sha, in either tar, or nil.
func (im *imports) file(sub, fn, sha string) *pkg {
	return im.files[sub+"/"+fn+"/"+sha]
}

// served reads every subdir's repodata.json at base and says which import it
// lists: v when every subdir lists all of a tar's files with version v's
// records, 0 when none lists any, -1 when they are a mix (within a subdir, or
// one subdir from another); detail says what each subdir lists.
func (im *imports) served(t *testing.T, base string) (v int, detail string) {
	t.Helper()
	var parts []string
	v = -2 // not yet seen
	for _, sub := range im.subdirs {
		body := mustGet(t, base+"/fault/"+sub+"/repodata.json")
		doc, err := decodeRepodata("repodata.json", body)
		if err != nil {
			t.Errorf("GET /fault/%s/repodata.json: %v", sub, err)
			return -1, "unreadable"
		}
		count := map[int]int{} // version → records of it; -1: an imported name with a record of none
		for fn, rec := range doc.records() {
			if !strings.HasPrefix(fn, "imported") {
				continue
			}
			if w, ok := im.version[rec.SHA256]; ok {
				count[w]++
			} else {
				count[-1]++
			}
		}
		sv := -1
		var of []string
		for _, w := range slices.Sorted(maps.Keys(count)) {
			of = append(of, fmt.Sprintf("%d of %s", count[w], versionName(w)))
			if len(count) == 1 && w > 0 && count[w] == importPkgs {
				sv = w
			}
		}
		if len(count) == 0 {
			sv, of = 0, []string{"none"}
		}
		parts = append(parts, sub+": "+strings.Join(of, ", "))
		if v == -2 {
			v = sv
		} else if v != sv {
			v = -1
		}
	}
	if v == -2 {
		v = -1
	}
	return v, strings.Join(parts, "; ")
}

// check reads what the server at base serves of the imports: all of one
// version in every subdir, the one served before, or the one this round's
// import brought (it, if the import ended by itself). It records where the
// round's kill landed and returns it for the round's description.
func (im *imports) check(t *testing.T, base string) string {
	t.Helper()
	got, detail := im.served(t, base)
	r := im.pending
	im.pending = nil
	want := []int{im.cur}
	switch {
	case r != nil && r.exited:
		want = []int{r.to}
	case r != nil:
		want = []int{r.from, r.to}
	}
	if !slices.Contains(want, got) {
		names := make([]string, len(want))
		for i, w := range want {
			names[i] = versionName(w)
		}
		what := "a round with no import"
		if r != nil {
			what = fmt.Sprintf("an import of %s over %s aimed at %q (ended by itself: %v; %d staged files in tmp/, %d subdir repodata written)",
				versionName(r.to), versionName(r.from), r.target, r.exited, r.tmp, r.wrote)
		}
		t.Errorf("after %s, the subdirs serve %s; want every subdir serving all of one import, %s: a mix is a commit that was not all or nothing",
			what, detail, strings.Join(names, " or "))
		return "; the imports served are a mix"
	}
	im.cur = got
	if r == nil {
		return ""
	}
	stage := r.stage(got)
	if r.target != "" { // a kill was aimed, not an import run to its end
		im.landed[stage]++
	}
	return fmt.Sprintf("; the import aimed at %q died %s, %s served", r.target, stage, versionName(got))
}

// stage is where the import died, from what its data directory held then and
// which import is served after it.
func (r *importRound) stage(served int) string {
	switch {
	case r.exited:
		return stageDone
	case served == r.to:
		return stageCommitted
	case r.wrote > 0 && r.tmp < r.all:
		return stagePlacing
	case r.wrote > 0:
		return stageRepodata
	case r.tmp >= r.all:
		return stageVerifying
	case r.tmp > 0:
		return stageStaging
	}
	return stageStarting
}

// killImport starts `condaproxy import` of a tar never imported before and kills
// it at the next target (each in turn, in a random order), watching the data
// directory to get there; then it notes what the directory holds.
func killImport(t *testing.T, rng *rand.Rand, s setup, im *imports) (kind, what string) {
	t.Helper()
	next := im.fresh(t)
	before := importFiles(t, s.data)
	if len(im.aims) == 0 {
		// Every target once, in a random order, then again: each is aimed at
		// whatever the number of import rounds the seed gives.
		for _, i := range rng.Perm(len(importTargets)) {
			im.aims = append(im.aims, importTargets[i])
		}
	}
	r := &importRound{from: im.cur, to: next, all: im.staged, target: im.aims[0]}
	im.aims = im.aims[1:]
	im.pending = r
	s.write(t, testproc.FreePort(t))
	p := startProc(t, "import", "-c", s.path, im.tars[next])
	reached := im.watch(t, rng, p, s.data, before, r.target)
	p.Kill()
	var ended *exec.ExitError
	switch {
	case p.Err() == nil:
		r.exited = true
		return "import", fmt.Sprintf("import of %s over %s, aimed at %q, ended by itself (%s)",
			versionName(next), versionName(r.from), r.target, reached)
	case errors.As(p.Err(), &ended) && ended.ExitCode() >= 0:
		// It finished before the kill, and failed: an import of a whole tar
		// has no reason to.
		t.Errorf("import of %s ended by itself with %v:\n%s", versionName(next), p.Err(), p.Out.String())
	}
	r.tmp = stagedFiles(t, s.data)
	for name := range importFiles(t, s.data) {
		if !before[name] {
			r.wrote++
		}
	}
	return "import", fmt.Sprintf("import of %s over %s killed aiming at %q (%s)", versionName(next), versionName(r.from), r.target, reached)
}

// watch returns when p, an import, has reached target, as the data directory
// shows it: starting, after a random few ms; staging, once a random number of
// its files is staged in tmp/; writing repodata, once it has written a random
// number of subdirs' repodata files; placing packages, once a random number of
// its staged packages has left tmp/ for blobs/; after the commit, once the
// files the previous import's state named are removed (which follows the
// commit), or, with no previous import, once its staged files are all gone
// again; any moment, after a random time within a whole import's. Or when p
// ends. It says what it saw.
func (im *imports) watch(t *testing.T, rng *rand.Rand, p *proc, data string, before map[string]bool, target string) string {
	t.Helper()
	began := time.Now()
	switch target {
	case stageStarting:
		d := time.Duration(rng.IntN(40)) * time.Millisecond
		time.Sleep(d)
		return fmt.Sprintf("after %v", d)
	case "any moment":
		d := time.Duration(rng.Int64N(int64(im.took) * 5 / 4))
		time.Sleep(d)
		return fmt.Sprintf("after %v", d.Round(time.Millisecond))
	}
	staged := 1 + rng.IntN(im.staged)
	written := 1 + rng.IntN(len(im.subdirs))
	placed := 1 + rng.IntN(importPkgs*len(im.subdirs))
	most := 0
	for !p.Exited() && time.Since(began) < 30*time.Second {
		n := stagedFiles(t, data)
		most = max(most, n)
		wrote, gone := 0, 0
		if target != stageStaging {
			now := importFiles(t, data)
			for name := range now {
				if !before[name] {
					wrote++
				}
			}
			for name := range before {
				if !now[name] {
					gone++
				}
			}
		}
		switch {
		case target == stageStaging && n >= staged:
			return fmt.Sprintf("%d files staged, after %v", n, time.Since(began).Round(time.Millisecond))
		case target == stageRepodata && wrote >= written:
			return fmt.Sprintf("%d subdirs' repodata written, after %v", wrote, time.Since(began).Round(time.Millisecond))
		case target == stagePlacing && wrote > 0 && most-n >= placed:
			return fmt.Sprintf("%d packages placed, after %v", most-n, time.Since(began).Round(time.Millisecond))
		case target == stageCommitted && wrote > 0 && (gone > 0 || len(before) == 0 && n == 0):
			return fmt.Sprintf("%d superseded repodata files removed, %d staged files left, after %v", gone, n, time.Since(began).Round(time.Millisecond))
		}
		time.Sleep(200 * time.Microsecond)
	}
	return fmt.Sprintf("target not seen before its end, after %v", time.Since(began).Round(time.Millisecond))
}

// stagedFiles counts the files an import stages in <data>/tmp: fill-*.
func stagedFiles(t *testing.T, data string) int {
	n := 0
	for _, name := range tmpEntries(t, data) {
		if strings.HasPrefix(name, "fill-") {
			n++
		}
	}
	return n
}

// importFiles is the set of a subdir's imported repodata files in
// <data>/files: import-*, one a subdir for what is served, more while a commit
// writes new ones.
func importFiles(t *testing.T, data string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(data, "files"))
	out := map[string]bool{}
	if err != nil {
		return out // not yet made
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "import-") {
			out[e.Name()] = true
		}
	}
	return out
}
