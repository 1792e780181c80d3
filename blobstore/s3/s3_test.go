package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	s3api "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/condaproxy/condaproxy/blobstore"
	"github.com/condaproxy/condaproxy/blobstore/blobstoretest"
	"github.com/condaproxy/condaproxy/blobstore/s3/s3test"
)

const bucket = "condaproxy"

func options(gw *s3test.Server, prefix string, t *testing.T) Options {
	return Options{
		Endpoint:  gw.Endpoint,
		Region:    s3test.Region,
		Bucket:    bucket,
		Prefix:    prefix,
		AccessKey: s3test.AccessKey,
		SecretKey: s3test.SecretKey,
		PathStyle: true,
		TempDir:   t.TempDir(),
	}
}

// loopback is the HTTP transport of every store under test: a dial off
// loopback panics, so no test reaches the internet, not even by a default
// endpoint or a credential lookup.
var loopback = &http.Transport{
	DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			panic("test tried to dial " + addr + ": tests stay on loopback")
		}
		return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	},
}

func newTestStore(t *testing.T, o Options, hc s3api.HTTPClient) *Store {
	t.Helper()
	if hc == nil {
		hc = &http.Client{Transport: loopback}
	}
	s, err := newStore(context.Background(), o, hc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConformance runs the suite against one versitygw; each subtest gets a
// prefix of its own in one bucket, which also shows that prefixes keep stores
// apart.
func TestConformance(t *testing.T) {
	gw := s3test.Start(t)
	gw.CreateBucket(bucket)
	var n atomic.Int64
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store {
		return newTestStore(t, options(gw, fmt.Sprintf("/conformance/%d/", n.Add(1)), t), nil)
	})
}

// recorder keeps the method, headers and status of every request.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, path string
	header       http.Header
	status       int
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	resp, err := loopback.RoundTrip(req)
	rec := recorded{method: req.Method, path: req.URL.Path, header: req.Header.Clone()}
	if resp != nil {
		rec.status = resp.StatusCode
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, rec)
	r.mu.Unlock()
	return resp, err
}

func (r *recorder) take() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	reqs := r.reqs
	r.reqs = nil
	return reqs
}

// TestWire checks what goes over the wire: the key layout, the conditional
// create and the checksum on the upload, a second commit answered 412 and
// taken as success, and Range headers for ranged reads.
func TestWire(t *testing.T) {
	gw := s3test.Start(t)
	gw.CreateBucket(bucket)
	rec := &recorder{}
	s := newTestStore(t, options(gw, "team/a", t), rec)
	o := blobstoretest.NewObject(1, 5000)
	sha := o.Want.SHA256

	blobstoretest.Put(t, s, o)
	if got, want := gw.Keys(bucket, ""), []string{"team/a/blobs/" + sha[:2] + "/" + sha}; !equal(got, want) {
		t.Errorf("keys: got %v, want %v", got, want)
	}
	reqs := rec.take()
	if len(reqs) != 1 || reqs[0].method != http.MethodPut || reqs[0].status != http.StatusOK {
		t.Fatalf("the commit made %+v, want one PUT answered 200", reqs)
	}
	put := reqs[0].header
	if got := put.Get("If-None-Match"); got != "*" {
		t.Errorf("If-None-Match: got %q, want *", got)
	}
	if got := put.Get("X-Amz-Content-Sha256"); got != sha {
		t.Errorf("X-Amz-Content-Sha256: got %q, want the verified sha256 %s", got, sha)
	}
	if put.Get("X-Amz-Checksum-Sha256") == "" {
		t.Error("no X-Amz-Checksum-Sha256 on the upload")
	}

	blobstoretest.Put(t, s, o)
	if reqs := rec.take(); len(reqs) != 1 || reqs[0].status != http.StatusPreconditionFailed {
		t.Errorf("the second commit made %+v, want one PUT answered 412", reqs)
	}

	if _, err := blobstoretest.ReadAll(s, sha, 100, 50); err != nil {
		t.Fatal(err)
	}
	if reqs := rec.take(); len(reqs) != 1 || reqs[0].header.Get("Range") != "bytes=100-149" {
		t.Errorf("Open(100, 50) made %+v, want one GET with Range: bytes=100-149", reqs)
	}
	if _, err := blobstoretest.ReadAll(s, sha, 0, -1); err != nil {
		t.Fatal(err)
	}
	if reqs := rec.take(); len(reqs) != 1 || reqs[0].header.Get("Range") != "" {
		t.Errorf("Open(0, -1) made %+v, want one GET without Range", reqs)
	}
}

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// Keys under the prefix that are not objects of the store, and objects under
// another prefix, are not listed.
func TestWalkSkipsStrangers(t *testing.T) {
	gw := s3test.Start(t)
	gw.CreateBucket(bucket)
	s := newTestStore(t, options(gw, "p", t), nil)
	other := newTestStore(t, options(gw, "p/q", t), nil)
	o := blobstoretest.NewObject(2, 10)
	blobstoretest.Put(t, s, o)
	blobstoretest.Put(t, other, blobstoretest.NewObject(3, 10))
	sha := o.Want.SHA256
	for _, key := range []string{"p/blobs/README", "p/blobs/" + sha, "p/blobs/ff/00" + sha[2:], "p/blobs/" + sha[:2] + "/" + sha + ".tmp"} {
		if _, err := gw.Client().PutObject(context.Background(), &s3api.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if got := blobstoretest.Objects(t, s); len(got) != 1 || got[sha] != 10 {
		t.Errorf("Walk: got %v, want only %s", got, sha)
	}
}

// With no keys, the store takes its credentials from the AWS chain; here the
// environment, as a container's secrets would give them.
func TestCredentialChain(t *testing.T) {
	gw := s3test.Start(t)
	gw.CreateBucket(bucket)
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	o := options(gw, "chain", t)
	o.AccessKey, o.SecretKey = "", ""
	s := newTestStore(t, o, nil)
	blobstoretest.Put(t, s, blobstoretest.NewObject(9, 100))
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no bucket", Options{}, "no bucket"},
		{"user info", Options{Bucket: "b", Endpoint: "http://user:hunter2@127.0.0.1:1"}, "no user info"},
		{"no scheme", Options{Bucket: "b", Endpoint: "127.0.0.1:9000"}, "http:// or https://"},
		{"half the keys", Options{Bucket: "b", AccessKey: "a"}, "go together"},
	} {
		_, err := New(context.Background(), tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error saying %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error quotes the password: %v", tc.name, err)
		}
	}
}

// checkErr fails unless err is kind (nil: any error), and its message names
// the bucket and names, and quotes no credential.
func checkErr(t *testing.T, what string, err, kind error, names ...string) {
	t.Helper()
	if err == nil || kind != nil && !errors.Is(err, kind) {
		t.Errorf("%s: got %v, want %v", what, err, kind)
		return
	}
	msg := err.Error()
	for _, n := range append(names, bucket) {
		if !strings.Contains(msg, n) {
			t.Errorf("%s: %q does not name %s", what, msg, n)
		}
	}
	for _, secret := range []string{s3test.AccessKey, s3test.SecretKey} {
		if strings.Contains(msg, secret) {
			t.Errorf("%s: %q quotes a credential", what, msg)
		}
	}
}

// TestStoreDown kills the object store: every method fails at once with
// ErrUnavailable and says where, a failed commit leaves no temp file, and
// after a restart the objects committed before are there and the ones that
// failed are not.
func TestStoreDown(t *testing.T) {
	gw := s3test.Start(t)
	gw.CreateBucket(bucket)
	o := options(gw, "down", t)
	o.MaxAttempts = 1 // each failure at once, not after the SDK's backoffs
	s := newTestStore(t, o, nil)
	ctx := context.Background()
	before, during := blobstoretest.NewObject(4, 1000), blobstoretest.NewObject(5, 1000)
	blobstoretest.Put(t, s, before)
	gw.Kill()

	key := s.key(before.Want.SHA256)
	_, err := s.Stat(ctx, before.Want.SHA256)
	checkErr(t, "Stat", err, blobstore.ErrUnavailable, key, "connection refused")
	_, err = s.Open(ctx, before.Want.SHA256, 0, -1)
	checkErr(t, "Open", err, blobstore.ErrUnavailable, key)
	_, err = s.Open(ctx, before.Want.SHA256, 10, 10)
	checkErr(t, "Open of a range", err, blobstore.ErrUnavailable, key)
	checkErr(t, "Delete", s.Delete(ctx, before.Want.SHA256), blobstore.ErrUnavailable, key)
	checkErr(t, "Walk", s.Walk(ctx, func(blobstore.Info) error { return nil }), blobstore.ErrUnavailable, "down/blobs/")
	checkErr(t, "Check", s.Check(ctx), blobstore.ErrUnavailable)
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(during.Data)
	_, err = w.Commit(ctx, during.Want)
	checkErr(t, "Commit", err, blobstore.ErrUnavailable, s.key(during.Want.SHA256))
	if left, _ := os.ReadDir(o.TempDir); len(left) != 0 {
		t.Errorf("a failed commit left %d temp files", len(left))
	}

	gw.Restart()
	if got := blobstoretest.Objects(t, s); len(got) != 1 || got[before.Want.SHA256] != 1000 {
		t.Errorf("after the restart: %v, want only the object committed before", got)
	}
	if got, err := blobstoretest.ReadAll(s, before.Want.SHA256, 0, -1); err != nil || !bytes.Equal(got, before.Data) {
		t.Errorf("Open after the restart: %d bytes, %v", len(got), err)
	}
	blobstoretest.Put(t, s, during) // and the store works again
}

// TestWrongCredentials: a refusal is not "unavailable" (retrying will not
// help) and quotes neither key.
func TestWrongCredentials(t *testing.T) {
	gw := s3test.Start(t)
	gw.CreateBucket(bucket)
	o := options(gw, "", t)
	o.SecretKey = "wrong-" + s3test.SecretKey
	s := newTestStore(t, o, nil)
	sha := blobstoretest.NewObject(6, 1).Want.SHA256
	_, err := s.Open(context.Background(), sha, 0, -1)
	checkErr(t, "Open", err, nil, s.key(sha), "403")
	if errors.Is(err, blobstore.ErrUnavailable) || errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Open with a wrong secret: %v; want neither unavailable nor not found", err)
	}
	if strings.Contains(err.Error(), o.SecretKey) {
		t.Errorf("the error quotes the secret: %v", err)
	}
	var se *Error
	if !errors.As(err, &se) || se.Status != http.StatusForbidden {
		t.Errorf("got %#v, want an *Error with status 403", err)
	}
}

// A missing bucket is a configuration error, not a missing object.
func TestNoBucket(t *testing.T) {
	gw := s3test.Start(t)
	o := options(gw, "", t)
	o.Bucket = "absent"
	s := newTestStore(t, o, nil)
	if err := s.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "no bucket absent") {
		t.Errorf("Check: got %v, want it to say the bucket is missing", err)
	}
	_, err := s.Open(context.Background(), blobstoretest.NewObject(7, 1).Want.SHA256, 0, -1)
	if err == nil || errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Open in a missing bucket: got %v, want an error that is not ErrNotFound", err)
	}
}

// slowProxy forwards TCP to target, uploads throttled, so a test can kill the
// server in the middle of one.
type slowProxy struct {
	l        net.Listener
	target   string
	uploaded atomic.Int64
}

func startSlowProxy(t *testing.T, target string) *slowProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{l: l, target: target}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *slowProxy) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		io.Copy(c, up)
		c.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := up.Write(buf[:n]); werr != nil {
				return
			}
			p.uploaded.Add(int64(n))
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			return
		}
	}
}

// TestKilledMidUpload kills the object store while a commit is uploading:
// the commit fails, and after a restart there is no trace of the object, in
// the store or in the bucket.
func TestKilledMidUpload(t *testing.T) {
	gw := s3test.Start(t)
	gw.CreateBucket(bucket)
	proxy := startSlowProxy(t, strings.TrimPrefix(gw.Endpoint, "http://"))
	o := options(gw, "mid", t)
	o.Endpoint = "http://" + proxy.l.Addr().String()
	o.MaxAttempts = 1
	s := newTestStore(t, o, nil)
	obj := blobstoretest.NewObject(8, 8<<20)

	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(obj.Data)
	done := make(chan error, 1)
	go func() {
		_, err := w.Commit(context.Background(), obj.Want)
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for proxy.uploaded.Load() < 1<<20 {
		if time.Now().After(deadline) {
			t.Fatal("the upload did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	gw.Kill()
	if err := <-done; !errors.Is(err, blobstore.ErrUnavailable) {
		t.Errorf("Commit: got %v, want ErrUnavailable", err)
	}
	if proxy.uploaded.Load() >= int64(len(obj.Data)) {
		t.Fatal("the upload finished before the kill; the test proves nothing")
	}

	gw.Restart()
	if _, err := s.Stat(context.Background(), obj.Want.SHA256); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat after the restart: got %v, want ErrNotFound", err)
	}
	if keys := gw.Keys(bucket, ""); len(keys) != 0 {
		t.Errorf("the bucket holds %v after a failed upload", keys)
	}
	// Multipart uploads would leave parts that no listing of keys shows.
	up, err := gw.Client().ListMultipartUploads(context.Background(), &s3api.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(up.Uploads) != 0 {
		t.Errorf("%d multipart uploads left", len(up.Uploads))
	}
}

// TestStoreHangs: a store that takes the connection and never answers costs a
// request ResponseTimeout per try, and reads as unavailable, not a hang until
// the caller's own deadline.
func TestStoreHangs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	s, err := New(context.Background(), Options{Endpoint: "http://" + ln.Addr().String(), Bucket: "b",
		AccessKey: "k", SecretKey: "s", PathStyle: true, MaxAttempts: 1, ResponseTimeout: 300 * time.Millisecond,
		TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err = s.Stat(ctx, blobstoretest.NewObject(1, 10).Want.SHA256)
	if !errors.Is(err, blobstore.ErrUnavailable) {
		t.Errorf("Stat on a hung store: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Stat on a hung store took %v: the response timeout did not apply", d)
	}
}
