package matchspec

import "testing"

func BenchmarkParseVersion(b *testing.B) {
	inputs := []string{"1.26.4", "3.11.8", "2023.11.17", "1.0.1post.a", "4.3.21.post699+1dab973", "1!164.3095"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := ParseVersion(inputs[i%len(inputs)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompare(b *testing.B) {
	x, y := mustVersion(b, "1.26.4"), mustVersion(b, "1.26.10")
	b.ReportAllocs()
	for b.Loop() {
		x.Compare(y)
	}
}

func BenchmarkMatch(b *testing.B) {
	specs := []*MatchSpec{
		mustParse(b, "numpy >=1.20,<2"),
		mustParse(b, "numpy=1.26"),
		mustParse(b, "numpy 1.26.* py311*"),
		mustParse(b, "python"), // name mismatch: the cheap path
	}
	c := Candidate{Name: "numpy", Version: "1.26.4", Build: "py311h64a7726_0", BuildNumber: 0}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		specs[i%len(specs)].Match(c)
	}
}

func BenchmarkMatchVersion(b *testing.B) {
	m := mustParse(b, "numpy >=1.20,<2|1.19.*")
	c := Candidate{Name: "numpy", Build: "py311h64a7726_0"}
	v := mustVersion(b, "1.26.4")
	b.ReportAllocs()
	for b.Loop() {
		m.MatchVersion(c, v)
	}
}
