package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/proxy"
	"github.com/condaproxy/condaproxy/upstream"
)

// What cmd/condaproxy passes plays every role; a method renamed on either side
// fails here, next to the roles, rather than in the wiring.
var (
	_ Warmer       = (*proxy.Server)(nil)
	_ ShardWarmer  = (*proxy.Server)(nil)
	_ ExportSource = (*proxy.Server)(nil)
	_ ImportTarget = (*proxy.Server)(nil)
	_ Verifier     = (*cache.Store)(nil)
	_ BlobOpener   = (*cache.Store)(nil)
	_ Stager       = (*cache.Store)(nil)
)

// fakeWarmer serves fixed files and records every prefetch; fail names files
// whose prefetch fails with that error.
type fakeWarmer struct {
	files map[string][]proxy.ServedFile // subdir -> files
	fail  map[string]error

	mu      sync.Mutex
	fetched []string
}

func (f *fakeWarmer) SyncSubdirs(ctx context.Context, channel string) ([]string, error) {
	if channel != "c" {
		return nil, fmt.Errorf("no channel %q", channel)
	}
	return []string{"linux-64", "noarch"}, nil
}

func (f *fakeWarmer) ServedFiles(ctx context.Context, channel, subdir string, refresh bool) ([]proxy.ServedFile, error) {
	if !refresh {
		return nil, errors.New("a sync must revalidate the repodata")
	}
	if subdir == "noarch" && f.files["noarch"] == nil {
		return nil, errors.New("upstream down")
	}
	return slices.Clone(f.files[subdir]), nil
}

func (f *fakeWarmer) Prefetch(ctx context.Context, channel, subdir, filename string) (bool, error) {
	if err := f.fail[filename]; err != nil {
		return false, err
	}
	f.mu.Lock()
	f.fetched = append(f.fetched, subdir+"/"+filename)
	f.mu.Unlock()
	return true, nil
}

// badBlobs fails VerifyBlob for the listed sha256s.
type badBlobs []string

func (b badBlobs) VerifyBlob(sha string) error {
	if slices.Contains(b, sha) {
		return errors.New("digest mismatch")
	}
	return nil
}

// Sync runs on the roles alone: no proxy, no store, no upstream.
func TestSyncOnRoles(t *testing.T) {
	w := &fakeWarmer{
		files: map[string][]proxy.ServedFile{"linux-64": {
			{Subdir: "linux-64", Filename: "a-1-0.conda", SHA256: "aa", Size: 10, Cached: true},
			{Subdir: "linux-64", Filename: "b-1-0.conda", SHA256: "bb", Size: 20},
			{Subdir: "linux-64", Filename: "c-1-0.conda", SHA256: "cc", Size: 30},
			{Subdir: "linux-64", Filename: "d-1-0.conda", SHA256: "dd", Size: 40, Cached: true},
		}},
		fail: map[string]error{"c-1-0.conda": upstream.ErrNotFound},
	}
	rep, err := Sync(context.Background(), w, badBlobs{"dd"}, []string{"c"}, SyncOptions{Reset: true, Jobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("records %d present %d fetched %d (%d B) to fetch %d (%d B) reverified %d dropped %d",
		rep.Records, rep.Present, rep.Fetched, rep.FetchedBytes, rep.ToFetch, rep.ToFetchBytes, rep.Reverified, rep.Dropped)
	want := "records 4 present 1 fetched 2 (60 B) to fetch 3 (90 B) reverified 2 dropped 1"
	if got != want {
		t.Errorf("report:\n got %s\nwant %s", got, want)
	}
	slices.Sort(w.fetched)
	if want := []string{"linux-64/b-1-0.conda", "linux-64/d-1-0.conda"}; !slices.Equal(w.fetched, want) {
		t.Errorf("prefetched %v, want %v", w.fetched, want)
	}
	wantFail := []Failure{
		{"c", "linux-64", "c-1-0.conda", "not found upstream (404)"},
		{"c", "noarch", "repodata.json", "upstream down"},
	}
	if !slices.Equal(rep.Failures, wantFail) {
		t.Errorf("failures %+v, want %+v", rep.Failures, wantFail)
	}

	if _, err := Sync(context.Background(), w, badBlobs{}, []string{"c"}, SyncOptions{Channels: []string{"other"}}); err == nil {
		t.Error("a sync of a channel not in the list passed")
	}
}
