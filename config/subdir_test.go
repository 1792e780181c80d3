package config

import "testing"

// TestValidSubdirAgreesWithPattern: the hand-written check and the pattern it
// replaces on the request path agree, on real subdirs and near misses.
func TestValidSubdirAgreesWithPattern(t *testing.T) {
	for _, s := range []string{"noarch", "linux-64", "osx-arm64", "win-32", "linux-ppc64le", "emscripten-wasm32", "zos-z", "a-_",
		"", "-", "linux-", "-64", "linux--64", "linux-64-x", "Linux-64", "linux_64", "noarch2", "x", "linux-6 4", "linux-64\n", "_-a", "a_-b", "linux-é"} {
		if got, want := ValidSubdir(s), SubdirPattern.MatchString(s); got != want {
			t.Errorf("ValidSubdir(%q) = %v, the pattern says %v", s, got, want)
		}
	}
}

func FuzzValidSubdir(f *testing.F) {
	for _, s := range []string{"noarch", "linux-64", "a-_", "linux--64", "-x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidSubdir(s), SubdirPattern.MatchString(s); got != want {
			t.Fatalf("ValidSubdir(%q) = %v, the pattern says %v", s, got, want)
		}
	})
}
