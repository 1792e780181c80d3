// Package testdata finds the real conda channels shared beside the repository
// (../shared/testdata), for tests. Set CONDAPROXY_TESTDATA to use another copy.
package testdata

import (
	"fmt"
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

// Group is a set of tests that need the same prerequisite, as `make test` names
// it in its closing line when it skipped them.
type Group string

// The groups, each with what installs its prerequisite.
const (
	Redis   Group = "redis"   // redis-server (Debian)
	Browser Group = "browser" // Debian's chromium
	S3      Group = "s3"      // versitygw, a real S3 server
	Node    Group = "rattler" // node, for the real conda client of e2e
	Root    Group = "root"    // tests that mount a tmpfs
)

// fixes says how to get each group's prerequisite.
var fixes = map[Group]string{
	Redis:   "make deps-system",
	Browser: "make deps-system",
	S3:      "make deps-system",
	Node:    "install node and npm (make test then installs the client)",
	Root:    "run make test as root",
}

// SkipsEnv names the directory where a skipped group leaves its mark: `make test`
// sets it and prints, once go test is done, one line naming every group skipped
// and what installs its prerequisite. A skip that scrolled past among hundreds of
// "ok" lines looked like a complete run.
const SkipsEnv = "CONDAPROXY_SKIPS"

// Skipf skips the test for a missing prerequisite of its group, or fails it when
// CI is set: CI installs every prerequisite and runs as root, so a green CI means
// every test ran.
func Skipf(t testing.TB, g Group, format string, args ...any) {
	t.Helper()
	if _, ci := os.LookupEnv("CI"); ci {
		t.Fatalf("CI is set, and this test must run there: "+format, args...)
	}
	if dir := os.Getenv(SkipsEnv); dir != "" {
		// One file per group: packages run in parallel and skip the same group.
		mark := fmt.Sprintf("%s (%s)", g, fixes[g])
		if err := os.WriteFile(filepath.Join(dir, string(g)), []byte(mark+"\n"), 0o644); err != nil {
			t.Logf("cannot record the skip in %s: %v", dir, err)
		}
	}
	t.Skipf(format, args...)
}
