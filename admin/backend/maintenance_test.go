package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/admin"
	"github.com/condaproxy/condaproxy/jobs"
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

// An import keeps a reserve free on the data directory's file system: the
// larger of importReserveMin and importReservePct of it.
func TestImportRoomKeepsReserve(t *testing.T) {
	defer func(f func(string) (int64, int64, error)) { diskSpace = f }(diskSpace)
	for _, tc := range []struct{ free, total, want int64 }{
		{free: 3 << 30, total: 10 << 30, want: 2 << 30},    // 1 GiB reserve
		{free: 30 << 30, total: 100 << 30, want: 25 << 30}, // 5 %
		{free: 512 << 20, total: 10 << 30, want: 0},        // inside the reserve already
	} {
		diskSpace = func(string) (int64, int64, error) { return tc.free, tc.total, nil }
		if got := importRoom("x"); got != tc.want {
			t.Errorf("free %d of %d: room %d, want %d", tc.free, tc.total, got, tc.want)
		}
	}
	diskSpace = func(string) (int64, int64, error) { return 0, 0, errors.New("no statfs") }
	if got := importRoom("x"); got != -1 {
		t.Errorf("unknown free space: room %d, want -1", got)
	}
}

// Without a Content-Length (or with a lying one), the upload stops on the
// same bound mid-stream; a tar that fits the room exactly goes in.
func TestImportReaderStopsAtRoom(t *testing.T) {
	m := jobs.New(nil, jobs.Options{})
	defer m.Close()
	var task *jobs.Task
	m.RunWork(context.Background(), jobs.KindImport, nil, func(_ context.Context, tk *jobs.Task) error { task = tk; return nil })
	for _, tc := range []struct {
		size, room int
		err        error
	}{{100, 99, errUploadSize}, {100, 100, nil}, {100, 1000, nil}, {1, 0, errUploadSize}, {0, 0, nil}} {
		r := &importReader{r: &emptyFirst{r: strings.NewReader(strings.Repeat("x", tc.size))}, left: int64(tc.room), t: task}
		n, err := io.Copy(io.Discard, r)
		if !errors.Is(err, tc.err) || n > int64(tc.room) {
			t.Errorf("%d bytes into room for %d: read %d, %v; want %v", tc.size, tc.room, n, err, tc.err)
		}
	}
}

// emptyFirst answers its first Read with (0, nil), which io.Reader allows: a
// tar that fills its room exactly is not refused for it.
type emptyFirst struct {
	r    io.Reader
	done bool
}

func (e *emptyFirst) Read(p []byte) (int, error) {
	if !e.done {
		e.done = true
		return 0, nil
	}
	return e.r.Read(p)
}
