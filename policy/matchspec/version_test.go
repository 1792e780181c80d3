package matchspec

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// parts renders a parsed version the way conda's tests print
// VersionOrder.version: [[0], [1], [1, 'a', 1]] with post as inf.
func (v Version) parts() string {
	render := func(a []atom) string {
		var comps []string
		for i := 0; i < len(a); {
			e := nextComponent(a, i)
			var xs []string
			for _, x := range a[i:e] {
				switch x.kind {
				case atomPost:
					xs = append(xs, "inf")
				case atomNum:
					if x.s == "" {
						xs = append(xs, "0")
					} else {
						xs = append(xs, x.s)
					}
				default:
					xs = append(xs, "'"+x.s+"'")
				}
			}
			comps = append(comps, "["+strings.Join(xs, ", ")+"]")
			i = e
		}
		return "[" + strings.Join(comps, ", ") + "]"
	}
	s := render(v.atoms[:v.local])
	if v.local < len(v.atoms) {
		s += "+" + render(v.atoms[v.local:])
	}
	return s
}

func mustVersion(t testing.TB, s string) Version {
	t.Helper()
	v, err := ParseVersion(s)
	if err != nil {
		t.Fatalf("ParseVersion(%q): %v", s, err)
	}
	return v
}

// orderedVersions is the list from conda tests/models/test_version.py
// test_version_order, in conda's sorted order, with the parsed form conda
// asserts for each. equalPrev marks entries that compare equal to the one
// before (conda's sort is stable, so the list keeps them adjacent).
var orderedVersions = []struct {
	s         string
	parts     string
	equalPrev bool
}{
	{"0.4", "[[0], [0], [4]]", false},
	{"0.4.0", "[[0], [0], [4], [0]]", true},
	{"0.4.1a.vc11", "[[0], [0], [4], [1, 'a'], [0, 'vc', 11]]", false},
	{"0.4.1.rc", "[[0], [0], [4], [1], [0, 'rc']]", false},
	{"0.4.1.vc11", "[[0], [0], [4], [1], [0, 'vc', 11]]", false},
	{"0.4.1", "[[0], [0], [4], [1]]", false},
	{"0.5*", "[[0], [0], [5, '*']]", false},
	{"0.5a1", "[[0], [0], [5, 'a', 1]]", false},
	{"0.5b3", "[[0], [0], [5, 'b', 3]]", false},
	{"0.5C1", "[[0], [0], [5, 'c', 1]]", false},
	{"0.5z", "[[0], [0], [5, 'z']]", false},
	{"0.5za", "[[0], [0], [5, 'za']]", false},
	{"0.5", "[[0], [0], [5]]", false},
	{"0.5_5", "[[0], [0], [5], [5]]", false},
	{"0.5-5", "[[0], [0], [5], [5]]", true},
	{"0.9.6", "[[0], [0], [9], [6]]", false},
	{"0.960923", "[[0], [0], [960923]]", false},
	{"1.0", "[[0], [1], [0]]", false},
	{"1.0.4a3", "[[0], [1], [0], [4, 'a', 3]]", false},
	{"1.0.4b1", "[[0], [1], [0], [4, 'b', 1]]", false},
	{"1.0.4", "[[0], [1], [0], [4]]", false},
	{"1.1dev1", "[[0], [1], [1, 'DEV', 1]]", false},
	{"1.1_", "[[0], [1], [1, '_']]", false},
	{"1.1a1", "[[0], [1], [1, 'a', 1]]", false},
	{"1.1.dev1", "[[0], [1], [1], [0, 'DEV', 1]]", false},
	{"1.1.a1", "[[0], [1], [1], [0, 'a', 1]]", false},
	{"1.1", "[[0], [1], [1]]", false},
	{"1.1.post1", "[[0], [1], [1], [0, inf, 1]]", false},
	{"1.1.1dev1", "[[0], [1], [1], [1, 'DEV', 1]]", false},
	{"1.1.1rc1", "[[0], [1], [1], [1, 'rc', 1]]", false},
	{"1.1.1", "[[0], [1], [1], [1]]", false},
	{"1.1.1post1", "[[0], [1], [1], [1, inf, 1]]", false},
	{"1.1post1", "[[0], [1], [1, inf, 1]]", false},
	{"2g6", "[[0], [2, 'g', 6]]", false},
	{"2.0b1pr0", "[[0], [2], [0, 'b', 1, 'pr', 0]]", false},
	{"2.2be.ta29", "[[0], [2], [2, 'be'], [0, 'ta', 29]]", false},
	{"2.2be5ta29", "[[0], [2], [2, 'be', 5, 'ta', 29]]", false},
	{"2.2beta29", "[[0], [2], [2, 'beta', 29]]", false},
	{"2.2.0.1", "[[0], [2], [2], [0], [1]]", false},
	{"3.1.1.6", "[[0], [3], [1], [1], [6]]", false},
	{"3.2.p.r0", "[[0], [3], [2], [0, 'p'], [0, 'r', 0]]", false},
	{"3.2.pr0", "[[0], [3], [2], [0, 'pr', 0]]", false},
	{"3.2.pr.1", "[[0], [3], [2], [0, 'pr'], [1]]", false},
	{"5.5.kw", "[[0], [5], [5], [0, 'kw']]", false},
	{"11g", "[[0], [11, 'g']]", false},
	{"14.3.1", "[[0], [14], [3], [1]]", false},
	{"14.3.1.post26.g9d75ca2", "[[0], [14], [3], [1], [0, inf, 26], [0, 'g', 9, 'd', 75, 'ca', 2]]", false},
	{"1996.07.12", "[[0], [1996], [7], [12]]", false},
	{"1!0.4.1", "[[1], [0], [4], [1]]", false},
	{"1!3.1.1.6", "[[1], [3], [1], [1], [6]]", false},
	{"2!0.4.1", "[[2], [0], [4], [1]]", false},
}

// From conda test_version.py: test_openssl_convention, test_pep440 (itself
// adapted from pypa/packaging) and test_hexrd. Each list is sorted.
var sortedVersionLists = map[string][]string{
	"openssl": {"1.0.1dev", "1.0.1_", "1.0.1a", "1.0.1b", "1.0.1c", "1.0.1d", "1.0.1r", "1.0.1rc",
		"1.0.1rc1", "1.0.1rc2", "1.0.1s", "1.0.1", "1.0.1post.a", "1.0.1post.b", "1.0.1post.z",
		"1.0.1post.za", "1.0.2"},
	"pep440": {"1.0a1", "1.0a2.dev456", "1.0a12.dev456", "1.0a12", "1.0b1.dev456", "1.0b2",
		"1.0b2.post345.dev456", "1.0b2.post345", "1.0c1.dev456", "1.0c1", "1.0c3", "1.0rc2",
		"1.0.dev456", "1.0", "1.0.post456.dev34", "1.0.post456", "1.1.dev1", "1.2.r32+123456",
		"1.2.rev33+123456", "1.2+abc", "1.2+abc123def", "1.2+abc123", "1.2+123abc", "1.2+123abc456",
		"1.2+1234.abc", "1.2+123456",
		"1!1.0a1", "1!1.0a2.dev456", "1!1.0a12.dev456", "1!1.0a12", "1!1.0b1.dev456", "1!1.0b2",
		"1!1.0b2.post345.dev456", "1!1.0b2.post345", "1!1.0c1.dev456", "1!1.0c1", "1!1.0c3",
		"1!1.0rc2", "1!1.0.dev456", "1!1.0", "1!1.0.post456.dev34", "1!1.0.post456", "1!1.1.dev1",
		"1!1.2.r32+123456", "1!1.2.rev33+123456", "1!1.2+abc", "1!1.2+abc123def", "1!1.2+abc123",
		"1!1.2+123abc", "1!1.2+123abc456", "1!1.2+1234.abc", "1!1.2+123456"},
	"hexrd": {"0.3.0.dev", "0.3.3"},
	// The order given in conda's VersionOrder docstring, strict pairs only.
	"docstring": {"0.4.0", "0.4.1.rc", "0.4.1", "0.5a1", "0.5b3", "0.5C1", "0.5", "0.9.6",
		"0.960923", "1.0", "1.1dev1", "1.1_", "1.1a1", "1.1.0dev1", "1.1.a1", "1.1.0rc1", "1.1.0",
		"1.1.0post1", "1.1post1", "1996.07.12", "1!0.4.1", "1!3.1.1.6", "2!0.4.1"},
}

// invalidVersions: conda test_version.py test_version_order and
// test_invalid_version_specs (the '+' cases found by conda's fuzzing).
var invalidVersions = []string{
	"", "  ", "3.5&1", "5.5++", "5.5..mw", "!", "a!1.0", "a!b!1.0",
	"1.2+", "+1.2", "+1.2+", "++", "1!", "1.0.", ".1", "1..0", "1.0+a..b", "1-2_3", "1.0 1",
	"1.0@x", "1,0", "1:0", "é", "1+a+b",
}

func TestParseVersionStructure(t *testing.T) {
	for _, tc := range orderedVersions {
		v := mustVersion(t, tc.s)
		if got := v.parts(); got != tc.parts {
			t.Errorf("ParseVersion(%q) parts = %s, want %s", tc.s, got, tc.parts)
		}
		want := strings.ReplaceAll(strings.ToLower(tc.s), "-", "_")
		if got := v.Normalized(); got != want {
			t.Errorf("ParseVersion(%q).Normalized() = %q, want %q", tc.s, got, want)
		}
		if got := v.String(); got != tc.s {
			t.Errorf("ParseVersion(%q).String() = %q", tc.s, got)
		}
	}
}

func TestVersionOrder(t *testing.T) {
	for i := 1; i < len(orderedVersions); i++ {
		a, b := orderedVersions[i-1], orderedVersions[i]
		va, vb := mustVersion(t, a.s), mustVersion(t, b.s)
		want := -1
		if b.equalPrev {
			want = 0
		}
		if got := va.Compare(vb); got != want {
			t.Errorf("Compare(%q, %q) = %d, want %d", a.s, b.s, got, want)
		}
		if got := vb.Compare(va); got != -want {
			t.Errorf("Compare(%q, %q) = %d, want %d", b.s, a.s, got, -want)
		}
	}
	// Every pair, not only neighbours: the order must be transitive.
	for i, a := range orderedVersions {
		for j, b := range orderedVersions {
			va, vb := mustVersion(t, a.s), mustVersion(t, b.s)
			got := va.Compare(vb)
			switch {
			case i == j && got != 0,
				i < j && got > 0,
				i > j && got < 0:
				t.Errorf("Compare(%q, %q) = %d, inconsistent with conda's sorted list", a.s, b.s, got)
			}
		}
	}
}

func TestSortedVersionLists(t *testing.T) {
	for name, list := range sortedVersionLists {
		vs := make([]Version, len(list))
		for i, s := range list {
			vs[i] = mustVersion(t, s)
		}
		for i := 1; i < len(vs); i++ {
			if got := vs[i-1].Compare(vs[i]); got != -1 {
				t.Errorf("%s: Compare(%q, %q) = %d, want -1", name, list[i-1], list[i], got)
			}
			if got := vs[i].Compare(vs[i-1]); got != 1 {
				t.Errorf("%s: Compare(%q, %q) = %d, want 1", name, list[i], list[i-1], got)
			}
		}
		// conda's test shuffles and sorts.
		shuffled := slices.Clone(vs)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		slices.SortFunc(shuffled, Version.Compare)
		for i := range vs {
			if shuffled[i].String() != vs[i].String() {
				t.Errorf("%s: sorted[%d] = %q, want %q", name, i, shuffled[i], vs[i])
			}
		}
	}
}

// From conda test_version.py test_version_order "check __eq__", plus the
// fill and case rules described in conda's VersionOrder docstring.
func TestVersionEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"  0.4.rc  ", "0.4.RC", true},
		{"0.4.1.rc", "  0.4.1.RC  ", true},
		{"0.4", "0.4.0", true},
		{"0.4", "0.4.1", false},
		{"0.4.a1", "0.4.0a1", true},
		{"0.4.a1", "0.4.1a1", false},
		{"1.1", "1.1.0", true},
		{"1.1.0", "1.1.0.0.0", true},
		{"1.1.dev1", "1.1.0dev1", true},
		{"1.1.post1", "1.1.0post1", true},
		{"0!1.0", "1.0", true},
		{"1.0-1", "1.0_1", true},
		{"1.0-1", "1.0.1", true},
		{"01.002", "1.2", true},
		{"1.2+0", "1.2", true}, // the local part is padded too
		{"1.2+1", "1.2", false},
		{"1.0", "1.0a", false},
		{"1!1.0", "1.0", false},
		{"00000000000000000000000000000001", "1", true},
		{"100000000000000000000000000000001", "100000000000000000000000000000002", false},
	}
	for _, tc := range tests {
		a, b := mustVersion(t, tc.a), mustVersion(t, tc.b)
		if got := a.Equal(b); got != tc.want {
			t.Errorf("Equal(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := b.Equal(a); got != tc.want {
			t.Errorf("Equal(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
}

// Compare cases that conda's tests and docstring state explicitly.
func TestVersionLess(t *testing.T) {
	tests := []struct{ lo, hi string }{
		{"1.0a1", "1.0"},
		{"1.0.1f", "1.0.1g"},
		{"1.0.1g", "1.0.1"},  // conda (not openssl) convention: letters are pre-releases...
		{"1.0.1_", "1.0.1a"}, // ...unless the plain version has a trailing '_'
		{"1.0dev", "1.0a"},
		{"1.0", "1.0post"},
		{"1.0*", "1.0dev"},
		{"1.9", "1.10"},
		{"99999999999999999999", "100000000000000000000"},
		{"2013a", "2013b"},
		{"3.0.0", "2013b"},
		{"1.0.0a", "1.0.0"},
		{"1.0.1a", "1.0.1"},
		{"1.0.1a.vc11", "1.0.1.vc11"},
		{"1.0.1.vc11", "1.0.1"},
		{"1.2+a", "1.2"}, // the local part is padded with 0, and strings sort below numbers
		{"1.2+a", "1.2+1"},
		{"9!1.0", "10!0.1"},
		{"1.0dev", "1.0devel"}, // only the exact word "dev" is special; it sorts as "DEV"
	}
	for _, tc := range tests {
		lo, hi := mustVersion(t, tc.lo), mustVersion(t, tc.hi)
		if got := lo.Compare(hi); got != -1 {
			t.Errorf("Compare(%q, %q) = %d, want -1", tc.lo, tc.hi, got)
		}
		if got := hi.Compare(lo); got != 1 {
			t.Errorf("Compare(%q, %q) = %d, want 1", tc.hi, tc.lo, got)
		}
	}
}

func TestParseVersionInvalid(t *testing.T) {
	for _, s := range invalidVersions {
		v, err := ParseVersion(s)
		if err == nil {
			t.Errorf("ParseVersion(%q) = %s, want error", s, v.parts())
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("invalid version %q", s)) {
			t.Errorf("ParseVersion(%q) error %q does not name the input", s, err)
		}
	}
}

// From conda test_version.py test_version_order "check startswith", plus the
// cases behind conda's ver_eval prefix tests.
func TestVersionStartsWith(t *testing.T) {
	tests := []struct {
		v, prefix string
		want      bool
	}{
		{"0.4.1", "0", true},
		{"0.4.1", "0.4", true},
		{"0.4.1p1", "0.4", true},
		{"0.4.1p1", "0.4.1p", true},
		{"0.4.1p1", "0.4.1q1", false},
		{"0.4", "0.4.1", false},
		{"0.4.1+1.3", "0.4.1", true},
		{"0.4.1+1.3", "0.4.1+1", true},
		{"0.4.1", "0.4.1+1.3", false},
		{"0.4.1+1", "0.4.1+1.3", false},
		{"1.20", "1.2", false},
		{"1.2", "1.2", true},
		{"1.2.0", "1.2.0", true},
		{"1.2", "1.2.0", true}, // the missing component is 0
		{"2013ab", "2013a", true},
		{"2013a", "2013b", false},
		{"1.0dev", "1.0", true},
		{"1.0devel", "1.0dev", false}, // 'dev' is stored as 'DEV'
		{"1.0.post1", "1.0", true},
		{"1!1.0", "1.0", false},
		{"1!1.0", "1!1", true},
	}
	for _, tc := range tests {
		v, p := mustVersion(t, tc.v), mustVersion(t, tc.prefix)
		if got := v.StartsWith(p); got != tc.want {
			t.Errorf("%q.StartsWith(%q) = %v, want %v", tc.v, tc.prefix, got, tc.want)
		}
	}
	if (Version{}).StartsWith(mustVersion(t, "1")) || mustVersion(t, "1").StartsWith(Version{}) {
		t.Error("the zero Version must not take part in StartsWith")
	}
}
