package backend

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/admin"
)

func marksOf(n int) []markGroup {
	g := markGroup{channel: "c", subdir: "noarch"}
	for i := range n {
		g.files = append(g.files, fmt.Sprintf("p-%d.conda", i))
	}
	return []markGroup{g}
}

// The marks held for exports waiting for their commit stay within
// maxHeldMarks: an export that would pass it drops the oldest pending ones,
// whose commit then answers 410 saying the delta state was not advanced.
func TestPendingExportsBounded(t *testing.T) {
	defer func(n int) { maxHeldMarks = n }(maxHeldMarks)
	maxHeldMarks = 10
	now := time.Unix(1e9, 0)
	p := &pendingExports{now: func() time.Time { return now }}
	for i, id := range []string{"a", "b", "c"} {
		now = now.Add(time.Second)
		p.hold(id, marksOf(4))
		if p.held > maxHeldMarks && i > 0 {
			t.Fatalf("after %s: %d marks held, bound %d", id, p.held, maxHeldMarks)
		}
	}
	if _, err := p.take("a"); !errors.Is(err, admin.ErrGone) || !strings.Contains(err.Error(), "export a expired") ||
		!strings.Contains(err.Error(), "run the delta export again") {
		t.Errorf("commit of the dropped export: %v, want ErrGone", err)
	}
	if m, err := p.take("b"); err != nil || len(m) != 1 || len(m[0].files) != 4 {
		t.Errorf("commit of a held export: %v %v", m, err)
	}
	if _, err := p.take("b"); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("a second commit: %v, want ErrNotFound", err)
	}
	// One export larger than the bound alone is held alone.
	p.hold("big", marksOf(25))
	if _, err := p.take("c"); !errors.Is(err, admin.ErrGone) {
		t.Errorf("commit of an export dropped for a big one: %v, want ErrGone", err)
	}
	if len(p.pending) != 1 || p.held != 25 {
		t.Errorf("after the big export: %d pending, %d held", len(p.pending), p.held)
	}
	// Past the TTL: gone.
	now = now.Add(pendingExportTTL + time.Second)
	if _, err := p.take("big"); !errors.Is(err, admin.ErrGone) || p.held != 0 {
		t.Errorf("commit past the TTL: %v (%d held), want ErrGone", err, p.held)
	}
	if _, err := p.take("never"); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("commit of an unknown export: %v, want ErrNotFound", err)
	}
	// At most maxPendingExports, however small.
	for i := range maxPendingExports + 3 {
		p.hold(fmt.Sprint("s", i), nil)
	}
	if len(p.pending) != maxPendingExports {
		t.Errorf("%d exports pending, bound %d", len(p.pending), maxPendingExports)
	}
	if len(p.gone) > maxGoneExports {
		t.Errorf("%d gone exports remembered", len(p.gone))
	}
}

// An export's marks are held grouped by channel and subdir, each filename once.
func TestDeferredLedgerGroups(t *testing.T) {
	d := &deferredLedger{}
	for _, m := range [][3]string{{"c", "noarch", "a"}, {"c", "noarch", "b"}, {"c", "linux-64", "x"}, {"d", "linux-64", "y"}} {
		d.MarkExported(m[0], m[1], m[2])
	}
	if len(d.marks) != 3 || len(d.marks[0].files) != 2 || d.marks[2].channel != "d" {
		t.Errorf("marks %+v", d.marks)
	}
}
