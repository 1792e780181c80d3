package matchspec

import (
	"errors"
	"strings"
	"testing"
)

func mustParse(t testing.TB, s string) *MatchSpec {
	t.Helper()
	m, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return m
}

// parsed is the expected outcome of Parse. An empty field means "absent";
// version holds conda's parsed version string (e.g. "1.8*"), compared after
// parsing it as a VersionSpec.
type parsed struct {
	channel, subdir, name, version, build, buildNumber string
}

// parseCases: conda tests/models/test_match_spec.py, the _parse_spec_str
// tests (test_parse_spec_str_no_brackets, test_parse_spec_str_with_brackets,
// test_star_name, test_parse_equal_equal, test_parse_hard,
// test_parse_channel_subdir, test_parse_parens,
// test_parse_build_number_brackets, test_build_number_and_filename), plus the
// docstring of _parse_version_plus_build and the cb_form cases of
// test_pip_style2 and test_comment.
var parseCases = []struct {
	spec string
	want parsed
}{
	{"numpy", parsed{name: "numpy"}},
	{"numpy=", parsed{name: "numpy"}}, // conda: "for whatever reason" allowed
	{"defaults::numpy", parsed{channel: "defaults", name: "numpy"}},
	{"https://repo.anaconda.com/pkgs/free::numpy", parsed{channel: "https://repo.anaconda.com/pkgs/free", name: "numpy"}},
	{"defaults::numpy=1.8", parsed{channel: "defaults", name: "numpy", version: "1.8*"}},
	{"defaults::numpy =1.8", parsed{channel: "defaults", name: "numpy", version: "1.8*"}},
	{"defaults::numpy=1.8=py27_0", parsed{channel: "defaults", name: "numpy", version: "1.8", build: "py27_0"}},
	{"defaults::numpy 1.8 py27_0", parsed{channel: "defaults", name: "numpy", version: "1.8", build: "py27_0"}},

	{"defaults::numpy[channel=anaconda]", parsed{channel: "anaconda", name: "numpy"}},
	{"defaults::numpy 1.8 py27_0[channel=anaconda]", parsed{channel: "anaconda", name: "numpy", version: "1.8", build: "py27_0"}},
	{"defaults::numpy=1.8=py27_0 [channel=anaconda,version=1.9, build=3]", parsed{channel: "anaconda", name: "numpy", version: "1.9", build: "3"}},
	{`defaults::numpy=1.8=py27_0 [channel='anaconda',version=">=1.8,<2|1.9", build='3']`, parsed{channel: "anaconda", name: "numpy", version: ">=1.8,<2|1.9", build: "3"}},
	{"tensorflow[name=pytorch]", parsed{name: "tensorflow"}},
	{"tensorflow[name=* version=*]", parsed{name: "tensorflow", version: "*"}},
	{`defaults::numpy=1.8=py27_0 [name="pytorch" channel='anaconda',version=">=1.8,<2|1.9", build='3']`, parsed{channel: "anaconda", name: "numpy", version: ">=1.8,<2|1.9", build: "3"}},

	{"* 2.7.4", parsed{name: "*", version: "2.7.4"}},
	{"* >=1.3 2", parsed{name: "*", version: ">=1.3", build: "2"}},

	{"numpy==1.7", parsed{name: "numpy", version: "1.7"}},
	{"numpy ==1.7", parsed{name: "numpy", version: "1.7"}},
	{"numpy=1.7", parsed{name: "numpy", version: "1.7*"}},
	{"numpy =1.7", parsed{name: "numpy", version: "1.7*"}},
	{"numpy !=1.7", parsed{name: "numpy", version: "!=1.7"}},

	{"numpy~=1.7.1", parsed{name: "numpy", version: "~=1.7.1"}},
	{"numpy>1.8,<2|==1.7", parsed{name: "numpy", version: ">1.8,<2|==1.7"}},
	{"numpy >1.8,<2|==1.7,!=1.9,~=1.7.1 py34_0", parsed{name: "numpy", version: ">1.8,<2|==1.7,!=1.9,~=1.7.1", build: "py34_0"}},
	{"*>1.8,<2|==1.7", parsed{name: "*", version: ">1.8,<2|==1.7"}},
	{"* >1.8,<2|==1.7", parsed{name: "*", version: ">1.8,<2|==1.7"}},
	{"* 1 *", parsed{name: "*", version: "1", build: "*"}},
	{"* * openblas_0", parsed{name: "*", version: "*", build: "openblas_0"}},
	{"* * *", parsed{name: "*", version: "*", build: "*"}},
	{"* *", parsed{name: "*", version: "*"}},

	{"conda-forge::foo>=1.0", parsed{channel: "conda-forge", name: "foo", version: ">=1.0"}},
	{"conda-forge/linux-32::foo>=1.0", parsed{channel: "conda-forge", subdir: "linux-32", name: "foo", version: ">=1.0"}},
	{"*/linux-32::foo>=1.0", parsed{channel: "*", subdir: "linux-32", name: "foo", version: ">=1.0"}},
	{"conda-forge::foo[build=3](target=blarg,optional)", parsed{channel: "conda-forge", name: "foo", build: "3"}},

	{"python[build_number=3]", parsed{name: "python", buildNumber: "3"}},
	{"python[build_number='>3']", parsed{name: "python", buildNumber: ">3"}},
	{"python[build_number='>=3']", parsed{name: "python", buildNumber: ">=3"}},
	{"python[build_number='<3']", parsed{name: "python", buildNumber: "<3"}},
	{"python[build_number='<=3']", parsed{name: "python", buildNumber: "<=3"}},
	{"zlib 1.2.7 0", parsed{name: "zlib", version: "1.2.7", build: "0"}},

	// _parse_version_plus_build docstring, behind a name
	{"x =1.2.3 0", parsed{name: "x", version: "1.2.3", build: "0"}}, // "=" + build is exact
	{"x 1.2.3=0", parsed{name: "x", version: "1.2.3", build: "0"}},
	{"x >=1.0 , < 2.0 py34_0", parsed{name: "x", version: ">=1.0,<2.0", build: "py34_0"}},
	{"x >=1.0 , < 2.0 =py34_0", parsed{name: "x", version: ">=1.0,<2.0", build: "py34_0"}},
	{"x =1.2.3 ", parsed{name: "x", version: "1.2.3*"}},
	{"x >1.8,<2|==1.7", parsed{name: "x", version: ">1.8,<2|==1.7"}},
	{"x * openblas_0", parsed{name: "x", version: "*", build: "openblas_0"}},

	// test_pip_style2 / test_comment (conda_build_form)
	{"foo>=1.0", parsed{name: "foo", version: ">=1.0"}},
	{"FOO-Bar >=1.0", parsed{name: "foo-bar", version: ">=1.0"}},
	{"foo >= 1.0", parsed{name: "foo", version: ">=1.0"}},
	{"foo > 1.0", parsed{name: "foo", version: ">1.0"}},
	{"foo != 1.0", parsed{name: "foo", version: "!=1.0"}},
	{"foo <1.0", parsed{name: "foo", version: "<1.0"}},
	{"foo >=1.0 , < 2.0", parsed{name: "foo", version: ">=1.0,<2.0"}},
	{"foo # comment", parsed{name: "foo"}},
	{"foo ## comment", parsed{name: "foo"}},
	{"foo=1.0=2", parsed{name: "foo", version: "1.0", build: "2"}},

	// The "=" / "==" rules of _sanitize_version_str.
	{"numpy==1.7=py27", parsed{name: "numpy", version: "1.7", build: "py27"}},
	{"numpy=1.7.*=py27", parsed{name: "numpy", version: "1.7.*", build: "py27"}},
	{"numpy=1.7,<2", parsed{name: "numpy", version: "=1.7,<2"}},
	{"numpy=*", parsed{name: "numpy", version: "*"}},
	{"numpy[version='=1.7']", parsed{name: "numpy", version: "1.7*"}},
	{"numpy[version='==1.7', build=py27]", parsed{name: "numpy", version: "1.7", build: "py27"}},
	{"numpy[version=1.10 build=py38_0]", parsed{name: "numpy", version: "1.10", build: "py38_0"}},
	{"numpy[version=>=1.10,<2]", parsed{name: "numpy", version: ">=1.10"}}, // unquoted ',' ends the value, as in conda
	{"foo 1.0 py-1", parsed{name: "foo", version: "1.0py-1"}},              // '-' cannot be in a positional build
	{"r-* 4.*", parsed{name: "r-*", version: "4.*"}},
	{"NumPy", parsed{name: "numpy"}},
}

func TestParse(t *testing.T) {
	for _, tc := range parseCases {
		m, err := Parse(tc.spec)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.spec, err)
			continue
		}
		got := parsed{channel: m.Channel, subdir: m.Subdir, name: m.Name}
		if vs, ok := m.Version(); ok {
			got.version = vs.String()
		}
		got.build, _ = m.Build()
		got.buildNumber, _ = m.BuildNumber()
		want := tc.want
		if want.version != "" {
			want.version = mustSpec(t, want.version).String()
		}
		if got != want {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.spec, got, want)
		}
	}
}

// numpy171 is conda's DPkg("numpy-1.7.1-py27_0.tar.bz2").
var numpy171 = Candidate{Name: "numpy", Version: "1.7.1", Build: "py27_0", BuildNumber: 0}

type matchCase struct {
	spec string
	c    Candidate
	want bool
}

// matchCases: conda test_match_spec.py test_match_1 (against numpy171),
// the extra asserts of test_match_1, test_openssl_match,
// test_bracket_matches, test_build_glob_merge (matching part) and test_dist.
var matchCases = func() []matchCase {
	cases := []matchCase{}
	for _, tc := range []struct {
		spec string
		want bool
	}{
		{"numpy 1.7*", true},
		{"numpy 1.7.1", true},
		{"numpy 1.7", false},
		{"numpy 1.5*", false},
		{"numpy >=1.5", true},
		{"numpy >=1.5,<2", true},
		{"numpy >=1.8,<1.9", false},
		{"numpy >1.5,<2,!=1.7.1", false},
		{"numpy >1.8,<2|==1.7", false},
		{"numpy >1.8,<2|>=1.7.1", true},
		{"numpy >=1.8|1.7*", true},
		{"numpy ==1.7", false},
		{"numpy >=1.5,>1.6", true},
		{"numpy ==1.7.1", true},
		{"numpy ==1.7.1.0", true},
		{"numpy==1.7.1.0.0", true},
		{"numpy >=1,*.7.*", true},
		{"numpy *.7.*,>=1", true},
		{"numpy >=1,*.8.*", false},
		{"numpy >=2,*.7.*", false},
		{"numpy 1.6*|1.7*", true},
		{"numpy 1.6*|1.8*", false},
		{"numpy 1.6.2|1.7*", true},
		{"numpy 1.6.2|1.7.1", true},
		{"numpy 1.6.2|1.7.0", false},
		{"numpy 1.7.1 py27_0", true},
		{"numpy 1.7.1 py26_0", false},
		{"numpy >1.7.1a", true},
		{"python", false},
		// the brief's forms
		{"numpy=1.7", true},
		{"numpy==1.7", false},
		{"numpy=1.7=py27_0", false}, // with a build, "=" is exact
		{"numpy=1.7.1=py27_0", true},
		{"numpy=1.7.*=py27*", true},
		{"numpy[version='>=1,<2',build=py27*]", true},
		{`numpy[version=">=1,<2", build="py26*"]`, false},
		{"numpy[build_number=0]", true},
		{"numpy[build_number='>0']", false},
		{"num*", true},
		{"*", true},
		{"*py", true},
		{"*pyx", false},
		{"conda-forge::numpy", true}, // channels are not matched
		{"numpy * *_0", true},
		{"numpy * ^py2.*_0$", true},
		{"numpy * ^py3.*_0$", false},
		{"NUMPY 1.7.1", true},
	} {
		cases = append(cases, matchCase{tc.spec, numpy171, tc.want})
	}
	pkg := func(name, version, build string, bn int) Candidate {
		return Candidate{Name: name, Version: version, Build: build, BuildNumber: bn}
	}
	red := pkg("my_pkg", "1.17.3", "red_habc123_3", 3)
	blue := pkg("my_pkg", "1.17.3", "blue_hdef1234_3", 3)
	record := pkg("numpy", "1.11.0", "py34_7", 7)
	return append(cases,
		matchCase{"numpy >=1.0.1", pkg("numpy", "1.0.1a", "0", 0), false},
		matchCase{"numpy >=1.0.1.vc11", pkg("numpy", "1.0.1a.vc11", "0", 0), false},
		matchCase{"numpy >=1.0.1*.vc11", pkg("numpy", "1.0.1a.vc11", "0", 0), true},
		matchCase{"numpy <1.0.1", pkg("numpy", "1.0.1.vc11", "0", 0), true},
		matchCase{"numpy <1.0.1", pkg("numpy", "1.0.1a.vc11", "0", 0), true},
		matchCase{"numpy >=1.0.1.vc11", pkg("numpy", "1.0.1a", "0", 0), false},
		matchCase{"numpy >=1.0.1a", pkg("numpy", "1.0.1z", "0", 0), true},
		matchCase{"numpy >=1.0.1a py27*", pkg("numpy", "1.0.1z", "py27_1", 1), true},
		matchCase{"blas * openblas_0", pkg("blas", "1.0", "openblas_0", 0), true},
		matchCase{"openssl>=1.0.1_", pkg("openssl", "1.0.1_", "4", 4), true},
		matchCase{"openssl>=1.0.1", pkg("openssl", "1.0.1_", "4", 4), false},
		matchCase{"numpy<2", record, true},
		matchCase{"numpy[version=<2]", record, true},
		matchCase{"numpy>2", record, false},
		matchCase{"numpy[version='>2']", record, false},
		matchCase{"numpy[build_number='7']", record, true},
		matchCase{"numpy[build_number='<8']", record, true},
		matchCase{"numpy[build_number='>7']", record, false},
		matchCase{"numpy[build_number='>=7']", record, true},
		matchCase{"numpy ~=1.10", record, true},
		matchCase{"numpy~=1.10", record, true},
		matchCase{"my_pkg=1.17.*", red, true},
		matchCase{"my_pkg=1.17.*", blue, true},
		matchCase{"my_pkg=1.17.*=red_*", red, true},
		matchCase{"my_pkg=1.17.*=red_*", blue, false},
		matchCase{"my_pkg=1.17.*=blue_*", red, false},
		matchCase{"my_pkg=1.17.*=blue_*", blue, true},
		matchCase{"my_pkg=1.17.*=blue_hdef1234_*", red, false},
		matchCase{"my_pkg=1.17.*=blue_hdef1234_*", blue, true},
		matchCase{"my_pkg=1.17.*=red_habc123_3", red, true},
		matchCase{"my_pkg=1.17.*=red_habc123_3", blue, false},
		matchCase{"my_pkg=1.17.*=*red*", red, true},
		matchCase{"my_pkg=1.17.*=*red*", blue, false},
		matchCase{"my_pkg=1.17.*=*_3", red, true},
		matchCase{"my_pkg=1.17.*=*_3", blue, true},
		matchCase{"my_pkg=1.17.*=*_2", red, false},
		matchCase{"my_pkg=1.17.*=*_habc123_3", red, true},
		matchCase{"my_pkg=1.17.*=*_habc123_3", blue, false},
		matchCase{"python 3.5*", pkg("python", "3.5.3", "1", 1), true},
		matchCase{"python 3.5*", pkg("python", "3.6.0", "0", 0), false},
		matchCase{"python 3.5*", pkg("python", "3.5.1", "0", 0), true},
		// a version conda cannot parse never matches a version constraint...
		matchCase{"numpy >=1", pkg("numpy", "1.0 beta", "0", 0), false},
		// ...except "*", which conda does not parse
		matchCase{"numpy *", pkg("numpy", "1.0 beta", "0", 0), true},
		matchCase{"numpy[version=*]", pkg("numpy", "1.0 beta", "0", 0), true},
	)
}()

func TestMatch(t *testing.T) {
	for _, tc := range matchCases {
		m := mustParse(t, tc.spec)
		if got := m.Match(tc.c); got != tc.want {
			t.Errorf("Parse(%q).Match(%+v) = %v, want %v", tc.spec, tc.c, got, tc.want)
		}
		if v, err := ParseVersion(tc.c.Version); err == nil {
			if got := m.MatchVersion(tc.c, v); got != tc.want {
				t.Errorf("Parse(%q).MatchVersion(%+v) = %v, want %v", tc.spec, tc.c, got, tc.want)
			}
		}
	}
}

// stringCases: conda test_match_spec.py test_canonical_string_forms,
// test_version_wildcard_serialization, test_simple, test_pip_style,
// test_tarball_match_specs (the spec form), test_no_triple_equals_roundtrip,
// test_double_equals_version_consistency, test_merge_single_name (the
// single spec) and the MatchSpec docstring. conda canonicalises channel URLs
// using its configuration ("pkgs/main::*" → "defaults::*"); those cases are
// left out.
var stringCases = []struct{ in, want string }{
	{"numpy", "numpy"},
	{"numpy=1.7", "numpy=1.7"},
	{"numpy 1.7*", "numpy=1.7"},
	{"numpy 1.7.*", "numpy=1.7"},
	{"numpy[version='1.7*']", "numpy=1.7"},
	{"numpy[version='1.7.*']", "numpy=1.7"},
	{"numpy[version=1.7.*]", "numpy=1.7"},
	{"numpy==1.7", "numpy==1.7"},
	{"numpy[version='1.7']", "numpy==1.7"},
	{"numpy[version=1.7]", "numpy==1.7"},
	{"numpy 1.7", "numpy==1.7"},
	// The glob "*!" ends in '!': "=0" after it would read back as "!=0" (fuzz).
	{"0 *![build=0]", "0==*![build=0]"},
	{"numpy[version='1.7|1.8']", "numpy[version='1.7|1.8']"},
	{`numpy[version="1.7,1.8"]`, "numpy[version='1.7,1.8']"},
	{"numpy >1.7", "numpy[version='>1.7']"},
	{"numpy>=1.7", "numpy[version='>=1.7']"},
	{"numpy=1.7=py3*_2", "numpy==1.7[build=py3*_2]"},
	{"numpy=1.7.*=py3*_2", "numpy=1.7[build=py3*_2]"},
	{"https://repo.anaconda.com/pkgs/free::numpy", "https://repo.anaconda.com/pkgs/free::numpy"},
	{"numpy[channel=https://repo.anaconda.com/pkgs/free]", "https://repo.anaconda.com/pkgs/free::numpy"},
	{"defaults::numpy", "defaults::numpy"},
	{"numpy[channel=defaults]", "defaults::numpy"},
	{"conda-forge::numpy", "conda-forge::numpy"},
	{"numpy[channel=conda-forge]", "conda-forge::numpy"},
	{"numpy[channel=defaults,subdir=osx-64]", "defaults/osx-64::numpy"},
	{"numpy[channel=https://repo.anaconda.com/pkgs/free/osx-64, subdir=linux-64]", "https://repo.anaconda.com/pkgs/free/linux-64::numpy"},
	{"https://repo.anaconda.com/pkgs/free/win-32::numpy", "https://repo.anaconda.com/pkgs/free/win-32::numpy"},
	{"numpy[channel=https://repo.anaconda.com/pkgs/free/osx-64]", "https://repo.anaconda.com/pkgs/free/osx-64::numpy"},
	{"defaults/win-32::numpy", "defaults/win-32::numpy"},
	{"conda-forge/linux-64::numpy", "conda-forge/linux-64::numpy"},
	{"numpy[channel=conda-forge,subdir=noarch]", "conda-forge/noarch::numpy"},
	{"numpy[subdir=win-32]", "numpy[subdir=win-32]"},
	{"*/win-32::numpy", "numpy[subdir=win-32]"},
	{`*/win-32::numpy[subdir="osx-64"]`, "numpy[subdir=osx-64]"},
	{"https://repo.anaconda.com/pkgs/free/linux-32::numpy", "https://repo.anaconda.com/pkgs/free/linux-32::numpy"},
	{"numpy[channel=https://repo.anaconda.com/pkgs/free/linux-32]", "https://repo.anaconda.com/pkgs/free/linux-32::numpy"},
	{"numpy=1.10=py38_0", "numpy==1.10=py38_0"},
	{"numpy==1.10=py38_0", "numpy==1.10=py38_0"},
	{"numpy[version=1.10 build=py38_0]", "numpy==1.10=py38_0"},
	{"numpy!=1.10", "numpy!=1.10"},
	{"numpy !=1.10", "numpy!=1.10"},
	{"numpy!=1.10 py38_0", "numpy[version='!=1.10',build=py38_0]"},
	{"numpy !=1.10 py38_0", "numpy[version='!=1.10',build=py38_0]"},
	{"numpy!=1.10=py38_0", "numpy[version='!=1.10',build=py38_0]"},
	{"numpy !=1.10=py38_0", "numpy[version='!=1.10',build=py38_0]"},
	{"numpy >1.7,!=1.10 py38_0", "numpy[version='>1.7,!=1.10',build=py38_0]"},
	{"numpy!=1.10.*", "numpy!=1.10.*"},
	{"numpy!=1.10,!=1.11", "numpy[version='!=1.10,!=1.11']"},
	{"numpy=1.10.*,!=1.10.2", "numpy[version='=1.10.*,!=1.10.2']"},
	{"numpy ~=1.10.1", "numpy~=1.10.1"},
	{"numpy~=1.10.1", "numpy~=1.10.1"},
	{"numpy ~=1.10.1 py38_0", "numpy[version='~=1.10.1',build=py38_0]"},
	{"openssl=1.1.1_", "openssl=1.1.1_"},
	{"openssl>=1.1.1_,!=1.1.1c", "openssl[version='>=1.1.1_,!=1.1.1c']"},

	{"name[version=*,build=*py27*]", "name[build=*py27*]"},
	{"name[version=*]", "name"},
	{"conda-forge::name[version=*]", "conda-forge::name"},
	{"name[version=1.2.*,build=*py27*]", "name=1.2[build=*py27*]"},
	{"name[version=1.*]", "name=1"},
	{"name[version=*,build_number=3]", "name[build_number=3]"},

	{"python", "python"},
	{"python=2.6", "python=2.6"},
	{"python=2.6*", "python=2.6"},
	{"ipython=0.13.2", "ipython=0.13.2"},
	{"ipython=0.13.0", "ipython=0.13.0"},
	{"ipython==0.13.0", "ipython==0.13.0"},
	{"foo=1.3.0=3", "foo==1.3.0=3"},
	{"foo>=1.3", "foo[version='>=1.3']"},
	{"zope.int>=1.3,<3.0", "zope.int[version='>=1.3,<3.0']"},
	{"numpy >=1.9", "numpy[version='>=1.9']"},

	{"conda-canary/linux-64::conda==4.3.21.post699+1dab973=py36h4a561cd_0", "conda-canary/linux-64::conda==4.3.21.post699+1dab973=py36h4a561cd_0"},
	{`numpy[version="=2"]`, "numpy=2"},
	{"awscli==2.15.37", "awscli==2.15.37"},
	{"awscli==2.15.37=wghq", "awscli==2.15.37=wghq"},
	{"exact 1.2.3 1", "exact==1.2.3=1"},

	{"foo 1.0 py27_0", "foo==1.0=py27_0"},
	{"foo=1.0=py27_0", "foo==1.0=py27_0"},
	{"conda-forge::foo[version=1.0.*]", "conda-forge::foo=1.0"},
	{"conda-forge/linux-64::foo>=1.0", "conda-forge/linux-64::foo[version='>=1.0']"},
	{"*/linux-64::foo>=1.0", "foo[subdir=linux-64,version='>=1.0']"},
	{"foo[build=py2*,channel=conda-forge]", "conda-forge::foo[build=py2*]"},
	{"python 2.* *cpython*", "python=2[build=*cpython*]"},
	{"python[version=2]", "python==2"},

	// Where conda's own canonical form would read back differently.
	{"foo 1.*.*", "foo==1.*.*"},
	{"foo 1.*.* py3", "foo==1.*.*=py3"},
	{"foo *.7*", "foo=*.7"},
	{"foo ==1.2.*", "foo=1.2"}, // conda strips "==": a prefix match
	{"foo[version='==1.2.*,<2']", "foo[version='1.2.*,<2']"},
	{"foo ==1.2.*,<2 py3", "foo[version='1.2,<2',build=py3]"},
	{"foo ==1*,<2 py3", "foo[version='(==1*,<2)',build=py3]"},
	{"foo[version='(==1*)']", "foo[version='(==1*)']"},
	{"foo[version='1.5|(1.6|1.7),1.8']", "foo[version='1.5|(1.6|1.7),1.8']"},
	{"foo ^1.*$", "foo[version='^1.*$']"},
	{"foo[build='a b']", "foo[build='a b']"},
	{"foo[version=1.0.conda]", "foo[version='1.0.conda']"},
	{"x.conda 1.0", "x.conda==1.0"},
	{"x.conda[version='1.conda']", "x.conda[version='1.conda']"},
	{"x.conda[version=*]", "x.conda[version=*]"},
	{"x.tar.bz2=", "x.tar.bz2[version=*]"},
	{"foo[version=1, build='py 3']", "foo==1=py 3"},
	{"r-*[version=1.2?*.3]", "r-*==1.2?*.3"},
	{"foo==1.0=a@b", "foo==1.0[build=a@b]"},
	{"00_=0..#00", "00_=0"}, // found by FuzzParseMatchSpec
	{"0==0.*.*,0 0", "0[version='(==0.*.*,0)',build=0]"},
}

func TestString(t *testing.T) {
	for _, tc := range stringCases {
		m := mustParse(t, tc.in)
		if got := m.String(); got != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// invalidMatchSpecs: conda test_match_spec.py test_matchspec_errors,
// test_invalid_match_spec, test_parse_errors,
// test_invalid_package_name_rejected, test_catch_invalid_regexes,
// test_invalid_version_reports_spec, and conda's empty-operator cases
// ("numpy==" etc., see _sanitize_version_str); then this package's
// fail-closed choices.
var invalidMatchSpecs = []string{
	"blas [optional", "blas [test=]", `blas[invalid="1"]`,
	"!xyz 1.3",
	"'package'", `"package"`, "pack@ge", "pkg..name", "pkg--name", ".pkg", "-pkg", "__", "a__b",
	"*/lin(ux-65::f/o>=>1y", "^(aaaa$",
	"pkg 4.2.2<6.0.0", "pkg>=0.10.0,<1.0.0<py312|>=0.13.0,<1.0.0>=py312",
	"numpy==", "numpy<=", "numpy>=", "numpy= ",
	"foo[version='^1.[0-9]$']", // conda cannot hold '[' in a bracket value either
	"numpy >=1.8,(<2|>=1.7.1)", "python (>=3.8,<3.10)|(>=3.11,<3.13)",
	" numpy", "=1.0", ">=1", "conda-forge::", "::",
	"numpy[version=,]", "numpy[build=]",
	"numpy 1.0 py[3", "numpy[build_number=abc]", "numpy[build_number=~=1]",
	// fail closed
	"", "mkl@", "foo if python>=3.6", "conda-forge:numpy", "numpy\n>=1",
	"numpy-1.0-0.conda", "numpy-1.0-0.tar.bz2", "/some/file/on/disk/package-1.2.3-2.tar.bz2",
	"numpy[md5=deadbeef]", "numpy[license=MIT]", "numpy[track_features=mkl]", "numpy[build_string=x]",
	"*[md5=253b922ecdb5a30884875948b8904983]", "tensorflow[name=* version=* md5=253b922ecdb5a30884875948b8904983]",
	"numpy ^1'$", "numpy 1.0 py'3", "r-(*", "numpy[channel=a(b]", "a b::numpy",
	"numpy ~=1", "numpy 1.0@x", "foo ^+$", "foo[build=^+1$]", "^+*",
}

func TestParseInvalid(t *testing.T) {
	for _, s := range invalidMatchSpecs {
		m, err := Parse(s)
		if err == nil {
			t.Errorf("Parse(%q) = %q, want error", s, m)
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Kind != KindMatchSpec || pe.Input != s {
			t.Errorf("Parse(%q) error %v should be a match-spec *ParseError for the input", s, err)
		}
	}
}

// conda test_invalid_version_reports_spec and
// test_invalid_package_name_rejected: the message names the spec and the fault.
func TestParseErrorMessages(t *testing.T) {
	tests := []struct{ spec, contains string }{
		{"pkg 4.2.2<6.0.0", "invalid character"},
		{"'package'", "invalid characters ('"},
		{"pack@ge", "invalid characters (@)"},
		{"pkg..name", "invalid package name"},
		{"-pkg", "invalid package name"},
		{"numpy[md5=1]", "'md5' is not supported"},
		{"numpy[foo=1]", "cannot match on field 'foo'"},
		{"blas [test=]", "key-value mismatch"},
		{"numpy 1.0 [build=1]x[", "multiple brackets"},
	}
	for _, tc := range tests {
		_, err := Parse(tc.spec)
		if err == nil {
			t.Errorf("Parse(%q) should fail", tc.spec)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.spec) || !strings.Contains(msg, tc.contains) {
			t.Errorf("Parse(%q) error %q should contain the spec and %q", tc.spec, msg, tc.contains)
		}
	}
}

// conda test_valid_package_names: CEP-26 names are accepted as given.
func TestValidNames(t *testing.T) {
	for _, name := range []string{"numpy", "my-package", "my_package", "my.package", "r-base",
		"python-dateutil", "_openmp_mutex", "_pkg", "__glibc", "__unix", "_", "a", "7zip", "a-", "a_b.c-d"} {
		m := mustParse(t, name)
		if m.Name != name || !m.NameIsExact() || !m.MatchName(name) {
			t.Errorf("Parse(%q): Name=%q exact=%v", name, m.Name, m.NameIsExact())
		}
	}
}

func TestMatchName(t *testing.T) {
	tests := []struct {
		spec, name string
		want       bool
	}{
		{"r-*", "r-base", true},
		{"r-*", "python", false},
		{"*", "anything", true},
		{"*mkl*", "intel-mkl-devel", true},
		{"py*n", "python", true},
		{"py*n", "pythons", false},
		{"numpy", "numpy", true},
		{"numpy", "NumPy", false}, // conda lower-cases the spec, not the record
		{"^py.*$", "python", true},
		{"^py.*$", "cpython", false},
	}
	for _, tc := range tests {
		if got := mustParse(t, tc.spec).MatchName(tc.name); got != tc.want {
			t.Errorf("Parse(%q).MatchName(%q) = %v, want %v", tc.spec, tc.name, got, tc.want)
		}
	}
}

// conda test_exact_values and test_version_spec_1.
func TestExactValues(t *testing.T) {
	tests := []struct {
		spec                 string
		exactName, exactVers bool
	}{
		{"*", false, false},
		{"numpy", true, false},
		{"numpy=1.7", true, false},
		{"numpy==1.7", true, true},
		{"numpy[version=1.7]", true, true},
		{"numpy=1.7=py3*_2", true, true},
		{"numpy=1.7.*=py37_2", true, false},
	}
	for _, tc := range tests {
		m := mustParse(t, tc.spec)
		vs, _ := m.Version()
		if m.NameIsExact() != tc.exactName || vs.IsExact() != tc.exactVers {
			t.Errorf("Parse(%q): name exact %v, version exact %v; want %v, %v",
				tc.spec, m.NameIsExact(), vs.IsExact(), tc.exactName, tc.exactVers)
		}
	}
}

// conda test_parse_ecosystem_corpus (from rattler, conda-libmamba-solver and
// conda's own solver tests) and test_parse_spec_str_with_precompiled_regex:
// all must parse.
var ecosystemCorpus = []string{
	"blas *.* mkl", "foo=1.0=py27_0", "foo==1.0=py27_0", "python 3.8.* *_cpython", "pytorch=*=cuda*",
	"x264 >=1!164.3095,<1!165", "conda-forge::foo[version=1.0.*]",
	`conda-forge::foo[version=1.0.*, build_number=">6"]`, "python ==2.7.*.*|>=3.6", "python=3.9",
	"python=*", "conda-forge/linux-32::python[version=3.9, subdir=linux-64]",
	`conda-forge/linux-32::python ==3.9[subdir=linux-64, build_number="0"]`,
	"python ==3.9[channel=conda-forge]", "python ==3.9[channel=conda-forge/linux-64]", "rust ~=1.2.3",
	"numpy>=2.*.*", "bird_tool_utils_python =0.*,>=0.4.1", "* >=1.0", "tensorflow 2.6.*",
	"tensorflow 2.6.0.*", "mamba[build=*py310_1]", "mamba[build=*py310*]", "mamba * [build=*py310*]",
	"foo >=1.0 py37_0", "foo >=1.0 py37*", "foo 1.0.* py38*", "foo * py37_1", "foo ==1.0", "foo >=2.0",
	"foo >=1.0", "activate_deactivate_package=*=*0", "numpy=*=*py38*", "conda-forge::libblas=*=*openblas",
	"ca-certificates=*=*_0", "python ==3.7.3", "pandas ==1.2.5 py37h295c915_0",
	"scipy ==1.7.3 py37hf2a6cf1_0", "ca-certificates =2022.9.24", "ca-certificates >=2022.9.24",
	"ca-certificates >2022.9.24", "ca-certificates<2022.9.24,>2020", "ca-certificates<=2022.9.24,>2020",
	"ca-certificates !=2022.9.24,>2020", "ca-certificates[build='*_0']",
	"ca-certificates[version='>=2022.9.24']", "pytorch::pytorch=1.12",
	"numpy>=1.20", "numpy 1.20 py39_0", "conda-forge::numpy>=1.20", "numpy[version='>=1.20']",
}

func TestEcosystemCorpus(t *testing.T) {
	for _, s := range ecosystemCorpus {
		if _, err := Parse(s); err != nil {
			t.Errorf("Parse(%q): %v", s, err)
		}
	}
}

// The bracket key=value scanner, against conda's _BRACKETS_KV_RE.
func TestBracketPairs(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"version=1.0", "version=1.0"},
		{"version='>=1,<2', build=py*", "version=>=1,<2;build=py*"},
		{`version=">=1" build='x'`, "version=>=1;build=x"},
		{"version=>=1,<2", "version=>=1"},
		{"a=", "a="},
		{"a='x", ""},
		{"junk a=1", "a=1"},
		{"xx!a=1", "a=1"},
		{"channel=https://repo.anaconda.com/free", "channel=https://repo.anaconda.com/free"},
		{"k='v'x, j=2", "j=2"},
	}
	for _, tc := range tests {
		var parts []string
		for _, kv := range bracketPairs(tc.in) {
			parts = append(parts, kv.key+"="+kv.value)
		}
		if got := strings.Join(parts, ";"); got != tc.want {
			t.Errorf("bracketPairs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Every spec that parses must print a string that parses to an equivalent
// spec (same canonical string, same matches).
func TestStringRoundTrip(t *testing.T) {
	var inputs []string
	for _, tc := range parseCases {
		inputs = append(inputs, tc.spec)
	}
	for _, tc := range matchCases {
		inputs = append(inputs, tc.spec)
	}
	for _, tc := range stringCases {
		inputs = append(inputs, tc.in)
	}
	inputs = append(inputs, ecosystemCorpus...)
	for _, s := range inputs {
		if err := checkRoundTrip(s); err != nil {
			t.Error(err)
		}
	}
}
