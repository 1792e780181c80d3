// Package s3test runs a real S3 server for tests: versitygw with its posix
// backend in a temp directory, on loopback. It finds the binary on PATH or in
// $(go env GOPATH)/bin, where .ci/run installs it; without it a test is
// skipped, or fails when CI is set (testdata.Skipf).
//
// Tests may kill and restart the server to see how a store behaves when its
// object store goes away and comes back.
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	s3api "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/condaproxy/condaproxy/internal/testdata"
)

// Credentials of the server's root account. Tests check that no error
// message quotes them.
const (
	AccessKey = "condaproxy-test-access"
	SecretKey = "condaproxy-test-secret-do-not-print"
	Region    = "us-east-1"
)

// Server is one versitygw process.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Dir      string // the posix backend's root: one directory per bucket

	t    testing.TB
	bin  string
	addr string

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *testdata.Buffer
	exited chan struct{}
}

// Binary returns the path of versitygw, or "" if it is not installed.
func Binary() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	for _, dir := range filepath.SplitList(strings.TrimSpace(string(gopath))) {
		p := filepath.Join(dir, "bin", "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Start starts a server with an empty backend; it is killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		testdata.Skipf(t, testdata.S3, "versitygw is not installed (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)")
	}
	s := &Server{t: t, bin: bin, Dir: t.TempDir()}
	t.Cleanup(s.Kill)
	// A port picked free may be taken before versitygw binds it: try again.
	var err error
	for range 3 {
		s.addr = freeAddr(t)
		if err = s.start(); err == nil {
			s.Endpoint = "http://" + s.addr
			return s
		}
	}
	t.Fatal(err)
	return nil
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &testdata.Buffer{}
	cmd := exec.Command(s.bin, "--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", s.addr, "--quiet", "posix", s.Dir)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start versitygw: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("versitygw exited at start: %s", out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("versitygw did not listen on %s within 30s: %s", s.addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd, s.out, s.exited = cmd, out, exited
	return nil
}

// Kill stops the server at once, as a crash would: no graceful shutdown.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart starts the server again on the same address and backend directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// Log is what the server printed so far, for a failing test's message.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// Client returns a plain S3 client of the server, for a test to create
// buckets and look at keys behind the store's back.
func (s *Server) Client() *s3api.Client {
	return s3api.New(s3api.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	})
}

// CreateBucket creates the bucket name.
func (s *Server) CreateBucket(name string) {
	s.t.Helper()
	if _, err := s.Client().CreateBucket(context.Background(), &s3api.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		s.t.Fatalf("create bucket %s: %v\n%s", name, err, s.Log())
	}
}

// Keys lists every key in bucket under prefix.
func (s *Server) Keys(bucket, prefix string) []string {
	s.t.Helper()
	var keys []string
	pages := s3api.NewListObjectsV2Paginator(s.Client(), &s3api.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for pages.HasMorePages() {
		page, err := pages.NextPage(context.Background())
		if err != nil {
			s.t.Fatalf("list %s/%s: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}
