// Package forward is condaproxy's forward-proxy mode: a listener for clients
// that honour HTTPS_PROXY but cannot have their channel URLs changed. A request
// for a configured upstream's URL (an https:// one through a CONNECT that is
// intercepted with a certificate signed by condaproxy's CA; a plain http:// one
// as an absolute-URI request) is answered exactly as the reverse proxy answers
// the matching channel path: the same handler, cache, filter and fills. Every
// other host is refused (other_hosts: deny, the default) or tunnelled untouched
// (tunnel).
//
// It is built on elazarl/goproxy, minding what its users reported: its default
// transport skips certificate checks (replaced: tunnelled plain-http requests go
// through a verifying one, and intercepted ones never leave the process); an
// unmatched CONNECT becomes a tunnel unless refused (refused here unless tunnel
// is configured: no open relay); it signs a certificate per CONNECT (cached
// here); it drops Accept-Encoding (kept: the reverse handler gzips repodata).
package forward

import (
	"cmp"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/condaproxy/condaproxy/config"
)

// Options configure the forward proxy.
type Options struct {
	Config *config.Config
	CA     *tls.Certificate
	// Reverse answers channel paths (/<channel>/...): the proxy's handler.
	Reverse http.Handler
	Logger  *slog.Logger
	// Registerer takes condaproxy_forward_requests_total; nil: none.
	Registerer prometheus.Registerer
	// InterceptIdle is how long an intercepted connection may send nothing
	// (on a TrackingListener with ConnContext); default 2 minutes.
	InterceptIdle time.Duration
}

// route is one configured upstream a request URL may start with.
type route struct {
	scheme, host string // host with its port
	prefix       string // the upstream URL's path, no trailing slash
	channel      string
}

// Proxy is the forward-proxy handler.
type Proxy struct {
	gp      *goproxy.ProxyHttpServer
	routes  []route
	mitm    map[string]bool // https hosts (host:port) that are intercepted
	tunnel  bool
	tokens  []config.Token
	reverse http.Handler
	log     *slog.Logger
	certs   *leafCache
	count   *prometheus.CounterVec
	idle    time.Duration
	// running counts the reverse handler's answers in progress (Wait).
	running sync.WaitGroup
}

// Wait waits until no answer of the reverse handler is running, or ctx ends:
// after the listener's connections are closed (TrackingListener.CloseAll) and
// before the proxy behind it stops.
func (p *Proxy) Wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { p.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// New builds the forward proxy for o.Config's conda channels.
func New(o Options) (*Proxy, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	p := &Proxy{mitm: map[string]bool{}, reverse: o.Reverse, log: o.Logger, tokens: o.Config.Auth.Tokens,
		certs: newLeafCache(o.CA), idle: cmp.Or(o.InterceptIdle, interceptIdle)}
	if fp := o.Config.ForwardProxy; fp != nil {
		p.tunnel = fp.OtherHosts == "tunnel"
	}
	for _, ch := range o.Config.Channels {
		if ch.Kind != config.KindConda {
			continue
		}
		for _, up := range ch.Upstreams {
			u, err := url.Parse(up.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				continue // file:// upstreams have no URL a client asks for
			}
			// Escaped, as match compares it with the request's escaped path.
			r := route{scheme: u.Scheme, host: hostPort(u), prefix: strings.TrimSuffix(u.EscapedPath(), "/"), channel: ch.Name}
			p.routes = append(p.routes, r)
			if r.scheme == "https" {
				p.mitm[r.host] = true
			}
		}
	}
	// The longest prefix first: a channel on .../conda-forge/label/dev is not
	// the one on .../conda-forge. Two channels on one upstream URL: the first
	// listed answers for it, and the log says so.
	slices.SortStableFunc(p.routes, func(a, b route) int { return len(b.prefix) - len(a.prefix) })
	for i, a := range p.routes {
		for _, b := range p.routes[:i] {
			if a.scheme == b.scheme && a.host == b.host && a.prefix == b.prefix {
				o.Logger.Warn("forward proxy: two channels have the same upstream URL; the first listed answers for it",
					"mode", "forward", "answers", b.channel, "never", a.channel)
			}
		}
	}
	p.count = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "condaproxy_forward_requests_total",
		Help: "Forward-proxy requests by what was done: intercepted (answered as a channel), tunnel, denied, unauthorized.",
	}, []string{"action"})
	if o.Registerer != nil {
		if err := o.Registerer.Register(p.count); err != nil {
			return nil, err
		}
	}

	gp := goproxy.NewProxyHttpServer()
	gp.Logger = slogPrinter{o.Logger}
	gp.KeepAcceptEncoding = true
	// goproxy's own transport skips certificate checks: a tunnelled plain-http
	// request goes through this one, which verifies; intercepted requests
	// never reach a transport (handle answers them).
	gp.Tr = &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: time.Minute}
	// goproxy dials tunnels through the environment's HTTPS_PROXY: condaproxy's
	// own dialer instead, as for everything else it reaches.
	gp.ConnectDial = nil
	gp.OnRequest().HandleConnectFunc(p.connect)
	gp.OnRequest().DoFunc(p.handle)
	p.gp = gp
	return p, nil
}

// ServeHTTP answers one proxy request (CONNECT or absolute URI).
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.gp.ServeHTTP(w, r) }

// hostPort is u's host and port as routes are keyed: lower case, no trailing
// dot, the scheme's port when none is written, IPv6 in brackets.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return normHost(u.Hostname(), port)
}

// normHost joins host and port the one way routes compare them: an alias
// spelling (a trailing dot, upper case, a port with leading zeros) must not
// pass for another host, in tunnel mode least of all.
func normHost(host, port string) string {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if n, err := strconv.Atoi(port); err == nil {
		port = strconv.Itoa(n)
	}
	return net.JoinHostPort(host, port)
}

// session is what a CONNECT leaves for the requests inside it.
type session struct{ token string }

// connect decides a CONNECT: intercept a configured upstream's host, tunnel
// or refuse any other.
func (p *Proxy) connect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	token, ok := p.proxyToken(ctx.Req)
	if !ok {
		p.count.WithLabelValues("unauthorized").Inc()
		ctx.Resp = refusal(ctx.Req, http.StatusProxyAuthRequired, "a token is required: Proxy-Authorization: Basic with the token as password")
		ctx.Resp.Header.Set("Proxy-Authenticate", `Basic realm="condaproxy"`)
		return goproxy.RejectConnect, host
	}
	name, port, err := net.SplitHostPort(host)
	if err != nil {
		name, port = host, "443"
	}
	if p.mitm[normHost(name, port)] {
		p.count.WithLabelValues("intercepted").Inc()
		if tc, ok := ctx.Req.Context().Value(connKey{}).(*trackedConn); ok {
			tc.idle.Store(int64(p.idle))
		}
		ctx.UserData = &session{token: token}
		return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: p.tlsConfig}, host
	}
	if p.tunnel {
		p.count.WithLabelValues("tunnel").Inc()
		p.log.Info("forward: tunnel", "mode", "forward", "host", host)
		return goproxy.OkConnect, host
	}
	p.count.WithLabelValues("denied").Inc()
	p.log.Info("forward: CONNECT refused: not a configured upstream (forward_proxy.other_hosts: deny)", "mode", "forward", "host", host)
	ctx.Resp = refusal(ctx.Req, http.StatusForbidden, "not a configured upstream of this proxy (forward_proxy.other_hosts: deny)")
	return goproxy.RejectConnect, host
}

// tlsConfig is the server side of an intercepted CONNECT: a certificate for
// the host asked for (an IP in an IP SAN), HTTP/1.1 only.
func (p *Proxy) tlsConfig(host string, _ *goproxy.ProxyCtx) (*tls.Config, error) {
	name, _, err := net.SplitHostPort(host)
	if err != nil {
		name = host
	}
	cert, err := p.certs.get(strings.ToLower(name))
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}, nil
}

// handle answers a request: one inside an intercepted CONNECT, or an
// absolute-URI one. A configured upstream's URL is answered by the reverse
// handler as its channel's path; anything else is refused, or (tunnel)
// passed on.
func (p *Proxy) handle(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	var token string
	if s, ok := ctx.UserData.(*session); ok {
		token = s.token
	} else {
		t, ok := p.proxyToken(r)
		if !ok {
			p.count.WithLabelValues("unauthorized").Inc()
			resp := refusal(r, http.StatusProxyAuthRequired, "a token is required: Proxy-Authorization: Basic with the token as password")
			resp.Header.Set("Proxy-Authenticate", `Basic realm="condaproxy"`)
			return r, resp
		}
		token = t
	}
	rt, rest, ok := p.match(r.URL)
	if !ok {
		if p.tunnel && ctx.UserData == nil {
			p.count.WithLabelValues("tunnel").Inc()
			return r, nil // goproxy passes it on, through the verifying transport
		}
		p.count.WithLabelValues("denied").Inc()
		p.log.Info("forward: request refused: not a configured upstream's URL", "mode", "forward", "host", r.URL.Host)
		return r, refusal(r, http.StatusForbidden, "not a configured upstream of this proxy")
	}
	if ctx.UserData == nil {
		p.count.WithLabelValues("intercepted").Inc()
	}
	in := r.Clone(r.Context())
	in.RequestURI = ""
	// The path as the client wrote it (escaped): the reverse handler refuses
	// an encoded slash or dot segment the same way in both modes.
	in.URL, _ = url.Parse("/" + rt.channel + rest)
	if in.URL == nil {
		return r, refusal(r, http.StatusBadRequest, "bad path")
	}
	in.URL.RawQuery = r.URL.RawQuery
	in.Host = ""
	in.Header.Del("Proxy-Authorization")
	in.Header.Del("Authorization") // only the proxy token speaks for the client here
	if token != "" {
		in.Header.Set("Authorization", "Bearer "+token)
	}
	p.log.Debug("forward: answered as a channel", "mode", "forward", "channel", rt.channel, "path", rest)
	// Outside an intercepted connection goproxy copies the body inside the
	// listener's own handler and ignores a read error: a broken transfer must
	// be a panic there (net/http then cuts the connection), or a short body
	// would end as a clean one.
	return r, p.serve(in, ctx.UserData == nil)
}

// match finds the configured upstream u starts with and the rest of its path
// below it.
func (p *Proxy) match(u *url.URL) (route, string, bool) {
	host := hostPort(u)
	path := u.EscapedPath()
	for _, rt := range p.routes {
		if rt.scheme != u.Scheme || rt.host != host {
			continue
		}
		if rest, ok := strings.CutPrefix(path, rt.prefix); ok && strings.HasPrefix(rest, "/") {
			return rt, rest, true
		}
	}
	return route{}, "", false
}

// proxyToken reads the client token from Proxy-Authorization (Basic, the
// token as password); ok is false when tokens are configured and none came.
// Its validity is the reverse handler's to judge, per channel.
func (p *Proxy) proxyToken(r *http.Request) (string, bool) {
	if len(p.tokens) == 0 {
		return "", true
	}
	h := r.Header.Get("Proxy-Authorization")
	scheme, val, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "basic") {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(val))
	if err != nil {
		return "", false
	}
	_, tok, _ := strings.Cut(string(raw), ":")
	for _, t := range p.tokens {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(t.Token)) == 1 {
			return tok, true
		}
	}
	return "", false
}

// serve runs the reverse handler for in and returns its answer as it streams:
// the headers once written, the body through a pipe. A transfer the handler
// breaks off (a verification failure mid-body) ends the body with an error,
// so the client's connection is cut short, never a short file as whole.
func (p *Proxy) serve(in *http.Request, abortPanics bool) *http.Response {
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, body: pw, ready: make(chan struct{})}
	p.running.Add(1)
	go func() {
		defer p.running.Done()
		defer func() {
			if v := recover(); v != nil {
				if v != http.ErrAbortHandler {
					p.log.Error("forward: the reverse handler panicked", "mode", "forward", "panic", fmt.Sprint(v),
						"stack", string(debug.Stack()))
				}
				w.fail(errAborted) // the transfer is broken off
				return
			}
			w.finish()
		}()
		p.reverse.ServeHTTP(w, in)
	}()
	<-w.ready
	var body io.ReadCloser = pr
	if abortPanics {
		body = abortingReader{pr}
	}
	resp := &http.Response{StatusCode: w.status, Header: w.sent, Body: body, Request: in,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, ContentLength: -1}
	if n, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil && n >= 0 {
		resp.ContentLength = n
	}
	if in.Method == http.MethodHead {
		resp.Body = http.NoBody
		pr.Close()
	}
	return resp
}

var errAborted = io.ErrUnexpectedEOF

// abortingReader turns a broken transfer into http.ErrAbortHandler, for a body
// copied inside net/http's handler (see handle).
type abortingReader struct{ *io.PipeReader }

func (r abortingReader) Read(b []byte) (int, error) {
	n, err := r.PipeReader.Read(b)
	if err != nil && err != io.EOF {
		panic(http.ErrAbortHandler)
	}
	return n, err
}

// pipeWriter is the http.ResponseWriter the reverse handler writes to.
type pipeWriter struct {
	header http.Header
	sent   http.Header // header as WriteHeader found it: what goes out
	body   *io.PipeWriter
	status int
	once   sync.Once
	ready  chan struct{}
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	w.once.Do(func() {
		w.status = code
		w.sent = w.header.Clone() // later changes are ignored, as net/http does
		close(w.ready)
	})
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

func (w *pipeWriter) Flush() {}

func (w *pipeWriter) finish() {
	w.WriteHeader(http.StatusOK)
	w.body.Close()
}

func (w *pipeWriter) fail(err error) {
	w.WriteHeader(http.StatusBadGateway)
	w.body.CloseWithError(err)
}

// refusal is a plain-text answer of the forward proxy itself.
func refusal(r *http.Request, status int, msg string) *http.Response {
	resp := goproxy.NewResponse(r, goproxy.ContentTypeText, status, http.StatusText(status)+": "+msg+"\n")
	resp.Header.Set("Cache-Control", "no-store")
	return resp
}

// slogPrinter routes goproxy's log lines to condaproxy's logger.
type slogPrinter struct{ log *slog.Logger }

func (l slogPrinter) Printf(format string, v ...any) {
	l.log.Debug("goproxy: "+strings.TrimSpace(fmt.Sprintf(format, v...)), "mode", "forward")
}

// Listener tracks the connections ln accepts, so that CloseAll can end the
// ones http.Server.Shutdown does not: intercepted and tunnelled connections
// are hijacked, and would otherwise go on answering after the proxy behind
// them stopped.
func Listener(ln net.Listener) *TrackingListener {
	return &TrackingListener{Listener: ln, conns: map[*trackedConn]bool{}}
}

// TrackingListener is a net.Listener whose open connections can be closed at once.
type TrackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[*trackedConn]bool
}

func (l *TrackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = true
	l.mu.Unlock()
	return tc, nil
}

// CloseAll closes every connection still open.
func (l *TrackingListener) CloseAll() {
	l.mu.Lock()
	conns := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *TrackingListener
	once sync.Once
	// idle, when set (an intercepted connection), bounds each read: the TLS
	// handshake and every request's headers and body come in time, or the
	// connection goes. net/http's own timeouts end at the hijack.
	idle atomic.Int64
}

// Read closes the connection when a read waits longer than idle. Not a read
// deadline: net/http aborts its own background read at the hijack by setting
// one in the past, which a deadline set here could undo (the hijack would then
// wait for the whole idle time).
func (c *trackedConn) Read(b []byte) (int, error) {
	if d := c.idle.Load(); d > 0 {
		t := time.AfterFunc(time.Duration(d), func() { c.Close() })
		defer t.Stop()
	}
	return c.Conn.Read(b)
}

// CloseWrite and CloseRead pass a tunnel's half-close on (goproxy uses them
// when the connection has them, as a TCP connection does).
func (c *trackedConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Close()
}

func (c *trackedConn) CloseRead() error {
	if hc, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return hc.CloseRead()
	}
	return nil
}

type connKey struct{}

// ConnContext is the http.Server's ConnContext for a TrackingListener's
// server: it lets a CONNECT's decision reach its connection.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// interceptIdle is how long an intercepted connection may send nothing: the
// handshake, between requests, within one. A tunnel has none (a long download
// has the client send nothing for as long as it takes).
const interceptIdle = 2 * time.Minute

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
