package proxy

import (
	"context"
	"testing"
	"time"
)

// A purge of a blob for one channel, while another channel's fill of the same
// bytes has committed but not yet written its index entry: the late entry must
// not stay naming a purged blob (it would count as cached, be served by nobody
// and skipped by every sync). It is taken back, and the next request fetches the
// package again.
func TestIndexEntryAfterPurgeTakenBack(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	yaml := "cache:\n  metadata_ttl: 10m\n  memory: 16MiB\nchannels:\n" +
		"  - name: a\n    upstreams:\n      - url: " + up.URL + "\n" +
		"  - name: b\n    upstreams:\n      - url: " + up.URL + "\n"
	h := newHarness(t, yaml)
	r := h.get("/a/osx-64/" + p2Shared)
	if r.StatusCode != 200 {
		t.Fatalf("fill in a: %d", r.StatusCode)
	}
	sha := sha256hex(r.body)
	keyB := stateKey("p", "b", "osx-64", p2Shared)
	waitIndexed(t, h, stateKey("p", "a", "osx-64", p2Shared))

	// clean of a: no other entry holds the blob, so it is purged.
	if err := h.srv.UncacheFiles("a", []CachedFile{{Subdir: "osx-64", Filename: p2Shared}}); err != nil {
		t.Fatal(err)
	}
	if h.store.Has(sha) {
		t.Fatal("the blob was not purged")
	}
	// b's fill, committed before the purge, now writes its entry.
	if _, err := h.srv.putIndex(keyB, pkgEntry{SHA256: sha, Size: int64(len(r.body))}); err == nil {
		t.Error("an index entry for a purged blob was accepted")
	}
	if ok, _ := h.store.Meta.Get(keyB, new(pkgEntry)); ok {
		t.Fatal("the index names a purged blob")
	}
	// b's next request fetches the package again and indexes it.
	if r := h.get("/b/osx-64/" + p2Shared); r.StatusCode != 200 || sha256hex(r.body) != sha {
		t.Fatalf("b after the purge: %d", r.StatusCode)
	}
	waitIndexed(t, h, keyB)
	if !h.store.Has(sha) {
		t.Fatal("b's refetch is not in the store")
	}
	// Once the blob is back, an entry for it is kept, purge remembered or not.
	if _, err := h.srv.putIndex(stateKey("p", "a", "osx-64", p2Shared), pkgEntry{SHA256: sha}); err != nil {
		t.Errorf("an entry for a blob that is back: %v", err)
	}
}

// A clean holding refs (its look for holders and its purges, one remote delete
// a blob with an object store) does not stall the request path: a hit on bytes
// another channel brought, which indexes its own path, answers at once, and its
// index entry is written once refs is free.
func TestHitDuringPurgeDoesNotWait(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	yaml := "cache:\n  metadata_ttl: 10m\n  memory: 16MiB\nchannels:\n" +
		"  - name: a\n    upstreams:\n      - url: " + up.URL + "\n" +
		"  - name: b\n    upstreams:\n      - url: " + up.URL + "\n"
	h := newHarness(t, yaml)
	if r := h.get("/a/osx-64/" + p2Shared); r.StatusCode != 200 {
		t.Fatalf("fill in a: %d", r.StatusCode)
	}
	if r := h.get("/b/osx-64/repodata.json"); r.StatusCode != 200 {
		t.Fatalf("repodata of b: %d", r.StatusCode)
	}
	waitIndexed(t, h, stateKey("p", "a", "osx-64", p2Shared))
	h.srv.lockRefs() // a clean in progress
	locked := true
	defer func() {
		if locked {
			h.srv.unlockRefs()
		}
	}()
	done := make(chan resp, 1)
	go func() { done <- h.get("/b/osx-64/" + p2Shared) }()
	var r resp
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a hit waited for a clean holding the package index")
	}
	if r.StatusCode != 200 {
		t.Fatalf("hit during a clean: %d", r.StatusCode)
	}
	key := stateKey("p", "b", "osx-64", p2Shared)
	if ok, _ := h.store.Meta.Get(key, new(pkgEntry)); ok {
		t.Fatal("the entry was written while refs was held exclusively")
	}
	h.srv.unlockRefs()
	locked = false
	waitIndexed(t, h, key)
}

// Entries left while a clean holds refs are written as it lets go, the latest
// for a key winning, and no goroutine waits on refs meanwhile: a Shutdown with
// a clean in progress is not held by them.
func TestDeferredIndexOrderAndShutdown(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	h := newHarness(t, channelYAML("", up.URL))
	r := h.get("/fmt/osx-64/" + p2Shared)
	if r.StatusCode != 200 {
		t.Fatalf("fill: %d", r.StatusCode)
	}
	sha := sha256hex(r.body)
	key := stateKey("p", "fmt", "osx-64", "copy-"+p2Shared)
	h.srv.lockRefs()
	for i, rec := range []string{`{"n":"old"}`, `{"n":"mid"}`, `{"n":"new"}`} {
		deferred, err := h.srv.putIndex(key, pkgEntry{SHA256: sha, Size: int64(i), Record: []byte(rec)})
		if err != nil || !deferred {
			t.Fatalf("put %d with refs held: deferred %v, %v", i, deferred, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() { h.srv.Shutdown(ctx); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("Shutdown waited for index writes behind a held refs")
	}
	h.srv.unlockRefs()
	var e pkgEntry
	if ok, err := h.store.Meta.Get(key, &e); !ok || err != nil || string(e.Record) != `{"n":"new"}` {
		t.Fatalf("after the holder let go: %v %v %s, want the latest entry", ok, err, e.Record)
	}
	// With refs free, a write goes straight in, after every deferred one.
	if deferred, err := h.srv.putIndex(key, pkgEntry{SHA256: sha, Record: []byte(`{"n":"direct"}`)}); err != nil || deferred {
		t.Fatalf("put with refs free: deferred %v, %v", deferred, err)
	}
	if ok, _ := h.store.Meta.Get(key, &e); !ok || string(e.Record) != `{"n":"direct"}` {
		t.Errorf("direct write: %s", e.Record)
	}
}

// waitIndexed waits for the package index entry key: a fill writes it as it
// ends, which may be just after its answer.
func waitIndexed(t *testing.T, h *harness, key string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if ok, _ := h.store.Meta.Get(key, new(pkgEntry)); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was never written", key)
		}
	}
}
