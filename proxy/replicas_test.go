package proxy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// One fill per content address: the same file asked for at once under two
// channels is one upstream fetch, and both paths are indexed (each serves it
// from the cache afterwards, with upstream gone).
func TestSameFileTwoChannelsOneFetch(t *testing.T) {
	pkg, err := os.ReadFile(filepath.Join(formatRepo(t), "linux-64", zlibLinux))
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, formatRepo(t))
	up.chunked.Store(true) // slow enough for the requests to overlap
	yaml := "cache:\n  memory: 16MiB\nchannels:\n" +
		"  - name: a\n    upstreams: [{url: " + up.URL + "}]\n" +
		"  - name: b\n    upstreams: [{url: " + up.URL + "}]\n"
	h := newHarness(t, yaml)
	for _, ch := range []string{"a", "b"} {
		if r := h.get("/" + ch + "/linux-64/repodata.json"); r.StatusCode != 200 {
			t.Fatalf("%s repodata: %d", ch, r.StatusCode)
		}
	}
	var wg sync.WaitGroup
	bodies := make([][]byte, 8)
	for i := range bodies {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ch := []string{"a", "b"}[i%2]
			r := h.get("/" + ch + "/linux-64/" + zlibLinux)
			if r.StatusCode == 200 && r.readErr == nil {
				bodies[i] = r.body
			}
		}(i)
	}
	wg.Wait()
	for i, b := range bodies {
		if !bytes.Equal(b, pkg) {
			t.Errorf("client %d: %d bytes, not the file", i, len(b))
		}
	}
	if n := up.count("/linux-64/" + zlibLinux); n != 1 {
		t.Errorf("upstream asked %d times for one file under two channels, want 1", n)
	}
	waitFor(t, "the fill to end", func() bool { return p2FillsIdle(h) })
	for _, ch := range []string{"a", "b"} {
		if _, ok := h.srv.pkgEntry(h.srv.channels[ch], "linux-64", zlibLinux); !ok {
			t.Errorf("channel %s: the file is not indexed under its path", ch)
		}
	}
}

// A purge of one channel's file leaves another channel's copy of the same bytes
// alone (it is held under that path), and is applied once.
func TestPurgeKeepsOtherPaths(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	yaml := "cache:\n  memory: 16MiB\nchannels:\n" +
		"  - name: a\n    upstreams: [{url: " + up.URL + "}]\n" +
		"  - name: b\n    upstreams: [{url: " + up.URL + "}]\n"
	h := newHarness(t, yaml)
	for _, ch := range []string{"a", "b"} {
		if r := h.get("/" + ch + "/linux-64/" + zlibLinux); r.StatusCode != 200 {
			t.Fatalf("%s: %d", ch, r.StatusCode)
		}
		waitFor(t, "the fill to end", func() bool { return p2FillsIdle(h) })
	}
	if err := h.srv.Purge(context.Background(), "a", "linux-64", zlibLinux); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.srv.pkgEntry(h.srv.channels["a"], "linux-64", zlibLinux); ok {
		t.Error("the purged path is still indexed")
	}
	up.status.Store(500) // upstream gone: b must serve its own copy
	if r := h.get("/b/linux-64/" + zlibLinux); r.StatusCode != 200 {
		t.Errorf("b after a's purge, upstream down: %d", r.StatusCode)
	}
	// Bad purges are refused, not applied to something else.
	for _, bad := range [][3]string{{"nochan", "linux-64", zlibLinux}, {"a", "zz9-x", zlibLinux}, {"a", "linux-64", "../x.conda"}} {
		if err := h.srv.Purge(context.Background(), bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("purge %v accepted", bad)
		}
	}
}
