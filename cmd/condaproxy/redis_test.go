package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/internal/testdata"
)

// startRedis runs a real redis-server on a free loopback port, with no
// persistence, stopped at cleanup. Outside CI a machine without it skips; in CI
// (.ci/run installs it) its absence fails.
func startRedis(t *testing.T) (addr string, stop func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testdata.Skipf(t, testdata.Redis, "redis-server is not installed (apt-get install redis-server)")
	}
	addr = freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop = func() {
		cmd.Process.Kill()
		<-done
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, stop
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not start")
		}
	}
}

// /readyz follows Redis when one is configured, without ever dropping the
// replica for it: 200 with "redis: ok" while it answers, 200 with "redis:
// degraded" once it is gone (every replica goes on alone, and a load balancer
// must not drop them all at once), and ok again when it is back. The channels
// go on being served either way; condaproxy_redis_up says which.
func TestReadyzFollowsRedis(t *testing.T) {
	addr, stopRedis := startRedis(t)
	yaml := fmt.Sprintf("data: %s\nredis: redis://%s/0\nchannels: []\n", t.TempDir(), addr)
	cfg, err := config.Parse("redis.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer a.proxy.Shutdown(context.Background())
	srv := httptest.NewServer(a.handler)
	defer srv.Close()
	ready := func() (int, map[string]any) {
		r, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		return r.StatusCode, body
	}
	metric := func() string {
		r, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "condaproxy_redis_up ") {
				return strings.TrimPrefix(line, "condaproxy_redis_up ")
			}
		}
		return ""
	}
	if code, body := ready(); code != 200 || body["ready"] != true || !strings.Contains(fmt.Sprint(body["status"]), "redis: ok") {
		t.Fatalf("with redis up: /readyz %d %v", code, body)
	}
	if m := metric(); m != "1" {
		t.Errorf("condaproxy_redis_up = %q with redis up", m)
	}
	stopRedis()
	var code int
	var body map[string]any
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, body = ready(); strings.Contains(fmt.Sprint(body["status"]), "redis: degraded") {
			break
		}
	}
	if code != http.StatusOK || body["ready"] != true || !strings.Contains(fmt.Sprint(body["status"]), "redis: degraded") {
		t.Fatalf("with redis gone: /readyz %d %v, want 200 saying redis: degraded", code, body)
	}
	if m := metric(); m != "0" {
		t.Errorf("condaproxy_redis_up = %q with redis gone", m)
	}
	if strings.Contains(fmt.Sprint(body), "password") {
		t.Errorf("readyz leaks connection details: %v", body)
	}
	if r, err := http.Get(srv.URL + "/healthz"); err != nil || r.StatusCode != 200 {
		t.Errorf("/healthz with redis gone: %v %v", r, err)
	}
}
