package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	s3api "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/condaproxy/condaproxy/blobstore/s3/s3test"
	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/condaproxy/condaproxy/internal/testproc"
)

// A cluster is what an operator deploys past one machine: replicas of condaproxy
// behind no load balancer (the test picks the replica of each request), sharing
// one Redis and one bucket, before one upstream.
type cluster struct {
	t        *testing.T
	redis    *redisServer
	s3       *s3test.Server
	up       *upstream
	pkgs     []pkg
	ttl      string // cache.metadata_ttl of every replica
	replicas []*replica
}

const (
	channelName = "zlib"
	bucket      = "condaproxy"
	prefix      = "scale"
	adminToken  = "scale-test-admin-token"
)

// newCluster starts Redis, the object store (with its bucket) and the upstream,
// and n replicas on them, each with its own empty data directory. ttl is the
// replicas' metadata_ttl.
func newCluster(t *testing.T, n int, ttl string) *cluster {
	t.Helper()
	// Both engines are looked for first, so a machine without one skips before
	// anything starts.
	if s3test.Binary() == "" {
		testdata.Skipf(t, testdata.S3, "versitygw is not installed (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)")
	}
	c := &cluster{t: t, ttl: ttl}
	c.redis = startRedis(t)
	c.s3 = s3test.Start(t)
	c.s3.CreateBucket(bucket)
	c.up = startUpstream(t)
	c.pkgs = channelPackages(t)
	for range n {
		c.add()
	}
	// What the replicas said is the first thing to read when a test fails.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, r := range c.replicas {
			t.Logf("--- %s (%s) printed:\n%s", r.name, r.base, r.Tail(6000))
		}
		t.Logf("--- upstream requests: %s", c.up.requests())
	})
	return c
}

// replica is one condaproxy process of the cluster.
type replica struct {
	*proc
	name string
	base string
	data string
	cfg  string
}

// add starts one more replica with an empty data directory and waits for /healthz.
func (c *cluster) add() *replica {
	c.t.Helper()
	name := string(rune('A' + len(c.replicas)))
	dir := c.t.TempDir()
	r := &replica{name: name, data: filepath.Join(dir, "data"), cfg: filepath.Join(dir, "condaproxy.yaml")}
	c.start(r)
	c.replicas = append(c.replicas, r)
	return r
}

// start runs r on a fresh port. A port taken between the kernel's offer and the
// bind is retried with another.
func (c *cluster) start(r *replica) {
	c.t.Helper()
	_, err := testproc.OnFreePort(c.t, func(port int) (*proc, error) {
		if err := os.WriteFile(r.cfg, []byte(c.config(r, port)), 0o600); err != nil {
			c.t.Fatal(err)
		}
		// CONDAPROXY_CONFIG cleared: only -c counts.
		r.proc = testproc.Start(c.t, []string{"CONDAPROXY_CONFIG="}, bin, "serve", "-c", r.cfg)
		r.base = fmt.Sprintf("http://127.0.0.1:%d", port)
		return r.proc, r.WaitHealthy(client, r.base, 30*time.Second)
	})
	if err != nil {
		c.t.Fatalf("replica %s did not become healthy: %v (exit: %v)\noutput:\n%s", r.name, err, r.Err(), r.Tail(6000))
	}
}

// config is a replica's configuration: the SPEC's "Scale" shape, on loopback.
func (c *cluster) config(r *replica, port int) string {
	return fmt.Sprintf(`listen: 127.0.0.1:%d
data: %s
log:
  level: info
  format: text
redis: redis://%s/0
storage:
  blobs: s3://%s/%s
  s3:
    endpoint: %s
    region: %s
    access_key: %s
    secret_key: %s
    path_style: true
auth:
  admin_token: %s
cache:
  metadata_ttl: %s
  negative_ttl: 1s
channels:
  - name: %s
    upstreams:
      - url: %s
    platforms: [linux-64, osx-64, win-32, win-64, noarch]
`, port, r.data, c.redis.addr, bucket, prefix, c.s3.Endpoint, s3test.Region, s3test.AccessKey, s3test.SecretKey,
		adminToken, c.ttl, channelName, c.up.srv.URL)
}

// url is the address of a channel path on r.
func (r *replica) url(p string) string { return r.base + "/" + channelName + p }

// getPkg asks r for p.
func (r *replica) getPkg(p pkg) answer { return get(r.url(p.path())) }

// getRepodata asks r for subdir's repodata.json and fails the test unless it
// answers 200 in full: a package request is only a hit or a miss once the replica
// serves the record.
func (r *replica) getRepodata(t *testing.T, subdir string) {
	t.Helper()
	if a := get(r.url("/" + subdir + "/repodata.json")); a.err != nil || a.code != http.StatusOK || !json.Valid(a.body) {
		t.Fatalf("%s: GET /%s/%s/repodata.json: %v", r.name, channelName, subdir, a)
	}
}

// purge posts an admin purge to r, as an operator's script would.
func (r *replica) purge(t *testing.T, subdir, filename string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"channel": channelName, "subdir": subdir, "filename": filename})
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + adminToken}}
	if a := do(http.MethodPost, r.base+"/api/v1/purge", h, bytes.NewReader(body)); a.err != nil || a.code != http.StatusOK {
		t.Fatalf("%s: POST /api/v1/purge %s: %v", r.name, body, a)
	}
}

// readyz is r's readiness answer: its status and body.
func (r *replica) readyz() (int, string) {
	a := get(r.base + "/readyz")
	if a.err != nil {
		return 0, a.err.Error()
	}
	return a.code, string(a.body)
}

// checkStores checks the object store (checkObjectStore), then the local tier of
// each of replicas (checkLocalTier).
func (c *cluster) checkStores(t *testing.T, replicas ...*replica) {
	t.Helper()
	c.checkObjectStore(t)
	for _, r := range replicas {
		checkLocalTier(t, r)
	}
}

// checkObjectStore reads the bucket behind the replicas' backs: every object whose
// name is a sha256 must hash to it and have the size the upstream's record gives
// when the test knows it. A partial or unverified object would fail here.
func (c *cluster) checkObjectStore(t *testing.T) {
	t.Helper()
	sizes := map[string]int64{}
	for _, p := range c.pkgs {
		sizes[p.sha] = p.size
	}
	cl := c.s3.Client()
	for _, key := range c.s3.Keys(bucket, prefix+"/") {
		name := path.Base(key)
		if !shaName.MatchString(name) {
			continue // published repodata and other named objects, if any
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := cl.GetObject(ctx, &s3api.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			cancel()
			t.Errorf("object store: get %s: %v", key, err)
			continue
		}
		b, err := io.ReadAll(out.Body)
		out.Body.Close()
		cancel()
		if err != nil {
			t.Errorf("object store: read %s: %v", key, err)
			continue
		}
		if got := sha256hex(b); got != name {
			t.Errorf("object store: %s is %d bytes hashing to %s: a partial or wrong object is visible", key, len(b), got)
		}
		if size, ok := sizes[name]; ok && size != int64(len(b)) {
			t.Errorf("object store: %s is %d bytes, the record says %d", key, len(b), size)
		}
	}
}

// objectStoreHas says whether some key of the bucket names sha.
func (c *cluster) objectStoreHas(sha string) bool {
	for _, key := range c.s3.Keys(bucket, prefix+"/") {
		if path.Base(key) == sha {
			return true
		}
	}
	return false
}
