package repodata

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// sharedTestdata is the real data beside the repository (see internal/testdata),
// or "" when there is none: fuzz seeds are a bonus, so their absence skips them
// instead of failing the target.
func sharedTestdata() string {
	if d := os.Getenv("CONDAPROXY_TESTDATA"); d != "" {
		return d
	}
	wd, _ := os.Getwd()
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			td := filepath.Join(dir, "..", "shared", "testdata")
			if _, err := os.Stat(td); err != nil {
				return ""
			}
			return td
		}
		if filepath.Dir(dir) == dir {
			return ""
		}
	}
}

// realSeeds returns documents made from the real repodata of the shared testdata:
// small files whole, and of each large one its head with the first few records
// of each section, re-encoded (a fuzzer mutates a few kilobytes usefully, not
// megabytes).
func realSeeds(f *testing.F) [][]byte {
	td := sharedTestdata()
	if td == "" {
		f.Log("no shared testdata: fuzzing from the built-in seeds only")
		return nil
	}
	var files []string
	for _, pattern := range []string{
		"cf-subchannel-py39/*/repodata.json",
		"conda_format_repo/*/repodata.json",
		"conda_format_repo/*/current_repodata.json",
		"conda_format_repo/channeldata.json",
		"conda-repodata/*.json",
		"rattler/*.json",
		"mamba/*.json",
	} {
		m, _ := filepath.Glob(filepath.Join(td, pattern))
		files = append(files, m...)
	}
	var seeds [][]byte
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		if len(data) <= 16<<10 {
			seeds = append(seeds, data)
			continue
		}
		d, err := Parse(data)
		if err != nil {
			f.Logf("seed %s: %v", file, err)
			continue
		}
		var some []*Record
		per := map[bool]int{}
		for _, r := range d.Records {
			if per[r.Conda] < 6 {
				per[r.Conda]++
				some = append(some, r)
			}
		}
		d.Records = some
		var buf bytes.Buffer
		if err := Encode(&buf, d, nil); err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, buf.Bytes())
	}
	return seeds
}

// FuzzScan runs every reader of the package on the same bytes. Invariants: no
// panic; every refusal is a *SyntaxError (a caller tells bad upstream data from
// its own errors by it); a document Scan accepts is valid JSON no deeper than
// MaxDepth, and Parse, ScanSection and FilterPackages agree with Scan on it; it
// encodes to a document that scans the same.
func FuzzScan(f *testing.F) {
	for _, s := range realSeeds(f) {
		f.Add(s)
	}
	for _, s := range []string{
		`{"info":{"subdir":"noarch","base_url":"https://example.invalid/x/"},"packages":{"a-1-0.tar.bz2":{"name":"a","version":"1","build":"0","depends":["python >=3.9","b"],"constrains":[],"size":3,"timestamp":1.7e12,"noarch":true}},"packages.conda":{"b-2-py_0.conda":{"name":"b","version":"2","build":"py_0","build_number":0,"sha256":"00","md5":"11","license":"MIT","license_family":"MIT","subdir":"noarch","noarch":"python"}},"removed":["c-1-0.tar.bz2"],"repodata_version":2,"_etag":"e","signatures":{"a-1-0.tar.bz2":{}}}`,
		`{"packages":{"a-1-0.conda":{"name":"a\u00e9\"","version":"1","build":"0"}},"packages.conda":null}`,
		`{"info":{},"packages":{"a-1-0.tar.bz2":{"run_exports":{"weak":["a >=1"],"strong":[]}}},"packages.conda":{},"run_exports_version":1}`,
		`{}`, ` {"packages" : { } } `, `{"a":[1,-2.5e3,true,false,null,"x",{}]}`,
		`{"packages":{},"packages":{}}`, `[1,2]`, `{"packages":{"../a-1-0.conda":{"name":"a","version":"1","build":"0"}}}`,
		`{"x":` + string(deep(MaxDepth-1)) + `}`,
		`{"x":` + string(deep(MaxDepth)) + `}`,
		`{"packages":{"a-1-0.conda":{"name":"a","version":"1","build":"0","x":` + string(deep(MaxDepth)) + `}}}`,
		`{"x":` + string(deep(1000)) + `}`,
		"{\"info\":{\"subdir\":\"\xff\"}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		records := func(scan func(visit func(*Record) error) (*Doc, error)) ([]Record, *Doc, error) {
			var out []Record
			d, err := scan(func(r *Record) error {
				cp := *r
				cp.Depends = append([]string(nil), r.Depends...)
				cp.Constrains = append([]string(nil), r.Constrains...)
				out = append(out, cp)
				return nil
			})
			return out, d, err
		}
		all, head, err := records(func(v func(*Record) error) (*Doc, error) { return Scan(data, v) })
		_, perr := Parse(data)
		var headErr error
		if _, headErr = Scan(data, nil); err == nil && headErr != nil {
			t.Fatalf("Scan accepts but Scan without visit refuses: %v", headErr)
		}
		tarBz2, _, tberr := records(func(v func(*Record) error) (*Doc, error) { return ScanSection(data, false, v) })
		conda, _, cerr := records(func(v func(*Record) error) (*Doc, error) { return ScanSection(data, true, v) })
		var filtered bytes.Buffer
		ferr := FilterPackages(&filtered, data, func(string) bool { return true })
		for _, e := range []error{err, perr, headErr, tberr, cerr, ferr} {
			var se *SyntaxError
			if e != nil && !errors.As(e, &se) {
				t.Fatalf("refused with %T %v, want a *SyntaxError", e, e)
			}
		}
		if (err == nil) != (perr == nil) {
			t.Fatalf("Scan says %v, Parse says %v", err, perr)
		}
		if ferr == nil && !json.Valid(filtered.Bytes()) {
			t.Fatalf("FilterPackages accepted %q and wrote invalid JSON %q", data, filtered.Bytes())
		}
		if err != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("Scan accepted invalid JSON %q", data)
		}
		if tberr != nil || cerr != nil || ferr != nil {
			t.Fatalf("Scan accepts, but ScanSection says %v, %v and FilterPackages %v", tberr, cerr, ferr)
		}
		var split []Record
		for _, r := range all {
			if !r.Conda {
				split = append(split, r)
			}
		}
		for _, r := range all {
			if r.Conda {
				split = append(split, r)
			}
		}
		if !reflect.DeepEqual(append(tarBz2, conda...), split) {
			t.Fatalf("ScanSection's records differ from Scan's")
		}

		// Re-encoded, and passed through FilterPackages, the document scans the same.
		var enc bytes.Buffer
		head.Records = nil
		e := NewEncoder(&enc, head)
		for _, conda := range []bool{false, true} {
			e.Section(conda)
			for i := range all {
				if all[i].Conda == conda {
					e.Record(&all[i])
				}
			}
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		again, head2, err := records(func(v func(*Record) error) (*Doc, error) { return Scan(enc.Bytes(), v) })
		if err != nil {
			t.Fatalf("re-encoded document refused: %v\n%s", err, enc.Bytes())
		}
		if !reflect.DeepEqual(again, split) {
			t.Fatalf("re-encoded document scans differently:\n%s", enc.Bytes())
		}
		head.BaseURL = "" // Encode drops it on purpose
		if head.Version == 0 {
			head.Version = 1 // and writes the current version when there was none
		}
		if !reflect.DeepEqual(head, head2) {
			t.Fatalf("re-encoded head differs: %+v, then %+v", head, head2)
		}
		fromFilter, _, err := records(func(v func(*Record) error) (*Doc, error) { return Scan(filtered.Bytes(), v) })
		if err != nil {
			t.Fatalf("FilterPackages output refused: %v\n%s", err, filtered.Bytes())
		}
		if !reflect.DeepEqual(fromFilter, all) {
			t.Fatalf("FilterPackages keeping everything changed the records:\n%s", filtered.Bytes())
		}
	})
}
