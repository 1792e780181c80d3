package repodata

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/condaproxy/condaproxy/internal/testdata"
)

// realFiles lists every plain repodata.json in the shared testdata.
func realFiles(t *testing.T) []string {
	td := testdata.Dir(t)
	files, _ := filepath.Glob(filepath.Join(td, "cf-subchannel-py39", "*", "repodata.json"))
	more, _ := filepath.Glob(filepath.Join(td, "conda_format_repo", "*", "repodata.json"))
	files = append(files, more...)
	files = append(files,
		filepath.Join(td, "conda-repodata", "r_linux-64.json"),
		filepath.Join(td, "conda-repodata", "main_noarch.json"),
		filepath.Join(td, "rattler", "pytorch_linux-64_repodata.json"),
		filepath.Join(td, "mamba", "sudoku.json"))
	if len(files) < 15 {
		t.Fatalf("found only %d repodata files in %s", len(files), td)
	}
	return files
}

// normalized decodes a document with encoding/json and drops what Encode drops on
// purpose (info.base_url, top-level keys starting with '_'), so the two can be compared.
func normalized(t *testing.T, data []byte) map[string]any {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for k := range m {
		if strings.HasPrefix(k, "_") {
			delete(m, k)
		}
	}
	if info, ok := m["info"].(map[string]any); ok {
		delete(info, "base_url")
	} else {
		m["info"] = map[string]any{}
	}
	for _, k := range []string{"packages", "packages.conda"} {
		if m[k] == nil {
			m[k] = map[string]any{}
		}
	}
	if m["removed"] == nil {
		m["removed"] = []any{}
	}
	if m["repodata_version"] == nil {
		m["repodata_version"] = float64(1)
	}
	return m
}

func TestRoundTripRealRepodata(t *testing.T) {
	for _, f := range realFiles(t) {
		t.Run(filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			var want struct {
				Packages      map[string]json.RawMessage `json:"packages"`
				PackagesConda map[string]json.RawMessage `json:"packages.conda"`
			}
			json.Unmarshal(data, &want)
			if got, w := len(d.Records), len(want.Packages)+len(want.PackagesConda); got != w {
				t.Errorf("records = %d, want %d", got, w)
			}
			var buf bytes.Buffer
			if err := Encode(&buf, d, nil); err != nil {
				t.Fatal(err)
			}
			if got, want := normalized(t, buf.Bytes()), normalized(t, data); !reflect.DeepEqual(got, want) {
				t.Error("Encode(Parse(x)) differs from x")
			}
			for _, r := range d.Records {
				var fields struct {
					Name, Version, Build string
					Sha256               string
					Size                 *int64
				}
				if err := json.Unmarshal(r.Raw, &fields); err != nil {
					t.Fatalf("%s: Raw is not the record: %v", r.Filename, err)
				}
				if fields.Name != r.Name || fields.Version != r.Version || fields.Build != r.Build || fields.Sha256 != r.SHA256 {
					t.Errorf("%s: decoded %s %s %s %s, encoding/json says %+v", r.Filename, r.Name, r.Version, r.Build, r.SHA256, fields)
				}
				if fields.Size != nil && *fields.Size != r.Size {
					t.Errorf("%s: size %d, want %d", r.Filename, r.Size, *fields.Size)
				}
			}
		})
	}
}

func TestCompressedVariantsAgree(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(testdata.Dir(t), "cf-subchannel-py39", "*", "repodata.json.zst"))
	if len(dirs) != 8 {
		t.Fatalf("want 8 conda-forge subdirs with .zst, found %d", len(dirs))
	}
	for _, zst := range dirs {
		dir := filepath.Dir(zst)
		plain, _ := os.ReadFile(filepath.Join(dir, "repodata.json"))
		for _, enc := range []string{"zst", "bz2"} {
			f, err := os.Open(filepath.Join(dir, "repodata.json."+enc))
			if err != nil {
				t.Fatal(err)
			}
			r, err := Decompress(f, enc)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := buf.ReadFrom(r); err != nil {
				t.Fatalf("%s.%s: %v", dir, enc, err)
			}
			f.Close()
			if !reflect.DeepEqual(normalized(t, buf.Bytes()), normalized(t, plain)) {
				t.Errorf("%s: .%s does not decode to repodata.json", dir, enc)
			}
			// And our own compressor round-trips.
			var c, back bytes.Buffer
			if err := Compress(&c, bytes.NewReader(plain), enc); err != nil {
				t.Fatal(err)
			}
			dr, _ := Decompress(&c, enc)
			back.ReadFrom(dr)
			if !bytes.Equal(back.Bytes(), plain) {
				t.Errorf("%s: Compress/Decompress %s round trip differs", dir, enc)
			}
		}
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"truncated", `{"packages":{"a-1-0.conda":{"name":"a"`, "unexpected end"},
		{"not an object", `[1,2]`, "want '{'"},
		{"trailing data", `{} {}`, "data after the document"},
		{"missing version", `{"packages":{"a-1-0.tar.bz2":{"name":"a","build":"0"}}}`, "name, version and build are required"},
		{"path as filename", `{"packages":{"../a-1-0.tar.bz2":{"name":"a","version":"1","build":"0"}}}`, "not a package filename"},
		{"wrong type", `{"packages":{"a-1-0.tar.bz2":{"name":1,"version":"1","build":"0"}}}`, "name: want a string"},
		{"bad number", `{"packages":{"a-1-0.tar.bz2":{"name":"a","version":"1","build":"0","size":1.2.3}}}`, "size: want a number"},
		{"control char", "{\"info\":{\"subdir\":\"a\x01\"}}", "control character"},
		{"duplicate key", `{"packages":{},"packages":{}}`, "given twice"},
		{"bad literal", `{"info":{"x":nul}}`, "bad literal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseDropsUpstreamPointers(t *testing.T) {
	doc := `{"info":{"subdir":"linux-64","base_url":"https://cdn.example.invalid/x/linux-64/"},"_url":"https://up.invalid/x","_etag":"e",
	"packages":{"a-1-0.tar.bz2":{"name":"a","version":"1","build":"0","timestamp":1.5e12,"noarch":true}},"signatures":{}}`
	d, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if d.BaseURL != "https://cdn.example.invalid/x/linux-64/" || d.Subdir() != "linux-64" {
		t.Errorf("BaseURL %q subdir %q", d.BaseURL, d.Subdir())
	}
	var buf bytes.Buffer
	Encode(&buf, d, nil)
	if s := buf.String(); strings.Contains(s, "invalid") || !strings.Contains(s, `"signatures":{}`) {
		t.Errorf("encoded doc still points upstream or lost a key: %s", s)
	}
	if r := d.Records[0]; r.Timestamp != 1.5e12 || r.Noarch != "generic" {
		t.Errorf("timestamp %d noarch %q", r.Timestamp, r.Noarch)
	}
}

func TestMerge(t *testing.T) {
	a, _ := Parse([]byte(`{"packages":{"x-1-0.tar.bz2":{"name":"x","version":"1","build":"0","sha256":"aa"}},"removed":["r"]}`))
	b, _ := Parse([]byte(`{"packages":{"x-1-0.tar.bz2":{"name":"x","version":"1","build":"0","sha256":"bb"},"y-1-0.tar.bz2":{"name":"y","version":"1","build":"0"}},"removed":["r","s"]}`))
	m := Merge([]*Doc{nil, a, b})
	if len(m.Records) != 2 || m.Records[0].SHA256 != "aa" || m.Records[0].Upstream != 1 || m.Records[1].Upstream != 2 {
		t.Errorf("merge: %+v %+v", m.Records[0], m.Records[1])
	}
	if len(m.Removed) != 2 {
		t.Errorf("removed = %v", m.Removed)
	}
	if a.Records[0].Upstream != 0 {
		t.Error("Merge modified its input")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"info":{"subdir":"noarch"},"packages":{"a-1-0.tar.bz2":{"name":"a","version":"1","build":"0","depends":["b >=1"],"size":3}},"packages.conda":{},"removed":[],"repodata_version":1}`))
	f.Add([]byte(`{"packages":{"a-1-0.conda":{"name":"a\u00e9","version":"1","build":"0","timestamp":1.0e3}}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse(data)
		if err != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("Parse accepted invalid JSON %q", data)
		}
		var buf bytes.Buffer
		if err := Encode(&buf, d, nil); err != nil {
			t.Fatal(err)
		}
		d2, err := Parse(buf.Bytes())
		if err != nil {
			t.Fatalf("Encode output does not parse: %v\n%s", err, buf.Bytes())
		}
		if len(d2.Records) != len(d.Records) {
			t.Fatalf("records %d after round trip, want %d", len(d2.Records), len(d.Records))
		}
	})
}

func TestEncodeOffsets(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testdata.Dir(t), "conda_format_repo", "linux-64", "repodata.json"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	offsets := map[string]int64{}
	var buf bytes.Buffer
	if err := Encode(&buf, d, func(r *Record, off int64) { offsets[r.Filename] = off }); err != nil {
		t.Fatal(err)
	}
	for _, r := range d.Records {
		off := offsets[r.Filename]
		if got := buf.Bytes()[off : off+int64(len(r.Raw))]; !bytes.Equal(got, r.Raw) {
			t.Errorf("%s: bytes at offset %d are %q", r.Filename, off, got[:20])
		}
	}
}

func TestFilterPackages(t *testing.T) {
	doc := `{"info":{"subdir":"linux-64"},"packages":{"a-1-0.tar.bz2":{"run_exports":{"weak":["a"]}},"b-1-0.tar.bz2":{}},
	"packages.conda":{"a-1-0.conda":{"run_exports":{}}},"run_exports_version":1}`
	var buf bytes.Buffer
	if err := FilterPackages(&buf, []byte(doc), func(fn string) bool { return strings.HasPrefix(fn, "a-") }); err != nil {
		t.Fatal(err)
	}
	var got map[string]map[string]any
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, buf.Bytes())
	}
	json.Unmarshal(raw["packages"], &got)
	if len(got) != 1 || got["a-1-0.tar.bz2"] == nil || string(raw["run_exports_version"]) != "1" {
		t.Errorf("filtered: %s", buf.Bytes())
	}
	if err := FilterPackages(io.Discard, []byte(`{"packages":{"a":`), func(string) bool { return true }); err == nil {
		t.Error("truncated input accepted")
	}
}
