package matchspec

import "testing"

func versionSeeds() []string {
	var seeds []string
	for _, tc := range orderedVersions {
		seeds = append(seeds, tc.s)
	}
	for _, list := range sortedVersionLists {
		seeds = append(seeds, list...)
	}
	seeds = append(seeds, invalidVersions...)
	for _, tc := range specMatches {
		seeds = append(seeds, tc.version)
	}
	return seeds
}

func specSeeds() []string {
	var seeds []string
	for _, tc := range specMatches {
		seeds = append(seeds, tc.spec)
	}
	for _, tc := range specMatches171 {
		seeds = append(seeds, tc.spec)
	}
	return append(seeds, invalidSpecs...)
}

func matchSpecSeeds() []string {
	var seeds []string
	for _, tc := range parseCases {
		seeds = append(seeds, tc.spec)
	}
	for _, tc := range matchCases {
		seeds = append(seeds, tc.spec)
	}
	for _, tc := range stringCases {
		seeds = append(seeds, tc.in, tc.want)
	}
	seeds = append(seeds, invalidMatchSpecs...)
	return append(seeds, ecosystemCorpus...)
}

// FuzzParseVersion checks that parsing never panics and that Compare is a
// consistent total order: reflexive, antisymmetric, transitive, agreeing
// with Equal and StartsWith, and stable under re-parsing the normalised form.
func FuzzParseVersion(f *testing.F) {
	_, _, real := realStrings(f)
	seeds := append(versionSeeds(), real...)
	for i, s := range seeds {
		f.Add(s, seeds[(i+1)%len(seeds)], seeds[(i+7)%len(seeds)])
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		va, errA := ParseVersion(a)
		vb, errB := ParseVersion(b)
		vc, errC := ParseVersion(c)
		if errA != nil {
			return
		}
		if va.Compare(va) != 0 || !va.Equal(va) || !va.StartsWith(va) {
			t.Fatalf("%q is not equal to itself", a)
		}
		if n, err := ParseVersion(va.Normalized()); err != nil || n.Compare(va) != 0 {
			t.Fatalf("%q normalises to %q, which reads back as %v (%v)", a, va.Normalized(), n.parts(), err)
		}
		if errB != nil {
			return
		}
		ab, ba := va.Compare(vb), vb.Compare(va)
		if ab != -ba || ab < -1 || ab > 1 {
			t.Fatalf("Compare(%q, %q) = %d but Compare(%q, %q) = %d", a, b, ab, b, a, ba)
		}
		if ab == 0 && !(va.StartsWith(vb) && vb.StartsWith(va)) {
			t.Fatalf("%q == %q but one does not start with the other", a, b)
		}
		if errC != nil {
			return
		}
		bc, ac := vb.Compare(vc), va.Compare(vc)
		if ab <= 0 && bc <= 0 && ac > 0 {
			t.Fatalf("order not transitive: %q <= %q <= %q but %q > %q", a, b, c, a, c)
		}
	})
}

// FuzzParseVersionSpec checks that parsing and matching never panic, and
// that String() reads back as the same spec.
func FuzzParseVersionSpec(f *testing.F) {
	_, realSpecs, realVersions := realStrings(f)
	specs, versions := append(specSeeds(), realSpecs...), append(versionSeeds(), realVersions...)
	for i, s := range specs {
		f.Add(s, versions[i%len(versions)])
	}
	f.Fuzz(func(t *testing.T, spec, version string) {
		vs, err := ParseVersionSpec(spec)
		if err != nil {
			return
		}
		got := vs.MatchString(version)
		str := vs.String()
		again, err := ParseVersionSpec(str)
		if err != nil {
			t.Fatalf("ParseVersionSpec(%q).String() = %q, which does not parse: %v", spec, str, err)
		}
		if again.String() != str {
			t.Fatalf("ParseVersionSpec(%q).String() = %q, whose String() is %q", spec, str, again.String())
		}
		if again.MatchString(version) != got {
			t.Fatalf("%q and its String() %q disagree on %q", spec, str, version)
		}
	})
}

// FuzzParseMatchSpec checks that parsing and matching never panic, and that
// String() parses again to an equivalent spec.
func FuzzParseMatchSpec(f *testing.F) {
	real, _, _ := realStrings(f)
	for _, s := range append(matchSpecSeeds(), real...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := checkRoundTrip(s); err != nil {
			t.Fatal(err)
		}
	})
}
