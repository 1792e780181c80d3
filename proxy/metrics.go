package proxy

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/condaproxy/condaproxy/cache"
)

// Metrics are the request path's Prometheus metrics. Their names are a contract with
// the dashboards in charts/; change them together.
type Metrics struct {
	Requests         *prometheus.CounterVec   // channel, kind, code
	CacheLookups     *prometheus.CounterVec   // kind, result: hit, miss, stale, negative
	BytesServed      *prometheus.CounterVec   // source: memory, disk, upstream
	UpstreamLatency  *prometheus.HistogramVec // host, code
	UpstreamErrors   *prometheus.CounterVec   // host
	ChecksumFailures *prometheus.CounterVec   // channel
	StaleAnswers     *prometheus.CounterVec   // channel
	FillsInFlight    prometheus.Gauge
	Panics           *prometheus.CounterVec // unit: fill, build, variant, background
	Throttled        *prometheus.CounterVec // host

	// Children of the per-request vectors, looked up once: a label lookup hashes
	// its values, which is a measurable share of a hot hit.
	requests sync.Map // requestKey -> prometheus.Counter
	bytesBy  sync.Map // source -> prometheus.Counter
	lookups  sync.Map // [2]string{kind, result} -> prometheus.Counter
}

// lookup is CacheLookups' child for kind and result, looked up once.
func (m *Metrics) lookup(kind, result string) prometheus.Counter {
	key := [2]string{kind, result}
	if c, ok := m.lookups.Load(key); ok {
		return c.(prometheus.Counter)
	}
	c := m.CacheLookups.WithLabelValues(kind, result)
	m.lookups.Store(key, c)
	return c
}

type requestKey struct {
	channel string
	kind    kind
	code    int
}

func (m *Metrics) request(channel string, k kind, code int) prometheus.Counter {
	key := requestKey{channel, k, code}
	if c, ok := m.requests.Load(key); ok {
		return c.(prometheus.Counter)
	}
	c := m.Requests.WithLabelValues(channel, k.String(), strconv.Itoa(code))
	m.requests.Store(key, c)
	return c
}

func (m *Metrics) bytes(source string) prometheus.Counter {
	if c, ok := m.bytesBy.Load(source); ok {
		return c.(prometheus.Counter)
	}
	c := m.BytesServed.WithLabelValues(source)
	m.bytesBy.Store(source, c)
	return c
}

// NewMetrics registers the metrics on reg, with gauges that read store's usage.
func NewMetrics(reg prometheus.Registerer, store *cache.Store) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "condaproxy_requests_total", Help: "Channel requests answered, by channel, kind of file and status code.",
		}, []string{"channel", "kind", "code"}),
		CacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "condaproxy_cache_lookups_total", Help: "Cache lookups by kind of file and result (hit, miss, stale, negative).",
		}, []string{"kind", "result"}),
		BytesServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "condaproxy_bytes_served_total", Help: "Bytes sent to clients, by where they came from (memory, disk, upstream).",
		}, []string{"source"}),
		UpstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "condaproxy_upstream_request_duration_seconds", Help: "Time to upstream response headers, by host and status code (0: no answer).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
		}, []string{"host", "code"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "condaproxy_upstream_errors_total", Help: "Upstream attempts that failed (network error, timeout or 5xx), by host.",
		}, []string{"host"}),
		ChecksumFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "condaproxy_checksum_failures_total", Help: "Upstream files whose size or digest did not match the repodata (never cached).",
		}, []string{"channel"}),
		StaleAnswers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "condaproxy_stale_answers_total", Help: "Repodata answers served past metadata_ttl because upstream failed.",
		}, []string{"channel"}),
		FillsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "condaproxy_fills_in_flight", Help: "Upstream downloads in progress.",
		}),
		Panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "condaproxy_panics_total", Help: "Units of work (fill, build, variant, background, job) that panicked; each failed alone, the process went on.",
		}, []string{"unit"}),
		Throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "condaproxy_upstream_throttled_total", Help: "Upstream answers 429/503 with Retry-After, and requests not sent while one holds, by host.",
		}, []string{"host"}),
	}
	reg.MustRegister(m.Requests, m.CacheLookups, m.BytesServed, m.UpstreamLatency, m.UpstreamErrors,
		m.ChecksumFailures, m.StaleAnswers, m.FillsInFlight, m.Panics, m.Throttled)
	if store != nil {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "condaproxy_cache_size_bytes", Help: "Bytes of package blobs on disk.",
			}, func() float64 { b, _, _ := store.Usage(); return float64(b) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "condaproxy_cache_files", Help: "Package blobs on disk.",
			}, func() float64 { _, n, _ := store.Usage(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "condaproxy_cache_limit_bytes", Help: "cache.max_size.",
			}, func() float64 { _, _, l := store.Usage(); return float64(l) }),
		)
	}
	return m
}

// observeUpstream is the upstream client's Observe hook.
func (m *Metrics) observeUpstream(host string, status int, d time.Duration, err error) {
	m.UpstreamLatency.WithLabelValues(host, strconv.Itoa(status)).Observe(d.Seconds())
	if err != nil || status >= 500 || status == 429 {
		m.UpstreamErrors.WithLabelValues(host).Inc()
	}
}

// Counts reads the request path's counters (Metrics.Counts), for the admin
// API's stats.
func (s *Server) Counts() Counts { return s.metrics.Counts() }

// Lookup is a kind of file and a cache lookup's result, as CacheLookups labels it.
type Lookup struct{ Kind, Result string }

// Counts is what the request path's counters say now: the numbers /metrics
// shows, read from the vectors themselves, so a reader needs neither a
// registry nor the metrics' names. A label value never counted is absent.
type Counts struct {
	Lookups          map[Lookup]int64 // CacheLookups by kind and result
	BytesBySource    map[string]int64 // BytesServed by source
	UpstreamErrors   int64            // UpstreamErrors, every host
	ChecksumFailures int64            // ChecksumFailures, every channel
}

// Counts reads the counters. Each is read once, so two of them may be a few
// requests apart; the Prometheus scrape is no different.
func (m *Metrics) Counts() Counts {
	c := Counts{Lookups: map[Lookup]int64{}, BytesBySource: map[string]int64{}}
	eachCount(m.CacheLookups, func(d *dto.Metric, n int64) {
		c.Lookups[Lookup{labelValue(d, "kind"), labelValue(d, "result")}] += n
	})
	eachCount(m.BytesServed, func(d *dto.Metric, n int64) { c.BytesBySource[labelValue(d, "source")] += n })
	eachCount(m.UpstreamErrors, func(_ *dto.Metric, n int64) { c.UpstreamErrors += n })
	eachCount(m.ChecksumFailures, func(_ *dto.Metric, n int64) { c.ChecksumFailures += n })
	return c
}

// eachCount calls fn with every child of the counter vector v and its value.
// Collect is the vector's only way to list its children without creating one.
func eachCount(v *prometheus.CounterVec, fn func(d *dto.Metric, n int64)) {
	ch := make(chan prometheus.Metric)
	go func() {
		v.Collect(ch)
		close(ch)
	}()
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) == nil {
			fn(&d, int64(d.GetCounter().GetValue()))
		}
	}
}

func labelValue(d *dto.Metric, name string) string {
	for _, l := range d.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
