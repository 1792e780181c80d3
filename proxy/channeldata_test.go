package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

type cdDoc struct {
	Packages map[string]map[string]any `json:"packages"`
	Subdirs  []string                  `json:"subdirs"`
}

func readCD(t *testing.T, body []byte) cdDoc {
	t.Helper()
	var d cdDoc
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("channeldata.json does not parse: %v\n%s", err, body)
	}
	return d
}

func cdNames(d cdDoc) string {
	var out []string
	for n := range d.Packages {
		out = append(out, n)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func cdSubdirs(v any) string {
	l, _ := v.([]any)
	var out []string
	for _, s := range l {
		out = append(out, s.(string))
	}
	return strings.Join(out, ",")
}

// The real Anaconda mini-channel's channeldata.json, cut by platforms and a
// blacklist: vc (hidden) is listed nowhere, not its name, version or
// description; zlib keeps only win-64, where its one served version (1.2.8) is,
// and names no hidden reference package; the top-level subdirs are the served
// ones. A conditional request gets 304.
func TestChannelDataFiltered(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, fltYAML(up.URL, "platforms: [linux-64, win-64]\nblacklist: [vc, \"zlib 1.2.11\"]"))
	r := h.get("/fmt/channeldata.json")
	if r.StatusCode != 200 {
		t.Fatalf("%d %s", r.StatusCode, r.body)
	}
	for _, leak := range []string{`"vc"`, "This metapackage is used to enforce", `"14.1"`, "vc-14.1-h0510ff6_4", "win-32", "osx-64", "zlib-1.2.11"} {
		if bytes.Contains(r.body, []byte(leak)) {
			t.Errorf("channeldata.json names %s, which the filter hides:\n%s", leak, r.body)
		}
	}
	d := readCD(t, r.body)
	if got := cdNames(d); got != "libgcc-ng,vs2015_runtime,zlib" {
		t.Errorf("packages = %s, want libgcc-ng,vs2015_runtime,zlib", got)
	}
	if got := strings.Join(d.Subdirs, ","); got != "linux-64,noarch,win-64" {
		t.Errorf("subdirs = %s, want linux-64,noarch,win-64", got)
	}
	z := d.Packages["zlib"]
	if got := cdSubdirs(z["subdirs"]); got != "win-64" {
		t.Errorf("zlib subdirs = %s, want win-64 (1.2.11 is hidden everywhere)", got)
	}
	if z["version"] != "1.2.8" {
		t.Errorf("zlib version = %v, want 1.2.8, its newest served", z["version"])
	}
	if _, ok := z["reference_package"]; ok {
		t.Errorf("zlib reference_package %v is a hidden file", z["reference_package"])
	}
	if !strings.Contains(z["description"].(string), "zlib is designed") || z["home"] != "http://zlib.net/" {
		t.Errorf("zlib lost upstream's metadata: %v", z)
	}
	// What describes upstream's newest build, hidden: its own run_exports,
	// source and timestamp.
	for _, k := range []string{"run_exports", "source_url", "timestamp"} {
		if _, ok := z[k]; ok {
			t.Errorf("zlib keeps %s of the hidden 1.2.11: %v", k, z[k])
		}
	}
	if got := d.Packages["libgcc-ng"]["reference_package"]; got != "linux-64/libgcc-ng-8.2.0-hdf63c60_1.tar.bz2" {
		t.Errorf("libgcc-ng reference_package = %v", got)
	}
	etag := r.Header.Get("ETag")
	if etag == "" || r.Header.Get("Last-Modified") == "" || r.Header.Get("Cache-Control") == "" {
		t.Fatalf("headers: %v", r.Header)
	}
	if r2 := h.get("/fmt/channeldata.json", "If-None-Match: "+etag); r2.StatusCode != 304 {
		t.Errorf("conditional request: %d, want 304", r2.StatusCode)
	}
	if r2 := h.do("HEAD", "/fmt/channeldata.json"); r2.StatusCode != 200 || r2.Header.Get("ETag") != etag {
		t.Errorf("HEAD: %d %q", r2.StatusCode, r2.Header.Get("ETag"))
	}

	// A changed filter cuts again: vc is back, zlib 1.2.11 too.
	h.yaml = fltYAML(up.URL, "platforms: [linux-64, win-64]")
	h.restart()
	r = h.get("/fmt/channeldata.json")
	d = readCD(t, r.body)
	if got := cdNames(d); got != "libgcc-ng,vc,vs2015_runtime,zlib" || r.Header.Get("ETag") == etag {
		t.Errorf("after the filter changed: packages = %s, ETag %s (was %s)", got, r.Header.Get("ETag"), etag)
	}
	if got := cdSubdirs(d.Packages["zlib"]["subdirs"]); got != "linux-64,win-64" {
		t.Errorf("zlib subdirs = %s, want linux-64,win-64", got)
	}
	if re := d.Packages["zlib"]["run_exports"]; !bytes.Contains(r.body, []byte(`"zlib >=1.2.11,<1.3.0a0"`)) {
		t.Errorf("zlib run_exports = %v, want upstream's, unescaped", re)
	}
}

// A channel whose filter hides nothing passes upstream's copy through as it is.
func TestChannelDataUnfiltered(t *testing.T) {
	dir := formatRepo(t)
	up := newUpstream(t, dir)
	h := newHarness(t, fltYAML(up.URL, "whitelist: [zlib]"))
	want, _ := os.ReadFile(filepath.Join(dir, "channeldata.json"))
	if r := h.get("/fmt/channeldata.json"); r.StatusCode != 200 || !bytes.Equal(r.body, want) {
		t.Errorf("%d: not upstream's bytes:\n%s", r.StatusCode, r.body)
	}
	// A replica or a new start with a filter cuts it.
	h.yaml = fltYAML(up.URL, "pkg_list: [zlib]")
	h.restart()
	if got := cdNames(readCD(t, h.get("/fmt/channeldata.json").body)); got != "zlib" {
		t.Errorf("with pkg_list [zlib]: packages = %s", got)
	}
}

// A hostile channeldata.json: a clear 502 or a safe answer, never a crash, and
// nothing outside the served subdirs.
func TestChannelDataHostile(t *testing.T) {
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000) // under max_metadata, past encoding/json's depth
	for _, tt := range []struct {
		name, body string
		status     int
		check      func(t *testing.T, d cdDoc)
	}{
		{"packages not an object", `{"packages": [1,2], "subdirs": ["noarch"]}`, 502, nil},
		{"not an object", `[]`, 502, nil},
		{"deep nesting", `{"packages": {"zlib": {"x": ` + deep + `}}}`, 502, nil},
		{"huge", `{"packages": {}, "pad": "` + strings.Repeat("x", 200<<10) + `"}`, 502, nil},
		{"path-like subdirs", `{"packages": {"zlib": {"subdirs": ["../x", "win-64/../../etc", "linux-64", "/etc"], "version": "1.2.11"},
			"vc": "not an object", "evil": {"subdirs": ["linux-64"]}}, "subdirs": ["../../etc", "linux-64", "LINUX-64", "noarch", "win-64"]}`, 200,
			func(t *testing.T, d cdDoc) {
				if got := strings.Join(d.Subdirs, ","); got != "linux-64,noarch" {
					t.Errorf("subdirs = %s, want linux-64,noarch", got)
				}
				if got := cdNames(d); got != "zlib" {
					t.Errorf("packages = %s, want zlib", got)
				}
				if got := cdSubdirs(d.Packages["zlib"]["subdirs"]); got != "linux-64" {
					t.Errorf("zlib subdirs = %s", got)
				}
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, formatRepo(t))
			body := tt.body
			up.setCorrupt(func(p string, b []byte) []byte {
				if p == "/channeldata.json" {
					return []byte(body)
				}
				return b
			})
			h := newHarness(t, "limits: {max_metadata: 128KiB}\n"+fltYAML(up.URL, "platforms: [linux-64]"))
			r := h.get("/fmt/channeldata.json")
			if r.StatusCode != tt.status {
				t.Fatalf("%d %s, want %d", r.StatusCode, r.body, tt.status)
			}
			if tt.check != nil {
				tt.check(t, readCD(t, r.body))
			}
			if h.get("/fmt/linux-64/repodata.json").StatusCode != 200 {
				t.Errorf("the channel no longer serves its repodata")
			}
		})
	}
}

// The cut follows the served answers: when upstream's repodata drops a name,
// the next revalidation cuts channeldata.json again (its key holds each served
// subdir's generation), and the ETag changes.
func TestChannelDataFollowsRepodata(t *testing.T) {
	dir := fltCopyDir(t, formatRepo(t))
	up := newUpstream(t, dir)
	h := newHarness(t, fltYAML(up.URL, "platforms: [linux-64]"))
	r := h.get("/fmt/channeldata.json")
	if got := cdNames(readCD(t, r.body)); got != "libgcc-ng,zlib" {
		t.Fatalf("packages = %s, want libgcc-ng,zlib", got)
	}
	etag := r.Header.Get("ETag")
	p := filepath.Join(dir, "linux-64", "repodata.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	json.Unmarshal(raw, &doc)
	delete(doc["packages"].(map[string]any), "libgcc-ng-8.2.0-hdf63c60_1.tar.bz2")
	raw, _ = json.Marshal(doc)
	os.WriteFile(p, raw, 0o644)
	at := time.Now().Add(time.Hour) // a Last-Modified of its own
	os.Chtimes(p, at, at)
	h.clock.advance(11 * time.Minute)
	waitFor(t, "channeldata.json cut again without libgcc-ng", func() bool {
		r = h.get("/fmt/channeldata.json")
		return cdNames(readCD(t, r.body)) == "zlib"
	})
	if r.Header.Get("ETag") == etag {
		t.Errorf("the ETag did not change")
	}
}

// The cut keeps, per name, only keys channeldata's format holds: what
// describes the name stays; what describes upstream's newest build (license,
// source, timestamp, prefixes, link scripts) goes when that build is hidden;
// an unknown key goes always (it may list hidden versions); run_exports keeps
// only served versions' keys whatever their values; top-level keys other than
// channeldata_version, packages and subdirs go.
func TestChannelDataCutAllowlist(t *testing.T) {
	raw := []byte(`{"channeldata_version": 1, "x_top": "hidden 2.0", "subdirs": ["linux-64", "noarch"],
	 "packages": {"foo": {"version": "2.0", "license": "GPL-3.0-only", "license_family": "GPL",
	  "summary": "foo", "description": "Foo.", "home": "https://foo.example", "tags": ["t"],
	  "x_all_versions": ["1.0", "2.0"], "timestamp": 1700000000, "source_url": "https://foo.example/2.0.tgz",
	  "source_git_url": "g", "recipe_origin": "r", "binary_prefix": true, "text_prefix": true,
	  "activate.d": true, "deactivate.d": false, "post_link": true, "pre_link": false, "pre_unlink": false,
	  "commits": ["c"], "reference_package": "linux-64/foo-2.0-0.tar.bz2", "subdirs": ["linux-64"],
	  "run_exports": {"1.0": {"weak": ["foo >=1.0"]}, "2.0": {"weak": ["foo >=2.0"]}, "2.1": []}},
	 "bar": {"version": "3.0", "license": "MIT", "timestamp": 1700000000, "x_new": 1,
	  "subdirs": ["linux-64"], "run_exports": {"weak": ["bar >=3"]}}}}`)
	names := map[string]*servedName{
		"foo": {subdirs: map[string]bool{"linux-64": true}, versions: map[string]bool{"1.0": true}},
		"bar": {subdirs: map[string]bool{"linux-64": true}, versions: map[string]bool{"3.0": true}},
	}
	out, err := cutChannelDataDoc(raw, names, map[string]bool{"linux-64": true}, func(string) bool { return false }, false)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	var top map[string]json.RawMessage
	json.Unmarshal(out, &top)
	for k := range top {
		if k != "channeldata_version" && k != "packages" && k != "subdirs" {
			t.Errorf("top-level %s kept", k)
		}
	}
	json.Unmarshal(top["packages"], &doc)
	foo := doc["foo"]
	var keys []string
	for k := range foo {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != "description,home,run_exports,subdirs,summary,tags,version" {
		t.Errorf("foo keeps %s", got)
	}
	if foo["version"] != "1.0" {
		t.Errorf("foo version = %v", foo["version"])
	}
	if re := fmt.Sprint(foo["run_exports"]); re != "map[1.0:map[weak:[foo >=1.0]]]" {
		t.Errorf("foo run_exports = %s", re)
	}
	bar := doc["bar"]
	if bar["license"] != "MIT" || bar["timestamp"] == nil || bar["run_exports"] == nil || bar["x_new"] != nil {
		t.Errorf("bar (newest served) = %v, want its license, timestamp, run_exports, no unknown key", bar)
	}
}

// One served subdir that cannot be built does not take channeldata.json down:
// the last good cut is served, marked X-Condaproxy-Stale; with none, a 502
// names the subdir.
func TestChannelDataSubdirFails(t *testing.T) {
	dir := closureTree(t, []string{"noarch", "linux-64"})
	up := newUpstream(t, dir)
	h := newHarness(t, fltYAML(up.URL, "blacklist: [junk]"))
	r := h.get("/fmt/channeldata.json")
	if r.StatusCode != 200 || r.Header.Get("X-Condaproxy-Stale") != "" {
		t.Fatalf("%d %v %s", r.StatusCode, r.Header, r.body)
	}
	good := r.body
	// Upstream lists linux-armv7l, whose repodata is broken.
	up.setCorrupt(func(p string, b []byte) []byte {
		if p == "/linux-armv7l/repodata.json" {
			return []byte("not json")
		}
		return b
	})
	writeChannelData(t, dir, []string{"noarch", "linux-64", "linux-armv7l"})
	h.clock.advance(11 * time.Minute)
	waitFor(t, "channeldata.json read with linux-armv7l listed", func() bool {
		r = h.get("/fmt/channeldata.json")
		return r.StatusCode != 200 || r.Header.Get("X-Condaproxy-Stale") != ""
	})
	if r.StatusCode != 200 || r.Header.Get("X-Condaproxy-Stale") == "" || !bytes.Equal(r.body, good) {
		t.Errorf("with linux-armv7l broken: %d stale=%q, want the last good cut, marked stale:\n%s",
			r.StatusCode, r.Header.Get("X-Condaproxy-Stale"), r.body)
	}
	// No good cut in memory: 502 naming the subdir.
	h.restart()
	r = h.get("/fmt/channeldata.json")
	if r.StatusCode != 502 || !bytes.Contains(r.body, []byte("linux-armv7l")) {
		t.Errorf("without a good cut: %d %s, want 502 naming linux-armv7l", r.StatusCode, r.body)
	}
}

// newBuildTree writes a channel where foo 1.0 has two builds, h0_0 and the
// newer h0_1, and bar has run_exports keyed by version (1.0 with two builds,
// 0.9 with one); channeldata.json describes foo's newest build (h0_1).
func newBuildTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	pk := map[string]any{}
	rec := func(name, version, build string, num int, ts int64) {
		fn := name + "-" + version + "-" + build + ".tar.bz2"
		pk[fn] = map[string]any{"name": name, "version": version, "build": build, "build_number": num,
			"depends": []string{}, "subdir": "linux-64", "size": 10, "sha256": sha256hex([]byte(fn)),
			"timestamp": ts}
	}
	rec("foo", "1.0", "h0_0", 0, 1600000000000)
	rec("foo", "1.0", "h0_1", 1, 1700000000000)
	rec("bar", "0.9", "h0_0", 0, 1500000000000)
	rec("bar", "1.0", "h0_0", 0, 1600000000000)
	rec("bar", "1.0", "h0_1", 1, 1700000000000)
	b, _ := json.Marshal(map[string]any{"info": map[string]any{"subdir": "linux-64"}, "repodata_version": 1,
		"packages": pk, "packages.conda": map[string]any{}})
	os.MkdirAll(filepath.Join(dir, "linux-64"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "linux-64", "repodata.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	cd := `{"channeldata_version": 1, "subdirs": ["linux-64"], "packages": {
	 "foo": {"version": "1.0", "subdirs": ["linux-64"], "summary": "Foo summary", "home": "https://foo.example",
	  "timestamp": 1700000000, "license": "BUILD1-LICENSE", "source_url": "https://foo.example/build1.tgz",
	  "binary_prefix": true, "post_link": true, "run_exports": {"weak": ["foo-build1-export"]}},
	 "bar": {"version": "1.0", "subdirs": ["linux-64"], "summary": "Bar summary",
	  "run_exports": {"0.9": {"weak": ["bar-0.9-export"]}, "1.0": {"weak": ["bar-1.0-export"]}}}}}`
	if err := os.WriteFile(filepath.Join(dir, "channeldata.json"), []byte(cd), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A hidden newer build of a served version (a build-keyed blacklist here) is
// as hidden as a newer version: what describes upstream's newest build
// (timestamp, license, source, prefix and link flags, its own run_exports) goes,
// and a version key of run_exports goes when any record of that version is
// hidden; the name's own metadata (summary, home) and its version stay. The
// export's cut treats a record not exported as hidden.
func TestChannelDataHiddenNewestBuild(t *testing.T) {
	up := newUpstream(t, newBuildTree(t))
	h := newHarness(t, fltYAML(up.URL, "platforms: [linux-64]\nblacklist: [\"foo 1.0 *_1\", \"bar 1.0 *_1\"]"))
	r := h.get("/fmt/channeldata.json")
	if r.StatusCode != 200 {
		t.Fatalf("%d %s", r.StatusCode, r.body)
	}
	export, err := h.srv.ExportChannelData(t.Context(), "fmt", map[string][]string{
		"linux-64": {"foo-1.0-h0_0.tar.bz2", "bar-0.9-h0_0.tar.bz2", "bar-1.0-h0_0.tar.bz2"}})
	if err != nil {
		t.Fatal(err)
	}
	for what, body := range map[string][]byte{"served": r.body, "export": export} {
		for _, leak := range []string{"1700000000", "BUILD1-LICENSE", "build1.tgz", "foo-build1-export",
			"binary_prefix", "post_link", "bar-1.0-export"} {
			if bytes.Contains(body, []byte(leak)) {
				t.Errorf("%s channeldata.json keeps %s, of a hidden newest build:\n%s", what, leak, body)
			}
		}
		d := readCD(t, body)
		foo, bar := d.Packages["foo"], d.Packages["bar"]
		if foo["summary"] != "Foo summary" || foo["home"] != "https://foo.example" || foo["version"] != "1.0" {
			t.Errorf("%s: foo lost its name-level metadata or version: %v", what, foo)
		}
		if re := fmt.Sprint(bar["run_exports"]); re != "map[0.9:map[weak:[bar-0.9-export]]]" || bar["version"] != "1.0" {
			t.Errorf("%s: bar run_exports = %s, version %v; want 0.9's alone, version 1.0", what, re, bar["version"])
		}
	}

	// Nothing of foo 1.0 hidden: its newest build's keys are back.
	h.yaml = fltYAML(up.URL, "platforms: [linux-64]\nblacklist: [\"bar 1.0 *_1\"]")
	h.restart()
	r = h.get("/fmt/channeldata.json")
	foo := readCD(t, r.body).Packages["foo"]
	if foo["license"] != "BUILD1-LICENSE" || foo["timestamp"] == nil || foo["run_exports"] == nil {
		t.Errorf("foo with every build served = %v, want its newest build's keys", foo)
	}
}

// The channel files that list packages and have no cut of their own (the
// channel-level run_exports.json, a subdir's patch_instructions.json) would name
// what the filter hides: with a filter that hides something they answer 404;
// with none they pass through.
func TestUncutChannelFilesHidden(t *testing.T) {
	dir := p2CopyChannel(t, formatRepo(t))
	files := map[string]string{
		"run_exports.json":                 `{"packages":{"zlib-1.2.11-h7b6447c_3.conda":{"run_exports":{"weak":["zlib"]}}}}`,
		"linux-64/patch_instructions.json": `{"remove":["zlib-1.2.11-h7b6447c_3.tar.bz2"],"packages":{}}`,
	}
	for rel, body := range files {
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(rel)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	up := newUpstream(t, dir)
	filtered := newHarness(t, channelYAML("", up.URL)+"    blacklist: [zlib]\n")
	open := newHarness(t, channelYAML("", up.URL))
	for rel, body := range files {
		if r := filtered.get("/fmt/" + rel); r.StatusCode != 404 || strings.Contains(string(r.body), "zlib") {
			t.Errorf("%s with a filter: %d %.80s, want 404", rel, r.StatusCode, r.body)
		}
		if r := open.get("/fmt/" + rel); r.StatusCode != 200 || string(r.body) != body {
			t.Errorf("%s with no filter: %d %.80s, want upstream's copy", rel, r.StatusCode, r.body)
		}
	}
}
