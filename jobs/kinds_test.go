package jobs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/condaproxy/condaproxy/mirror"
)

// A sync and a clean (or an import) of one channel never run at once, whichever
// starts first; a claim made while a job runs obeys the same rule.
func TestKindsShareTheChannelSlot(t *testing.T) {
	release := make(chan struct{})
	syncing := make(chan struct{}, 1)
	m := New(func(ctx context.Context, ch string, p mirror.Progress) (*mirror.SyncReport, error) {
		syncing <- struct{}{}
		<-release
		return &mirror.SyncReport{}, nil
	}, Options{})
	defer m.Close()
	s, err := m.Start([]string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	<-syncing
	ran := false
	_, err = m.StartWork(KindClean, []string{"a"}, func(context.Context, *Task) error { ran = true; return nil })
	var busy *BusyError
	if !errors.As(err, &busy) || !errors.Is(err, ErrBusy) || busy.Job != s.ID || busy.Kind != KindSync {
		t.Fatalf("a clean of a while a sync of a runs: %v, want a *BusyError naming the sync", err)
	}
	// An import claims a as it comes to it: refused too.
	j, err := m.RunWork(context.Background(), KindImport, nil, func(ctx context.Context, tk *Task) error {
		return tk.Claim("a")
	})
	if err != nil || j.State != Failed || j.Kind != KindImport || !strings.Contains(j.Error, `a sync is running for channel "a"`) {
		t.Fatalf("an import claiming a: %+v, %v; want it failed busy", j, err)
	}
	close(release)
	finished(t, m, s.ID)
	if ran {
		t.Fatalf("the refused clean ran")
	}

	// A clean holds a: a sync of a is refused, naming the clean.
	hold := make(chan struct{})
	started := make(chan struct{})
	c, err := m.StartWork(KindClean, []string{"a"}, func(ctx context.Context, tk *Task) error {
		close(started)
		<-hold
		tk.Update(func(j *Job) { j.Done = 3 })
		return nil
	})
	if err != nil || c.Kind != KindClean || !slices.Equal(c.Channels, []string{"a"}) {
		t.Fatalf("clean of a: %+v, %v", c, err)
	}
	<-started
	_, err = m.Start([]string{"b", "a"})
	if !errors.As(err, &busy) || busy.Job != c.ID || busy.Kind != KindClean {
		t.Fatalf("a sync of a while a clean of a runs: %v, want busy naming the clean", err)
	}
	if want := `a clean is running for channel "a" (job ` + c.ID + `)`; err.Error() != want {
		t.Errorf("busy: %q, want %q", err, want)
	}
	close(hold)
	if j := finished(t, m, c.ID); j.State != Done || j.Done != 3 {
		t.Errorf("clean ended: %+v", j)
	}
	if _, err := m.Start([]string{"a"}); err != nil {
		t.Errorf("a sync of a after the clean ended: %v", err)
	}
}
