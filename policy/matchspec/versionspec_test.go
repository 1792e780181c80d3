package matchspec

import (
	"errors"
	"strings"
	"testing"
)

func mustSpec(t testing.TB, s string) VersionSpec {
	t.Helper()
	vs, err := ParseVersionSpec(s)
	if err != nil {
		t.Fatalf("ParseVersionSpec(%q): %v", s, err)
	}
	return vs
}

type specCase struct {
	version, spec string
	want          bool
}

// specMatches gathers conda's VersionSpec match vectors.
var specMatches = []specCase{
	// conda test_version.py test_ver_eval
	{"1.7.0", "==1.7", true},
	{"1.7.0", "<=1.7", true},
	{"1.7.0", "<1.7", false},
	{"1.7.0", ">=1.7", true},
	{"1.7.0", ">1.7", false},
	{"1.6.7", ">=1.7", false},
	{"2013a", ">2013b", false},
	{"2013k", ">2013b", true},
	{"3.0.0", ">2013b", false},
	{"1.0.0", ">1.0.0a", true},
	{"1.0.0", ">1.0.0*", true},
	{"1.0", "1.0*", true},
	{"1.0.0", "1.0*", true},
	{"1.0", "1.0.0*", true},
	{"1.0.1", "1.0.0*", false},
	{"2013a", "2013a*", true},
	{"2013a", "2013b*", false},
	{"2013ab", "2013a*", true},
	{"1.3.4", "1.2.4*", false},
	{"1.2.3+4.5.6", "1.2.3*", true},
	{"1.2.3+4.5.6", "1.2.3+4*", true},
	{"1.2.3+4.5.6", "1.2.3+5*", false},
	{"1.2.3+4.5.6", "1.2.4+5*", false},

	// conda test_version.py test_local_identifier: a version matches itself
	{"1.7.0", "1.7.0", true},
	{"1.7.0.post123", "1.7.0.post123", true},
	{"1.7.0.post123.gabcdef9", "1.7.0.post123.gabcdef9", true},
	{"1.7.0.post123+gabcdef9", "1.7.0.post123+gabcdef9", true},

	// conda test_version.py test_not_eq_star
	{"3.3.1", "=3.3", true},
	{"3.3", "=3.3", true},
	{"3.4", "=3.3", false},
	{"3.3.1", "3.3.*", true},
	{"3.3", "3.3.*", true},
	{"3.4", "3.3.*", false},
	{"3.3.1", "=3.3.*", true},
	{"3.3", "=3.3.*", true},
	{"3.4", "=3.3.*", false},
	{"3.3.1", "!=3.3.*", false},
	{"3.4", "!=3.3.*", true},
	{"3.4.1", "!=3.3.*", true},
	{"3.3.1", "!=3.3", true},
	{"3.3.0.0", "!=3.3", false},
	{"3.3.0.0", "!=3.3.*", false},

	// conda test_version.py test_compound_versions
	{"2.6.8", ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*", false},
	{"2.7.2", ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*", true},
	{"3.3", ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*", false},
	{"3.3.4", ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*", false},
	{"3.4", ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*", true},
	{"3.4a", ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*", true},

	// conda test_version.py test_compatible_release_versions
	{"1.11.0", "~=1.10", true},
	{"1.11.0", "~=1.10.0", false},
	{"3.4.0", "~=3.3.2", false},
	{"3.3.1", "~=3.3.2", false},
	{"3.3.2.0", "~=3.3.2", true},
	{"3.3.3", "~=3.3.2", true},
	{"2.2.0", "~=3.3.2|==2.2", true},
	{"3.3.3", "~=3.3.2|==2.2", true},
	{"2.2.1", "~=3.3.2|==2.2", false},

	// Precedence: ',' binds tighter than '|'; parentheses regroup.
	{"1.5", "1.5|1.6,1.7", true},
	{"1.6", "1.5|1.6,1.7", false},
	{"1.5", "(1.5|1.6),1.7", false},
	{"1.5", "1.5|(1.6,1.7)", true},
	{"1.6", ">=1,<2|>3", true},
	{"2.5", ">=1,<2|>3", false},
	{"3.5", ">=1,<2|>3", true},
	{"1.6", ">=1,(<1.5|>1.7)", false},
	{"1.8", ">=1,(<1.5|>1.7)", true},
	{"1.8", "( (1.5|((1.6|1.7), 1.8), 1.9 |2.0))|2.1", false},
	{"2.1", "( (1.5|((1.6|1.7), 1.8), 1.9 |2.0))|2.1", true},

	// '.*' on other operators, and globs.
	{"1.2.9", ">=1.2.*", true},
	{"1.1", ">=1.2.*", false},
	{"1.2.9", "<1.2.*", false},
	{"1.1.9", "<1.2.*", true},
	{"1.2", "==1.2.*", true}, // conda ignores the '.*' after '=='
	{"1.2.1", "==1.2.*", false},
	{"1.7.3", "1.*.3", true},
	{"1.7.3.1", "1.*.3", false},
	{"1.7.3", "*.7.*", true},
	{"1.71", "*.7.*", false},
	{"2.0.0", "2.*.*", true},
	{"2.0", "2.*.*", false},
	{"1.2+3", "1.*+3", true}, // '+' is literal in globs
	{"1.2.3", "1.*+3", false},
	{"1.23.3", "1.2?*.3", true}, // other regex characters keep their meaning, as in conda
	{"1.3.3", "1.2?*.3", true},
	{"2.23.3", "1.2?*.3", false},
	{"anything", "*", true},
	// Case: comparison is case-insensitive, globs and regexes see the text.
	{"1.0RC1", "==1.0rc1", true},
	{"1.0RC1", "1.0rc*", true},
	{"1.0RC1", "1.0*rc*", false},
	{"1.0RC1", "^1.0RC1$", true},
	// Python's re.match anchors every alternative at the start.
	{"1.7.1", "^.* | *.7.*|^0$", false},
	{"1.7.1", "^0|.7.*$", false},
	{"0.7.1", "^0|.7.*$", true},
}

// conda test_version.py test_match: (spec, does "1.7.1" match). conda also
// asserts str(VersionSpec(spec)) == spec for each.
var specMatches171 = []struct {
	spec string
	want bool
}{
	{"1.7.*", true},
	{"1.7.1", true},
	{"1.7.0", false},
	{"1.7", false},
	{"1.5.*", false},
	{">=1.5", true},
	{"!=1.5", true},
	{"!=1.7.1", false},
	{"==1.7.1", true},
	{"==1.7", false},
	{"==1.7.2", false},
	{"==1.7.1.0", true},
	{"1.7.*|1.8.*", true},
	{">1.7,<1.8", true},
	{">1.7.1,<1.8", false},
	{"^1.7.1$", true},
	{`^1\.7\.1$`, true},
	{`^1\.7\.[0-9]+$`, true},
	{`^1\.8.*$`, false},
	{`^1\.[5-8]\.1$`, true},
	{`^[^1].*$`, false},
	{`^[0-9+]+\.[0-9+]+\.[0-9]+$`, true},
	{"^$", false},
	{"^.*$", true},
	{"1.7.*|^0.*$", true},
	{"1.6.*|^0.*$", false},
	{"1.6.*|^0.*$|1.7.1", true},
	{"^0.*$|1.7.1", true},
	{`1.6.*|^.*\.7\.1$|0.7.1`, true},
	{"*", true},
	{"1.*.1", true},
	{"1.5.*|>1.7,<1.8", true},
	{"1.5.*|>1.7,<1.7.1", false},
}

// invalidSpecs: conda test_version.py test_ver_eval_errors,
// test_version_spec_2, test_invalid_version_specs,
// test_compatible_release_versions and test_pep_440_arbitrary_equality_operator,
// then the cases where this package deliberately fails closed.
var invalidSpecs = []string{
	"><2.4.5", "!!2.4.5", "!",
	"(1.5", "1.5)", "1.5||1.6", "^1.5",
	"~", "^", "1.2+", "+1.2", "+1.2+", "++", "c +, 0/|0 *", "a[version=)|(", "a=)(=b",
	"==", "=", ">=", "<=",
	"~=3.3.2.*",
	"===3.3.2",
	"<= 1.2", "<>1.2", "<=!1.2", "1.2+*", "1.2$", "", " ", "1.0,", "|1.0", "()", ".*", "**",
	// deliberate: conda truncates, crashes later, or can never match
	"(1.5)(1.6)", "^1$^2$", "~=1", "1.0@foo", "1 .*", "1 *.2", "1.2**", `^(?=1)$`,
	"\n*(", "\n^$$", // found by FuzzParseVersionSpec
}

func TestVersionSpecMatch(t *testing.T) {
	for _, tc := range specMatches {
		vs := mustSpec(t, tc.spec)
		if got := vs.MatchString(tc.version); got != tc.want {
			t.Errorf("ParseVersionSpec(%q).MatchString(%q) = %v, want %v", tc.spec, tc.version, got, tc.want)
		}
	}
}

func TestVersionSpecMatch171(t *testing.T) {
	v := mustVersion(t, "1.7.1")
	for _, tc := range specMatches171 {
		vs := mustSpec(t, tc.spec)
		if got := vs.Match(v); got != tc.want {
			t.Errorf("ParseVersionSpec(%q).Match(1.7.1) = %v, want %v", tc.spec, got, tc.want)
		}
		if got := vs.String(); got != tc.spec {
			t.Errorf("ParseVersionSpec(%q).String() = %q", tc.spec, got)
		}
	}
}

func TestVersionSpecInvalid(t *testing.T) {
	for _, s := range invalidSpecs {
		vs, err := ParseVersionSpec(s)
		if err == nil {
			t.Errorf("ParseVersionSpec(%q) = %q, want error", s, vs)
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("ParseVersionSpec(%q) error %T is not a *ParseError", s, err)
		}
	}
}

func TestVersionSpecString(t *testing.T) {
	tests := []struct{ in, want string }{
		// conda test_version.py test_version_spec_3 and _4: "1.7.1*" is "1.7.1.*"
		{"1.7.1*", "1.7.1.*"},
		{"1.7.1.*", "1.7.1.*"},
		{"1.7.1*,1.8.1*", "1.7.1.*,1.8.1.*"},
		{"1.7.1.*,1.8.1.*", "1.7.1.*,1.8.1.*"},
		{"1.7.1*,1.8.1.*", "1.7.1.*,1.8.1.*"},
		// conda's treeify/untreeify docstrings
		{"1.2.3", "1.2.3"},
		{"1.2.3,>4.5.6", "1.2.3,>4.5.6"},
		{"1.2.3,4.5.6|<=7.8.9", "1.2.3,4.5.6|<=7.8.9"},
		{"(1.2.3|4.5.6),<=7.8.9", "(1.2.3|4.5.6),<=7.8.9"},
		{"1.5|(1.6|1.7),1.8,1.9|2.0|2.1", "1.5|(1.6|1.7),1.8,1.9|2.0|2.1"},
		// conda test_version_spec_2 expects "1.5|1.6|1.7,1.8,1.9|2.0|2.1", which
		// drops the parentheses and so means something else; we keep them.
		{"( (1.5|((1.6|1.7), 1.8), 1.9 |2.0))|2.1", "1.5|(1.6|1.7),1.8,1.9|2.0|2.1"},
		{">=2.7, !=3.0.*, !=3.1.*", ">=2.7,!=3.0.*,!=3.1.*"},
		{"  >=1.0  ", ">=1.0"},
		{"==1.2.*", "==1.2"},
		{">=1.2.*", ">=1.2.*"},
		{"*", "*"},
		{" ^1$ ", "^1$"},
	}
	for _, tc := range tests {
		if got := mustSpec(t, tc.in).String(); got != tc.want {
			t.Errorf("ParseVersionSpec(%q).String() = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// conda test_version.py test_version_spec_1, _3 and _4 (is_exact).
func TestVersionSpecIsExact(t *testing.T) {
	tests := []struct {
		spec string
		want bool
	}{
		{"1.7.1", true},
		{"==1.7.1", true},
		{"1.7.1*", false},
		{"1.7.1.*", false},
		{"1.7.1*,1.8.1*", false},
		{">=1.7", false},
		{"*", false},
		{"^1.7$", false},
	}
	for _, tc := range tests {
		if got := mustSpec(t, tc.spec).IsExact(); got != tc.want {
			t.Errorf("ParseVersionSpec(%q).IsExact() = %v, want %v", tc.spec, got, tc.want)
		}
	}
}

func TestVersionSpecZeroValues(t *testing.T) {
	var zero VersionSpec
	if zero.Match(mustVersion(t, "1.0")) || zero.MatchString("1.0") || zero.String() != "" || zero.IsExact() {
		t.Error("the zero VersionSpec must match nothing")
	}
	if mustSpec(t, "*").Match(Version{}) {
		t.Error("the zero Version must match nothing")
	}
	if mustSpec(t, "*").MatchString("not a version") {
		t.Error("MatchString must reject an unparsable version")
	}
}

func TestVersionSpecErrorNamesInput(t *testing.T) {
	_, err := ParseVersionSpec(">=1.0,<2&")
	if err == nil || !strings.Contains(err.Error(), `"<2&"`) || !strings.Contains(err.Error(), "invalid character") {
		t.Errorf("error %v should name the bad term and the reason", err)
	}
}

// Build numbers: conda test_match_spec.py test_bracket_matches and
// test_parse_build_number_brackets, and conda's BuildNumberMatch.
func TestBuildNumber(t *testing.T) {
	tests := []struct {
		spec string
		n    int
		want bool
	}{
		{"7", 7, true},
		{"'7'", 7, false}, // quotes are removed by the bracket parser, not here
		{"<8", 7, true},
		{">7", 7, false},
		{">=7", 7, true},
		{"<=3", 3, true},
		{"!=3", 3, false},
		{"=3", 3, true},
		{"=1", 10, false},
		{"*", 42, true},
		{" 07 ", 7, true},
		{"1_0", 10, true},
		{"-1", -1, true},
		{"^[0-9]$", 7, true},
		{"^[0-9]$", 17, false},
		{"99999999999999999999999", 7, false},
	}
	for _, tc := range tests {
		bn, err := parseBuildNumber(tc.spec)
		if err != nil {
			if tc.spec != "'7'" {
				t.Errorf("parseBuildNumber(%q): %v", tc.spec, err)
			}
			continue
		}
		if got := bn.match(tc.n); got != tc.want {
			t.Errorf("build_number=%q matches %d = %v, want %v", tc.spec, tc.n, got, tc.want)
		}
	}
	for _, bad := range []string{"", "abc", "~=1", "1__0", "_1", ">=a b", "^1", "1$", "^(?=1)$"} {
		if _, err := parseBuildNumber(bad); err == nil {
			t.Errorf("parseBuildNumber(%q) should fail", bad)
		}
	}
}
