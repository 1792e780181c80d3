package proxy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// run_exports.json is cut like repodata: a hidden record is in no served file.
func TestRunExportsFiltered(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "linux-64"), 0o755)
	raw, _ := os.ReadFile(filepath.Join(formatRepo(t), "linux-64", "repodata.json"))
	os.WriteFile(filepath.Join(dir, "linux-64", "repodata.json"), raw, 0o644)
	// The shape conda-forge serves: per filename, the record's run_exports.
	os.WriteFile(filepath.Join(dir, "linux-64", "run_exports.json"), []byte(`{"info":{"subdir":"linux-64"},
	"packages":{"libgcc-ng-8.2.0-hdf63c60_1.tar.bz2":{"run_exports":{}},"zlib-1.2.11-h7b6447c_3.tar.bz2":{"run_exports":{"weak":["zlib >=1.2.11,<1.3.0a0"]}}},
	"packages.conda":{"zlib-1.2.11-h7b6447c_3.conda":{"run_exports":{"weak":["zlib >=1.2.11,<1.3.0a0"]}}}}`), 0o644)
	up := newUpstream(t, dir)
	h := newHarness(t, "channels:\n  - name: fmt\n    upstreams: [{url: "+up.URL+"}]\n    license_blacklist: [GPL]\n")
	r := h.get("/fmt/linux-64/run_exports.json")
	if r.StatusCode != 200 {
		t.Fatalf("run_exports.json: %d %s", r.StatusCode, r.body)
	}
	var doc struct {
		Packages      map[string]any `json:"packages"`
		PackagesConda map[string]any `json:"packages.conda"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	// libgcc-ng's license is "GPL": hidden here too; both zlib records stay.
	if _, ok := doc.Packages["libgcc-ng-8.2.0-hdf63c60_1.tar.bz2"]; ok || len(doc.Packages) != 1 || len(doc.PackagesConda) != 1 {
		t.Errorf("run_exports.json not cut to the served records: %s", r.body)
	}
	if r.Header.Get("ETag") == "" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", r.Header)
	}
	h.get("/fmt/linux-64/run_exports.json")
	if n := up.count("/linux-64/run_exports.json"); n != 1 {
		t.Errorf("upstream asked %d times", n)
	}
	if r := h.get("/fmt/osx-64/run_exports.json"); r.StatusCode != 404 {
		t.Errorf("absent run_exports.json: %d", r.StatusCode)
	}
}
