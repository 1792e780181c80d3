package matchspec

import "fmt"

// probeCandidates exercise names, versions, builds and build numbers when
// checking that two specs are equivalent.
var probeCandidates = func() []Candidate {
	names := []string{"numpy", "python", "r-base", "foo", "x", "name", "a"}
	versions := []string{"0", "1", "1.0", "1.0.0", "1.0a1", "1.0.post1", "1.2", "1.2.3", "1.7.1",
		"1.8", "1.10", "2", "2.0.0", "2.6.1", "3.9.1", "1!1.0", "1.0+local", "1.0rc1", "1.0.1_",
		"2013a", "not valid", "1.2.3.4.5"}
	builds := []string{"0", "py27_0", "py38h1234_1", "openblas_0", "cuda112_2", "a b", "x"}
	var out []Candidate
	for i, v := range versions {
		for j, b := range builds {
			out = append(out, Candidate{Name: names[(i+j)%len(names)], Version: v, Build: b, BuildNumber: (i * j) % 9})
		}
	}
	return out
}()

// checkRoundTrip parses s (ignoring specs that do not parse) and checks that
// String() parses again to a spec with the same String() and the same
// matches on probeCandidates (with the candidate renamed to match the name).
func checkRoundTrip(s string) error {
	m, err := Parse(s)
	if err != nil {
		return nil
	}
	str := m.String()
	m2, err := Parse(str)
	if err != nil {
		return fmt.Errorf("Parse(%q).String() = %q, which does not parse: %v", s, str, err)
	}
	if str2 := m2.String(); str2 != str {
		return fmt.Errorf("Parse(%q).String() = %q, whose String() is %q", s, str, str2)
	}
	// conda drops the match-all channel "*" from the canonical form.
	if ch := m.Channel; (ch != m2.Channel && !(ch == "*" && m2.Channel == "")) || m.Subdir != m2.Subdir || m.Name != m2.Name {
		return fmt.Errorf("Parse(%q) and Parse(%q) differ in channel, subdir or name", s, str)
	}
	for _, c := range probeCandidates {
		if m.NameIsExact() {
			c.Name = m.Name
		}
		if m.Match(c) != m2.Match(c) {
			return fmt.Errorf("Parse(%q) and Parse(%q) disagree on %+v", s, str, c)
		}
	}
	return nil
}
