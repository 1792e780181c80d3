package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/condaproxy/condaproxy/blobstore"
	"github.com/condaproxy/condaproxy/blobstore/s3"
	"github.com/condaproxy/condaproxy/coord"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/condaproxy/condaproxy/admin"
	"github.com/condaproxy/condaproxy/admin/backend"
	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/forward"
	"github.com/condaproxy/condaproxy/mirror"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/proxy"
	"github.com/condaproxy/condaproxy/upstream"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	file := fs.String("c", "", "configuration file")
	listen := fs.String("listen", "", "address to listen on (overrides listen)")
	data := fs.String("data", "", "data directory (overrides data)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("serve: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := config.Load(config.Locate(*file))
	if err != nil {
		return err
	}
	if *listen != "" {
		if _, _, err := net.SplitHostPort(*listen); err != nil {
			return usageErr("--listen %q: want host:port or :port", *listen)
		}
		cfg.Listen = *listen
	}
	if *data != "" {
		cfg.Data = *data
	}
	log := newLogger(cfg, stderr)
	stopProfile, err := startProfile()
	if err != nil {
		return err
	}
	defer stopProfile()
	app, err := newApp(cfg, log)
	if err != nil {
		return err
	}
	defer app.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	app.banner = stdout
	return app.Serve(ctx, ln)
}

// newLogger is the process's one logger. Every line goes through a redactor of
// the configuration's secrets and of /t/<token>/ paths, so no log line holds a
// client token, an upstream token or a password, whatever the call site wrote.
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if cfg.Log.Format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(config.NewRedactor(cfg.Secrets()).Handler(h))
}

// app is a running condaproxy: store, request path, admin, listener.
type app struct {
	cfg     *config.Config
	log     *slog.Logger
	store   *cache.Store
	proxy   *proxy.Server
	handler http.Handler
	redis   *redis.Client
	coord   *coord.Set
	backend *backend.Backend
	// forward is the forward-proxy listener's handler (forward_proxy), or nil.
	forward *forward.Proxy
	// banner, if set, hears where the page is and a .condarc once Serve listens.
	banner io.Writer
}

func newApp(cfg *config.Config, log *slog.Logger) (*app, error) {
	remote, err := openRemote(cfg)
	if err != nil {
		return nil, err
	}
	store, err := cache.Open(cfg.Data, cache.Options{
		MaxSize: int64(cfg.Cache.MaxSize), Memory: int64(cfg.Cache.Memory), Logger: log,
		Remote: remote,
	})
	if err != nil {
		return nil, fmt.Errorf("data directory %s: %w", cfg.Data, err)
	}
	a := &app{cfg: cfg, log: log, store: store}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := proxy.NewMetrics(reg, store)
	ready := []admin.Check{{Name: "storage", Fn: func(context.Context) error {
		_, err := store.Meta.Get("ready-probe", new(struct{}))
		return err
	}}}
	if cfg.Redis != "" {
		opt, err := redis.ParseURL(cfg.Redis)
		if err != nil {
			store.Close()
			return nil, &config.Error{File: cfg.Source, Key: "redis", Msg: "bad URL: " + config.RedactURL(cfg.Redis)}
		}
		// go-redis logs through a package-level logger: route it to ours, so its
		// connection errors are structured lines like every other.
		redis.SetLogger(redisLogger{log})
		a.redis = redis.NewClient(opt)
		redisUp := prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "condaproxy_redis_up", Help: "1 when Redis answers; 0 while replicas coordinate only with themselves.",
		})
		degradedOps := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "condaproxy_redis_fallback_total", Help: "Coordination operations done without Redis (in-process only), by operation.",
		}, []string{"op"})
		reg.MustRegister(redisUp, degradedOps)
		// Keys and channels of this deployment only: two deployments on one
		// Redis (another bucket) must not share locks, stamps or purges.
		sum := sha256.Sum256([]byte(cfg.Storage.Blobs))
		prefix := "condaproxy:" + hex.EncodeToString(sum[:4]) + ":"
		a.coord = coord.NewRedis(a.redis, coord.RedisOptions{Prefix: prefix, MaxPoll: 50 * time.Millisecond}, coord.HealthOptions{
			OnChange: func(up bool, reason error) {
				if up {
					redisUp.Set(1)
					log.Info("redis is up: replicas share fills, freshness and purges")
				} else {
					redisUp.Set(0)
					log.Warn("redis is down: this replica goes on alone (local locks)", "err", reason)
				}
			},
			OnFallback: func(op string) { degradedOps.WithLabelValues(op).Inc() },
		})
		ready = append(ready, admin.Check{Name: "redis", Degrades: true, Fn: func(ctx context.Context) error {
			if !a.coord.Health.Up() {
				return errors.New("unreachable: this replica coordinates with itself only")
			}
			return nil
		}})
	} else {
		a.coord = coord.Local()
	}
	if remote != nil {
		ready = append(ready, admin.Check{Name: "object store", Degrades: true, Fn: func(ctx context.Context) error {
			if c, ok := remote.(interface{ Check(context.Context) error }); ok {
				return c.Check(ctx)
			}
			return nil
		}})
	}
	policies, err := compilePolicies(cfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	// The admin API answers every path outside the channels; it is built on
	// the proxy, so the proxy reaches it through adminHandler, set below, and
	// the channel directories' pages through pages.
	adminHandler := http.NotFoundHandler()
	var pages proxy.PagesFunc
	a.proxy, err = proxy.New(proxy.Options{
		Config:   cfg,
		Policies: policies,
		Store:    store,
		Coord:    a.coord,
		Upstream: upstream.New(upstream.Options{Logger: log, UserAgent: "condaproxy/" + buildVersion(), Secrets: cfg.Secrets(),
			IdleTimeout: cfg.Limits.UpstreamIdleTimeout.D()}),
		Metrics:  metrics,
		Fallback: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { adminHandler.ServeHTTP(w, r) }),
		Pages: func(w http.ResponseWriter, r *http.Request, channel, subdir, prefix string, readAll bool) {
			pages(w, r, channel, subdir, prefix, readAll)
		},
		Logger: log,
	})
	if err != nil {
		a.Close()
		return nil, err
	}
	a.backend = backend.New(backend.Options{Config: cfg, Proxy: a.proxy, Store: store,
		Ledger: mirror.SyncLedger{Meta: store.Meta}, Logger: log})
	adminOpts := admin.Options{
		Gatherer:   reg,
		Ready:      ready,
		CanRead:    a.proxy.CanRead,
		AdminToken: cfg.Auth.AdminToken,
		// An import's upload is a transfer like an upstream's: stalled this
		// long, it fails.
		UploadIdle:   cfg.Limits.UpstreamIdleTimeout.D(),
		Secrets:      cfg.Secrets(),
		ClientTokens: len(cfg.Auth.Tokens) > 0,
		PublicURL:    cfg.PublicURL,
		Logger:       log,
		Backend:      a.backend,
	}
	adminHandler = admin.New(adminOpts)
	pages = admin.ChannelPages(adminOpts)
	a.handler = a.proxy
	if fp := cfg.ForwardProxy; fp != nil {
		ca, err := forward.LoadCA(fp.CACert, fp.CAKey)
		if err != nil {
			a.Close()
			return nil, &config.Error{File: cfg.Source, Key: "forward_proxy.ca_cert", Msg: err.Error()}
		}
		if a.forward, err = forward.New(forward.Options{Config: cfg, CA: ca, Reverse: a.proxy, Logger: log, Registerer: reg}); err != nil {
			a.Close()
			return nil, err
		}
	}
	return a, nil
}

// compilePolicies compiles every conda channel's filter; a bad spec is a
// configuration error (exit 2) naming the channel's key and line.
func compilePolicies(cfg *config.Config) (map[string]policy.Policy, error) {
	out := map[string]policy.Policy{}
	for i, ch := range cfg.Channels {
		if ch.Kind != config.KindConda {
			continue
		}
		p, err := policy.Compile(cfg, i, nil)
		if err != nil {
			return nil, err
		}
		out[ch.Name] = p
	}
	return out, nil
}

// Serve answers on ln until ctx is done, then stops gracefully: requests in flight
// get 30 s, fills in progress are finished or abandoned cleanly.
func (a *app) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    proxy.MaxHeaderBytes(a.cfg),
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	// Said before the first request is answered (the listener is open, so a
	// client waits): whoever sees an answer can read the line.
	a.log.Info("condaproxy serving", "addr", ln.Addr().String(), "data", a.cfg.Data,
		"channels", len(a.cfg.Channels), "config", a.cfg.Source, "version", buildVersion())
	errc := make(chan error, 2)
	var fsrv *http.Server
	var fconns *forward.TrackingListener
	if a.forward != nil {
		ln, err := net.Listen("tcp", a.cfg.ForwardProxy.Listen)
		if err != nil {
			return fmt.Errorf("forward_proxy.listen %s: %w", a.cfg.ForwardProxy.Listen, err)
		}
		fln := forward.Listener(ln)
		fconns = fln
		// HTTP/1.1 only: CONNECT is hijacked, which HTTP/2 cannot do.
		fsrv = &http.Server{Handler: a.forward, ConnContext: forward.ConnContext, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
			MaxHeaderBytes: proxy.MaxHeaderBytes(a.cfg), TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
			ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
		a.log.Info("condaproxy forward proxy listening", "addr", fln.Addr().String(), "other_hosts", a.cfg.ForwardProxy.OtherHosts)
		go func() { errc <- fsrv.Serve(fln) }()
	}
	go func() {
		if a.cfg.TLS.Cert != "" {
			errc <- srv.ServeTLS(ln, a.cfg.TLS.Cert, a.cfg.TLS.Key)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	// Maintenance commands run on the same data directory find the server here.
	if err := writeServerFile(a.cfg.Data, ln.Addr(), a.cfg.TLS.Cert != ""); err != nil {
		a.log.Warn("cannot write the server file; maintenance commands need --server", "err", err)
	}
	defer removeServerFile(a.cfg.Data)
	if a.banner != nil {
		printBanner(a.banner, a.cfg, ln.Addr())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if fsrv != nil {
		fsrv.Shutdown(sctx)
		// Intercepted and tunnelled connections are hijacked: Shutdown does
		// not wait for them. Cut before the proxy behind them stops.
		fconns.CloseAll()
		a.forward.Wait(sctx) // their answers in progress end before the proxy does
	}
	a.proxy.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		srv.Close()
	}
	return nil
}

func (a *app) Close() {
	if a.backend != nil {
		a.backend.Close() // sync jobs stop before the store closes
	}
	if a.coord != nil {
		a.coord.Close()
	}
	if a.redis != nil {
		a.redis.Close()
	}
	a.store.Close()
}

// redisLogger adapts slog to go-redis's logger.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "redis")
}

// openRemote opens the object store of storage.blobs: s3://BUCKET/PREFIX, or
// nil for blobs on local disk. It does not wait for the store: a replica starts
// and serves what it holds while the store is down (readiness says so).
func openRemote(cfg *config.Config) (blobstore.Store, error) {
	bucket, prefix, ok := cfg.Storage.BlobBucket()
	if !ok {
		return nil, nil
	}
	st, err := s3.New(context.Background(), s3.Options{
		Endpoint: cfg.Storage.S3.Endpoint, Region: cfg.Storage.S3.Region, Bucket: bucket, Prefix: prefix,
		AccessKey: cfg.Storage.S3.AccessKey, SecretKey: cfg.Storage.S3.SecretKey, PathStyle: cfg.Storage.S3.PathStyle,
		TempDir: filepath.Join(cfg.Data, "s3tmp"),
		// A client waits on these: fail fast when the store is down (503), and
		// let the next request try again.
		MaxAttempts: 2,
	})
	if err != nil {
		return nil, &config.Error{File: cfg.Source, Key: "storage", Msg: err.Error()}
	}
	return st, nil
}
