package testdata

import (
	"os"
	"path/filepath"
	"testing"
)

// A skipped group leaves its mark where `make test` looks for it, so the run's
// closing line names it and what installs its prerequisite.
func TestSkipfLeavesMark(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(SkipsEnv, dir)
	t.Setenv("CI", "")
	os.Unsetenv("CI") // t.Setenv restores it after the test
	var skipped bool
	t.Run("needs-redis", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Skipf(t, Redis, "redis-server is not installed")
	})
	if !skipped {
		t.Fatal("Skipf did not skip")
	}
	b, err := os.ReadFile(filepath.Join(dir, "redis"))
	if err != nil {
		t.Fatalf("no mark for the redis group: %v", err)
	}
	if got, want := string(b), "redis (make deps-system)\n"; got != want {
		t.Errorf("mark %q, want %q", got, want)
	}
	for g := range map[Group]bool{Redis: true, Browser: true, S3: true, Node: true, Root: true} {
		if fixes[g] == "" {
			t.Errorf("group %s has no install command", g)
		}
	}
}
