package scale

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/shards"
)

// TestConcurrentMissesAcrossReplicasFetchOnce: 24 clients ask three replicas at
// once for a file none of them holds. The upstream is slow, so every request
// arrives while the first fill is still running; the Redis fill lock must make
// that one fill the only upstream download, and every client must still get the
// whole, right file.
func TestConcurrentMissesAcrossReplicasFetchOnce(t *testing.T) {
	c := newCluster(t, 3, "10m")
	p := c.pkgs[0]
	for _, r := range c.replicas {
		r.getRepodata(t, p.subdir)
	}
	c.up.setSlow(p.path(), 100*time.Millisecond) // about 1.5 s for the file

	const clients = 24
	answers := make([]answer, clients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			<-start
			answers[i] = c.replicas[i%len(c.replicas)].getPkg(p)
		})
	}
	close(start)
	wg.Wait()

	for i, a := range answers {
		if why := wholeAndRight(a, p); why != "" {
			t.Errorf("client %d on replica %s: %s", i, c.replicas[i%len(c.replicas)].name, why)
		}
	}
	if n := c.up.count(p.path()); n != 1 {
		t.Errorf("%d concurrent misses over %d replicas made %d upstream requests for %s, want 1",
			clients, len(c.replicas), n, p.path())
	}
	if !c.objectStoreHas(p.sha) {
		t.Errorf("the object store lacks %s after its fill", p.sha)
	}
	c.checkStores(t, c.replicas...)
}

// TestFileFetchedThroughOneReplicaIsServedByTheOthers: once A fetched a file, B
// serves it from the object store without asking upstream, and so does a fourth
// replica started later on an empty data directory, as a new pod would be.
func TestFileFetchedThroughOneReplicaIsServedByTheOthers(t *testing.T) {
	c := newCluster(t, 3, "10m")
	p := c.pkgs[1]
	a, b := c.replicas[0], c.replicas[1]
	a.getRepodata(t, p.subdir)
	if why := wholeAndRight(a.getPkg(p), p); why != "" {
		t.Fatalf("A: %s", why)
	}
	if n := c.up.count(p.path()); n != 1 {
		t.Fatalf("A's miss made %d upstream requests for %s, want 1", n, p.path())
	}
	b.getRepodata(t, p.subdir)
	if why := wholeAndRight(b.getPkg(p), p); why != "" {
		t.Errorf("B: %s", why)
	}
	if n := c.up.count(p.path()); n != 1 {
		t.Errorf("after B served %s: %d upstream requests for it, want still 1 (B should pull from the object store)", p.path(), n)
	}

	d := c.add()
	d.getRepodata(t, p.subdir)
	if why := wholeAndRight(d.getPkg(p), p); why != "" {
		t.Errorf("the 4th replica, started empty: %s", why)
	}
	if n := c.up.count(p.path()); n != 1 {
		t.Errorf("after the 4th replica served %s: %d upstream requests for it, want still 1", p.path(), n)
	}
	for _, r := range c.replicas {
		checkLocalTier(t, r)
	}
}

// TestRepodataRevalidatedOncePerTTLAcrossReplicas: three replicas are asked for
// one subdir's repodata over and over for two metadata_ttl windows. Freshness is
// shared (SPEC "Scale"): per window one replica revalidates upstream and the
// others serve what it published, so the upstream sees about one repodata
// request per window, not one per replica per window.
func TestRepodataRevalidatedOncePerTTLAcrossReplicas(t *testing.T) {
	const ttl = 2 * time.Second
	c := newCluster(t, 3, ttl.String())
	const subdir = "linux-64"

	began := time.Now()
	for _, r := range c.replicas {
		r.getRepodata(t, subdir)
	}
	first := c.up.repodataFetches(subdir)

	// Two windows and a little more, every replica asked every 100 ms: well over
	// a hundred requests, each a chance for a replica to revalidate on its own.
	for time.Since(began) < 2*ttl+ttl/2 {
		for _, r := range c.replicas {
			r.getRepodata(t, subdir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A revalidation runs in the background of the request that found the copy
	// stale: let the last ones finish before counting.
	time.Sleep(500 * time.Millisecond)
	elapsed := time.Since(began)
	total := c.up.repodataFetches(subdir)
	windows := int(elapsed / ttl)
	t.Logf("%d replicas, metadata_ttl %v, %v: %d upstream repodata fetches while the replicas started, %d in all (%d TTL windows passed)",
		len(c.replicas), ttl, elapsed.Round(time.Millisecond), first, total, windows)

	if total == first {
		t.Fatalf("no revalidation in %v with metadata_ttl %v: the test proves nothing", elapsed.Round(time.Millisecond), ttl)
	}
	// One fetch to start with, then at most one per window that ended, and one
	// for a window that ended on the edge of the count.
	if limit := 1 + windows + 1; total > limit {
		t.Errorf("%d upstream repodata fetches for %s over %d windows of %v across %d replicas (%d of them while the replicas started), want at most %d: freshness is not shared (about one per replica per window)\nupstream: %s",
			total, subdir, windows, ttl, len(c.replicas), first, limit, c.up.requests())
	}
}

// TestPurgeOnOneReplicaAppliesToAll: a purge posted to A removes the file from
// every replica and from the object store, so the next request on B goes
// upstream once; a repodata purge on A likewise makes B fetch repodata again.
func TestPurgeOnOneReplicaAppliesToAll(t *testing.T) {
	c := newCluster(t, 3, "10m")
	p := c.pkgs[2]
	a, b := c.replicas[0], c.replicas[1]
	// Every replica holds the file in its local tier before the purge, as a
	// popular file would.
	for _, r := range c.replicas {
		r.getRepodata(t, p.subdir)
		if why := wholeAndRight(r.getPkg(p), p); why != "" {
			t.Fatalf("%s before the purge: %s", r.name, why)
		}
	}
	if n := c.up.count(p.path()); n != 1 {
		t.Fatalf("three replicas serving %s made %d upstream requests, want 1", p.path(), n)
	}
	for _, r := range c.replicas {
		if !r.holdsLocally(p.sha) {
			t.Fatalf("%s served %s but holds no %s: the local tier is not where the test looks", r.name, p.file, r.localBlob(p.sha))
		}
	}

	a.purge(t, p.subdir, p.file)
	if c.objectStoreHas(p.sha) {
		t.Errorf("after the purge on A the object store still holds %s: any replica would pull it back", p.sha)
	}
	// The fan-out is pub/sub: give it a generous moment to reach every replica.
	for _, r := range c.replicas {
		if why := eventually(10*time.Second, func() string {
			if r.holdsLocally(p.sha) {
				return "still holds " + r.localBlob(p.sha)
			}
			return ""
		}); why != "" {
			t.Errorf("%s, 10 s after the purge of %s/%s on A: %s", r.name, p.subdir, p.file, why)
		}
	}
	if why := wholeAndRight(b.getPkg(p), p); why != "" {
		t.Errorf("B after the purge: %s", why)
	}
	if n := c.up.count(p.path()); n != 2 {
		t.Errorf("B's request after the purge on A: %d upstream requests for %s in all, want 2 (one more: B must refetch)", n, p.path())
	}

	// Repodata: a purge is an operator saying the cached copy is not to be
	// trusted, so the next request must ask upstream. With shared freshness the
	// copy the replicas share (in the store, stamped in Redis) is a cached copy
	// too, and must go with the purge. The upstream's count moves only when B
	// drops its copy, so B is asked until it does (the fan-out may take a
	// moment), within a deadline.
	before := c.up.repodataFetches(p.subdir)
	a.purge(t, p.subdir, "")
	if why := eventually(10*time.Second, func() string {
		b.getRepodata(t, p.subdir)
		if c.up.repodataFetches(p.subdir) == before {
			return "B still serves its repodata without asking upstream"
		}
		return ""
	}); why != "" {
		// Is it the fan-out, or does no replica refetch after a purge, not even
		// the one that was asked? A tells.
		a.getRepodata(t, p.subdir)
		time.Sleep(300 * time.Millisecond)
		t.Errorf("10 s after a repodata purge of %s on A: %s (A, asked then: %d upstream repodata fetches since the purge)",
			p.subdir, why, c.up.repodataFetches(p.subdir)-before)
		return
	}
	// The refetch may finish in the background of the request that caused it.
	time.Sleep(300 * time.Millisecond)
	if n := c.up.repodataFetches(p.subdir) - before; n != 1 {
		t.Errorf("after a repodata purge on A, B's requests made %d upstream repodata fetches, want 1\nupstream: %s", n, c.up.requests())
	}
	// A and C then take what B fetched, or fetch their own: not asserted (a
	// purge is an operator forcing a refetch), only shown.
	a.getRepodata(t, p.subdir)
	c.replicas[2].getRepodata(t, p.subdir)
	time.Sleep(300 * time.Millisecond)
	t.Logf("after the repodata purge, B, A and C asked: %d upstream repodata fetches", c.up.repodataFetches(p.subdir)-before)
}

// TestRedisDownReplicasGoOnAlone: Redis is killed under three replicas. Each goes
// on serving what it holds and filling new files with local locks, stays ready
// (a load balancer must not drop them all at once) and says "redis: degraded"
// with condaproxy_redis_up 0. Redis back on the same port, empty: each says
// "redis: ok" and 1 again, and concurrent misses are one fetch again.
func TestRedisDownReplicasGoOnAlone(t *testing.T) {
	c := newCluster(t, 3, "10m")
	cached, fresh, after := c.pkgs[3], c.pkgs[4], c.pkgs[5]
	for _, r := range c.replicas {
		for _, sd := range []string{cached.subdir, fresh.subdir, after.subdir} {
			r.getRepodata(t, sd)
		}
		if why := wholeAndRight(r.getPkg(cached), cached); why != "" {
			t.Fatalf("%s before Redis went: %s", r.name, why)
		}
	}
	for _, r := range c.replicas {
		expectRedis(t, r, "redis: ok", "1")
	}

	c.redis.kill()
	for _, r := range c.replicas {
		expectRedis(t, r, "redis: degraded", "0")
		if why := wholeAndRight(r.getPkg(cached), cached); why != "" {
			t.Errorf("%s with Redis down, a cached file: %s", r.name, why)
		}
		r.getRepodata(t, fresh.subdir)
	}
	// New misses, one per replica at once: each fills under its own lock.
	answers := make([]answer, len(c.replicas))
	var wg sync.WaitGroup
	for i, r := range c.replicas {
		wg.Go(func() { answers[i] = r.getPkg(fresh) })
	}
	wg.Wait()
	for i, a := range answers {
		if why := wholeAndRight(a, fresh); why != "" {
			t.Errorf("%s with Redis down, a new file: %s", c.replicas[i].name, why)
		}
	}
	t.Logf("with Redis down, %d concurrent misses on %d replicas made %d upstream requests for %s",
		len(c.replicas), len(c.replicas), c.up.count(fresh.path()), fresh.path())
	if n := c.up.count(fresh.path()); n < 1 || n > len(c.replicas) {
		t.Errorf("with Redis down: %d upstream requests for %s, want 1 to %d (at most one per replica)", n, fresh.path(), len(c.replicas))
	}
	for _, r := range c.replicas {
		if code, body := r.readyz(); code != http.StatusOK {
			t.Errorf("%s: /readyz %d with Redis down after serving: %s", r.name, code, body)
		}
	}

	c.redis.restart()
	for _, r := range c.replicas {
		expectRedis(t, r, "redis: ok", "1")
	}
	// Shared locks again: misses on every replica at once make one fetch.
	c.up.setSlow(after.path(), 100*time.Millisecond)
	answers = make([]answer, 2*len(c.replicas))
	for i := range answers {
		wg.Go(func() { answers[i] = c.replicas[i%len(c.replicas)].getPkg(after) })
	}
	wg.Wait()
	for i, a := range answers {
		if why := wholeAndRight(a, after); why != "" {
			t.Errorf("client %d on %s after Redis came back: %s", i, c.replicas[i%len(c.replicas)].name, why)
		}
	}
	if n := c.up.count(after.path()); n != 1 {
		t.Errorf("after Redis came back, %d concurrent misses over %d replicas made %d upstream requests for %s, want 1",
			len(answers), len(c.replicas), n, after.path())
	}
	c.checkStores(t, c.replicas...)
}

// expectRedis waits (up to 20 s: a health check runs every few seconds) for r's
// /readyz to say status and its condaproxy_redis_up to read up, failing the test
// if they do not, or if /readyz ever answers other than 200 meanwhile.
func expectRedis(t *testing.T, r *replica, status, up string) {
	t.Helper()
	if why := eventually(20*time.Second, func() string {
		code, body := r.readyz()
		if code != http.StatusOK {
			return fmt.Sprintf("/readyz %d: %s", code, body)
		}
		if !strings.Contains(body, status) {
			return "/readyz 200 without " + status + ": " + body
		}
		if m := metric(r, "condaproxy_redis_up"); m != up {
			return fmt.Sprintf("/readyz says %s but condaproxy_redis_up is %q, want %s", status, m, up)
		}
		return ""
	}); why != "" {
		t.Errorf("%s, waiting for %q: %s", r.name, status, why)
	}
}

// TestObjectStoreDown: the object store is killed under three replicas. What a
// replica holds locally is still served; a miss answers 503 with Retry-After (not
// an upstream fetch that could not be shared); nothing partial is left anywhere.
// The store back, the misses fill again and the new file reaches the store.
func TestObjectStoreDown(t *testing.T) {
	c := newCluster(t, 3, "10m")
	p, q := c.pkgs[0], c.pkgs[1]
	a, b, cc := c.replicas[0], c.replicas[1], c.replicas[2]
	for _, r := range c.replicas {
		r.getRepodata(t, p.subdir)
		r.getRepodata(t, q.subdir)
	}
	// A filled p, B pulled it; C never saw it.
	for _, r := range []*replica{a, b} {
		if why := wholeAndRight(r.getPkg(p), p); why != "" {
			t.Fatalf("%s before the store went: %s", r.name, why)
		}
	}

	c.s3.Kill()
	for _, r := range []*replica{a, b} {
		if why := wholeAndRight(r.getPkg(p), p); why != "" {
			t.Errorf("%s with the object store down, a file it holds: %s", r.name, why)
		}
	}
	for _, miss := range []struct {
		r *replica
		p pkg
	}{{cc, p}, {a, q}} {
		got := miss.r.getPkg(miss.p)
		if got.err != nil || got.code != http.StatusServiceUnavailable || got.header.Get("Retry-After") == "" {
			t.Errorf("%s with the object store down, a miss of %s: %v with Retry-After %q, want 503 with Retry-After",
				miss.r.name, miss.p.file, got, got.header.Get("Retry-After"))
		}
	}
	for _, r := range c.replicas {
		code, body := r.readyz()
		t.Logf("%s: /readyz with the object store down: %d %s", r.name, code, strings.TrimSpace(body))
		checkLocalTier(t, r)
	}
	qBefore := c.up.count(q.path())

	c.s3.Restart()
	// The first requests after a restart may still find the store's client
	// backing off: poll, within a deadline.
	if why := eventually(30*time.Second, func() string { return wholeAndRight(cc.getPkg(p), p) }); why != "" {
		t.Errorf("C after the object store came back, a file the store holds: %s", why)
	}
	if why := eventually(30*time.Second, func() string { return wholeAndRight(a.getPkg(q), q) }); why != "" {
		t.Errorf("A after the object store came back, a new file: %s", why)
	}
	if n := c.up.count(p.path()); n != 1 {
		t.Errorf("%d upstream requests for %s, want 1: C should have pulled it from the store", n, p.path())
	}
	if !c.objectStoreHas(q.sha) {
		t.Errorf("A filled %s after the store came back, but the store lacks it", q.file)
	}
	// B serves q from the store: the fill after the outage was shared.
	n := c.up.count(q.path())
	if why := wholeAndRight(b.getPkg(q), q); why != "" {
		t.Errorf("B, a file A filled after the outage: %s", why)
	}
	if m := c.up.count(q.path()); m != n {
		t.Errorf("B's request for %s went upstream (%d → %d requests): A's fill did not reach the store", q.file, n, m)
	}
	t.Logf("upstream requests for %s: %d during the outage, %d in all", q.path(), qBefore, c.up.count(q.path()))
	c.checkStores(t, c.replicas...)
}

// TestFillerKilledMidFillAnotherReplicaTakesOver: A is filling a file from a slow
// upstream, holding its fill lock, while clients on B and C wait for the same
// file; A is killed with SIGKILL. Its lease runs out, another replica takes the
// fill over, and B's and C's clients get the whole, right file. A's own client
// must see a broken transfer (or, had it finished, the right file), never a
// short body presented as whole. A restarted on its data directory serves the
// file from the store.
func TestFillerKilledMidFillAnotherReplicaTakesOver(t *testing.T) {
	c := newCluster(t, 3, "10m")
	p := c.pkgs[0]
	for _, q := range c.pkgs {
		if q.size > p.size {
			p = q // the largest, for the longest fill
		}
	}
	a := c.replicas[0]
	for _, r := range c.replicas {
		r.getRepodata(t, p.subdir)
	}
	// About 13 pieces of 8 KiB, 300 ms apart: the fill lasts some 4 s.
	c.up.setSlow(p.path(), 300*time.Millisecond)

	type result struct {
		on string
		a  answer
	}
	results := make(chan result, 8)
	var wg sync.WaitGroup
	ask := func(r *replica) {
		wg.Go(func() { results <- result{r.name, r.getPkg(p)} })
	}
	began := time.Now()
	ask(a)
	if why := eventually(10*time.Second, func() string {
		if c.up.bytesSent(p.path()) == 0 {
			return "no byte of the file sent upstream"
		}
		return ""
	}); why != "" {
		t.Fatalf("A's fill did not start: %s", why)
	}
	for _, r := range c.replicas[1:] {
		ask(r)
		ask(r)
	}
	// Let B's and C's requests reach the fill lock A holds; nothing here can see
	// them wait, so this is a pause, not an assertion.
	time.Sleep(500 * time.Millisecond)
	a.Kill()
	sentAtKill := c.up.bytesSent(p.path())
	if sentAtKill >= p.size {
		t.Fatalf("the kill came after the whole file was sent (%d of %d bytes): not a mid-fill kill", sentAtKill, p.size)
	}
	killedAt := time.Since(began)
	c.up.setSlow(p.path(), 0) // the takeover at full speed

	wg.Wait()
	close(results)
	took := time.Since(began)
	for res := range results {
		if res.on == a.name {
			if presentedAsWhole(res.a) {
				if why := wholeAndRight(res.a, p); why != "" {
					t.Errorf("A's client got a file presented as whole that is not: %s", why)
				}
			} else {
				t.Logf("A's client, killed mid-fill: %v (as it should: a broken transfer)", res.a.err)
			}
			continue
		}
		if why := wholeAndRight(res.a, p); why != "" {
			t.Errorf("a client on %s, the filler killed: %s", res.on, why)
		}
	}
	t.Logf("A killed %v in, %d of %d bytes sent; every client done %v in", killedAt.Round(time.Millisecond),
		sentAtKill, p.size, took.Round(time.Millisecond))
	if n := c.up.count(p.path()); n != 2 {
		t.Errorf("%d upstream requests for %s, want 2: A's, cut by the kill, and one takeover", n, p.path())
	}
	if !c.objectStoreHas(p.sha) {
		t.Errorf("the object store lacks %s after the takeover", p.file)
	}
	c.checkStores(t, c.replicas[1:]...)

	// A back on the data directory it died with: it starts, serves the file from
	// the store, and shows nothing of the fill it was killed in.
	c.start(a)
	if why := wholeAndRight(a.getPkg(p), p); why != "" {
		t.Errorf("A restarted: %s", why)
	}
	if n := c.up.count(p.path()); n != 2 {
		t.Errorf("A restarted went upstream for %s (%d requests in all, want 2)", p.path(), n)
	}
	checkLocalTier(t, a)
}

// localBlob is where r's local tier keeps the blob sha.
func (r *replica) localBlob(sha string) string {
	return filepath.Join(r.data, "blobs", sha[:2], sha)
}

// holdsLocally says whether r's local tier has the blob sha.
func (r *replica) holdsLocally(sha string) bool {
	_, err := os.Stat(r.localBlob(sha))
	return err == nil
}

// TestShardsFromOneReplicaServedByAll: a client whose shard index came from
// one replica gets every shard it names from any other (each replica cuts the
// same upstream copy under the same policy, so the shards are the same bytes
// under the same names), including a replica that had built nothing yet.
func TestShardsFromOneReplicaServedByAll(t *testing.T) {
	c := newCluster(t, 3, "10m")
	const subdir = "linux-64"
	a := c.replicas[0]
	ix := get(a.url("/" + subdir + "/repodata_shards.msgpack.zst"))
	if ix.err != nil || ix.code != 200 {
		t.Fatalf("index from %s: %v", a.name, ix)
	}
	index, err := shards.DecodeIndex(ix.body)
	if err != nil || len(index.Shards) == 0 {
		t.Fatalf("index from %s: %v, %d names", a.name, err, len(index.Shards))
	}
	for _, r := range c.replicas[1:] {
		for name, sum := range index.Shards {
			hexSum := hex.EncodeToString(sum)
			got := get(r.url("/" + subdir + "/shards/" + hexSum + ".msgpack.zst"))
			if got.err != nil || got.code != 200 || sha256hex(got.body) != hexSum {
				t.Errorf("%s: the shard of %s named by %s's index: %v", r.name, name, a.name, got)
			}
		}
	}
}

// TestShardOfAGenerationAReplicaNeverCut: a client holding replica A's index
// asks replica B, which never cut that generation (it started after upstream
// changed), for a shard that changed since: B takes it from the object store
// (A put it there before its index named it) rather than answer 404, which
// clients take as fatal.
func TestShardOfAGenerationAReplicaNeverCut(t *testing.T) {
	const ttl = 2 * time.Second
	c := newCluster(t, 2, ttl.String())
	// An upstream the test can change: a copy of the channel.
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS(c.up.root)); err != nil {
		t.Fatal(err)
	}
	c.up.root = root
	a, b := c.replicas[0], c.replicas[1]
	ix := get(a.url("/linux-64/repodata_shards.msgpack.zst"))
	index, err := shards.DecodeIndex(ix.body)
	if err != nil {
		t.Fatalf("index from %s: %v (%v)", a.name, err, ix)
	}
	old := hex.EncodeToString(index.Shards["zlib"])
	if old == "" {
		t.Fatalf("no zlib in %s's index", a.name)
	}
	// Upstream gains a zlib build: zlib's shard changes.
	doc := filepath.Join(root, "linux-64", "repodata.json")
	data, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]map[string]any
	json.Unmarshal(data, &d)
	for _, rec := range d["packages.conda"] {
		if rec.(map[string]any)["name"] == "zlib" {
			d["packages.conda"]["zlib-1.2.11-hnew_0.conda"] = rec
			break
		}
	}
	out, _ := json.Marshal(d)
	os.WriteFile(doc, out, 0o644)
	later := time.Now().Add(time.Hour)
	os.Chtimes(doc, later, later)
	time.Sleep(ttl + 500*time.Millisecond) // A's stamp is past its TTL: B fetches anew
	got := get(b.url("/linux-64/shards/" + old + ".msgpack.zst"))
	if got.err != nil || got.code != 200 || sha256hex(got.body) != old {
		t.Fatalf("%s, asked for the zlib shard of %s's older index: %v", b.name, a.name, got)
	}
	now, err := shards.DecodeIndex(get(b.url("/linux-64/repodata_shards.msgpack.zst")).body)
	if err != nil || hex.EncodeToString(now.Shards["zlib"]) == old {
		t.Errorf("%s's own index still names the old zlib shard (%v): the test did not cut a newer generation", b.name, err)
	}
}
