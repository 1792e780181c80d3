package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/internal/testdata"
)

// runCmd runs the command line and returns its exit status and output.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// writeFile writes a config file in a temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// noConfigAround makes Locate fall through to the embedded default: an empty cwd
// and no $CONDAPROXY_CONFIG.
func noConfigAround(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("CONDAPROXY_CONFIG", "")
	return dir
}

// A config whose upstream is a closed loopback port: it validates, and nothing in
// these tests ever asks it for a channel.
const goodYAML = `listen: "127.0.0.1:8080"
cache:
  max_size: 1GiB
channels:
  - name: fmt
    upstreams:
      - url: http://127.0.0.1:1/fmt
  - name: installers
    kind: files
    upstreams:
      - url: http://127.0.0.1:1/inst
`

func TestVersionUsageAndUnknown(t *testing.T) {
	code, out, _ := runCmd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "condaproxy ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	code, _, errOut := runCmd(t)
	if code != 2 || !strings.Contains(errOut, "usage: condaproxy COMMAND") {
		t.Errorf("no arguments: exit %d, stderr %q; want 2 and the usage", code, errOut)
	}
	code, _, errOut = runCmd(t, "frobnicate")
	if code != 2 || !strings.Contains(errOut, `"frobnicate"`) {
		t.Errorf("unknown command: exit %d, stderr %q; want 2 naming it", code, errOut)
	}
	code, _, errOut = runCmd(t, "config")
	if code != 2 {
		t.Errorf("config without show/check: exit %d, want 2 (%s)", code, errOut)
	}
	code, _, _ = runCmd(t, "serve", "--no-such-flag")
	if code != 2 {
		t.Errorf("serve with an unknown flag: exit %d, want 2", code)
	}
}

// ca init writes a CA and prints the client settings with its path; a second
// run keeps it (exit 1) unless --force; a configuration whose forward_proxy has
// no CA is refused naming the key; serve with one listens as a forward proxy
// that refuses other hosts.
func TestCAInitAndForwardListener(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCmd(t, "ca", "init", "-o", dir)
	if code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"proxy_servers", "ssl_verify: " + filepath.Join(dir, "ca.pem"), "https_proxy", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"} {
		if !strings.Contains(out, want) {
			t.Errorf("ca init output lacks %q:\n%s", want, out)
		}
	}
	if code, _, errOut := runCmd(t, "ca", "init", "-o", dir); code != 1 || !strings.Contains(errOut, "--force") {
		t.Errorf("a second ca init: exit %d, %q; want 1 naming --force", code, errOut)
	}
	if code, _, errOut := runCmd(t, "ca", "init", "-o", dir, "--force"); code != 0 {
		t.Errorf("ca init --force: exit %d, %s", code, errOut)
	}
	noCA := writeFile(t, "noca.yaml", goodYAML+"forward_proxy:\n  listen: 127.0.0.1:0\n")
	if code, _, errOut := runCmd(t, "serve", "-c", noCA, "--data", t.TempDir()); code != 2 || !strings.Contains(errOut, "forward_proxy.ca_cert") {
		t.Errorf("forward_proxy without a CA: exit %d, %q; want 2 naming forward_proxy.ca_cert", code, errOut)
	}
	fwd := freeAddr(t)
	cfg := writeFile(t, "fwd.yaml", goodYAML+"forward_proxy:\n  listen: "+fwd+"\n  ca_cert: "+filepath.Join(dir, "ca.pem")+
		"\n  ca_key: "+filepath.Join(dir, "ca-key.pem")+"\n")
	s := startServe(t, "-c", cfg, "--data", t.TempDir())
	proxyURL, _ := url.Parse("http://" + fwd)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	r, err := c.Get("http://127.0.0.1:1/elsewhere")
	if err != nil || r.StatusCode != http.StatusForbidden {
		t.Errorf("an unconfigured host through the forward proxy: %v %v, want 403", r, err)
	}
	if r != nil {
		r.Body.Close()
	}
	s.stop(t)
}

func TestConfigCheck(t *testing.T) {
	good := writeFile(t, "good.yaml", goodYAML)
	if code, out, errOut := runCmd(t, "config", "check", "-c", good); code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("good file: exit %d, %q %q", code, out, errOut)
	}
	cases := []struct {
		name, yaml string
		line       int
		key        string
	}{
		{"unknown key", "cache:\n  max_sise: 1GiB\n", 2, "cache.max_sise"},
		{"bad size", "listen: \":8080\"\ncache:\n  max_size: 12XB\n", 3, "cache.max_size"},
		{"size too small", "cache:\n  max_size: 1KiB\n", 2, "cache.max_size"},
		{"bad duration", "cache:\n  metadata_ttl: 10 minutes\n", 2, "cache.metadata_ttl"},
		{"bad URL", "channels:\n  - name: x\n    upstreams:\n      - url: ftp://host/x\n", 4, "channels[0].upstreams[0].url"},
		{"bad channel name", "channels:\n  - name: \"bad name!\"\n    upstreams:\n      - url: https://example.invalid/x\n", 2, "channels[0].name"},
		{"reserved channel name", "channels:\n  - name: api/x\n    upstreams:\n      - url: https://example.invalid/x\n", 2, "channels[0].name"},
		{"unset variable", "auth:\n  admin_token: ${CONDAPROXY_TEST_SURELY_UNSET}\n", 2, "auth.admin_token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, "bad.yaml", c.yaml)
			code, out, errOut := runCmd(t, "config", "check", "-c", path)
			if code != 2 {
				t.Errorf("exit %d, want 2; stdout %q", code, out)
			}
			if want := fmt.Sprintf("%s:%d", path, c.line); !strings.Contains(errOut, want) {
				t.Errorf("stderr %q does not name %s", errOut, want)
			}
			if !strings.Contains(errOut, c.key) {
				t.Errorf("stderr %q does not name the key %s", errOut, c.key)
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	if code, _, errOut := runCmd(t, "config", "check", "-c", missing); code != 2 || !strings.Contains(errOut, missing) {
		t.Errorf("missing file: exit %d, stderr %q; want 2 naming it", code, errOut)
	}
}

func TestConfigShowMasksSecrets(t *testing.T) {
	path := writeFile(t, "secret.yaml", `auth:
  tokens: [client-SEKRET1]
  admin_token: admin-SEKRET2
redis: redis://:redis-SEKRET6@127.0.0.1:6379/0
channels:
  - name: priv
    upstreams:
      - url: https://conda.example.invalid/t/tok-SEKRET3/private
        username: bob
        password: pw-SEKRET4
      - url: https://alice:pw-SEKRET5@conda.example.invalid/x
`)
	code, out, errOut := runCmd(t, "config", "show", "-c", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "SEKRET") || strings.Contains(errOut, "SEKRET") {
		t.Errorf("a secret is printed:\n%s", out)
	}
	for _, want := range []string{
		"/t/***/private", "alice:***@", "username: bob", "admin_token: '***'",
		// Defaults filled in.
		"listen: :8080", "max_size: 50GiB", "memory: 256MiB", "metadata_ttl: 10m0s", "negative_ttl: 1m0s",
		"kind: conda", "data: ./condaproxy-data",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config show lacks %q:\n%s", want, out)
		}
	}
}

// With no -c, no $CONDAPROXY_CONFIG and no ./condaproxy.yaml, the embedded default.
func TestConfigShowEmbeddedDefault(t *testing.T) {
	noConfigAround(t)
	code, out, errOut := runCmd(t, "config", "show")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "embedded default") {
		t.Errorf("source not named:\n%s", out)
	}
	for _, ch := range []string{"conda-forge", "bioconda", "pkgs/main", "pkgs/r", "pkgs/msys2"} {
		if !strings.Contains(out, "name: "+ch+"\n") {
			t.Errorf("embedded default lacks channel %s:\n%s", ch, out)
		}
	}
	if code, _, _ := runCmd(t, "config", "check"); code != 0 {
		t.Errorf("config check of the embedded default: exit %d", code)
	}
}

// Locate's order: -c, then $CONDAPROXY_CONFIG, then ./condaproxy.yaml.
func TestConfigLocateOrder(t *testing.T) {
	dir := noConfigAround(t)
	local := strings.Replace(goodYAML, "name: fmt", "name: from-cwd", 1)
	if err := os.WriteFile(filepath.Join(dir, "condaproxy.yaml"), []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, out, _ := runCmd(t, "config", "show"); !strings.Contains(out, "name: from-cwd") {
		t.Errorf("./condaproxy.yaml not used:\n%s", out)
	}
	envFile := writeFile(t, "env.yaml", strings.Replace(goodYAML, "name: fmt", "name: from-env", 1))
	t.Setenv("CONDAPROXY_CONFIG", envFile)
	if _, out, _ := runCmd(t, "config", "show"); !strings.Contains(out, "name: from-env") || !strings.Contains(out, envFile) {
		t.Errorf("$CONDAPROXY_CONFIG not used:\n%s", out)
	}
	flagFile := writeFile(t, "flag.yaml", strings.Replace(goodYAML, "name: fmt", "name: from-flag", 1))
	if _, out, _ := runCmd(t, "config", "show", "-c", flagFile); !strings.Contains(out, "name: from-flag") {
		t.Errorf("-c not used over $CONDAPROXY_CONFIG:\n%s", out)
	}
	// A broken file named by the environment is an error, not a fallback.
	t.Setenv("CONDAPROXY_CONFIG", writeFile(t, "broken.yaml", "nope: 1\n"))
	if code, _, errOut := runCmd(t, "config", "check"); code != 2 || !strings.Contains(errOut, "broken.yaml:1") {
		t.Errorf("broken $CONDAPROXY_CONFIG: exit %d, %q", code, errOut)
	}
}

func TestServeRefusesBadInput(t *testing.T) {
	good := writeFile(t, "good.yaml", goodYAML)
	bad := writeFile(t, "bad.yaml", "cache:\n  max_size: lots\n")
	if code, _, errOut := runCmd(t, "serve", "-c", bad, "--data", t.TempDir()); code != 2 || !strings.Contains(errOut, bad+":2") {
		t.Errorf("serve on a bad config: exit %d, %q; want 2 naming %s:2", code, errOut, bad)
	}
	for _, listen := range []string{"nonsense", "127.0.0.1", "http://x:80"} {
		if code, _, errOut := runCmd(t, "serve", "-c", good, "--listen", listen, "--data", t.TempDir()); code != 2 || !strings.Contains(errOut, listen) {
			t.Errorf("serve --listen %s: exit %d, %q; want 2 naming it", listen, code, errOut)
		}
	}
	if code, _, _ := runCmd(t, "serve", "-c", good, "extra-arg"); code != 2 {
		t.Errorf("serve with an argument: exit %d, want 2", code)
	}
	// A data directory written by a newer condaproxy is refused, not reformatted.
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "FORMAT"), []byte("99\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCmd(t, "serve", "-c", good, "--listen", "127.0.0.1:0", "--data", data)
	if code != 1 || !strings.Contains(errOut, data) {
		t.Errorf("serve on a FORMAT 99 data dir: exit %d, %q; want 1 naming %s", code, errOut, data)
	}
	if b, _ := os.ReadFile(filepath.Join(data, "FORMAT")); string(b) != "99\n" {
		t.Errorf("FORMAT rewritten to %q", b)
	}
	// A port already taken is a runtime failure naming the address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, _, errOut = runCmd(t, "serve", "-c", good, "--listen", ln.Addr().String(), "--data", t.TempDir())
	if code != 1 || !strings.Contains(errOut, ln.Addr().String()) {
		t.Errorf("serve on a busy port: exit %d, %q; want 1 naming the address", code, errOut)
	}
}

// freeAddr returns a loopback address nobody listens on (a moment ago).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// serving is a serve command running in the background.
type serving struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{} // closed when run returned
	code   int           // run's exit status, once done is closed
	stdout *testdata.Buffer
	stderr *testdata.Buffer
}

// startServe runs serve with args plus --listen on a free port, and waits until
// /healthz answers.
func startServe(t *testing.T, args ...string) *serving {
	t.Helper()
	s := &serving{addr: freeAddr(t), done: make(chan struct{}), stdout: &testdata.Buffer{}, stderr: &testdata.Buffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	args = append(append([]string{"serve"}, args...), "--listen", s.addr)
	go func() { s.code = run(ctx, args, s.stdout, s.stderr); close(s.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("serve exited %d before answering:\n%s", s.code, s.stderr.String())
		default:
		}
		r, err := http.Get("http://" + s.addr + "/healthz")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not answer /healthz in 10 s:\n%s", s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop cancels serve's context and checks it returns 0 in time.
func (s *serving) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case <-s.done:
		if s.code != 0 {
			t.Errorf("serve exited %d after its context ended, want 0:\n%s", s.code, s.stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return within 10 s of its context ending")
	}
}

func TestServeStartsAndStops(t *testing.T) {
	good := writeFile(t, "good.yaml", goodYAML)
	data := t.TempDir()
	s := startServe(t, "-c", good, "--data", data)
	r, err := http.Get("http://" + s.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var ready map[string]any
	json.NewDecoder(r.Body).Decode(&ready)
	r.Body.Close()
	if r.StatusCode != 200 || ready["ready"] != true {
		t.Errorf("/readyz: %d %v", r.StatusCode, ready)
	}
	if r, err := http.Get("http://" + s.addr + "/metrics"); err != nil || r.StatusCode != 200 {
		t.Errorf("/metrics: %v", err)
	} else {
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if !strings.Contains(string(body), "condaproxy_cache_size_bytes") {
			t.Error("/metrics lacks condaproxy_cache_size_bytes")
		}
	}
	if _, err := os.Stat(filepath.Join(data, "FORMAT")); err != nil {
		t.Errorf("the data directory given by --data was not used: %v", err)
	}
	s.stop(t)
	if _, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		t.Error("still listening after serve returned")
	}
	// The data directory is released: a second serve on it starts.
	s2 := startServe(t, "-c", good, "--data", data)
	s2.stop(t)
}

// SPEC: "serve with no arguments must start and serve" — on the embedded default.
// Only /healthz is asked: a channel path would reach the internet.
func TestServeEmbeddedDefault(t *testing.T) {
	cwd := noConfigAround(t)
	s := startServe(t, "--data", filepath.Join(cwd, "data"))
	if !strings.Contains(s.stderr.String(), "embedded default") {
		t.Errorf("serve's start line does not name the embedded default:\n%s", s.stderr.String())
	}
	s.stop(t)
}

// explain on the local data directory, against a loopback upstream serving the
// real channel.
func TestExplainLocal(t *testing.T) {
	up := httptest.NewServer(http.FileServer(http.Dir(testdata.Path(t, "conda_format_repo"))))
	defer up.Close()
	cfg := writeFile(t, "c.yaml", "data: "+filepath.Join(t.TempDir(), "data")+"\n"+
		"channels:\n  - name: fmt\n    upstreams:\n      - url: "+up.URL+"\n")
	code, out, errOut := runCmd(t, "explain", "-c", cfg, "fmt", "osx-64", "zlib")
	if code != 0 {
		t.Fatalf("explain: exit %d: %s", code, errOut)
	}
	for _, fn := range []string{"zlib-1.2.11-h1de35cc_3.conda", "zlib-1.2.11-h1de35cc_3.tar.bz2"} {
		if !strings.Contains(out, fn) || !strings.Contains(out, "served") {
			t.Errorf("explain output lacks %s served:\n%s", fn, out)
		}
	}
	if code, _, _ := runCmd(t, "explain", "-c", cfg, "fmt", "osx-64"); code != 2 {
		t.Errorf("explain with two arguments: exit %d, want 2", code)
	}
	if code, _, _ := runCmd(t, "explain", "-c", cfg, "nochannel", "osx-64", "zlib"); code != 2 {
		t.Errorf("explain of an unknown channel: exit %d, want 2", code)
	}
	if code, _, errOut := runCmd(t, "explain", "-c", cfg, "fmt", "osx-64", "nosuchpkg"); code != 1 || !strings.Contains(errOut, "nosuchpkg") {
		t.Errorf("explain of an unknown package: exit %d, %q; want 1 naming it", code, errOut)
	}
}

// A real server bounds what a client may send: a long request target is 414, a
// large header 431, a grossly large request is cut off unread, and a client that
// sends its headers slowly is disconnected (ReadHeaderTimeout) instead of holding
// a connection and a goroutine for ever.
func TestServeBoundsClients(t *testing.T) {
	good := writeFile(t, "good.yaml", goodYAML)
	s := startServe(t, "-c", good, "--data", t.TempDir())
	status := func(target string, hdr ...string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+s.addr+target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		r.Body.Close()
		return r.StatusCode
	}
	if got := status("/healthz?" + strings.Repeat("u", 100<<10)); got != http.StatusRequestURITooLong {
		t.Errorf("100 KiB URL: %d, want 414", got)
	}
	if got := status("/healthz", "X-Big", strings.Repeat("h", 64<<10)); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB header: %d, want 431", got)
	}
	if got := status("/healthz", "X-Huge", strings.Repeat("h", 1<<20)); got != http.StatusRequestHeaderFieldsTooLarge && got != 0 {
		t.Errorf("1 MiB header: %d, want 431 or a closed connection", got)
	}
	if got := status("/healthz"); got != 200 {
		t.Errorf("plain request: %d", got)
	}

	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // and never the blank line
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("a client that never finished its headers was still connected after %v", time.Since(start))
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("slow client cut off after %v, want about 10 s", d)
	}
	s.stop(t)
}

// serve on the embedded default says, once it listens, where its page is and a
// .condarc for the address it listens on; that .condarc works as it is.
func TestServeBannerOnEmbeddedDefault(t *testing.T) {
	t.Setenv("CONDAPROXY_CONFIG", "")
	t.Chdir(t.TempDir()) // no ./condaproxy.yaml: the embedded default
	s := startServe(t, "--data", t.TempDir())
	base := "http://" + s.addr
	var out string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if out = s.stdout.String(); strings.Contains(out, "default_channels:") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{
		"page:    " + base + "/\n",
		"(embedded default)",
		"channel_alias: " + base + "\n",
		"default_channels:\n  - " + base + "/pkgs/main\n  - " + base + "/pkgs/r\n  - " + base + "/pkgs/msys2\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the banner lacks %q:\n%s", want, out)
		}
	}
	// The snippet is YAML a client reads as it is.
	rc := out[strings.Index(out, "channel_alias:"):]
	var condarc struct {
		ChannelAlias    string   `yaml:"channel_alias"`
		DefaultChannels []string `yaml:"default_channels"`
	}
	if err := yaml.Unmarshal([]byte(rc), &condarc); err != nil || condarc.ChannelAlias != base || len(condarc.DefaultChannels) != 3 {
		t.Errorf("the .condarc does not parse as one: %+v %v\n%s", condarc, err, rc)
	}
	// The page it names answers.
	r, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Errorf("the page the banner names: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
	s.stop(t)
}

// A wildcard listen address gives a .condarc for localhost and says what to
// write on another machine; public_url wins over both; tokens get a placeholder.
func TestBannerAddresses(t *testing.T) {
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	addr := &net.TCPAddr{IP: net.IPv6unspecified, Port: 8080}
	var b strings.Builder
	printBanner(&b, cfg, addr)
	if !strings.Contains(b.String(), "channel_alias: http://localhost:8080\n") || !strings.Contains(b.String(), "in place of localhost") {
		t.Errorf("wildcard address:\n%s", b.String())
	}
	cfg.PublicURL = "https://ops:PUBLIC-PASS-2@conda.example.com/"
	cfg.Auth.Tokens = []config.Token{{Token: "SECRET-TOKEN-1"}}
	b.Reset()
	printBanner(&b, cfg, addr)
	if !strings.Contains(b.String(), "channel_alias: https://ops:***@conda.example.com/t/<token>\n") ||
		!strings.Contains(b.String(), "  - https://ops:***@conda.example.com/t/<token>/pkgs/main\n") {
		t.Errorf("public_url with tokens:\n%s", b.String())
	}
	if strings.Contains(b.String(), "SECRET-TOKEN-1") || strings.Contains(b.String(), "PUBLIC-PASS-2") || strings.Contains(b.String(), "in place of localhost") {
		t.Errorf("the banner shows a token or a localhost hint it should not:\n%s", b.String())
	}
}

// Every command's --help shows its synopsis, its flags and an example, and
// exits 0: it was asked for.
func TestHelpShowsExamples(t *testing.T) {
	for _, cmd := range [][]string{{"serve"}, {"sync"}, {"clean"}, {"export"}, {"import"}, {"explain"},
		{"config", "show"}, {"config", "check"}, {"ca", "init"}} {
		code, _, errOut := runCmd(t, append(cmd, "--help")...)
		name := strings.Join(cmd, " ")
		if code != 0 || !strings.Contains(errOut, "usage: condaproxy "+name) ||
			!strings.Contains(errOut, "examples:\n  condaproxy "+name) || !strings.Contains(errOut, "flags:\n") {
			t.Errorf("%s --help: exit %d\n%s", name, code, errOut)
		}
	}
	code, out, _ := runCmd(t, "help")
	if code != 0 || !strings.Contains(out, "examples:") {
		t.Errorf("condaproxy help: exit %d\n%s", code, out)
	}
}
