package matchspec

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// realStrings returns what conda's real repodata writes where a matchspec or a
// version is read: the distinct depends and constrains entries, the version
// part of each, and the record versions, of a few files of the shared testdata
// (../shared/testdata beside the repository, or $CONDAPROXY_TESTDATA). Without
// that data there are no such seeds, and the targets fuzz from the tables alone.
func realStrings(f *testing.F) (specs, versionSpecs, versions []string) {
	td := os.Getenv("CONDAPROXY_TESTDATA")
	if td == "" {
		td = filepath.Join("..", "..", "..", "shared", "testdata")
	}
	files := []string{
		filepath.Join(td, "cf-subchannel-py39", "osx-arm64", "repodata.json"),
		filepath.Join(td, "cf-subchannel-py39", "noarch", "repodata.json"),
		filepath.Join(td, "conda-repodata", "main_noarch.json"),
		filepath.Join(td, "rattler", "pytorch_linux-64_repodata.json"),
	}
	seen := map[*[]string]map[string]bool{}
	add := func(list *[]string, s string) {
		if seen[list] == nil {
			seen[list] = map[string]bool{}
		}
		if !seen[list][s] {
			seen[list][s] = true
			*list = append(*list, s)
		}
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Logf("no real seeds from %s: %v", file, err)
			continue
		}
		var doc struct {
			Packages      map[string]realRecord `json:"packages"`
			PackagesConda map[string]realRecord `json:"packages.conda"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			f.Logf("no real seeds from %s: %v", file, err)
			continue
		}
		for _, m := range []map[string]realRecord{doc.Packages, doc.PackagesConda} {
			for _, r := range m {
				add(&versions, r.Version)
				for _, dep := range append(r.Depends, r.Constrains...) {
					add(&specs, dep)
					if fields := strings.Fields(dep); len(fields) > 1 {
						add(&versionSpecs, fields[1])
					}
				}
			}
		}
	}
	// Map order is random: sort, so a run's seeds are the same every time.
	sort.Strings(specs)
	sort.Strings(versionSpecs)
	sort.Strings(versions)
	return specs, versionSpecs, versions
}

type realRecord struct {
	Version    string   `json:"version"`
	Depends    []string `json:"depends"`
	Constrains []string `json:"constrains"`
}
