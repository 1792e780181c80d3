package proxy

// The mirror filter through the real proxy: every repodata form is cut from one
// record set, that set is the policy's, hidden packages answer 403 without an
// upstream fetch, unserved subdirs answer 404, Explain names the rule, and a
// changed filter applies at restart from the stored upstream copies.

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/policy/matchspec"
	"github.com/condaproxy/condaproxy/repodata"
)

// fltYAML is a config with one channel "fmt" on url and the given filter keys
// (one "key: value" per line, unindented).
func fltYAML(url, keys string) string {
	var b strings.Builder
	b.WriteString("cache:\n  metadata_ttl: 10m\n  negative_ttl: 1m\n  memory: 16MiB\n")
	b.WriteString("channels:\n  - name: fmt\n    upstreams:\n      - url: " + url + "\n")
	for _, line := range strings.Split(strings.TrimSpace(keys), "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("    " + strings.TrimSpace(line) + "\n")
		}
	}
	return b.String()
}

// fltPolicySets decides every record of dir/<subdir>/repodata.json with the
// channel's compiled policy, fed the way the policy asks (Inputs), and returns the
// served and the hidden filenames (hidden: filename -> rule).
func fltPolicySets(t *testing.T, h *harness, dir, subdir string) ([]string, map[string]string) {
	t.Helper()
	p, err := policy.Compile(h.cfg, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	read := func(sd string) []*repodata.Record {
		data, err := os.ReadFile(filepath.Join(dir, sd, "repodata.json"))
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		d, err := repodata.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		return d.Records
	}
	inputs := p.Inputs(subdir, func() []string {
		var out []string
		for _, sd := range []string{"noarch", "linux-64", "osx-64", "win-32", "win-64"} {
			if _, err := os.Stat(filepath.Join(dir, sd, "repodata.json")); err == nil {
				out = append(out, sd)
			}
		}
		return out
	})
	if len(inputs) == 0 {
		inputs = []string{subdir}
	}
	dec, err := p.Prepare(subdir, func(visit func(string, *repodata.Record)) error {
		for _, sd := range inputs {
			for _, r := range read(sd) {
				visit(sd, r)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	hidden := map[string]string{}
	for _, r := range read(subdir) {
		if rule, _ := dec.Decide(r); rule != "" {
			hidden[r.Filename] = rule
		} else {
			served = append(served, r.Filename)
		}
	}
	slices.Sort(served)
	return served, hidden
}

// fltRecords decodes a served repodata into filename -> (name, version, license).
type fltRec struct {
	Name, Version, License string
	LicenseFamily          string `json:"license_family"`
	Depends                []string
}

func fltRecords(t *testing.T, body []byte) map[string]fltRec {
	t.Helper()
	var doc struct {
		Packages      map[string]fltRec `json:"packages"`
		PackagesConda map[string]fltRec `json:"packages.conda"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("served repodata is not JSON: %v", err)
	}
	out := map[string]fltRec{}
	for k, v := range doc.Packages {
		out[k] = v
	}
	for k, v := range doc.PackagesConda {
		out[k] = v
	}
	return out
}

// fltForms fetches repodata.json, .zst and .bz2 of subdir, checks they hold one
// record set, checks that no hidden filename appears in any of them or in
// current_repodata.json, and returns the set and the decoded current_repodata.
func fltForms(t *testing.T, h *harness, subdir string, hidden map[string]string) ([]string, map[string]fltRec) {
	t.Helper()
	var sets [][]string
	forms := []struct{ path, enc string }{
		{"repodata.json", ""}, {"repodata.json.zst", "zst"}, {"repodata.json.bz2", "bz2"},
	}
	bodies := map[string][]byte{}
	for _, f := range forms {
		r := h.get("/fmt/" + subdir + "/" + f.path)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("%s/%s: %d %s", subdir, f.path, r.StatusCode, r.body)
		}
		body := decode(t, f.enc, r.body)
		bodies[f.path] = body
		sets = append(sets, filenames(t, body))
	}
	for i := 1; i < len(sets); i++ {
		if !slices.Equal(sets[i], sets[0]) {
			t.Errorf("%s: %s holds %d records, repodata.json %d", subdir, forms[i].path, len(sets[i]), len(sets[0]))
		}
	}
	r := h.get("/fmt/" + subdir + "/current_repodata.json")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%s/current_repodata.json: %d %s", subdir, r.StatusCode, r.body)
	}
	bodies["current_repodata.json"] = r.body
	for path, body := range bodies {
		s := string(body)
		for fn, rule := range hidden {
			if strings.Contains(s, `"`+fn+`"`) {
				t.Errorf("%s/%s names %s, hidden by %q", subdir, path, fn, rule)
			}
		}
	}
	return sets[0], fltRecords(t, r.body)
}

// fltCheckCurrent: current_repodata holds only served records, and for each served
// name exactly the records of its newest served version (every build, both formats).
func fltCheckCurrent(t *testing.T, subdir string, served map[string]fltRec, current map[string]fltRec) {
	t.Helper()
	newest := map[string]string{}
	for _, r := range served {
		v, err := matchspec.ParseVersion(r.Version)
		if err != nil {
			t.Fatalf("%s: version %q: %v", r.Name, r.Version, err)
		}
		if cur, ok := newest[r.Name]; ok {
			cv, _ := matchspec.ParseVersion(cur)
			if v.Compare(cv) <= 0 {
				continue
			}
		}
		newest[r.Name] = r.Version
	}
	for fn := range current {
		if _, ok := served[fn]; !ok {
			t.Errorf("%s: current_repodata holds %s, which repodata.json does not serve", subdir, fn)
		}
	}
	for fn, r := range served {
		nv, _ := matchspec.ParseVersion(newest[r.Name])
		v, _ := matchspec.ParseVersion(r.Version)
		_, inCur := current[fn]
		if isNewest := v.Equal(nv); isNewest != inCur {
			t.Errorf("%s: %s (%s %s; newest served %s): in current_repodata = %v", subdir, fn, r.Name, r.Version,
				newest[r.Name], inCur)
		}
	}
	names := map[string]bool{}
	for _, r := range current {
		names[r.Name] = true
	}
	if len(names) != len(newest) {
		t.Errorf("%s: current_repodata has %d names, the served repodata %d", subdir, len(names), len(newest))
	}
}

// Every form of a filtered subdir holds the policy's served set, on real data.
func TestFilterFormsAgreeWithPolicy(t *testing.T) {
	dir := testdata.Path(t, "cf-subchannel-py39")
	up := newUpstream(t, dir)
	h := newHarness(t, fltYAML(up.URL, `platforms: [linux-64, osx-arm64]
python_versions: ["3.9"]
license_blacklist: [GPL]
blacklist: ["openssl <3", "certifi 2022.*"]`))
	for _, sd := range []string{"linux-64", "osx-arm64", "noarch"} {
		t.Run(sd, func(t *testing.T) {
			want, hidden := fltPolicySets(t, h, dir, sd)
			if len(want) == 0 || len(hidden) == 0 {
				t.Fatalf("degenerate case: %d served, %d hidden", len(want), len(hidden))
			}
			got, current := fltForms(t, h, sd, hidden)
			if !slices.Equal(got, want) {
				var extra, missing []string
				for _, fn := range got {
					if !slices.Contains(want, fn) {
						extra = append(extra, fn+" ("+hidden[fn]+")")
					}
				}
				for _, fn := range want {
					if !slices.Contains(got, fn) {
						missing = append(missing, fn)
					}
				}
				t.Errorf("served %d records, the policy %d; extra %q; missing %q", len(got), len(want),
					extra[:min(8, len(extra))], missing[:min(8, len(missing))])
			}
			body := h.get("/fmt/" + sd + "/repodata.json").body
			served := fltRecords(t, body)
			fltCheckCurrent(t, sd, served, current)
			// Independent of the policy: nothing GPL, no openssl 1.x, every python a 3.9.
			for fn, r := range served {
				for _, id := range strings.FieldsFunc(r.License+" "+r.LicenseFamily, func(c rune) bool {
					return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-')
				}) {
					if u := strings.ToUpper(id); u == "GPL" || strings.HasPrefix(u, "GPL-") ||
						len(u) > 3 && strings.HasPrefix(u, "GPL") && u[3] >= '0' && u[3] <= '9' {
						t.Errorf("%s served with license %q / family %q", fn, r.License, r.LicenseFamily)
					}
				}
				if r.Name == "openssl" && strings.HasPrefix(r.Version, "1.") {
					t.Errorf("%s served: openssl <3 is blacklisted", fn)
				}
				if r.Name == "certifi" && strings.HasPrefix(r.Version, "2022.") {
					t.Errorf("%s served: certifi 2022.* is blacklisted", fn)
				}
				if r.Name == "python" && !strings.HasPrefix(r.Version, "3.9.") {
					t.Errorf("%s served: python %s", fn, r.Version)
				}
			}
		})
	}
	// Subdirs outside platforms are not fetched at all.
	for _, sd := range []string{"linux-aarch64", "osx-64", "win-64"} {
		if r := h.get("/fmt/" + sd + "/repodata.json"); r.StatusCode != http.StatusNotFound {
			t.Errorf("%s/repodata.json: %d, want 404", sd, r.StatusCode)
		}
		if n := up.countPrefix("/" + sd + "/"); n != 0 {
			t.Errorf("upstream saw %d requests under /%s/, a subdir not in platforms", n, sd)
		}
	}
}

// A hidden package asked for directly: 403 naming the rule, before any upstream
// fetch of it; subdirs outside platforms: 404 for everything.
func TestFilterHiddenPackageAndPlatforms(t *testing.T) {
	dir := formatRepo(t)
	up := newUpstream(t, dir)
	h := newHarness(t, fltYAML(up.URL, `platforms: [linux-64, win-64]
license_blacklist: [GPL]
blacklist: ["zlib 1.2.11"]
whitelist: ["zlib 1.2.11 h7b6447c_3"]`))

	// Asked for first, before any repodata: the repodata is built to decide.
	const libgcc = "libgcc-ng-8.2.0-hdf63c60_1.tar.bz2"
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		r := h.do(method, "/fmt/linux-64/"+libgcc)
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("%s %s: %d %s, want 403", method, libgcc, r.StatusCode, r.body)
		}
		if method == http.MethodGet && !strings.Contains(string(r.body), "license_blacklist: GPL") {
			t.Errorf("403 body %q does not name the rule license_blacklist: GPL", r.body)
		}
	}
	if n := up.count("/linux-64/" + libgcc); n != 0 {
		t.Errorf("upstream was asked for the hidden %s %d times", libgcc, n)
	}

	// win-64: zlib 1.2.11 is blacklisted and exists upstream; the whitelist names
	// only the linux-64 build string, so it is not restored here.
	const winZlib = "zlib-1.2.11-h62dcd97_3.conda"
	r := h.get("/fmt/win-64/" + winZlib)
	if r.StatusCode != http.StatusForbidden || !strings.Contains(string(r.body), "blacklist: zlib 1.2.11") {
		t.Errorf("%s: %d %q, want 403 naming blacklist: zlib 1.2.11", winZlib, r.StatusCode, r.body)
	}
	if n := up.count("/win-64/" + winZlib); n != 0 {
		t.Errorf("upstream was asked for the hidden %s %d times", winZlib, n)
	}
	// win-64 serves zlib 1.2.8, vc and vs2015_runtime; not the two zlib 1.2.11.
	got := filenames(t, h.get("/fmt/win-64/repodata.json").body)
	want := []string{"vc-14.1-h0510ff6_4.tar.bz2", "vs2015_runtime-14.15.26706-h3a45250_4.tar.bz2", "zlib-1.2.8-0.tar.bz2"}
	if !slices.Equal(got, want) {
		t.Errorf("win-64 served %q, want %q", got, want)
	}

	// linux-64: zlib 1.2.11 h7b6447c_3 is whitelisted back; its package is served.
	got = filenames(t, h.get("/fmt/linux-64/repodata.json").body)
	want = []string{zlibLinux, "zlib-1.2.11-h7b6447c_3.tar.bz2"}
	if !slices.Equal(got, want) {
		t.Errorf("linux-64 served %q, want %q (libgcc-ng hidden by license)", got, want)
	}
	r = h.get("/fmt/linux-64/" + zlibLinux)
	upBytes, _ := os.ReadFile(filepath.Join(dir, "linux-64", zlibLinux))
	if r.StatusCode != http.StatusOK || sha256hex(r.body) != sha256hex(upBytes) {
		t.Errorf("served %s: %d, %d bytes", zlibLinux, r.StatusCode, len(r.body))
	}

	// osx-64 is not in platforms: 404 for every path, and nothing fetched there.
	for _, p := range []string{"repodata.json", "repodata.json.zst", "repodata.json.bz2", "current_repodata.json",
		zlibOSX, "zlib-1.2.11-h1de35cc_3.conda"} {
		if r := h.get("/fmt/osx-64/" + p); r.StatusCode != http.StatusNotFound {
			t.Errorf("osx-64/%s: %d, want 404", p, r.StatusCode)
		}
	}
	if n := up.countPrefix("/osx-64/"); n != 0 {
		t.Errorf("upstream saw %d requests under /osx-64/", n)
	}
	// noarch is served though not listed.
	if r := h.get("/fmt/noarch/repodata.json"); r.StatusCode != http.StatusOK {
		t.Errorf("noarch/repodata.json: %d, want 200", r.StatusCode)
	}

	// Explain: by name and by filename, served and hidden, with the rule.
	ctx := context.Background()
	ex, err := h.srv.Explain(ctx, "fmt", "linux-64", "libgcc-ng")
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 1 || ex[0].Served || ex[0].Rule != "license_blacklist: GPL" || ex[0].Filename != libgcc ||
		!strings.Contains(ex[0].Detail, "GPL") {
		t.Errorf("Explain libgcc-ng: %+v, want one hidden by license_blacklist: GPL with a detail naming GPL", ex)
	}
	ex, err = h.srv.Explain(ctx, "fmt", "linux-64", libgcc)
	if err != nil || len(ex) != 1 || ex[0].Served || ex[0].Rule != "license_blacklist: GPL" {
		t.Errorf("Explain %s: %+v %v", libgcc, ex, err)
	}
	ex, err = h.srv.Explain(ctx, "fmt", "linux-64", "zlib")
	if err != nil || len(ex) != 2 || !ex[0].Served || !ex[1].Served || ex[0].Rule != "" || ex[1].Rule != "" {
		t.Errorf("Explain zlib on linux-64: %+v %v, want 2 served (whitelisted)", ex, err)
	}
	ex, err = h.srv.Explain(ctx, "fmt", "win-64", winZlib)
	if err != nil || len(ex) != 1 || ex[0].Served || ex[0].Rule != "blacklist: zlib 1.2.11" {
		t.Errorf("Explain %s: %+v %v, want hidden by blacklist: zlib 1.2.11", winZlib, ex, err)
	}
	ex, err = h.srv.Explain(ctx, "fmt", "win-64", "zlib")
	if err != nil || len(ex) != 3 {
		t.Errorf("Explain zlib on win-64: %+v %v, want 3 records", ex, err)
	}
	for _, e := range ex {
		if hidden := e.Version == "1.2.11"; e.Served == hidden || (hidden && e.Rule != "blacklist: zlib 1.2.11") {
			t.Errorf("Explain zlib on win-64: %+v", e)
		}
	}
	ex, err = h.srv.Explain(ctx, "fmt", "osx-64", "zlib")
	if err != nil || len(ex) != 1 || ex[0].Served || ex[0].Rule != "platforms" {
		t.Errorf("Explain on osx-64: %+v %v, want hidden by platforms", ex, err)
	}
}

// A changed filter applies at restart, from the stored upstream repodata: the
// upstream is gone.
func TestFilterChangeAppliesAtRestartWithoutUpstream(t *testing.T) {
	dir := formatRepo(t)
	up := newUpstream(t, dir)
	url := up.URL
	h := newHarness(t, fltYAML(url, "blacklist: [libgcc-ng]"))
	const libgcc = "libgcc-ng-8.2.0-hdf63c60_1.tar.bz2"
	zlibs := []string{zlibLinux, "zlib-1.2.11-h7b6447c_3.tar.bz2"}

	check := func(label string, want []string, hidden map[string]string) {
		t.Helper()
		got, current := fltForms(t, h, "linux-64", hidden)
		if !slices.Equal(got, want) {
			t.Errorf("%s: served %q, want %q", label, got, want)
		}
		var cur []string
		for fn := range current {
			cur = append(cur, fn)
		}
		slices.Sort(cur)
		if !slices.Equal(cur, want) { // one version per name here: current = all
			t.Errorf("%s: current_repodata %q, want %q", label, cur, want)
		}
	}
	check("blacklist libgcc-ng", zlibs, map[string]string{libgcc: "blacklist: libgcc-ng"})
	if r := h.get("/fmt/linux-64/" + libgcc); r.StatusCode != http.StatusForbidden {
		t.Errorf("%s: %d, want 403", libgcc, r.StatusCode)
	}

	up.Close()
	h.yaml = fltYAML(url, "blacklist: [zlib]")
	h.restart()
	check("after restart, blacklist zlib", []string{libgcc},
		map[string]string{zlibs[0]: "blacklist: zlib", zlibs[1]: "blacklist: zlib"})
	r := h.get("/fmt/linux-64/" + zlibLinux)
	if r.StatusCode != http.StatusForbidden || !strings.Contains(string(r.body), "blacklist: zlib") {
		t.Errorf("%s after restart: %d %q, want 403 naming blacklist: zlib", zlibLinux, r.StatusCode, r.body)
	}

	h.yaml = fltYAML(url, "")
	h.restart()
	check("after restart, no filter", append([]string{libgcc}, zlibs...), nil)

	h.yaml = fltYAML(url, "license_blacklist: [gpl]")
	h.restart()
	check("after restart, license_blacklist gpl", zlibs, map[string]string{libgcc: "license_blacklist: gpl"})
}

// include_dependencies: the closure spans the served subdirs, so python's noarch
// dependencies (pip, setuptools, wheel, tzdata, ...) are served in noarch.
// Expected count: see policy/realdata_test.go TestRealCFClosure (180 noarch
// records of the 49 names python needs). With no platforms the configuration may
// refuse include_dependencies; it must not serve a noarch without them.
func TestFilterClosureNoarch(t *testing.T) {
	dir := testdata.Path(t, "cf-subchannel-py39")
	up := newUpstream(t, dir)
	for _, tt := range []struct {
		keys            string
		noarch, linux64 int
	}{
		{"platforms: [linux-64]\npkg_list: [python]\ninclude_dependencies: true", 180, 2289},
		// No platforms: upstream has no channeldata.json, so the closure runs
		// over the common subdirs, the 8 of the tree among them; the other
		// pythons reach 3 more noarch and 105 more linux-64 records (see
		// TestRealCFClosure).
		{"pkg_list: [python]\ninclude_dependencies: true", 183, 2394},
	} {
		keys := tt.keys
		yaml := fltYAML(up.URL, keys)
		if _, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false }); err != nil {
			if !strings.Contains(err.Error(), "include_dependencies") {
				t.Errorf("[%s] refused with an error not naming include_dependencies: %v", keys, err)
			}
			continue
		}
		h := newHarness(t, yaml)
		recs := fltRecords(t, h.get("/fmt/noarch/repodata.json").body)
		names := map[string]int{}
		for _, r := range recs {
			names[r.Name]++
		}
		for _, n := range []string{"pip", "setuptools", "wheel", "tzdata"} {
			if names[n] == 0 {
				t.Errorf("BUG [%s]: noarch serves no %s, though every linux-64 python (the pkg_list root) needs it "+
					"(noarch serves %d records)", keys, n, len(recs))
			}
		}
		if len(recs) != tt.noarch {
			t.Errorf("[%s]: noarch serves %d records, want %d", keys, len(recs), tt.noarch)
		}
		// linux-64: 2289 records of the same 49 names (see TestRealCFClosure).
		if n := len(fltRecords(t, h.get("/fmt/linux-64/repodata.json").body)); n != tt.linux64 {
			t.Errorf("[%s]: linux-64 serves %d records, want %d", keys, n, tt.linux64)
		}
	}
}

// fltCopyDir copies a channel directory so a test can change what upstream lists.
func fltCopyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// A package cached while served, then hidden by a new filter: refused with 403,
// also once upstream no longer lists it (without keep_removed, the record is gone
// but the cached file is not, and the filter must still hold).
func TestFilterCachedPackageHiddenByNewFilter(t *testing.T) {
	dir := fltCopyDir(t, formatRepo(t))
	up := newUpstream(t, dir)
	h := newHarness(t, fltYAML(up.URL, ""))
	if r := h.get("/fmt/linux-64/" + zlibLinux); r.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s", zlibLinux, r.StatusCode, r.body)
	}

	h.yaml = fltYAML(up.URL, "blacklist: [zlib]")
	h.restart()
	r := h.get("/fmt/linux-64/" + zlibLinux)
	if r.StatusCode != http.StatusForbidden || !strings.Contains(string(r.body), "blacklist: zlib") {
		t.Errorf("cached %s, now blacklisted: %d %q, want 403 naming blacklist: zlib", zlibLinux, r.StatusCode, r.body)
	}

	// Upstream drops zlib (and libgcc-ng, so that the new answer is visible: an
	// empty repodata) from linux-64; the proxy revalidates.
	path := filepath.Join(dir, "linux-64", "repodata.json")
	doc := map[string]any{}
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, sec := range []string{"packages", "packages.conda"} {
		m := doc[sec].(map[string]any)
		for fn := range m {
			if strings.HasPrefix(fn, "zlib-") || strings.HasPrefix(fn, "libgcc-ng-") {
				delete(m, fn)
			}
		}
	}
	b, _ = json.Marshal(doc)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// A later Last-Modified, so the conditional revalidation is not a 304.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	h.clock.advance(h.cfg.Cache.MetadataTTL.D() + 1)
	h.get("/fmt/linux-64/repodata.json") // stale: starts the revalidation
	waitFor(t, "the proxy to serve upstream's new, empty linux-64", func() bool {
		r := h.get("/fmt/linux-64/repodata.json")
		return r.StatusCode == http.StatusOK && len(filenames(t, r.body)) == 0
	})
	r = h.get("/fmt/linux-64/" + zlibLinux)
	if r.StatusCode != http.StatusForbidden {
		t.Errorf("BUG: %s is blacklisted (blacklist: zlib) and cached from before; once upstream stopped listing it "+
			"the proxy answers %d with %d bytes of it instead of 403 (proxy/packages.go servePackage serves the "+
			"cached copy without asking the filter)", zlibLinux, r.StatusCode, len(r.body))
	}
}
