// Package proxy is the request path: it answers conda clients for every configured
// channel from the cache, fetching from upstream on a miss.
//
// It is a plain http.Handler with no web framework. What it must never do: serve a
// package byte that was not verified against the repodata being served (a fill that
// fails verification is broken off mid-transfer), serve a record the channel's policy
// hides, or reach outside a channel's tree. Everything it keeps goes through package
// cache; everything it fetches goes through package upstream.
package proxy

import (
	"context"
	"crypto/subtle"
	"fmt"
	"github.com/condaproxy/condaproxy/coord"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/fill"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/upstream"
)

// Options configure a Server. Zero values take the documented defaults.
type Options struct {
	Config *config.Config
	Store  *cache.Store
	// Coord is how replicas share fills and purges (package coord); nil: this
	// process alone (coord.Local).
	Coord *coord.Set
	// Upstream defaults to upstream.New with default options.
	Upstream *upstream.Client
	// Policies maps a channel name to its policy; a channel with none serves
	// everything (policy.PassAll).
	Policies map[string]policy.Policy
	// Metrics must be set; see NewMetrics.
	Metrics *Metrics
	// Fallback answers paths outside every channel (health, metrics, admin, the
	// web page). Nil: 404.
	Fallback http.Handler
	// Pages renders the channel directories (/<channel>/, /<channel>/<subdir>/)
	// for browsers (pages.go). Nil: they answer 404 to everyone, as to conda
	// clients.
	Pages PagesFunc
	// FillTimeout bounds one upstream download, independent of the client that
	// started it; default 30 minutes.
	FillTimeout time.Duration
	Logger      *slog.Logger
	// Now is the clock; default time.Now (tests move it).
	Now func() time.Time
}

// Server is the channel-serving http.Handler.
type Server struct {
	cfg      *config.Config
	store    *cache.Store
	coord    *coord.Set
	up       *upstream.Client
	metrics  *Metrics
	fallback http.Handler
	pages    PagesFunc
	log      *slog.Logger
	now      func() time.Time
	// redact masks the configured secrets in what an error body quotes.
	redact *config.Redactor

	channels map[string]*channel
	tokens   []config.Token

	// loads merges concurrent repodata loads of one subdir.
	loads singleflight.Group

	// fills runs the downloads into the cache (package fill).
	fills *fill.Group

	// indexed remembers the package paths known to be in the index (indexHit).
	indexed sync.Map
	// refs orders the package index against blob purges (refs.go): a writer of
	// an index entry holds it shared, UncacheFiles exclusively from its look for
	// other holders of a blob to the purge; purged names the blobs it purged.
	refs     sync.RWMutex
	purged   purgeLog
	deferred deferredIndex
	// negative holds the upstream 404s of mutable files (files.go).
	negative negativeCache
	// direct bounds the repodata forms made per request when they cannot be
	// stored (serveVariant).
	direct chan struct{}
	// bigBuild lets one build of a big document (bigBuildBytes of upstream
	// input or more) run at a time: include_dependencies reads several big
	// subdirs, and a restart or a filter change rebuilds every subdir at once,
	// so without it the peak memory is the sum of the builds, not the largest.
	bigBuild chan struct{}
	// metadataCacheControl is the Cache-Control value of repodata answers.
	metadataCacheControl []string

	// reqSeq numbers requests for log lines (prefixed by the process start).
	reqSeq atomic.Uint64

	// base is cancelled by Shutdown: it stops fills and background refreshes.
	base    context.Context
	cancel  context.CancelFunc
	bgMu    sync.Mutex // orders bg.Add against Shutdown's Wait
	closing bool
	bg      sync.WaitGroup

	subdirsCache // channeldata.json subdirs by sha (subdirs.go)
}

// channel is one configured channel with its parsed upstreams and policy.
type channel struct {
	cfg     *config.Channel
	sources []upstream.Source
	policy  policy.Policy

	mu      sync.Mutex
	subdirs map[string]*subdir

	// cd is the filtered channeldata.json last cut (channeldata.go).
	cdMu sync.Mutex
	cd   *channelDataAnswer
}

// New builds a Server.
func New(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Upstream == nil {
		o.Upstream = upstream.New(upstream.Options{Logger: o.Logger, IdleTimeout: o.Config.Limits.UpstreamIdleTimeout.D(),
			Secrets: o.Config.Secrets()})
	}
	if o.FillTimeout == 0 {
		o.FillTimeout = 30 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Fallback == nil {
		o.Fallback = http.NotFoundHandler()
	}
	if o.Metrics == nil {
		return nil, fmt.Errorf("proxy: Options.Metrics is required")
	}
	if o.Coord == nil {
		o.Coord = coord.Local()
	}
	if o.Upstream.Observe == nil {
		o.Upstream.Observe = o.Metrics.observeUpstream
	}
	if o.Upstream.Throttled == nil {
		o.Upstream.Throttled = func(host string) { o.Metrics.Throttled.WithLabelValues(host).Inc() }
	}
	s := &Server{
		cfg: o.Config, store: o.Store, coord: o.Coord, up: o.Upstream, metrics: o.Metrics, fallback: o.Fallback,
		pages: o.Pages, log: o.Logger, now: o.Now, redact: config.NewRedactor(o.Config.Secrets()),
		channels: map[string]*channel{}, direct: make(chan struct{}, 2), bigBuild: make(chan struct{}, 1),
		metadataCacheControl: []string{"public, max-age=" + strconv.Itoa(int(o.Config.Cache.MetadataTTL.D().Seconds()))},
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.fills = fill.New(fill.Options{Store: o.Store, Locker: o.Coord.Locker, Timeout: o.FillTimeout,
		Background: s.background, Guard: s.guard, Base: s.base, InFlight: o.Metrics.FillsInFlight})
	// Request numbers start at the clock, so they do not repeat across restarts.
	s.reqSeq.Store(uint64(time.Now().UnixNano()) &^ 0xffffffff)
	s.tokens = o.Config.Auth.Tokens
	for i := range o.Config.Channels {
		cc := &o.Config.Channels[i]
		ch := &channel{cfg: cc, policy: o.Policies[cc.Name], subdirs: map[string]*subdir{}}
		if ch.policy == nil {
			ch.policy = policy.PassAll{}
		}
		for _, u := range cc.Upstreams {
			src, err := upstream.NewSource(u)
			if err != nil {
				return nil, err
			}
			ch.sources = append(ch.sources, src)
		}
		s.channels[cc.Name] = ch
	}
	if err := s.sweepOrphans(); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	s.listenPurges() // subscribed before New returns: no purge is missed
	return s, nil
}

// Shutdown stops background work: fills in progress get until ctx is done to finish,
// then are cancelled (their temp files are dropped, nothing partial is kept). Work
// asked for after Shutdown began is refused, so nothing outlives it.
func (s *Server) Shutdown(ctx context.Context) {
	s.bgMu.Lock()
	s.closing = true
	s.bgMu.Unlock()
	done := make(chan struct{})
	go func() { s.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		<-done
	}
	s.cancel()
}

// background runs fn detached from any request, tracked for Shutdown. It reports
// false, and runs nothing, once Shutdown has begun.
func (s *Server) background(fn func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.closing {
		return false
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.guard("background", func() error { fn(); return nil })
	}()
	return true
}

// PanicError is a unit of work that panicked: it failed alone, with its stack in
// the log, and the process went on.
type PanicError struct {
	Unit  string
	Value any
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("internal error: %s panicked: %v", e.Unit, e.Value)
}

// Guard runs fn as a unit of work of its own (a sync job, say): a panic in it
// fails it alone, logged and counted, as for the proxy's own background work.
func (s *Server) Guard(unit string, fn func() error) error { return s.guard(unit, fn) }

// guard runs fn, turning a panic into a *PanicError: nothing a hostile upstream
// sends may take the process (and every other client) down with one fill, build
// or revalidation. The stack goes to the log, the count to condaproxy_panics_total.
func (s *Server) guard(unit string, fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v) // net/http's own signal to break a connection, not a fault
			}
			s.metrics.Panics.WithLabelValues(unit).Inc()
			s.log.Error("panic recovered; the unit of work failed", "unit", unit, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = &PanicError{Unit: unit, Value: v}
		}
	}()
	return fn()
}

type ctxKey int

const logKey ctxKey = 0

func (s *Server) logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(logKey).(*reqLog); ok {
		return l.logger()
	}
	return s.log
}

// statusWriter remembers the status for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
	source string
}

func (w *statusWriter) setSource(src string) { w.source = src }

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flushes, sendfile).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ReadFrom keeps sendfile working through the wrapper.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.n += n
	return n, err
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := s.checkSize(r); err != nil {
		writeError(w, r, s.log, s.redact, err)
		return
	}
	p, err := cleanPath(r)
	if err != nil {
		writeError(w, r, s.log, s.redact, err)
		return
	}
	rt, ok, err := s.parseRoute(p)
	if !ok {
		if s.hidesChannels(r, p) {
			writeError(w, r, s.log, s.redact, errUnauthorized)
			return
		}
		s.fallback.ServeHTTP(w, r)
		return
	}
	chName := "-"
	if rt.channel != nil {
		chName = rt.channel.cfg.Name
	}
	sw := &statusWriter{ResponseWriter: w}
	// The request's logger is made on first use: a hot hit logs nothing above
	// Debug, and a logger with attributes costs more than the hit itself.
	rl := &reqLog{base: s.log, id: r.Header.Get("X-Request-Id"), seq: s.reqSeq.Add(1)}
	r = r.WithContext(context.WithValue(r.Context(), logKey, rl))
	start := s.now()
	defer func() {
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		s.metrics.request(chName, rt.kind, status).Inc()
		if sw.source != "" && sw.n > 0 {
			s.metrics.bytes(sw.source).Add(float64(sw.n))
		}
		if s.log.Enabled(r.Context(), slog.LevelDebug) {
			rl.logger().Debug("request", "method", r.Method, "path", redactTokenPath(p), "status", status, "dur", s.now().Sub(start))
		}
	}()
	// The token first, whatever else is wrong with the path: a 404 for a bad
	// path below a channel the client may not read would say the channel exists.
	// A /t/<token>/ path below no channel is 401 too, unless the token opens
	// every channel (then there is nothing to hide).
	if rt.channel != nil || rt.token != "" {
		if aerr := s.authorize(r, rt.token, rt.channel); aerr != nil {
			err = aerr
		}
	}
	if err == errNotFound && s.pageRoute(r, rt) {
		s.servePage(sw, r, rt)
		return
	}
	if err == nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
		err = errMethod
	}
	if err == nil {
		err = s.serve(sw, r, rt)
	}
	if err != nil {
		if sw.status != 0 {
			// Headers are out: the only honest signal left is a broken connection.
			panic(http.ErrAbortHandler)
		}
		writeError(sw, r, rl.logger(), s.redact, err)
	}
}

// checkSize bounds what a client may make the proxy read: the request target
// (414) and the header lines (431), well above what conda clients send (a few
// hundred bytes of URL, a few KiB of headers). net/http's own bound
// (http.Server.MaxHeaderBytes, set from the same limits by the caller) stops a
// larger request before it is read at all; this names the part that was too long.
func (s *Server) checkSize(r *http.Request) error {
	lim := s.cfg.Limits
	if len(r.RequestURI) > int(lim.MaxURL) || (r.RequestURI == "" && len(r.URL.RequestURI()) > int(lim.MaxURL)) {
		return errURITooLong
	}
	n := 0
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // "K: V\r\n"
		}
	}
	if n > int(lim.MaxRequestHeader) {
		return errHeaderTooLarge
	}
	return nil
}

// MaxHeaderBytes is what http.Server.MaxHeaderBytes must be for cfg's limits: net/http
// stops reading a request past it (431, whatever part was long). It is set above the
// two limits together, up to 256 KiB, so that a request a little past one of them
// still reaches checkSize and hears which (414 or 431); only a grossly large one is
// cut off unread.
func MaxHeaderBytes(cfg *config.Config) int {
	return max(int(cfg.Limits.MaxURL)+int(cfg.Limits.MaxRequestHeader)+64, 256<<10)
}

// reqLog is a request's logger, made when first asked for. Fills started by the
// request carry it into their own goroutines, hence the Once.
type reqLog struct {
	base *slog.Logger
	id   string // the client's X-Request-Id, or "" for a sequence number
	seq  uint64
	once sync.Once
	log  *slog.Logger
}

func (l *reqLog) logger() *slog.Logger {
	l.once.Do(func() {
		id := l.id
		if id == "" || len(id) > 64 {
			id = strconv.FormatUint(l.seq, 36)
		}
		l.log = l.base.With("req", id)
	})
	return l.log
}

// redactTokenPath masks a /t/<token>/ segment of a request path, valid or
// guessed, by the process's one redaction rule (config.Redactor).
func redactTokenPath(p string) string { return pathRedactor.String(p) }

// pathRedactor knows no configured secret: a path's token may be any guess.
var pathRedactor = config.NewRedactor(nil)

// hidesChannels reports whether a path below no channel must answer 401 rather
// than go to the fallback's 404: with client tokens set, a client that may not
// read every channel must not tell a channel it may not read (401) from a name
// that is none (404). Paths the proxy answers itself (the admin API, the page,
// health, metrics) are left to the fallback and its own checks.
func (s *Server) hidesChannels(r *http.Request, p string) bool {
	if len(s.tokens) == 0 || p == "/" {
		return false
	}
	first, _, _ := strings.Cut(p[1:], "/")
	if config.ReservedPath(first) {
		return false
	}
	return s.authorize(r, "", nil) != nil
}

// CanRead reports whether r carries what every channel's read needs (a client
// token that opens every channel, when auth.tokens is set), for the admin API's
// read calls: they list all channels, so a token scoped to some may not use them.
func (s *Server) CanRead(r *http.Request) bool { return s.authorize(r, "", nil) == nil }

// authorize checks the client token when auth.tokens is set: it must be one of
// them and open ch (every channel when ch is nil). Comparison is constant-time
// over every configured token, and a token refused for its scope gets the same
// answer as an unknown one, so a 401 says nothing of which channels exist.
func (s *Server) authorize(r *http.Request, pathToken string, ch *channel) error {
	if len(s.tokens) == 0 {
		return nil
	}
	tok := pathToken
	if tok == "" {
		if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			tok = strings.TrimSpace(h[7:])
		}
	}
	if tok == "" {
		return errUnauthorized
	}
	opens := false
	for _, t := range s.tokens {
		match := subtle.ConstantTimeCompare([]byte(tok), []byte(t.Token)) == 1
		if ch == nil {
			opens = opens || (match && !t.Scoped)
		} else {
			opens = opens || (match && t.Opens(ch.cfg.Name))
		}
	}
	if !opens {
		return errUnauthorized
	}
	return nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, rt route) error {
	switch rt.kind {
	case kindRepodata:
		return s.serveRepodata(w, r, rt)
	case kindShards:
		// Built here from the served records (shards.go); upstream's own shard
		// files are never passed through.
		return s.serveShards(w, r, rt)
	case kindPackage:
		return s.servePackage(w, r, rt)
	case kindChannelFile:
		if unfilterable(rt) && !hidesNothing(rt.channel.policy) {
			// It lists packages by filename, and no cut of it is made: passed
			// through, it would name what the filter hides.
			return errNotFound
		}
		if rt.subdir != "" {
			if err := s.checkSubdir(rt); err != nil {
				return err
			}
			if rt.file == "run_exports.json" {
				return s.serveRunExports(w, r, rt) // checks the subdir itself
			}
			return s.serveMutable(w, r, rt.channel, rt.subdir+"/"+rt.file)
		}
		if rt.file == "channeldata.json" {
			return s.serveChannelData(w, r, rt.channel)
		}
		return s.serveMutable(w, r, rt.channel, rt.file)
	case kindFile:
		return s.serveMutable(w, r, rt.channel, rt.file)
	}
	return errNotFound
}

// unfilterable reports whether rt names a channel file that lists packages and
// is not cut by the filter: <subdir>/patch_instructions.json (conda-index's
// input, which names files to patch or remove) and the channel-level
// run_exports.json (CEP-12 defines the subdir one, which is cut). Clients read
// neither; a channel whose filter hides something answers them 404.
func unfilterable(rt route) bool {
	return rt.file == "patch_instructions.json" || (rt.subdir == "" && rt.file == "run_exports.json")
}

func (s *Server) checkSubdir(rt route) error {
	if !rt.channel.serves(rt.subdir) {
		return errNotFound
	}
	return nil
}

// serves reports whether the channel serves subdir: noarch always; the listed
// platforms, when listed; else the subdirs conda knows, not any name a client
// makes up (each would cost an upstream request and state kept for it).
func (c *channel) serves(subdir string) bool {
	if subdir == "noarch" {
		return true
	}
	if len(c.cfg.Platforms) == 0 && !config.KnownSubdirs[subdir] {
		return false
	}
	return c.policy.ServesSubdir(subdir)
}
