package proxy

import (
	"errors"
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Counts reads back what the request path counted, by label, and sums what it
// is asked for across hosts and channels.
func TestMetricsCounts(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry(), nil)
	if c := m.Counts(); len(c.Lookups) != 0 || len(c.BytesBySource) != 0 || c.UpstreamErrors != 0 || c.ChecksumFailures != 0 {
		t.Errorf("counts of fresh metrics: %+v", c)
	}
	m.CacheLookups.WithLabelValues("package", "hit").Add(3)
	m.CacheLookups.WithLabelValues("package", "miss").Inc()
	m.CacheLookups.WithLabelValues("repodata", "stale").Inc()
	m.bytes("disk").Add(100)
	m.bytes("upstream").Add(40)
	m.observeUpstream("a.example", 502, 0, nil)
	m.observeUpstream("b.example", 0, 0, errors.New("connection refused"))
	m.observeUpstream("b.example", 200, 0, nil)
	m.ChecksumFailures.WithLabelValues("x").Inc()
	m.ChecksumFailures.WithLabelValues("y").Add(2)

	c := m.Counts()
	wantLookups := map[Lookup]int64{{"package", "hit"}: 3, {"package", "miss"}: 1, {"repodata", "stale"}: 1}
	if !maps.Equal(c.Lookups, wantLookups) {
		t.Errorf("lookups %v, want %v", c.Lookups, wantLookups)
	}
	if want := map[string]int64{"disk": 100, "upstream": 40}; !maps.Equal(c.BytesBySource, want) {
		t.Errorf("bytes by source %v, want %v", c.BytesBySource, want)
	}
	if c.UpstreamErrors != 2 || c.ChecksumFailures != 3 {
		t.Errorf("upstream errors %d, checksum failures %d; want 2 and 3", c.UpstreamErrors, c.ChecksumFailures)
	}
}
