package proxy

import (
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
	if err := h.srv.putIndex(keyB, pkgEntry{SHA256: sha, Size: int64(len(r.body))}); err == nil {
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
	if err := h.srv.putIndex(stateKey("p", "a", "osx-64", p2Shared), pkgEntry{SHA256: sha}); err != nil {
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
	h.srv.refs.Lock() // a clean in progress
	locked := true
	defer func() {
		if locked {
			h.srv.refs.Unlock()
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
	h.srv.refs.Unlock()
	locked = false
	waitIndexed(t, h, key)
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
