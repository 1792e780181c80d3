package forward

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/proxy"
	"github.com/condaproxy/condaproxy/upstream"
)

// counting serves dir and counts requests by path.
type counting struct {
	mu   sync.Mutex
	hits map[string]int
}

func (c *counting) handler(dir string) http.Handler {
	files := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.hits[r.URL.Path]++
		c.mu.Unlock()
		files.ServeHTTP(w, r)
	})
}

func (c *counting) count(p string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits[p]
}

type env struct {
	up, plain *httptest.Server // an https upstream (its own test CA) and an http one
	upHits    *counting
	plainHits *counting
	other     *httptest.Server // a host no channel names
	otherHits *counting
	reverse   *httptest.Server // the same proxy, as a reverse proxy
	forward   *httptest.Server
	ca        *x509.CertPool // condaproxy's CA only
	fp        *Proxy
}

// newEnv starts the upstreams, a proxy on a real store, and the forward
// proxy in front of the same proxy. extra is added to the configuration's top
// level; channel adds keys to the https channel; tunnel sets other_hosts.
func newEnv(t *testing.T, extra, channel string, tunnel bool) *env {
	t.Helper()
	dir := testdata.Path(t, "conda_format_repo")
	e := &env{upHits: &counting{hits: map[string]int{}}, plainHits: &counting{hits: map[string]int{}},
		otherHits: &counting{hits: map[string]int{}}}
	e.up = httptest.NewTLSServer(e.upHits.handler(dir))
	t.Cleanup(e.up.Close)
	e.plain = httptest.NewServer(e.plainHits.handler(dir))
	t.Cleanup(e.plain.Close)
	e.other = httptest.NewTLSServer(e.otherHits.handler(dir))
	t.Cleanup(e.other.Close)

	otherHosts := "deny"
	if tunnel {
		otherHosts = "tunnel"
	}
	caDir := t.TempDir()
	certPath, keyPath, err := InitCA(caDir, false)
	if err != nil {
		t.Fatal(err)
	}
	yaml := extra + "forward_proxy:\n  listen: 127.0.0.1:0\n  other_hosts: " + otherHosts + "\n  ca_cert: " + certPath +
		"\n  ca_key: " + keyPath + "\n" +
		"channels:\n  - name: anaconda\n    upstreams:\n      - url: " + e.up.URL + "/\n" + channel +
		"  - name: plain\n    upstreams:\n      - url: " + e.plain.URL + "/\n"
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Data = t.TempDir()
	store, err := cache.Open(cfg.Data, cache.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	policies := map[string]policy.Policy{}
	for i, ch := range cfg.Channels {
		if p, err := policy.Compile(cfg, i, nil); err == nil {
			policies[ch.Name] = p
		} else {
			t.Fatal(err)
		}
	}
	// condaproxy trusts the https upstream's test CA (as SSL_CERT_FILE would).
	upPool := x509.NewCertPool()
	upPool.AddCert(e.up.Certificate())
	reg := prometheus.NewRegistry()
	srv, err := proxy.New(proxy.Options{Config: cfg, Store: store, Policies: policies, Metrics: proxy.NewMetrics(reg, store),
		Upstream: upstream.New(upstream.Options{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: upPool}}}),
		Logger:   slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	e.reverse = httptest.NewServer(srv)
	t.Cleanup(e.reverse.Close)

	ca, err := LoadCA(cfg.ForwardProxy.CACert, cfg.ForwardProxy.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	e.ca = x509.NewCertPool()
	pem, _ := os.ReadFile(cfg.ForwardProxy.CACert)
	e.ca.AppendCertsFromPEM(pem)
	e.fp, err = New(Options{Config: cfg, CA: ca, Reverse: srv, Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e.forward = httptest.NewServer(e.fp)
	t.Cleanup(e.forward.Close)
	return e
}

// client goes through the forward proxy (as user:token when token is set),
// trusting roots only.
func (e *env) client(roots *x509.CertPool, token string) *http.Client {
	pu, _ := url.Parse(e.forward.URL)
	if token != "" {
		pu.User = url.UserPassword("conda", token)
	}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}}}
}

func fetch(t *testing.T, c *http.Client, u string) (int, []byte, error) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// An https upstream's URLs through the forward proxy are answered as its
// channel: the same filtered repodata as the reverse path, packages from the
// same cache (one upstream fetch for both modes), hidden packages 403; the
// client trusts only condaproxy's CA, and the leaf carries the CONNECT
// target's IP.
func TestInterceptedUpstreamServedAsChannel(t *testing.T) {
	e := newEnv(t, "", "    blacklist: [\"zlib 1.2.11 h1de35cc_3\"]\n", false)
	c := e.client(e.ca, "")
	code, viaForward, err := fetch(t, c, e.up.URL+"/linux-64/repodata.json")
	if err != nil || code != 200 {
		t.Fatalf("repodata through the forward proxy: %d %v", code, err)
	}
	_, viaReverse, _ := fetch(t, http.DefaultClient, e.reverse.URL+"/anaconda/linux-64/repodata.json")
	if !bytes.Equal(viaForward, viaReverse) {
		t.Errorf("forward and reverse repodata differ (%d and %d bytes)", len(viaForward), len(viaReverse))
	}
	var doc struct {
		PackagesConda map[string]struct {
			SHA256 string `json:"sha256"`
		} `json:"packages.conda"`
	}
	json.Unmarshal(viaForward, &doc)
	const pkg = "zlib-1.2.11-h7b6447c_3.conda"
	code, body, err := fetch(t, c, e.up.URL+"/linux-64/"+pkg)
	sum := sha256.Sum256(body)
	if err != nil || code != 200 || hex.EncodeToString(sum[:]) != doc.PackagesConda[pkg].SHA256 {
		t.Fatalf("package through the forward proxy: %d %v, sha256 %x", code, err, sum)
	}
	code, body2, _ := fetch(t, http.DefaultClient, e.reverse.URL+"/anaconda/linux-64/"+pkg)
	if code != 200 || !bytes.Equal(body, body2) {
		t.Errorf("the same package through the reverse path: %d", code)
	}
	if n := e.upHits.count("/linux-64/" + pkg); n != 1 {
		t.Errorf("upstream served the package %d times for both modes, want 1", n)
	}
	code, body, _ = fetch(t, c, e.up.URL+"/osx-64/zlib-1.2.11-h1de35cc_3.conda")
	if code != http.StatusForbidden || !strings.Contains(string(body), "zlib 1.2.11 h1de35cc_3") {
		t.Errorf("a hidden package through the forward proxy: %d %s, want 403 naming the rule", code, body)
	}
	if n := e.upHits.count("/osx-64/zlib-1.2.11-h1de35cc_3.conda"); n != 0 {
		t.Errorf("upstream was asked for the hidden package %d times", n)
	}
	// A client that trusts only the upstream's own CA does not accept the
	// interception: the proxy's certificate is its CA's.
	upPool := x509.NewCertPool()
	upPool.AddCert(e.up.Certificate())
	if _, _, err := fetch(t, e.client(upPool, ""), e.up.URL+"/linux-64/repodata.json"); err == nil {
		t.Error("a client not trusting condaproxy's CA accepted the intercepted connection")
	}
}

// A plain http:// upstream's URLs come as absolute-URI requests and are
// answered the same way.
func TestPlainHTTPUpstream(t *testing.T) {
	e := newEnv(t, "", "", false)
	c := e.client(e.ca, "")
	code, body, err := fetch(t, c, e.plain.URL+"/osx-64/repodata.json")
	if err != nil || code != 200 || !bytes.Contains(body, []byte("zlib")) {
		t.Fatalf("http upstream through the forward proxy: %d %v", code, err)
	}
	_, again, _ := fetch(t, c, e.plain.URL+"/osx-64/repodata.json")
	if !bytes.Equal(body, again) || e.plainHits.count("/osx-64/repodata.json")+e.plainHits.count("/osx-64/repodata.json.zst") > 2 {
		t.Errorf("the second ask was not answered from the cache: upstream %v", e.plainHits.hits)
	}
}

// other_hosts: deny (the default) refuses any other host, CONNECT or
// absolute URI, and never dials it: no open relay.
func TestOtherHostsDenied(t *testing.T) {
	e := newEnv(t, "", "", false)
	pool := x509.NewCertPool()
	pool.AddCert(e.other.Certificate())
	if _, _, err := fetch(t, e.client(pool, ""), e.other.URL+"/linux-64/repodata.json"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("CONNECT to another host: %v, want Forbidden", err)
	}
	otherPlain := httptest.NewServer(e.otherHits.handler(t.TempDir()))
	defer otherPlain.Close()
	if code, _, err := fetch(t, e.client(pool, ""), otherPlain.URL+"/x"); err != nil || code != http.StatusForbidden {
		t.Errorf("absolute URI to another host: %d %v, want 403", code, err)
	}
	// A configured host, but a path outside the channel's tree.
	if code, _, _ := fetch(t, e.client(e.ca, ""), e.up.URL+"/../etc/passwd"); code == 200 {
		t.Errorf("a path outside the channel answered 200")
	}
	if len(e.otherHits.hits) != 0 {
		t.Errorf("the refused host was reached: %v", e.otherHits.hits)
	}
}

// other_hosts: tunnel passes another host's bytes through untouched: the
// client sees that host's own certificate.
func TestOtherHostsTunnelled(t *testing.T) {
	e := newEnv(t, "", "", true)
	pool := x509.NewCertPool()
	pool.AddCert(e.other.Certificate())
	code, body, err := fetch(t, e.client(pool, ""), e.other.URL+"/linux-64/repodata.json")
	if err != nil || code != 200 || len(body) == 0 {
		t.Fatalf("tunnel to another host: %d %v", code, err)
	}
	if e.otherHits.count("/linux-64/repodata.json") != 1 {
		t.Errorf("the other host saw %v", e.otherHits.hits)
	}
}

// With client tokens, the forward proxy wants one as the Proxy-Authorization
// password (407 without); the token opens what it opens on the reverse path.
func TestForwardTokens(t *testing.T) {
	e := newEnv(t, "auth:\n  tokens: [fwd-token-1]\n", "", false)
	if _, _, err := fetch(t, e.client(e.ca, ""), e.up.URL+"/linux-64/repodata.json"); err == nil ||
		!strings.Contains(err.Error(), "Proxy Authentication Required") {
		t.Errorf("no token: %v, want 407", err)
	}
	if _, _, err := fetch(t, e.client(e.ca, "wrong-token"), e.up.URL+"/linux-64/repodata.json"); err == nil {
		t.Error("a wrong token was let through")
	}
	if code, _, err := fetch(t, e.client(e.ca, "fwd-token-1"), e.up.URL+"/linux-64/repodata.json"); err != nil || code != 200 {
		t.Errorf("with the token: %d %v", code, err)
	}
	if code, _, err := fetch(t, e.client(e.ca, "fwd-token-1"), e.plain.URL+"/osx-64/repodata.json"); err != nil || code != 200 {
		t.Errorf("http upstream with the token: %d %v", code, err)
	}
}

// ca init writes a CA whose key only its owner reads, and keeps an existing
// one unless forced.
func TestInitCA(t *testing.T) {
	dir := t.TempDir()
	cert, key, err := InitCA(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ca-key.pem: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	before, _ := os.ReadFile(cert)
	if _, _, err := InitCA(dir, false); err == nil {
		t.Error("a second init overwrote the CA")
	}
	if after, _ := os.ReadFile(cert); !bytes.Equal(before, after) {
		t.Error("the CA changed")
	}
	if _, _, err := InitCA(dir, true); err != nil {
		t.Errorf("--force: %v", err)
	}
	if ca, err := LoadCA(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)); err != nil || !ca.Leaf.IsCA {
		t.Errorf("LoadCA: %v", err)
	}
}

// recorder is a reverse handler that records the paths it is asked for, and
// breaks its transfer off mid-body for a path ending in /abort.
type recorder struct {
	mu    sync.Mutex
	paths []string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.paths = append(rec.paths, r.URL.EscapedPath())
	rec.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, "/abort") {
		w.Write(bytes.Repeat([]byte("x"), 10000)) // no Content-Length: chunked
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // as the proxy breaks off a mismatched fill
	}
	io.WriteString(w, "ok")
}

func (rec *recorder) last() string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.paths) == 0 {
		return ""
	}
	return rec.paths[len(rec.paths)-1]
}

func recorderProxy(t *testing.T, yaml string) (*recorder, *http.Client) {
	t.Helper()
	cert, key, err := InitCA(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("test.yaml", []byte("forward_proxy:\n  listen: 127.0.0.1:0\n  ca_cert: "+cert+"\n  ca_key: "+key+"\n"+yaml),
		func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	fp, err := New(Options{Config: cfg, CA: ca, Reverse: rec, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fp)
	t.Cleanup(srv.Close)
	pu, _ := url.Parse(srv.URL)
	return rec, &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
}

// Nested upstream URLs: the longest prefix answers, whatever the order of the
// channels; a host spelled with a trailing dot or upper case is the same host.
func TestRoutesLongestPrefix(t *testing.T) {
	rec, c := recorderProxy(t, `channels:
  - name: cf
    upstreams: [{url: "http://mirror.test/conda-forge"}]
  - name: cfdev
    upstreams: [{url: "http://mirror.test/conda-forge/label/dev"}]
`)
	for u, want := range map[string]string{
		"http://mirror.test/conda-forge/label/dev/linux-64/repodata.json": "/cfdev/linux-64/repodata.json",
		"http://mirror.test/conda-forge/linux-64/repodata.json":           "/cf/linux-64/repodata.json",
		"http://MIRROR.test./conda-forge/noarch/repodata.json":            "/cf/noarch/repodata.json",
		"http://mirror.test:080/conda-forge/noarch/x.conda":               "/cf/noarch/x.conda",
	} {
		code, _, err := fetch(t, c, u)
		if err != nil || code != 200 || rec.last() != want {
			t.Errorf("%s: %d %v, answered as %q; want %q", u, code, err, rec.last(), want)
		}
	}
	// An encoded slash reaches the reverse handler encoded (it refuses it there,
	// as on its own port).
	fetch(t, c, "http://mirror.test/conda-forge/linux-64%2Fx.conda")
	if got := rec.last(); got != "/cf/linux-64%2Fx.conda" {
		t.Errorf("an encoded slash reached the reverse handler as %q", got)
	}
}

// A transfer the reverse handler breaks off mid-body reaches a plain-http
// client as a broken transfer, never as a short body that ends cleanly.
func TestBrokenTransferStaysBroken(t *testing.T) {
	_, c := recorderProxy(t, `channels:
  - name: cf
    upstreams: [{url: "http://mirror.test/conda-forge"}]
`)
	code, body, err := fetch(t, c, "http://mirror.test/conda-forge/linux-64/abort")
	if err == nil {
		t.Fatalf("a broken-off transfer arrived whole: %d, %d bytes, no error", code, len(body))
	}
}

// An intercepted connection that stalls (no TLS handshake after the CONNECT)
// is closed after the idle bound: net/http's timeouts end at the hijack, and a
// client must not hold a connection for ever.
func TestStalledInterceptedConnectionClosed(t *testing.T) {
	up := httptest.NewTLSServer(http.NotFoundHandler())
	defer up.Close()
	cert, key, err := InitCA(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("test.yaml", []byte("forward_proxy:\n  listen: 127.0.0.1:0\n  ca_cert: "+cert+"\n  ca_key: "+key+
		"\nchannels:\n  - name: c\n    upstreams: [{url: \""+up.URL+"/c\"}]\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := LoadCA(cert, key)
	fp, err := New(Options{Config: cfg, CA: ca, Reverse: http.NotFoundHandler(), Logger: slog.New(slog.DiscardHandler),
		InterceptIdle: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := Listener(ln)
	srv := &http.Server{Handler: fp, ConnContext: ConnContext}
	go srv.Serve(tl)
	defer srv.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	host := strings.TrimPrefix(up.URL, "https://")
	io.WriteString(c, "CONNECT "+host+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "200") {
		t.Fatalf("CONNECT: %q %v", buf[:n], err)
	}
	start := time.Now()
	for {
		if _, err := c.Read(buf); err != nil {
			break // closed by the proxy
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a stalled intercepted connection stayed open %v", d)
	}
}
