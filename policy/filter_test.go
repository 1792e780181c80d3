package policy_test

// Tests of the mirror filter, rule by rule, against SPEC "The filter, exactly".
// Every table is hand-made: (config keys, record fields, the rule that must hide
// the record or "" for served). A want that is not "" is a prefix of the rule the
// Decider names, so "license_blacklist: GPL" checks both the step and the entry.

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/repodata"
)

// chanYAML is a one-channel configuration; keys are the channel's filter keys,
// one "key: value" per line, written at the channel's indentation by the caller
// without leading spaces.
func chanYAML(keys string) string {
	var b strings.Builder
	b.WriteString("channels:\n  - name: c\n    upstreams:\n      - url: https://example.invalid/c\n")
	for _, line := range strings.Split(strings.TrimSpace(keys), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		b.WriteString("    " + strings.TrimSpace(line) + "\n")
	}
	return b.String()
}

func noEnv(string) (string, bool) { return "", false }

// compile builds the policy of channel 0 of chanYAML(keys), with now as min_age's clock.
func compile(t *testing.T, keys string, now func() time.Time) policy.Policy {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(chanYAML(keys)), noEnv)
	if err != nil {
		t.Fatalf("config %q: %v", keys, err)
	}
	p, err := policy.Compile(cfg, 0, now)
	if err != nil {
		t.Fatalf("compile %q: %v", keys, err)
	}
	return p
}

// channel is a channel's records by subdir, as upstream lists them.
type channel map[string][]*repodata.Record

// subdirs are the subdirs the channel has, what the proxy passes as available.
func (ch channel) subdirs() []string {
	out := make([]string, 0, len(ch))
	for sd := range ch {
		out = append(out, sd)
	}
	sort.Strings(out)
	return out
}

// prepare asks p for subdir's Decider the way the proxy does: all visits the
// records of every subdir p.Inputs names (subdir alone when nil), and nothing else.
func prepare(t *testing.T, p policy.Policy, subdir string, ch channel) policy.Decider {
	t.Helper()
	inputs := p.Inputs(subdir, ch.subdirs)
	if len(inputs) == 0 {
		inputs = []string{subdir}
	}
	d, err := p.Prepare(subdir, func(visit func(string, *repodata.Record)) error {
		for _, sub := range inputs {
			for _, r := range ch[sub] {
				visit(sub, r)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Prepare(%s): %v", subdir, err)
	}
	return d
}

// rec is a record; fields beyond name, version and build are set by the caller.
func rec(name, version, build string, depends ...string) *repodata.Record {
	return &repodata.Record{Filename: name + "-" + version + "-" + build + ".conda", Name: name,
		Version: version, Build: build, Depends: depends, Size: -1, Conda: true}
}

func withSubdir(r *repodata.Record, sub string) *repodata.Record {
	r.Subdir = sub
	if sub == "noarch" {
		r.Noarch = "python"
	}
	return r
}

// checkRule compares a Decide answer with want ("" served, else a prefix of the rule).
func checkRule(t *testing.T, what string, gotRule, detail, want string) {
	t.Helper()
	switch {
	case want == "" && gotRule != "":
		t.Errorf("%s: hidden by %q (%s), want served", what, gotRule, detail)
	case want != "" && gotRule == "":
		t.Errorf("%s: served, want hidden by %q", what, want)
	case want != "" && !strings.HasPrefix(gotRule, want):
		t.Errorf("%s: hidden by %q (%s), want rule %q", what, gotRule, detail, want)
	}
}

// ruleCase is one row of a one-record table.
type ruleCase struct {
	keys string
	r    *repodata.Record
	want string
}

func runOneRecord(t *testing.T, cases []ruleCase, now func() time.Time) {
	t.Helper()
	for i, c := range cases {
		p := compile(t, c.keys, now)
		sub := c.r.Subdir
		if sub == "" {
			sub = "linux-64"
		}
		d := prepare(t, p, sub, channel{sub: {c.r}})
		rule, detail := d.Decide(c.r)
		checkRule(t, fmt.Sprintf("#%d [%s] %s %s %s depends=%q license=%q family=%q ts=%d", i,
			strings.ReplaceAll(strings.TrimSpace(c.keys), "\n", "; "), c.r.Name, c.r.Version, c.r.Build,
			c.r.Depends, c.r.License, c.r.LicenseFamily, c.r.Timestamp), rule, detail, c.want)
	}
}

// Step 1: platforms. noarch is always served; no platforms serves every subdir.
func TestPlatforms(t *testing.T) {
	cases := []struct {
		keys   string
		subdir string
		want   bool
	}{
		{"", "linux-64", true},
		{"", "osx-arm64", true},
		{"", "win-arm64", true},
		{"", "noarch", true},
		{"platforms: [linux-64]", "linux-64", true},
		{"platforms: [linux-64]", "noarch", true}, // always, though not listed
		{"platforms: [linux-64]", "osx-64", false},
		{"platforms: [linux-64]", "linux-aarch64", false},
		{"platforms: [linux-64]", "linux", false},
		{"platforms: [linux-64]", "linux-6", false},
		{"platforms: [linux-64, osx-arm64]", "osx-arm64", true},
		{"platforms: [linux-64, osx-arm64]", "osx-64", false},
		{"platforms: [noarch]", "noarch", true},
		{"platforms: [noarch]", "linux-64", false},
		{"platforms: [win-64]\nblacklist: [numpy]", "win-32", false},
	}
	for _, c := range cases {
		p := compile(t, c.keys, nil)
		if got := p.ServesSubdir(c.subdir); got != c.want {
			t.Errorf("[%s] ServesSubdir(%s) = %v, want %v", c.keys, c.subdir, got, c.want)
		}
	}
}

// Step 2: pkg_list (and its alias package_list), conda match specs.
func TestPkgList(t *testing.T) {
	numpy := func(v, b string) *repodata.Record { return rec("numpy", v, b) }
	cases := []ruleCase{
		{"pkg_list: [numpy]", numpy("1.26.4", "py311h64a7726_0"), ""},
		{"pkg_list: [numpy]", rec("scipy", "1.11.0", "py311_0"), "pkg_list"},
		{"pkg_list: [numpy]", rec("numpy-base", "1.26.4", "py311_0"), "pkg_list"},
		{"package_list: [numpy]", numpy("1.26.4", "py311h64a7726_0"), ""},
		{"package_list: [numpy]", rec("scipy", "1.11.0", "py311_0"), "pkg_list"},
		// numpy 1.26.*: versions starting with 1.26.
		{`pkg_list: ["numpy 1.26.*"]`, numpy("1.26.4", "py311h64a7726_0"), ""},
		{`pkg_list: ["numpy 1.26.*"]`, numpy("1.26.0", "py39_0"), ""},
		{`pkg_list: ["numpy 1.26.*"]`, numpy("1.25.2", "py311_0"), "pkg_list"},
		{`pkg_list: ["numpy 1.26.*"]`, numpy("1.2.6", "py311_0"), "pkg_list"},
		{`pkg_list: ["numpy 1.26.*"]`, numpy("1.260.0", "py311_0"), "pkg_list"},
		// bracket form: version and build both must hold.
		{`pkg_list: ["numpy[version='>=1.20',build=py311*]"]`, numpy("1.26.4", "py311h64a7726_0"), ""},
		{`pkg_list: ["numpy[version='>=1.20',build=py311*]"]`, numpy("1.20", "py311_0"), ""},
		{`pkg_list: ["numpy[version='>=1.20',build=py311*]"]`, numpy("1.26.4", "py310h64a7726_0"), "pkg_list"},
		{`pkg_list: ["numpy[version='>=1.20',build=py311*]"]`, numpy("1.19.5", "py311_0"), "pkg_list"},
		// a glob in the name.
		{`pkg_list: ["r-*"]`, rec("r-base", "4.3.1", "h0_0"), ""},
		{`pkg_list: ["r-*"]`, rec("r-ggplot2", "3.4.0", "r43_0"), ""},
		{`pkg_list: ["r-*"]`, rec("r", "4.3", "r43_0"), "pkg_list"},
		{`pkg_list: ["r-*"]`, rec("rpy2", "3.5.0", "py311_0"), "pkg_list"},
		{`pkg_list: ["r-*"]`, rec("bioconductor-r-x", "1.0", "0"), "pkg_list"},
		// numpy=1.26 is fuzzy: 1.26.*.
		{`pkg_list: ["numpy=1.26"]`, numpy("1.26.4", "py311_0"), ""},
		{`pkg_list: ["numpy=1.26"]`, numpy("1.26", "py311_0"), ""},
		{`pkg_list: ["numpy=1.26"]`, numpy("1.27.0", "py311_0"), "pkg_list"},
		{`pkg_list: ["numpy=1.26"]`, numpy("1.260", "py311_0"), "pkg_list"},
		// numpy==1.26 is exact (1.26.0 equals 1.26 in conda's order).
		{`pkg_list: ["numpy==1.26"]`, numpy("1.26.0", "py311_0"), ""},
		{`pkg_list: ["numpy==1.26"]`, numpy("1.26.4", "py311_0"), "pkg_list"},
		// a range.
		{`pkg_list: ["numpy >=1.20,<2"]`, numpy("1.20.0", "py311_0"), ""},
		{`pkg_list: ["numpy >=1.20,<2"]`, numpy("1.26.4", "py311_0"), ""},
		{`pkg_list: ["numpy >=1.20,<2"]`, numpy("2.0.0", "py311_0"), "pkg_list"},
		{`pkg_list: ["numpy >=1.20,<2"]`, numpy("1.19.5", "py311_0"), "pkg_list"},
		{`pkg_list: ["numpy >=1.20,<2"]`, numpy("2.0.0rc1", "py311_0"), ""}, // conda: 2.0.0rc1 < 2
		// version and build.
		{`pkg_list: ["numpy 1.26.4 py311*"]`, numpy("1.26.4", "py311h64a7726_0"), ""},
		{`pkg_list: ["numpy 1.26.4 py311*"]`, numpy("1.26.4", "py312h64a7726_0"), "pkg_list"},
		{`pkg_list: ["numpy 1.26.4 py311*"]`, numpy("1.26.3", "py311h64a7726_0"), "pkg_list"},
		// several specs: any one keeps the record.
		{`pkg_list: ["scipy", "numpy 1.26.*"]`, rec("scipy", "1.0", "0"), ""},
		{`pkg_list: ["scipy", "numpy 1.26.*"]`, numpy("1.26.1", "0"), ""},
		{`pkg_list: ["scipy", "numpy 1.26.*"]`, numpy("1.25.1", "0"), "pkg_list"},
		// without include_dependencies a dependency of a listed package is hidden.
		{`pkg_list: [numpy]`, rec("libblas", "3.9.0", "0"), "pkg_list"},
	}
	runOneRecord(t, cases, nil)
}

// decideAll decides every record of ch's subdir and returns filename -> rule.
func decideAll(t *testing.T, p policy.Policy, subdir string, ch channel) map[string]string {
	t.Helper()
	d := prepare(t, p, subdir, ch)
	out := map[string]string{}
	for _, r := range ch[subdir] {
		rule, _ := d.Decide(r)
		out[r.Filename] = rule
	}
	return out
}

func served(m map[string]string) []string {
	var out []string
	for fn, rule := range m {
		if rule == "" {
			out = append(out, fn)
		}
	}
	sort.Strings(out)
	return out
}

func fns(rs ...*repodata.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Filename)
	}
	sort.Strings(out)
	return out
}

func sameList(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Step 2 with include_dependencies: the closure by name over every served subdir.
func TestIncludeDependencies(t *testing.T) {
	t.Run("noarch root pulls in the linux-64 python", func(t *testing.T) {
		root := withSubdir(rec("mytool", "1.0", "pyhd8ed1ab_0", "python >=3.8", "click"), "noarch")
		click := withSubdir(rec("click", "8.1.7", "unix_pyh707e725_0", "python >=3.8", "__unix"), "noarch")
		other := withSubdir(rec("six", "1.16.0", "pyh6c4a22f_0", "python"), "noarch")
		py311 := rec("python", "3.11.8", "hab00c5b_0_cpython", "libzlib >=1.2.13", "tzdata")
		py312 := rec("python", "3.12.2", "hab00c5b_0_cpython", "libzlib >=1.2.13")
		zlib := rec("libzlib", "1.2.13", "hd590333_5")
		numpy := rec("numpy", "1.26.4", "py311h64a7726_0", "python >=3.11,<3.12.0a0")
		tz := withSubdir(rec("tzdata", "2024a", "h0c530f3_0"), "noarch")
		ch := channel{"noarch": {root, click, other, tz}, "linux-64": {py311, py312, zlib, numpy}}
		p := compile(t, "platforms: [linux-64]\npkg_list: [mytool]\ninclude_dependencies: true", nil)
		if got, want := served(decideAll(t, p, "linux-64", ch)), fns(py311, py312, zlib); !sameList(got, want) {
			t.Errorf("linux-64 served %v, want %v (python every version, and libzlib needed by python)", got, want)
		}
		if got, want := served(decideAll(t, p, "noarch", ch)), fns(root, click, tz); !sameList(got, want) {
			t.Errorf("noarch served %v, want %v (root, click, and tzdata needed by the linux-64 python)", got, want)
		}
		d := prepare(t, p, "linux-64", ch)
		rule, _ := d.Decide(numpy)
		checkRule(t, "numpy, needed by nothing", rule, "", "pkg_list")
	})

	t.Run("transitive, by name, every version, constrains not followed", func(t *testing.T) {
		a := rec("a", "1.0", "0", "b >=2")
		b1 := rec("b", "1.0", "0")          // b >=2 is not satisfied, but by name every version
		b2 := rec("b", "2.0", "0", "c 1.*") // b -> c
		c1 := rec("c", "1.0", "0")          // needed through b 2.0
		c3 := rec("c", "3.0", "0", "d")     // by name: every version of c, and its depends
		d := rec("d", "1.0", "0")           // needed through c 3.0
		e := rec("e", "1.0", "0")           // only constrained by a: not needed
		f := rec("f", "1.0", "0")           // depended on by nothing
		a.Constrains = []string{"e >=1"}
		ch := channel{"linux-64": {a, b1, b2, c1, c3, d, e, f}}
		p := compile(t, "platforms: [linux-64]\npkg_list: [a]\ninclude_dependencies: true", nil)
		got := decideAll(t, p, "linux-64", ch)
		if want := fns(a, b1, b2, c1, c3, d); !sameList(served(got), want) {
			t.Errorf("served %v, want %v", served(got), want)
		}
		if !strings.HasPrefix(got[e.Filename], "pkg_list") {
			t.Errorf("e (only in a's constrains) got %q, want hidden by pkg_list", got[e.Filename])
		}
	})

	t.Run("roots are the records pkg_list matches; a needed name keeps every version", func(t *testing.T) {
		a1 := rec("a", "1.0", "0", "x") // not a root: its dependency x is not needed...
		a2 := rec("a", "2.0", "0", "b") // root
		b := rec("b", "1.0", "0", "a")  // ...until b needs a by name: then every a is kept
		x := rec("x", "1.0", "0")       // needed transitively: b -> a (every version) -> a 1.0 -> x
		y := rec("y", "1.0", "0", "a")  // depends on a, but nothing needs y
		ch := channel{"linux-64": {a1, a2, b, x, y}}
		p := compile(t, "platforms: [linux-64]\n"+`pkg_list: ["a 2.*"]`+"\ninclude_dependencies: true", nil)
		got := decideAll(t, p, "linux-64", ch)
		if want := fns(a1, a2, b, x); !sameList(served(got), want) {
			t.Errorf("served %v, want %v (a 1.0 does not match pkg_list but a is needed by b)", served(got), want)
		}

		// Without the back edge, a 1.0 and its dependency stay out.
		b2 := rec("b", "1.0", "0")
		ch = channel{"linux-64": {a1, a2, b2, x}}
		got = decideAll(t, p, "linux-64", ch)
		if want := fns(a2, b2); !sameList(served(got), want) {
			t.Errorf("served %v, want %v (a 1.0 is not a root, so x is not needed)", served(got), want)
		}
	})

	t.Run("without include_dependencies nothing is pulled in", func(t *testing.T) {
		a := rec("a", "1.0", "0", "b")
		b := rec("b", "1.0", "0")
		p := compile(t, "pkg_list: [a]", nil)
		got := decideAll(t, p, "linux-64", channel{"linux-64": {a, b}})
		if want := fns(a); !sameList(served(got), want) {
			t.Errorf("served %v, want %v", served(got), want)
		}
	})

	t.Run("dependency specs written every way name the package", func(t *testing.T) {
		a := rec("a", "1.0", "0", "b>=1", "c ==2", "d=1.0=h0_0", "e 1.* h*", "f[version='>=1']")
		var deps []*repodata.Record
		for _, n := range []string{"b", "c", "d", "e", "f"} {
			deps = append(deps, rec(n, "1.0", "h0_0"))
		}
		ch := channel{"linux-64": append([]*repodata.Record{a}, deps...)}
		p := compile(t, "platforms: [linux-64]\npkg_list: [a]\ninclude_dependencies: true", nil)
		got := decideAll(t, p, "linux-64", ch)
		if want := fns(append([]*repodata.Record{a}, deps...)...); !sameList(served(got), want) {
			t.Errorf("served %v, want %v", served(got), want)
		}
	})

	// No platforms: every subdir is served, so the closure must still run across
	// them: a linux-64 root's noarch dependency must be served in noarch, or a client
	// that can see the root cannot install it. The configuration may instead refuse
	// include_dependencies without platforms; it must not silently serve less.
	t.Run("no platforms: refused, or a linux-64 root keeps its noarch dependency", func(t *testing.T) {
		const keys = "pkg_list: [python]\ninclude_dependencies: true"
		if _, err := config.Parse("test.yaml", []byte(chanYAML(keys)), noEnv); err != nil {
			if !strings.Contains(err.Error(), "include_dependencies") || !strings.Contains(err.Error(), "test.yaml:") {
				t.Errorf("include_dependencies without platforms refused, but the error %q does not name the key and line", err)
			}
			return
		}
		py := rec("python", "3.9.19", "h0755675_0_cpython", "tzdata")
		tz := withSubdir(rec("tzdata", "2024a", "h0c530f3_0"), "noarch")
		six := withSubdir(rec("six", "1.16.0", "pyh6c4a22f_0", "python"), "noarch")
		ch := channel{"linux-64": {py}, "noarch": {tz, six}}
		p := compile(t, keys, nil)
		if got, want := served(decideAll(t, p, "linux-64", ch)), fns(py); !sameList(got, want) {
			t.Errorf("linux-64 served %v, want %v", got, want)
		}
		got := decideAll(t, p, "noarch", ch)
		if got[tz.Filename] != "" {
			t.Errorf("BUG: with no platforms, noarch tzdata (needed by the pkg_list root python in linux-64) "+
				"is hidden by %q; SPEC step 2 runs the closure over all served subdirs together. "+
				"Inputs(\"noarch\") = %q does not include linux-64", got[tz.Filename], p.Inputs("noarch", ch.subdirs))
		}
		if got[six.Filename] == "" {
			t.Errorf("six (not needed) is served in noarch")
		}
	})

	t.Run("platforms: the closure spans every listed platform and noarch", func(t *testing.T) {
		p := compile(t, "platforms: [linux-64, osx-arm64]\npkg_list: [a]\ninclude_dependencies: true", nil)
		for _, sd := range []string{"linux-64", "osx-arm64", "noarch"} {
			in := append([]string(nil), p.Inputs(sd, nil)...)
			sort.Strings(in)
			if want := []string{"linux-64", "noarch", "osx-arm64"}; !sameList(in, want) {
				t.Errorf("Inputs(%s) = %q, want %q", sd, in, want)
			}
		}
		// An osx-arm64 root's dependency name is needed in every served subdir.
		root := withSubdir(rec("a", "1.0", "0", "b"), "osx-arm64")
		bLinux := rec("b", "1.0", "0")
		bNoarch := withSubdir(rec("b", "0.9", "0"), "noarch")
		c := rec("c", "1.0", "0")
		ch := channel{"osx-arm64": {root}, "linux-64": {bLinux, c}, "noarch": {bNoarch}}
		if got, want := served(decideAll(t, p, "linux-64", ch)), fns(bLinux); !sameList(got, want) {
			t.Errorf("linux-64 served %v, want %v", got, want)
		}
		if got, want := served(decideAll(t, p, "noarch", ch)), fns(bNoarch); !sameList(got, want) {
			t.Errorf("noarch served %v, want %v", got, want)
		}
	})
}

// Step 3: python_versions.
func TestPythonVersions(t *testing.T) {
	dep := func(deps ...string) *repodata.Record { return rec("pkg", "1.0", "py_0", deps...) }
	py := func(v string) *repodata.Record { return rec("python", v, "h0_0_cpython") }
	const v311 = `python_versions: ["3.11"]`
	const v313 = `python_versions: ["3.13"]`
	const hide = "python_versions"
	cases := []ruleCase{
		// SPEC's own examples for 3.11.
		{v311, dep("python >=3.11,<3.12.0a0"), ""},
		{v311, dep("python >=3.8"), ""},
		{v311, dep("python >=3.12"), hide},
		{v311, dep("python <3.11"), hide},
		{v311, dep("python 3.11.*"), ""},
		{v311, dep("python 3.12.*"), hide},
		{v311, dep("python 3.1.*"), hide},
		{v311, dep("python >=3.10,<3.11.0a0"), hide},
		{v311, dep("python ==3.11.5"), ""},
		{v311, dep("python 3.11.8"), ""},
		{v311, dep("python >3.11.4,<3.11.6"), ""},
		{v311, dep("python >=2.7,<3"), hide},
		{v311, dep("python 2.7*"), hide},
		{v311, dep("python 3.11*"), ""},
		{v311, dep("python >=3"), ""},
		{v311, dep("python !=3.11.*"), hide},
		{v311, dep("python ==2.7.*|>=3.6"), ""},
		{v311, dep("python 3.10.*|3.11.*"), ""},
		{v311, dep("python"), ""},
		{v311, dep("python>=3.12"), hide}, // no space after the name
		{v311, dep("python>=3.11"), ""},
		{v311, dep("python=3.12"), hide},
		{v311, dep("python=3.11"), ""},
		{v311, dep("python *"), ""},
		// all of a record's python constraints at once.
		{v311, dep("python >=3.10", "python <3.11"), hide},
		{v311, dep("python >=3.10", "python <3.12"), ""},
		{v311, dep("python >=3.11,<3.12.0a0", "python >=3.11,<3.12.0a0 *_cpython"), ""},
		{v311, dep("python >=3.12,<3.13.0a0", "python >=3.12,<3.13.0a0 *_cpython"), hide},
		{v311, dep("python >=3.11.3", "python <3.11.3"), hide},
		{v311, dep("python", "python >=3.12"), hide},
		// the build part does not count.
		{v311, dep("python 3.11.* *_cpython"), ""},
		{v311, dep("python 3.11.* *_73_pypy"), ""},
		{v311, dep("python 3.12.* *_cpython"), hide},
		// other names do not count.
		{v311, dep("python_abi 3.12.* *_cp312"), ""},
		{v311, dep("python_abi 3.11.* *_cp311"), ""},
		{v311, dep("python-dateutil >=2.8.2"), ""},
		{v311, dep("python-dateutil <1"), ""},
		{v311, dep("python_abi 3.12.* *_cp312", "python >=3.11,<3.12.0a0"), ""},
		{v311, dep("pythonnet 3.12.*", "python-dateutil 3.12.*"), ""},
		// records with no constrained python dependency stay, noarch included.
		{v311, dep(), ""},
		{v311, dep("numpy >=1.20"), ""},
		{v311, withSubdir(dep(), "noarch"), ""},
		{v311, withSubdir(dep("python >=3.8", "six"), "noarch"), ""},
		{v311, withSubdir(dep("python >=3.12"), "noarch"), hide},
		// python itself: its version starts with 3.11, in conda's sense.
		{v311, py("3.11.0rc1"), ""},
		{v311, py("3.11.0"), ""},
		{v311, py("3.11.8"), ""},
		{v311, py("3.11"), ""},
		{v311, py("3.1"), hide},
		{v311, py("3.1.5"), hide},
		{v311, py("3.12.0"), hide},
		{v311, py("3.110.1"), hide},
		{v311, py("2.7.18"), hide},
		{`python_versions: ["3.10"]`, py("3.1.5"), hide},
		{`python_versions: ["3.10"]`, py("3.10.14"), ""},
		{`python_versions: ["3.10"]`, dep("python 3.1.*"), hide},
		{`python_versions: ["3.10"]`, dep("python >=3.10,<3.11.0a0"), ""},
		// a pre-release counts only when the constraint names it.
		{v313, dep("python >=3.13.0rc1,<3.14"), ""}, // 3.13.0 satisfies
		{v313, dep("python ==3.13.0rc1"), ""},       // named
		{v313, dep("python >=3.13.0rc1,<3.13.0"), ""},
		{v313, dep("python >3.13.0a0,<3.13.0"), hide}, // only unnamed pre-releases satisfy
		{v313, dep("python <3.13.0a0"), hide},
		{v313, dep("python >=3.13.0a0,<3.14.0a0"), ""},
		// several versions: any one of them.
		{`python_versions: ["3.9", "3.11"]`, dep("python >=3.10,<3.11.0a0"), hide},
		{`python_versions: ["3.9", "3.11"]`, dep("python >=3.9,<3.10.0a0"), ""},
		{`python_versions: ["3.9", "3.11"]`, dep("python >=3.11,<3.12.0a0"), ""},
		{`python_versions: ["3.9", "3.11"]`, py("3.10.2"), hide},
		{`python_versions: ["3.9", "3.11"]`, py("3.9.1rc1"), ""},
		// X.Y.Z: that release.
		{`python_versions: ["3.11.4"]`, dep("python >=3.11.5"), hide},
		{`python_versions: ["3.11.4"]`, dep("python >=3.11,<3.11.5"), ""},
		{`python_versions: ["3.11.4"]`, py("3.11.4"), ""},
		{`python_versions: ["3.11.4"]`, py("3.11.5"), hide},
	}
	runOneRecord(t, cases, nil)
}

// Step 4: license_blacklist.
func TestLicenseBlacklist(t *testing.T) {
	lic := func(license, family string) *repodata.Record {
		r := rec("pkg", "1.0", "0")
		r.License, r.LicenseFamily = license, family
		return r
	}
	const gpl = "license_blacklist: [GPL]"
	const hide = "license_blacklist: GPL"
	cases := []ruleCase{
		{gpl, lic("GPL-3.0-only", ""), hide},
		{gpl, lic("GPL2", ""), hide},
		{gpl, lic("", "GPL3"), hide},
		{gpl, lic("MIT", "GPL3"), hide},
		{gpl, lic("GPL", ""), hide},
		{gpl, lic("", "GPL"), hide},
		{gpl, lic("GPL 3", ""), hide},
		{gpl, lic("GPL-2.0+", ""), hide},
		{gpl, lic("(GPL-2.0)", ""), hide},
		{gpl, lic("GPL-3.0-only WITH GCC-exception-3.1", ""), hide},
		{gpl, lic("LGPL-2.1", ""), ""},
		{gpl, lic("LGPL-2.1-or-later", "LGPL"), ""},
		{gpl, lic("AGPL-3.0", ""), ""},
		{gpl, lic("AGPL-3.0-or-later", "AGPL"), ""},
		{gpl, lic("LGPL-2.1-only", "GPL"), hide}, // the family catches it
		{gpl, lic("GPLv3", ""), ""},              // 'v' is neither a digit nor '-'
		{gpl, lic("LicenseRef-GPL", ""), ""},
		{gpl, lic("MIT", "MIT"), ""},
		{gpl, lic("", ""), ""},
		// case-insensitive, both ways.
		{gpl, lic("gpl-2.0-or-later", ""), hide},
		{gpl, lic("", "gpl2"), hide},
		{"license_blacklist: [gpl]", lic("GPL-3.0", ""), "license_blacklist: gpl"},
		// compound expressions: any identifier.
		{gpl, lic("GPL-2.0-or-later AND MIT", ""), hide},
		{gpl, lic("MIT AND GPL-2.0-or-later", ""), hide},
		{gpl, lic("MIT OR LGPL-2.1-only", ""), ""},
		{gpl, lic("LGPL-2.1 and GPL-2.0", ""), hide},
		// BSD.
		{"license_blacklist: [BSD]", lic("BSD-3-Clause", ""), "license_blacklist: BSD"},
		{"license_blacklist: [BSD]", lic("BSD", ""), "license_blacklist: BSD"},
		{"license_blacklist: [BSD]", lic("0BSD", ""), ""},
		{"license_blacklist: [BSD]", lic("BSDL", ""), ""},
		{"license_blacklist: [BSD]", lic("Modified BSD License (3-clause)", ""), "license_blacklist: BSD"},
		// an entry with a version.
		{`license_blacklist: ["GPL-2.0"]`, lic("GPL-2.0-only", ""), "license_blacklist: GPL-2.0"},
		{`license_blacklist: ["GPL-2.0"]`, lic("GPL-2.0", ""), "license_blacklist: GPL-2.0"},
		{`license_blacklist: ["GPL-2.0"]`, lic("GPL-3.0-only", ""), ""},
		// several entries: the rule names the entry that matched.
		{"license_blacklist: [MIT, GPL]", lic("GPL-3.0", ""), "license_blacklist: GPL"},
		{"license_blacklist: [MIT, GPL]", lic("MIT", ""), "license_blacklist: MIT"},
		{"license_blacklist: [MIT, GPL]", lic("Apache-2.0", "APACHE"), ""},
	}
	runOneRecord(t, cases, nil)
}

// Step 5: blacklist.
func TestBlacklist(t *testing.T) {
	cases := []ruleCase{
		{"blacklist: [numpy]", rec("numpy", "1.26.4", "py311_0"), "blacklist: numpy"},
		{"blacklist: [numpy]", rec("numpy-base", "1.26.4", "py311_0"), ""},
		{`blacklist: ["numpy 1.26.*"]`, rec("numpy", "1.26.4", "py311_0"), "blacklist: numpy 1.26.*"},
		{`blacklist: ["numpy 1.26.*"]`, rec("numpy", "1.25.0", "py311_0"), ""},
		{`blacklist: ["numpy >=1.20,<2"]`, rec("numpy", "2.1.0", "py311_0"), ""},
		{`blacklist: ["numpy >=1.20,<2"]`, rec("numpy", "1.21.0", "py311_0"), "blacklist: numpy >=1.20,<2"},
		{`blacklist: ["numpy=1.26"]`, rec("numpy", "1.26.4", "py311_0"), "blacklist: numpy=1.26"},
		{`blacklist: ["numpy[version='>=1.20',build=py311*]"]`, rec("numpy", "1.26.4", "py311h0_0"), "blacklist"},
		{`blacklist: ["numpy[version='>=1.20',build=py311*]"]`, rec("numpy", "1.26.4", "py312h0_0"), ""},
		{`blacklist: ["r-*"]`, rec("r-base", "4.3.1", "0"), "blacklist: r-*"},
		{`blacklist: ["r-*"]`, rec("r", "4.3", "0"), ""},
		{`blacklist: ["zlib", "openssl 1.*"]`, rec("openssl", "1.1.1w", "0"), "blacklist: openssl 1.*"},
		{`blacklist: ["zlib", "openssl 1.*"]`, rec("openssl", "3.2.1", "0"), ""},
	}
	runOneRecord(t, cases, nil)
}

// Step 6: whitelist restores only what steps 4-5 hid.
func TestWhitelist(t *testing.T) {
	gplNumpy := func(v string) *repodata.Record {
		r := rec("numpy", v, "py311_0")
		r.License = "GPL-3.0-only"
		return r
	}
	old := rec("numpy", "1.26.4", "py311_0")
	old.Timestamp = 1704153600000 // 2024-01-02
	cases := []ruleCase{
		{`blacklist: [numpy]` + "\n" + `whitelist: ["numpy 1.26.*"]`, rec("numpy", "1.26.4", "py311_0"), ""},
		{`blacklist: [numpy]` + "\n" + `whitelist: ["numpy 1.26.*"]`, rec("numpy", "1.25.0", "py311_0"), "blacklist: numpy"},
		{`blacklist: ["r-*"]` + "\n" + `whitelist: [r-base]`, rec("r-base", "4.3.1", "0"), ""},
		{`blacklist: ["r-*"]` + "\n" + `whitelist: [r-base]`, rec("r-ggplot2", "3.4.0", "0"), "blacklist: r-*"},
		{"license_blacklist: [GPL]\nwhitelist: [numpy]", gplNumpy("1.26.4"), ""},
		{"license_blacklist: [GPL]\nwhitelist: [\"numpy 2.*\"]", gplNumpy("1.26.4"), "license_blacklist: GPL"},
		{"license_blacklist: [GPL]\nblacklist: [numpy]\nwhitelist: [numpy]", gplNumpy("1.26.4"), ""},
		// a whitelist spec alone hides nothing.
		{"whitelist: [numpy]", rec("scipy", "1.0", "0"), ""},
		// not restored: hidden by pkg_list, python_versions or exclude_newer.
		{"pkg_list: [scipy]\nwhitelist: [numpy]", rec("numpy", "1.26.4", "py311_0"), "pkg_list"},
		{"python_versions: [\"3.11\"]\nwhitelist: [numpy]", rec("numpy", "1.26.4", "py312_0", "python >=3.12,<3.13.0a0"), "python_versions"},
		{"exclude_newer: 2024-01-01\nwhitelist: [numpy]", old, "exclude_newer"},
		{"exclude_newer: 2024-01-01\nblacklist: [numpy]\nwhitelist: [numpy]", old, "exclude_newer"},
	}
	runOneRecord(t, cases, nil)
}

// Step 7: exclude_newer and min_age; timestamps in ms, or in s below 1e11.
func TestExcludeNewerAndMinAge(t *testing.T) {
	at := func(ts int64) *repodata.Record {
		r := rec("pkg", "1.0", "0")
		r.Timestamp = ts
		return r
	}
	ms := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	sec := func(s string) int64 { return ms(s) / 1000 }
	const date = "exclude_newer: 2024-01-01"
	const rfc = `exclude_newer: "2024-01-01T12:00:00Z"`
	const rfcOff = `exclude_newer: "2024-01-01T12:00:00+02:00"` // 10:00 UTC
	cases := []ruleCase{
		{date, at(ms("2024-01-02T00:00:00Z")), "exclude_newer"},
		{date, at(ms("2023-12-31T00:00:00Z")), ""},
		{date, at(sec("2024-01-02T00:00:00Z")), "exclude_newer"}, // seconds
		{date, at(sec("2023-12-31T00:00:00Z")), ""},
		{date, at(ms("2030-06-01T00:00:00Z")), "exclude_newer"},
		{date, at(0), ""}, // no timestamp
		{rfc, at(ms("2024-01-01T12:00:00.001Z")), "exclude_newer"},
		{rfc, at(ms("2024-01-01T12:00:00Z")), ""}, // not after
		{rfc, at(ms("2024-01-01T11:59:59Z")), ""},
		{rfc, at(sec("2024-01-01T12:00:01Z")), "exclude_newer"},
		{rfc, at(sec("2024-01-01T11:59:59Z")), ""},
		{rfcOff, at(ms("2024-01-01T11:00:00Z")), "exclude_newer"},
		{rfcOff, at(ms("2024-01-01T09:00:00Z")), ""},
		// the 1e11 boundary: 99999999999 is seconds (year 5138), 1e11 is ms (1973).
		{date, at(99_999_999_999), "exclude_newer"},
		{date, at(100_000_000_000), ""},
		// 1.7e9 is a plausible "seconds" timestamp (2023-11-14); as ms it would be 1970.
		{`exclude_newer: "2023-11-01"`, at(1_700_000_000), "exclude_newer"},
		{`exclude_newer: "2023-12-01"`, at(1_700_000_000), ""},
	}
	runOneRecord(t, cases, nil)

	now := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	const age = "min_age: 72h"
	ageCases := []ruleCase{
		{age, at(ms("2024-05-30T00:00:00Z")), "min_age"}, // 48h old
		{age, at(ms("2024-05-28T00:00:00Z")), ""},        // 96h old
		{age, at(sec("2024-05-30T00:00:00Z")), "min_age"},
		{age, at(sec("2024-05-28T00:00:00Z")), ""},
		{age, at(ms("2024-05-29T01:00:00Z")), "min_age"}, // 71h
		{age, at(ms("2024-05-28T23:00:00Z")), ""},        // 73h
		{age, at(0), ""},
		{age, at(ms("2024-06-02T00:00:00Z")), "min_age"}, // from the future
		{"min_age: 72h\nexclude_newer: 2024-05-01", at(ms("2024-05-15T00:00:00Z")), "exclude_newer"},
		{"min_age: 72h\nexclude_newer: 2024-05-01", at(ms("2024-05-31T00:00:00Z")), "exclude_newer"},
		{"min_age: 72h\nexclude_newer: 2024-05-01", at(ms("2024-04-30T00:00:00Z")), ""},
	}
	runOneRecord(t, ageCases, clock)

	// min_age follows the clock given to Compile.
	p := compile(t, age, clock)
	r := at(ms("2024-05-30T00:00:00Z"))
	d := prepare(t, p, "linux-64", channel{"linux-64": {r}})
	if rule, _ := d.Decide(r); !strings.HasPrefix(rule, "min_age") {
		t.Errorf("min_age at %v: %q", now, rule)
	}
	now = now.Add(48 * time.Hour)
	d = prepare(t, p, "linux-64", channel{"linux-64": {r}})
	if rule, detail := d.Decide(r); rule != "" {
		t.Errorf("min_age 48h later: still hidden by %q (%s)", rule, detail)
	}
}

// A record hidden by several rules reports the first in SPEC order.
func TestRuleOrder(t *testing.T) {
	r := func() *repodata.Record {
		x := rec("numpy", "1.26.4", "py312_0", "python >=3.12,<3.13.0a0")
		x.License = "GPL-3.0-only"
		x.Timestamp = 1893456000000 // 2030-01-01
		return x
	}
	const all = "pkg_list: [scipy]\npython_versions: [\"3.11\"]\nlicense_blacklist: [GPL]\nblacklist: [numpy]\nexclude_newer: 2024-01-01"
	cases := []ruleCase{
		{all, r(), "pkg_list"},
		{"python_versions: [\"3.11\"]\nlicense_blacklist: [GPL]\nblacklist: [numpy]\nexclude_newer: 2024-01-01", r(), "python_versions"},
		{"license_blacklist: [GPL]\nblacklist: [numpy]\nexclude_newer: 2024-01-01", r(), "license_blacklist: GPL"},
		{"blacklist: [numpy]\nexclude_newer: 2024-01-01", r(), "blacklist: numpy"},
		{"exclude_newer: 2024-01-01", r(), "exclude_newer"},
		{"license_blacklist: [GPL]\nblacklist: [numpy]\nwhitelist: [numpy]\nexclude_newer: 2024-01-01", r(), "exclude_newer"},
		{"pkg_list: [numpy]\npython_versions: [\"3.12\"]\nlicense_blacklist: [MIT]\nblacklist: [scipy]\nexclude_newer: 2031-01-01", r(), ""},
	}
	runOneRecord(t, cases, nil)
}

// A spec that does not parse is a configuration error naming the key and its line.
func TestBadSpecs(t *testing.T) {
	bads := []string{"numpy >=>1", "numpy[version=]", "numpy-1.0-0.conda", "numpy[foo=bar]"}
	for _, key := range []string{"blacklist", "whitelist", "pkg_list"} {
		for _, bad := range bads {
			yaml := "cache:\n  memory: 16MiB\nchannels:\n  - name: c\n    upstreams:\n      - url: https://example.invalid/c\n" +
				"    " + key + ":\n      - numpy\n      - \"" + bad + "\"\n"
			cfg, err := config.Parse("conf.yaml", []byte(yaml), noEnv)
			if err != nil {
				t.Fatalf("config.Parse must accept %q (specs are checked by policy.Compile): %v", bad, err)
			}
			_, err = policy.Compile(cfg, 0, nil)
			if err == nil {
				t.Errorf("%s: Compile accepted the bad spec %q", key, bad)
				continue
			}
			msg := err.Error()
			wantKey := "channels[0]." + key + "[1]"
			if !strings.Contains(msg, wantKey) {
				t.Errorf("%s %q: error %q does not name %s", key, bad, msg, wantKey)
			}
			// The entry is on line 9 of the file.
			if !strings.Contains(msg, "conf.yaml:9") {
				t.Errorf("%s %q: error %q does not give the line conf.yaml:9", key, bad, msg)
			}
		}
	}
	// package_list (the alias of pkg_list): the error still gives the entry's line.
	yaml := "channels:\n  - name: c\n    upstreams:\n      - url: https://example.invalid/c\n" +
		"    package_list:\n      - numpy\n      - \"numpy >=>1\"\n"
	cfg, err := config.Parse("conf.yaml", []byte(yaml), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Compile(cfg, 0, nil); err == nil {
		t.Errorf("package_list: Compile accepted a bad spec")
	} else if msg := err.Error(); !strings.Contains(msg, "conf.yaml:7") ||
		!(strings.Contains(msg, "package_list[1]") || strings.Contains(msg, "pkg_list[1]")) {
		t.Errorf("package_list bad spec on line 7: error %q, want \"conf.yaml:7: channels[0].package_list[1]\" "+
			"(or pkg_list[1]); config's alias merge moves only the key's line, not its entries'", msg)
	}
	// Good specs compile.
	p := compile(t, `blacklist: ["numpy 1.26.*", "numpy[version='>=1.20',build=py311*]", "r-*", "numpy=1.26", "numpy >=1.20,<2", "numpy 1.26.4 py311*"]`, nil)
	if p == nil {
		t.Fatal("nil policy")
	}
}

// The fingerprint changes with every rule and only with the rules.
func TestFingerprint(t *testing.T) {
	keys := []string{
		"",
		"platforms: [linux-64]",
		"pkg_list: [numpy]",
		"platforms: [linux-64]\npkg_list: [numpy]\ninclude_dependencies: true",
		`python_versions: ["3.11"]`,
		"license_blacklist: [GPL]",
		"blacklist: [numpy]",
		"blacklist: [numpy]\nwhitelist: [numpy]",
		"exclude_newer: 2024-01-01",
		"min_age: 24h",
	}
	seen := map[string]string{}
	for _, k := range keys {
		fp := compile(t, k, nil).Fingerprint()
		if prev, ok := seen[fp]; ok {
			t.Errorf("[%s] and [%s] share fingerprint %s", prev, k, fp)
		}
		seen[fp] = k
		if again := compile(t, k, nil).Fingerprint(); again != fp {
			t.Errorf("[%s]: fingerprint not stable: %s then %s", k, fp, again)
		}
	}
}
