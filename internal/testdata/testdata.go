// Package testdata finds the real conda channels shared beside the repository
// (../shared/testdata), for tests. Set CONDAPROXY_TESTDATA to use another copy.
package testdata

import (
	"os"
	"path/filepath"
	"testing"
)

// Dir returns the testdata directory, or fails the test if there is none: a test
// that silently skips its real data would pass without proving anything.
func Dir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("CONDAPROXY_TESTDATA"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			td := filepath.Join(dir, "..", "shared", "testdata")
			if _, err := os.Stat(td); err != nil {
				t.Fatalf("no shared testdata at %s (set CONDAPROXY_TESTDATA): %v", td, err)
			}
			return td
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("testdata: no go.mod above the working directory")
		}
	}
}

// Path joins elem to the testdata directory.
func Path(t testing.TB, elem ...string) string {
	return filepath.Join(append([]string{Dir(t)}, elem...)...)
}

// Skipf skips the test for a missing prerequisite (root, a Debian package,
// node), or fails it when CI is set: CI installs every prerequisite and runs as
// root, so a green CI means every test ran.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	if _, ci := os.LookupEnv("CI"); ci {
		t.Fatalf("CI is set, and this test must run there: "+format, args...)
	}
	t.Skipf(format, args...)
}
