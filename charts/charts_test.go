package charts

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/template"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/proxy"
)

const (
	dashboardFile = "grafana/condaproxy.json"
	chartDir      = "condaproxy"
)

// ---------------------------------------------------------------------------
// (a) The dashboard queries only what the binary exports.

// family is one metric family as the binary's /metrics shows it.
type family struct {
	typ    dto.MetricType
	labels map[string]bool
}

// recorder is a Registerer that remembers every collector registered through it,
// so the test knows exactly what proxy.NewMetrics declared.
type recorder struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registerer.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// exportedFamilies builds the registry the way cmd/condaproxy/serve.go's newApp does
// (a fresh registry, the Go and process collectors, proxy.NewMetrics over a real
// cache.Store) and returns every family it exports, with its label names.
//
// Why not just Gather: a CounterVec or HistogramVec with no child yet is absent from
// Gather's output, so a dashboard query for a renamed (or never-used) vector would
// look exactly like a query for one nobody has hit yet. Instead the registerer
// records the collectors NewMetrics registers; each vector among them gets one child
// with dummy label values (the label count found by trying GetMetricWithLabelValues
// with 0, 1, 2... values: only the right count succeeds). Then the families those
// collectors produce are gathered from a registry of their own and their number must
// equal the number of descriptors they Describe: a declared family that still does
// not show up (a collector type this test does not know how to touch) fails the test
// rather than silently shrinking the set the dashboard is checked against. Names,
// types and label names all come from Gather, i.e. from what /metrics would print.
func exportedFamilies(t *testing.T) map[string]family {
	t.Helper()
	store, err := cache.Open(t.TempDir(), cache.Options{})
	if err != nil {
		t.Fatalf("cache.Open: %v", err)
	}
	t.Cleanup(func() { store.Close() })

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rec := &recorder{Registerer: reg}
	proxy.NewMetrics(rec, store)
	if len(rec.collectors) == 0 {
		t.Fatal("proxy.NewMetrics registered no collector")
	}

	declared := 0
	own := prometheus.NewRegistry()
	for _, c := range rec.collectors {
		descs := make(chan *prometheus.Desc, 64)
		c.Describe(descs)
		close(descs)
		for range descs {
			declared++
		}
		own.MustRegister(c)
		touch(t, c)
	}

	ownFams, err := own.Gather()
	if err != nil {
		t.Fatalf("gather proxy metrics: %v", err)
	}
	if len(ownFams) != declared {
		var names []string
		for _, f := range ownFams {
			names = append(names, f.GetName())
		}
		t.Fatalf("proxy.NewMetrics declares %d metric families but only %d were gathered after touching each vector (%v): "+
			"teach touch() the new collector type", declared, len(ownFams), names)
	}

	all, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]family{}
	for _, f := range all {
		fam := family{typ: f.GetType(), labels: map[string]bool{}}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				fam.labels[lp.GetName()] = true
			}
		}
		out[f.GetName()] = fam
	}
	for _, f := range ownFams {
		if _, ok := out[f.GetName()]; !ok {
			t.Fatalf("%s is gathered on its own but not from the binary's registry", f.GetName())
		}
	}
	return out
}

// touch creates one child of a metric vector, so that it is gathered.
func touch(t *testing.T, c prometheus.Collector) {
	t.Helper()
	var try func(lvs ...string) error
	switch v := c.(type) {
	case *prometheus.CounterVec:
		try = func(lvs ...string) error { _, err := v.GetMetricWithLabelValues(lvs...); return err }
	case *prometheus.GaugeVec:
		try = func(lvs ...string) error { _, err := v.GetMetricWithLabelValues(lvs...); return err }
	case *prometheus.HistogramVec:
		try = func(lvs ...string) error { _, err := v.GetMetricWithLabelValues(lvs...); return err }
	case *prometheus.SummaryVec:
		try = func(lvs ...string) error { _, err := v.GetMetricWithLabelValues(lvs...); return err }
	default:
		return // not a vector: always gathered (the count check above catches exceptions)
	}
	for n := 0; n <= 16; n++ {
		lvs := make([]string, n)
		for i := range lvs {
			lvs[i] = "dummy" + strconv.Itoa(i)
		}
		if try(lvs...) == nil {
			return
		}
	}
	t.Fatalf("cannot create a child of %T with 0..16 label values", c)
}

// Labels a query may use although the binary does not export them: Prometheus
// adds them to every scraped series.
var scrapeLabels = map[string]bool{"instance": true, "job": true}

var (
	metricRef  = regexp.MustCompile(`\bcondaproxy_[a-zA-Z0-9_:]*[a-zA-Z0-9]`)
	selectorRe = regexp.MustCompile(`\b(condaproxy_[a-zA-Z0-9_:]*[a-zA-Z0-9])\s*\{([^}]*)\}`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	groupingRe = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	legendRe   = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	labelVals  = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// resolve maps a series name in a query to its exported family: the name itself, or
// a histogram's (or summary's) _bucket/_sum/_count series. It reports whether the
// series is a histogram bucket, whose extra label is le.
func resolve(fams map[string]family, name string) (base string, bucket bool, err error) {
	if _, ok := fams[name]; ok {
		return name, false, nil
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		b, ok := strings.CutSuffix(name, suf)
		if !ok {
			continue
		}
		f, ok := fams[b]
		if !ok {
			break
		}
		switch {
		case f.typ == dto.MetricType_HISTOGRAM:
			return b, suf == "_bucket", nil
		case f.typ == dto.MetricType_SUMMARY && suf != "_bucket":
			return b, false, nil
		default:
			return "", false, fmt.Errorf("%s: %s is a %s, it has no %s series", name, b, f.typ, suf)
		}
	}
	return "", false, fmt.Errorf("%s is not a metric the binary exports (renamed in proxy/metrics.go?)", name)
}

// checkQuery checks one PromQL expression (and its legend) against the exported
// families; it returns the families the query uses and every problem found.
func checkQuery(fams map[string]family, expr, legend string) (used []string, problems []string) {
	type ref struct {
		base   string
		bucket bool
	}
	var refs []ref
	for _, name := range metricRef.FindAllString(expr, -1) {
		base, bucket, err := resolve(fams, name)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		refs = append(refs, ref{base, bucket})
		used = append(used, base)
	}
	if len(refs) == 0 {
		return used, problems
	}
	// onAll: the label is on every series of the expression (a grouping label
	// must survive each aggregation it is applied to).
	onAll := func(label string) bool {
		if scrapeLabels[label] {
			return true
		}
		for _, r := range refs {
			if !fams[r.base].labels[label] && !(label == "le" && r.bucket) {
				return false
			}
		}
		return true
	}
	onAny := func(label string) bool {
		if scrapeLabels[label] {
			return true
		}
		for _, r := range refs {
			if fams[r.base].labels[label] || (label == "le" && r.bucket) {
				return true
			}
		}
		return false
	}
	for _, m := range groupingRe.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !onAll(l) {
				problems = append(problems, fmt.Sprintf("%q groups by label %q, which not every metric in it has", expr, l))
			}
		}
	}
	for _, m := range selectorRe.FindAllStringSubmatch(expr, -1) {
		base, bucket, err := resolve(fams, m[1])
		if err != nil {
			continue // reported above
		}
		for _, mm := range matcherRe.FindAllStringSubmatch(m[2], -1) {
			l := mm[1]
			if l != "__name__" && !scrapeLabels[l] && !fams[base].labels[l] && !(l == "le" && bucket) {
				problems = append(problems, fmt.Sprintf("%q matches label %q, which %s does not have", expr, l, m[1]))
			}
		}
	}
	for _, m := range legendRe.FindAllStringSubmatch(legend, -1) {
		if !onAny(m[1]) {
			problems = append(problems, fmt.Sprintf("legend %q of %q names label %q, which no metric in it has", legend, expr, m[1]))
		}
	}
	return used, problems
}

type dashboard struct {
	SchemaVersion int                       `json:"schemaVersion"`
	Panels        []panel                   `json:"panels"`
	Templating    struct{ List []variable } `json:"templating"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		Expr         string          `json:"expr"`
		LegendFormat string          `json:"legendFormat"`
		Datasource   json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

func flatten(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flatten(p.Panels)...)
	}
	return out
}

func TestDashboardQueriesExportedMetrics(t *testing.T) {
	fams := exportedFamilies(t)
	d := loadDashboard(t)
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want >= 36", d.SchemaVersion)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("templating: want a variable \"datasource\" of type datasource with query \"prometheus\", got %+v", v)
	}
	ch, ok := vars["channel"]
	if !ok {
		t.Errorf("templating: no channel variable")
	}
	// The variable's query is a string or, in newer Grafana, {"query": "..."}.
	var chQuery struct{ Query string }
	if err := json.Unmarshal(ch.Query, &chQuery.Query); err != nil {
		json.Unmarshal(ch.Query, &chQuery)
	}
	for _, q := range []string{ch.Definition, chQuery.Query} {
		m := labelVals.FindStringSubmatch(q)
		if m == nil || m[1] != "condaproxy_requests_total" || m[2] != "channel" {
			t.Errorf("channel variable: query %q, want label_values(condaproxy_requests_total, channel)", q)
			continue
		}
		if f, ok := fams[m[1]]; !ok || !f.labels[m[2]] {
			t.Errorf("channel variable: %s has no label %s", m[1], m[2])
		}
	}

	used := map[string]bool{}
	queries := 0
	usesChannelVar := false
	for _, p := range flatten(d.Panels) {
		if p.Type == "row" {
			continue
		}
		if !strings.Contains(string(p.Datasource), "${datasource}") {
			t.Errorf("panel %q: datasource %s, want ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			if tg.Datasource != nil && !strings.Contains(string(tg.Datasource), "${datasource}") {
				t.Errorf("panel %q: target datasource %s, want ${datasource}", p.Title, tg.Datasource)
			}
			names, problems := checkQuery(fams, tg.Expr, tg.LegendFormat)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q uses no condaproxy metric", p.Title, tg.Expr)
			}
			for _, pr := range problems {
				t.Errorf("panel %q: %s", p.Title, pr)
			}
			for _, n := range names {
				used[n] = true
			}
			usesChannelVar = usesChannelVar || strings.Contains(tg.Expr, `channel=~"$channel"`)
		}
	}
	if queries == 0 {
		t.Fatal("the dashboard has no query")
	}
	if !usesChannelVar {
		t.Error("no query filters on the channel variable")
	}
	// Informational: a metric the binary exports that no panel shows is not a broken
	// contract, but probably a panel to add.
	for name := range fams {
		if strings.HasPrefix(name, "condaproxy_") && !used[name] {
			t.Logf("note: %s is exported but on no panel", name)
		}
	}
}

// TestCheckQueryCatchesMistakes shows the checker is not vacuous: the mistakes a
// rename in proxy/metrics.go would cause are reported.
func TestCheckQueryCatchesMistakes(t *testing.T) {
	fams := exportedFamilies(t)
	for _, tc := range []struct{ expr, legend string }{
		{`sum(rate(condaproxy_request_total[5m]))`, ""},                                    // renamed metric
		{`sum by (channel) (rate(condaproxy_bytes_served_total[5m]))`, ""},                 // label it lacks
		{`rate(condaproxy_cache_lookups_total{results="hit"}[5m])`, ""},                    // matcher on a missing label
		{`rate(condaproxy_upstream_errors_total_bucket[5m])`, ""},                          // _bucket of a counter
		{`sum by (le) (rate(condaproxy_upstream_request_duration_seconds_count[5m]))`, ""}, // le off a bucket
		{`rate(condaproxy_upstream_errors_total[5m])`, "{{channel}}"},                      // legend label it lacks
	} {
		if _, problems := checkQuery(fams, tc.expr, tc.legend); len(problems) == 0 {
			t.Errorf("checkQuery(%q, %q) found no problem", tc.expr, tc.legend)
		}
	}
	if _, problems := checkQuery(fams,
		`histogram_quantile(0.9, sum by (le, host) (rate(condaproxy_upstream_request_duration_seconds_bucket{code="200"}[5m])))`,
		"{{host}}"); len(problems) != 0 {
		t.Errorf("a correct query was refused: %v", problems)
	}
}

// ---------------------------------------------------------------------------
// (b) The chart's YAML files parse, and its default configuration is valid.

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := yaml.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if out == nil {
		t.Fatalf("%s is empty", path)
	}
	return out
}

func noEnv(string) (string, bool) { return "", false }

func TestChartYAML(t *testing.T) {
	chart := readYAML(t, filepath.Join(chartDir, "Chart.yaml"))
	if chart["apiVersion"] != "v2" {
		t.Errorf("Chart.yaml: apiVersion %v, want v2", chart["apiVersion"])
	}
	for _, k := range []string{"name", "version", "appVersion"} {
		if s, _ := chart[k].(string); s == "" {
			t.Errorf("Chart.yaml: %s must be a non-empty string, got %#v", k, chart[k])
		}
	}

	values := readYAML(t, filepath.Join(chartDir, "values.yaml"))
	for _, p := range []string{"replicaCount", "redis.url", "storage.s3.bucket", "storage.s3.existingSecret",
		"podDisruptionBudget.enabled", "config", "persistence.enabled", "serviceMonitor.enabled",
		"secret.existingSecret", "terminationGracePeriodSeconds", "containerPort", "adminToken"} {
		if _, ok := lookup(values, strings.Split(p, ".")); !ok {
			t.Errorf("values.yaml: no %s", p)
		}
	}
	cfgBlock, ok := values["config"].(map[string]any)
	if !ok {
		t.Fatalf("values.yaml: config is %T, want a mapping", values["config"])
	}
	// The chart sets these with --listen and --data; in the file they would be
	// silently overridden.
	for _, k := range []string{"listen", "data"} {
		if _, ok := cfgBlock[k]; ok {
			t.Errorf("values.yaml: config.%s is set by the chart's flags; leave it out", k)
		}
	}
	data, err := yaml.Marshal(cfgBlock)
	if err != nil {
		t.Fatal(err)
	}
	// No environment: the chart's defaults must start without any Secret.
	cfg, err := config.Parse("values.yaml config", data, noEnv)
	if err != nil {
		t.Fatalf("the chart's default configuration does not load: %v", err)
	}
	if len(cfg.Channels) == 0 {
		t.Error("the chart's default configuration serves no channel")
	}
	if g := values["terminationGracePeriodSeconds"]; g != 45 {
		t.Errorf("terminationGracePeriodSeconds %v, want 45 (serve drains for 30 s)", g)
	}
	// The cache cap must fit in the volume it lives on.
	size, _ := lookup(values, []string{"persistence", "size"})
	vol, err := quantity(fmt.Sprint(size))
	if err != nil {
		t.Fatalf("persistence.size: %v", err)
	}
	if int64(cfg.Cache.MaxSize) >= vol {
		t.Errorf("config.cache.max_size %s does not fit in persistence.size %v", cfg.Cache.MaxSize, size)
	}
}

// quantity parses the Kubernetes quantities a volume size is written in.
func quantity(s string) (int64, error) {
	for _, u := range []struct {
		suf  string
		mult int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}} {
		if n, ok := strings.CutSuffix(s, u.suf); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// lookup follows a dotted path through nested mappings.
func lookup(v any, path []string) (any, bool) {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// ---------------------------------------------------------------------------
// (c) The templates use only values that exist, and render to valid objects.

var valuesRef = regexp.MustCompile(`\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)`)

func templateFiles(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no templates: %v", err)
	}
	out := map[string]string{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.ToSlash(p)] = string(data)
	}
	return out
}

func TestTemplatesReferenceExistingValues(t *testing.T) {
	values := readYAML(t, filepath.Join(chartDir, "values.yaml"))
	refs := 0
	for name, text := range templateFiles(t) {
		for _, m := range valuesRef.FindAllStringSubmatch(text, -1) {
			refs++
			if _, ok := lookup(values, strings.Split(m[1][1:], ".")); !ok {
				t.Errorf("%s: .Values%s is not in values.yaml", name, m[1])
			}
		}
	}
	if refs == 0 {
		t.Fatal("no .Values reference found: the regexp is broken")
	}
}

// The functions below stand in for the Helm and Sprig functions the templates
// use, with their semantics (argument order included), so the chart can be
// rendered without helm. A template calling any other function fails to parse:
// add it here only if Helm has it.

func empty(v any) bool {
	if v == nil {
		return true
	}
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Map, reflect.Slice, reflect.String, reflect.Array:
		return r.Len() == 0
	default:
		return r.IsZero()
	}
}

func toInt(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case float64:
		return int(n)
	case string:
		i, _ := strconv.Atoi(n)
		return i
	}
	return 0
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

func toYAML(v any) (string, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// dig is Sprig's: dig "k1" "k2" default dict follows the keys through nested
// maps and answers default when one is missing.
func dig(ps ...any) (any, error) {
	if len(ps) < 3 {
		return nil, errors.New("dig needs at least three arguments")
	}
	m, ok := ps[len(ps)-1].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("dig: %T is not a dict", ps[len(ps)-1])
	}
	def := ps[len(ps)-2]
	keys := ps[:len(ps)-2]
	for i, k := range keys {
		v, has := m[fmt.Sprint(k)]
		if !has {
			return def, nil
		}
		if i == len(keys)-1 {
			return v, nil
		}
		if m, ok = v.(map[string]any); !ok {
			return nil, fmt.Errorf("dig: %v is a %T, not a dict", k, v)
		}
	}
	return def, nil
}

// cluster stands in for the objects Helm's lookup finds in the cluster: an
// upgrade sees what the previous release made. Keys: "apiVersion/kind/namespace/name".
type cluster map[string]map[string]any

func secretObject(data map[string]string) map[string]any {
	d := map[string]any{}
	for k, v := range data {
		d[k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	return map[string]any{"apiVersion": "v1", "kind": "Secret", "data": d}
}

// render executes every template of the chart with values, as helm template would,
// and returns the objects it produces.
func render(t *testing.T, values map[string]any) ([]map[string]any, error) {
	t.Helper()
	return renderIn(t, values, nil)
}

// renderIn renders as helm install or upgrade would into a cluster that holds in.
func renderIn(t *testing.T, values map[string]any, in cluster) ([]map[string]any, error) {
	t.Helper()
	// Helm renders from its own copy of the values, which the templates may note
	// things in (condaproxy.ownSecretValues): a caller's map is left as it was.
	values = deepCopy(values).(map[string]any)
	chart := readYAML(t, filepath.Join(chartDir, "Chart.yaml"))
	var set *template.Template
	funcs := template.FuncMap{
		"include": func(name string, data any) (string, error) {
			var b strings.Builder
			err := set.ExecuteTemplate(&b, name, data)
			return b.String(), err
		},
		"toYaml":  toYAML,
		"indent":  indent,
		"nindent": func(n int, s string) string { return "\n" + indent(n, s) },
		"quote": func(vs ...any) string {
			var out []string
			for _, v := range vs {
				if v != nil {
					out = append(out, strconv.Quote(fmt.Sprint(v)))
				}
			}
			return strings.Join(out, " ")
		},
		"default": func(d any, given ...any) any {
			if len(given) == 0 || empty(given[0]) {
				return d
			}
			return given[0]
		},
		"trunc": func(n int, s string) string {
			if n >= 0 && len(s) > n {
				return s[:n]
			}
			return s
		},
		"trimSuffix": func(suf, s string) string { return strings.TrimSuffix(s, suf) },
		"contains":   func(sub, s string) bool { return strings.Contains(s, sub) },
		"replace":    func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
		"sha256sum": func(s string) string {
			h := sha256.Sum256([]byte(s))
			return hex.EncodeToString(h[:])
		},
		"int":      toInt,
		"deepCopy": deepCopy,
		"set":      func(d map[string]any, k string, v any) map[string]any { d[k] = v; return d },
		"fail":     func(msg string) (string, error) { return "", errors.New(msg) },
		"dig":      dig,
		"get": func(d map[string]any, k string) any {
			if v, ok := d[k]; ok {
				return v
			}
			return ""
		},
		"dict": func(kv ...any) map[string]any {
			d := map[string]any{}
			for i := 0; i+1 < len(kv); i += 2 {
				d[fmt.Sprint(kv[i])] = kv[i+1]
			}
			return d
		},
		// lookup answers an empty dict for what the cluster does not hold, as Helm does.
		"lookup": func(apiVersion, kind, namespace, name string) map[string]any {
			if o, ok := in[apiVersion+"/"+kind+"/"+namespace+"/"+name]; ok {
				return deepCopy(o).(map[string]any)
			}
			return map[string]any{}
		},
		"randAlphaNum": func(n int) (string, error) {
			const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
			b := make([]byte, n)
			if _, err := rand.Read(b); err != nil {
				return "", err
			}
			for i := range b {
				b[i] = alnum[int(b[i])%len(alnum)]
			}
			return string(b), nil
		},
		"hasKey": func(d map[string]any, k string) bool { _, ok := d[k]; return ok },
		"list":   func(vs ...any) []any { return vs },
		// Sprig's append makes a new list, leaving the one it was given as it was.
		"append": func(l []any, v any) []any { return append(slices.Clip(l), v) },
		"join": func(sep string, l []any) string {
			parts := make([]string, len(l))
			for i, v := range l {
				parts[i] = fmt.Sprint(v)
			}
			return strings.Join(parts, sep)
		},
		"hasPrefix": func(pre, s string) bool { return strings.HasPrefix(s, pre) },
		"trimAll":   func(cutset, s string) string { return strings.Trim(s, cutset) },
		"ternary": func(yes, no any, cond bool) any {
			if cond {
				return yes
			}
			return no
		},
		"kindIs":     func(kind string, v any) bool { return v != nil && reflect.ValueOf(v).Kind().String() == kind },
		"trimPrefix": func(pre, s string) string { return strings.TrimPrefix(s, pre) },
		// Sprig's regex functions, stricter: a bad expression fails the render
		// instead of matching nothing.
		"regexMatch": func(re, s string) (bool, error) { return regexp.MatchString(re, s) },
		"regexFind":  func(re, s string) string { return regexp.MustCompile(re).FindString(s) },
		"regexFindAll": func(re, s string, n int) []string {
			return regexp.MustCompile(re).FindAllString(s, n)
		},
		"regexReplaceAll": func(re, s, repl string) string {
			return regexp.MustCompile(re).ReplaceAllString(s, repl)
		},
		"b64enc": func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"b64dec": func(s string) string {
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return err.Error() // Sprig's answer to bad input
			}
			return string(b)
		},
	}
	files := templateFiles(t)
	set = template.New("chart").Funcs(funcs).Option("missingkey=error")
	var names []string
	for name, text := range files {
		if _, err := set.New(name).Parse(text); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	root := map[string]any{
		"Values":  values,
		"Release": map[string]any{"Name": "test", "Namespace": "default", "Service": "Helm"},
		"Chart": map[string]any{
			"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"],
		},
		"Template":     map[string]any{"BasePath": chartDir + "/templates"},
		"Capabilities": map[string]any{},
	}
	var objs []map[string]any
	for _, name := range names {
		if strings.HasPrefix(filepath.Base(name), "_") {
			continue
		}
		var b strings.Builder
		if err := set.ExecuteTemplate(&b, name, root); err != nil {
			return nil, err
		}
		if os.Getenv("CHARTS_DUMP") != "" { // CHARTS_DUMP=1 go test -v -run Render ./charts/ shows the output
			t.Logf("# Source: %s\n%s", name, b.String())
		}
		for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(b.String(), -1) {
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatalf("%s renders invalid YAML: %v\n%s", name, err, doc)
			}
			if obj != nil {
				objs = append(objs, obj)
			}
		}
	}
	return objs, nil
}

// byKind is the last object of each kind (see secretsByName for Secrets, of which
// the chart renders two).
func byKind(objs []map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, o := range objs {
		out[fmt.Sprint(o["kind"])] = o
	}
	return out
}

func get(t *testing.T, v any, path string) any {
	t.Helper()
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(x) {
				t.Fatalf("%s: no element %s", path, k)
			}
			v = x[i]
		default:
			t.Fatalf("%s: %s is under a %T", path, k, v)
		}
	}
	return v
}

func secretsByName(objs []map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, o := range objs {
		if o["kind"] == "Secret" {
			meta, _ := o["metadata"].(map[string]any)
			out[fmt.Sprint(meta["name"])] = o
		}
	}
	return out
}

// secretData is a rendered Secret's keys and values, from data (base64) and
// stringData.
func secretData(t *testing.T, sec map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	if d, ok := sec["data"].(map[string]any); ok {
		for k, v := range d {
			b, err := base64.StdEncoding.DecodeString(fmt.Sprint(v))
			if err != nil {
				t.Fatalf("Secret data.%s is not base64: %v", k, err)
			}
			out[k] = string(b)
		}
	}
	if d, ok := sec["stringData"].(map[string]any); ok {
		for k, v := range d {
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// containerEnv is the environment of the Deployment's container as the kubelet
// would set it from the rendered objects: envFrom Secrets first, then env, which
// wins. A Secret the chart did not render (existingSecret) adds nothing.
func containerEnv(t *testing.T, objs []map[string]any) map[string]string {
	t.Helper()
	return containerEnvIn(t, objs, nil)
}

// containerEnvIn is containerEnv in a cluster that also holds the Secrets of in
// (those the user made: existingSecret).
func containerEnvIn(t *testing.T, objs []map[string]any, in cluster) map[string]string {
	t.Helper()
	secrets := secretsByName(objs)
	for key, o := range in {
		if o["kind"] == "Secret" {
			secrets[key[strings.LastIndex(key, "/")+1:]] = o
		}
	}
	c := get(t, byKind(objs)["Deployment"], "spec.template.spec.containers.0")
	env := map[string]string{}
	if from, ok := c.(map[string]any)["envFrom"].([]any); ok {
		for i := range from {
			name := fmt.Sprint(get(t, from[i], "secretRef.name"))
			if sec, ok := secrets[name]; ok {
				maps.Copy(env, secretData(t, sec))
			}
		}
	}
	if list, ok := c.(map[string]any)["env"].([]any); ok {
		for _, e := range list {
			e := e.(map[string]any)
			name := fmt.Sprint(e["name"])
			if v, ok := e["value"]; ok {
				env[name] = fmt.Sprint(v)
				continue
			}
			ref := fmt.Sprint(get(t, e, "valueFrom.secretKeyRef.name"))
			key := fmt.Sprint(get(t, e, "valueFrom.secretKeyRef.key"))
			sec, ok := secrets[ref]
			if !ok {
				t.Fatalf("env %s comes from Secret %s, which the chart does not render", name, ref)
			}
			v, ok := secretData(t, sec)[key]
			if !ok {
				t.Fatalf("env %s comes from key %s of Secret %s, which has no such key", name, key, ref)
			}
			env[name] = v
		}
	}
	return env
}

// configText is the ConfigMap's condaproxy.yaml, as the pod reads it.
func configText(t *testing.T, cm map[string]any) string {
	t.Helper()
	data, _ := get(t, cm, "data").(map[string]any)
	text, ok := data["condaproxy.yaml"].(string)
	if !ok {
		t.Fatal("ConfigMap has no data.condaproxy.yaml")
	}
	return text
}

// parseRendered loads the ConfigMap's condaproxy.yaml through config.Parse, with
// env as the container's environment.
func parseRendered(t *testing.T, cm map[string]any, env map[string]string) (*config.Config, error) {
	t.Helper()
	return config.Parse("rendered condaproxy.yaml", []byte(configText(t, cm)), func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
}

// renderedConfig loads the ConfigMap's condaproxy.yaml through config.Parse.
func renderedConfig(t *testing.T, cm map[string]any, env map[string]string) *config.Config {
	t.Helper()
	cfg, err := parseRendered(t, cm, env)
	if err != nil {
		t.Fatalf("the rendered configuration does not load: %v\n%s", err, configText(t, cm))
	}
	return cfg
}

// volume is the pod's volume of that name.
func volume(t *testing.T, pod any, name string) map[string]any {
	t.Helper()
	vols, _ := get(t, pod, "volumes").([]any)
	for _, v := range vols {
		if v, ok := v.(map[string]any); ok && v["name"] == name {
			return v
		}
	}
	t.Fatalf("the pod has no volume %s", name)
	return nil
}

func loadValues(t *testing.T) map[string]any {
	return readYAML(t, filepath.Join(chartDir, "values.yaml"))
}

func TestRenderDefaults(t *testing.T) {
	objs, err := render(t, loadValues(t))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	k := byKind(objs)
	var kinds []string
	for kind := range k {
		kinds = append(kinds, kind)
	}
	sort.Strings(kinds)
	// The Secret is the admin token's: the chart always sets one.
	if want := []string{"ConfigMap", "Deployment", "PersistentVolumeClaim", "Secret", "Service"}; !slices.Equal(kinds, want) {
		t.Fatalf("default render: kinds %v, want %v", kinds, want)
	}
	env := containerEnv(t, objs)
	cfg := renderedConfig(t, k["ConfigMap"], env)
	if len(cfg.Auth.AdminToken) != 32 {
		t.Errorf("default render: admin token %d characters, want a generated one of 32", len(cfg.Auth.AdminToken))
	}
	// One replica: embedded storage, nothing shared.
	if cfg.Redis != "" || cfg.Storage.Blobs != "" {
		t.Errorf("default render: redis %q, storage.blobs %q; want both empty", cfg.Redis, cfg.Storage.Blobs)
	}
	for _, name := range []string{"S3_ACCESS_KEY", "S3_SECRET_KEY"} {
		if _, ok := env[name]; ok {
			t.Errorf("default render sets %s without an object store", name)
		}
	}

	dep := k["Deployment"]
	pod := get(t, dep, "spec.template.spec")
	c := get(t, pod, "containers.0")
	if p := get(t, c, "readinessProbe.httpGet.path"); p != "/readyz" {
		t.Errorf("readiness probe %v, want /readyz", p)
	}
	if p := get(t, c, "livenessProbe.httpGet.path"); p != "/healthz" {
		t.Errorf("liveness probe %v, want /healthz", p)
	}
	if g := get(t, pod, "terminationGracePeriodSeconds"); g != 45 {
		t.Errorf("terminationGracePeriodSeconds %v, want 45", g)
	}
	if v := get(t, pod, "securityContext.runAsNonRoot"); v != true {
		t.Errorf("pod runAsNonRoot %v", v)
	}
	if v := get(t, c, "securityContext.runAsNonRoot"); v != true {
		t.Errorf("container runAsNonRoot %v", v)
	}
	args := fmt.Sprint(get(t, c, "args"))
	if !strings.Contains(args, "--listen :8080") || !strings.Contains(args, "-c /etc/condaproxy/condaproxy.yaml") {
		t.Errorf("args %s", args)
	}
	if p := get(t, c, "ports.0.containerPort"); p != 8080 {
		t.Errorf("containerPort %v", p)
	}
	if e := get(t, c, "envFrom"); e != nil {
		t.Errorf("envFrom %v with no secret configured", e)
	}
	if s := get(t, dep, "spec.strategy.type"); s != "Recreate" {
		t.Errorf("strategy %v, want Recreate with a volume claim", s)
	}
	claim := get(t, volume(t, pod, "data"), "persistentVolumeClaim.claimName")
	if claim != get(t, k["PersistentVolumeClaim"], "metadata.name") {
		t.Errorf("data volume claims %v, the chart's claim is %v", claim, get(t, k["PersistentVolumeClaim"], "metadata.name"))
	}
	if get(t, k["Service"], "spec.ports.0.targetPort") != get(t, c, "ports.0.name") {
		t.Error("the Service's targetPort is not the container's port name")
	}
}

// scaleValues are the chart's values for three replicas on Redis and an object
// store (SPEC "Scale"), the S3 keys given as values, the Redis password and a
// channel token in secret.env, and a ServiceMonitor.
func scaleValues(t *testing.T, accessKey, secretKey string) map[string]any {
	t.Helper()
	v := loadValues(t)
	v["replicaCount"] = 3
	v["redis"] = map[string]any{"url": "redis://:${REDIS_PASSWORD}@redis.cache.svc:6379/0"}
	s3 := v["storage"].(map[string]any)["s3"].(map[string]any)
	maps.Copy(s3, map[string]any{
		"bucket": "condaproxy-blobs", "prefix": "/mirror/prod/", "endpoint": "http://minio.storage.svc:9000",
		"region": "eu-west-1", "pathStyle": true, "accessKey": accessKey, "secretKey": secretKey,
	})
	v["persistence"].(map[string]any)["emptyDirSizeLimit"] = "60Gi"
	v["serviceMonitor"].(map[string]any)["enabled"] = true
	v["secret"] = map[string]any{"existingSecret": "", "env": map[string]any{"REDIS_PASSWORD": "pw", "ANACONDA_TOKEN": "tk"}}
	chans := v["config"].(map[string]any)["channels"].([]any)
	v["config"].(map[string]any)["channels"] = append(chans, map[string]any{
		"name": "private", "upstreams": []any{map[string]any{"url": "https://conda.anaconda.org/t/${ANACONDA_TOKEN}/private"}},
	})
	return v
}

// The several-replicas shape (SPEC "Scale"): every replica on the same Redis
// and object store, their credentials only in Secrets and reaching the
// configuration as ${VAR}; each replica's data directory its own emptyDir; a
// PodDisruptionBudget; probes that keep a replica in the Service when Redis is
// down; the admin token and the ServiceMonitor as with one replica.
func TestRenderReplicas(t *testing.T) {
	const accessKey, secretKey = "AKIAEXAMPLE0123456", "s3cret-key-0123456789"
	v := scaleValues(t, accessKey, secretKey)
	objs, err := render(t, v)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	k := byKind(objs)
	for _, want := range []string{"ConfigMap", "Deployment", "Secret", "Service", "ServiceMonitor", "PodDisruptionBudget"} {
		if k[want] == nil {
			t.Errorf("no %s", want)
		}
	}
	// persistence.enabled is still true (the default): several replicas take an
	// emptyDir each all the same, since one claim cannot serve them all.
	if k["PersistentVolumeClaim"] != nil {
		t.Error("a PersistentVolumeClaim with several replicas")
	}

	// The credentials: in Secrets, read by the container through secretKeyRef,
	// never written into the ConfigMap or the pod spec.
	env := containerEnv(t, objs)
	for name, want := range map[string]string{"S3_ACCESS_KEY": accessKey, "S3_SECRET_KEY": secretKey, "REDIS_PASSWORD": "pw", "ANACONDA_TOKEN": "tk"} {
		if env[name] != want {
			t.Errorf("the container's %s is %q, want %q", name, env[name], want)
		}
	}
	c := get(t, k["Deployment"], "spec.template.spec.containers.0")
	for _, e := range get(t, c, "env").([]any) {
		e := e.(map[string]any)
		if _, plain := e["value"]; plain {
			t.Errorf("env %v has a value in the pod spec, not a secretKeyRef", e["name"])
		}
		if strings.HasPrefix(fmt.Sprint(e["name"]), "S3_") {
			if ref := get(t, e, "valueFrom.secretKeyRef.name"); ref != "test-condaproxy-s3" {
				t.Errorf("env %v from Secret %v, want test-condaproxy-s3", e["name"], ref)
			}
		}
	}
	for _, kind := range []string{"ConfigMap", "Deployment"} {
		b, _ := json.Marshal(k[kind])
		for _, secret := range []string{accessKey, secretKey, "pw@"} {
			if strings.Contains(string(b), secret) {
				t.Errorf("the %s carries the credential %q", kind, secret)
			}
		}
	}

	// The configuration as written into the ConfigMap...
	var written map[string]any
	if err := yaml.Unmarshal([]byte(configText(t, k["ConfigMap"])), &written); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]any{
		"redis":                 "redis://:${REDIS_PASSWORD}@redis.cache.svc:6379/0",
		"storage.blobs":         "s3://condaproxy-blobs/mirror/prod",
		"storage.s3.endpoint":   "http://minio.storage.svc:9000",
		"storage.s3.region":     "eu-west-1",
		"storage.s3.path_style": true,
		"storage.s3.access_key": "${S3_ACCESS_KEY}",
		"storage.s3.secret_key": "${S3_SECRET_KEY}",
	} {
		if got, _ := lookup(written, strings.Split(path, ".")); got != want {
			t.Errorf("the ConfigMap's %s is %#v, want %#v", path, got, want)
		}
	}
	// ... and as the binary loads it, with the container's environment.
	cfg := renderedConfig(t, k["ConfigMap"], env)
	if cfg.Redis != "redis://:pw@redis.cache.svc:6379/0" {
		t.Errorf("redis %q", cfg.Redis)
	}
	if bucket, prefix, ok := cfg.Storage.BlobBucket(); !ok || bucket != "condaproxy-blobs" || prefix != "mirror/prod" {
		t.Errorf("storage.blobs %q: bucket %q prefix %q", cfg.Storage.Blobs, bucket, prefix)
	}
	if s3 := cfg.Storage.S3; s3.AccessKey != accessKey || s3.SecretKey != secretKey || !s3.PathStyle || s3.Region != "eu-west-1" {
		t.Errorf("storage.s3 loads as endpoint %q region %q path_style %v, keys from the Secret %v",
			s3.Endpoint, s3.Region, s3.PathStyle, s3.AccessKey == accessKey && s3.SecretKey == secretKey)
	}
	if len(cfg.Auth.AdminToken) != 32 {
		t.Errorf("admin token %d characters, want a generated one of 32", len(cfg.Auth.AdminToken))
	}
	// Without the Secret's variable the binary refuses to start, rather than
	// try the object store with no key.
	noKey := maps.Clone(env)
	delete(noKey, "S3_SECRET_KEY")
	if _, err := parseRendered(t, k["ConfigMap"], noKey); err == nil || !strings.Contains(err.Error(), "S3_SECRET_KEY") {
		t.Errorf("the configuration loads without S3_SECRET_KEY in the environment (err %v)", err)
	}

	dep := k["Deployment"]
	if r := get(t, dep, "spec.replicas"); r != 3 {
		t.Errorf("replicas %v", r)
	}
	// No Recreate: the replicas share no volume, so a rolling update keeps the
	// Service served.
	if s := get(t, dep, "spec.strategy"); s != nil {
		t.Errorf("strategy %v, want the default rolling update", s)
	}
	pod := get(t, dep, "spec.template.spec")
	if s := get(t, volume(t, pod, "data"), "emptyDir.sizeLimit"); s != "60Gi" {
		t.Errorf("data volume emptyDir sizeLimit %v", s)
	}
	// /readyz stays 200 while Redis is down (its body says "redis: degraded"),
	// so the probe must look at the status alone: an httpGet, not a command
	// that reads the body.
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		p, _ := get(t, c, probe).(map[string]any)
		if get(t, p, "httpGet.path") != path || get(t, p, "httpGet.port") != get(t, c, "ports.0.name") || p["exec"] != nil {
			t.Errorf("%s %v, want an httpGet of %s on the container's port", probe, p, path)
		}
	}
	if s := get(t, c, "envFrom.0.secretRef.name"); secretsByName(objs)[fmt.Sprint(s)] == nil {
		t.Errorf("envFrom secret %v is none of the chart's Secrets %v", s, slices.Sorted(maps.Keys(secretsByName(objs))))
	}

	pdb := k["PodDisruptionBudget"]
	if get(t, pdb, "apiVersion") != "policy/v1" || get(t, pdb, "spec.maxUnavailable") != 1 {
		t.Errorf("PodDisruptionBudget %v, want policy/v1 with maxUnavailable 1", pdb["spec"])
	}
	if sel, want := get(t, pdb, "spec.selector.matchLabels"), get(t, dep, "spec.selector.matchLabels"); !reflect.DeepEqual(sel, want) {
		t.Errorf("PodDisruptionBudget selects %v, the Deployment's pods are %v", sel, want)
	}
	if p := get(t, k["ServiceMonitor"], "spec.endpoints.0.path"); p != "/metrics" {
		t.Errorf("ServiceMonitor path %v", p)
	}
	if p := get(t, k["ServiceMonitor"], "spec.endpoints.0.port"); p != get(t, k["Service"], "spec.ports.0.name") {
		t.Errorf("ServiceMonitor port %v is not the Service's port name", p)
	}

	t.Run("a new S3 key restarts the pods", func(t *testing.T) {
		ann := func(objs []map[string]any) string {
			a, _ := get(t, byKind(objs)["Deployment"], "spec.template.metadata.annotations").(map[string]any)
			return fmt.Sprint(a["checksum/s3-credentials"])
		}
		first := ann(objs)
		for _, x := range []string{secretKey, accessKey, accessKey + secretKey} {
			if sum := sha256.Sum256([]byte(x)); strings.Contains(first, hex.EncodeToString(sum[:])) {
				t.Errorf("checksum/s3-credentials is sha256(%q): a reader of the Deployment can test guesses", x)
			}
		}
		kept := cluster{"v1/Secret/default/test-condaproxy-admin": secretObject(secretData(t, secretsByName(objs)["test-condaproxy-admin"]))}
		same, err := renderIn(t, v, kept)
		if err != nil {
			t.Fatal(err)
		}
		rotated, err := renderIn(t, scaleValues(t, accessKey, "s3cret-key-rotated"), kept)
		if err != nil {
			t.Fatal(err)
		}
		if first == "<nil>" || ann(same) != first || ann(rotated) == first {
			t.Errorf("checksum/s3-credentials %q, upgrade with the same keys %q, with a new secret key %q: want it kept, then changed",
				first, ann(same), ann(rotated))
		}
	})

	// The salt of that checksum lives in the chart's admin Secret, which must
	// then be rendered even when the chart sets no admin token: without it each
	// upgrade would draw a new salt and restart the pods for nothing.
	t.Run("the salt kept without the chart's admin token", func(t *testing.T) {
		v := scaleValues(t, accessKey, secretKey)
		v["secret"] = map[string]any{"existingSecret": "mine", "env": map[string]any{}}
		v["config"].(map[string]any)["auth"] = map[string]any{"tokens": []any{}, "admin_token": "${MY_ADMIN_TOKEN}"}
		first, err := render(t, v)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		admin := secretsByName(first)["test-condaproxy-admin"]
		if admin == nil {
			t.Fatal("no Secret holds the salt of checksum/s3-credentials")
		}
		again, err := renderIn(t, v, cluster{"v1/Secret/default/test-condaproxy-admin": secretObject(secretData(t, admin))})
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		path := "spec.template.metadata.annotations"
		if a, b := get(t, byKind(first)["Deployment"], path), get(t, byKind(again)["Deployment"], path); !reflect.DeepEqual(a, b) {
			t.Errorf("an upgrade with the same S3 keys changes the pods' annotations: %v, then %v", a, b)
		}
	})

	t.Run("credentials from an existing Secret", func(t *testing.T) {
		v := scaleValues(t, "", "")
		s3 := v["storage"].(map[string]any)["s3"].(map[string]any)
		s3["existingSecret"] = "object-store"
		s3["existingSecretKeys"] = map[string]any{"accessKey": "AWS_ACCESS_KEY_ID", "secretKey": "AWS_SECRET_ACCESS_KEY"}
		v["secret"] = map[string]any{"existingSecret": "mine", "env": map[string]any{}}
		theirs := cluster{
			"v1/Secret/default/object-store": secretObject(map[string]string{"AWS_ACCESS_KEY_ID": accessKey, "AWS_SECRET_ACCESS_KEY": secretKey}),
			"v1/Secret/default/mine":         secretObject(map[string]string{"REDIS_PASSWORD": "pw", "ANACONDA_TOKEN": "tk"}),
		}
		objs, err := renderIn(t, v, theirs)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		if names := slices.Sorted(maps.Keys(secretsByName(objs))); !slices.Equal(names, []string{"test-condaproxy-admin"}) {
			t.Errorf("Secrets %v rendered, want only the admin token's", names)
		}
		if s := get(t, byKind(objs)["Deployment"], "spec.template.spec.containers.0.envFrom.0.secretRef.name"); s != "mine" {
			t.Errorf("envFrom secret %v, want mine", s)
		}
		if ann := fmt.Sprint(get(t, byKind(objs)["Deployment"], "spec.template.metadata.annotations")); strings.Contains(ann, "s3-credentials") {
			t.Errorf("a checksum over a Secret the chart does not render: %s", ann)
		}
		cfg := renderedConfig(t, byKind(objs)["ConfigMap"], containerEnvIn(t, objs, theirs))
		if cfg.Storage.S3.AccessKey != accessKey || cfg.Storage.S3.SecretKey != secretKey {
			t.Error("the binary does not load the S3 keys of storage.s3.existingSecret")
		}
	})

	t.Run("no credentials: the AWS credential chain", func(t *testing.T) {
		objs, err := render(t, scaleValues(t, "", ""))
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		env := containerEnv(t, objs)
		if _, ok := env["S3_ACCESS_KEY"]; ok {
			t.Error("S3_ACCESS_KEY set without credentials")
		}
		cfg := renderedConfig(t, byKind(objs)["ConfigMap"], env)
		if cfg.Storage.Blobs != "s3://condaproxy-blobs/mirror/prod" || cfg.Storage.S3.AccessKey != "" {
			t.Errorf("storage.blobs %q, access key set %v; want the bucket and no key", cfg.Storage.Blobs, cfg.Storage.S3.AccessKey != "")
		}
	})

	t.Run("one replica on the object store", func(t *testing.T) {
		v := scaleValues(t, accessKey, secretKey)
		v["replicaCount"] = 1
		v["redis"] = map[string]any{"url": ""}
		objs, err := render(t, v)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		k := byKind(objs)
		if k["PodDisruptionBudget"] != nil || k["PersistentVolumeClaim"] == nil {
			t.Error("one replica: want its claim and no PodDisruptionBudget")
		}
		if cfg := renderedConfig(t, k["ConfigMap"], containerEnv(t, objs)); cfg.Storage.S3.SecretKey != secretKey {
			t.Error("one replica: the object store's keys do not reach the configuration")
		}
	})
}

// Several replicas that would share nothing, or a volume they cannot share,
// refuse the render, naming what is missing.
func TestRenderRefusesBrokenScale(t *testing.T) {
	for _, tc := range []struct {
		name          string
		redis, bucket string
		edit          func(v map[string]any)
		want, notWant []string
	}{
		{name: "neither Redis nor an object store", want: []string{"replicaCount 3", "redis.url", "storage.s3.bucket", "Several replicas"}},
		{name: "no object store", redis: "redis://redis:6379/0", want: []string{"storage.s3.bucket"}, notWant: []string{"redis.url"}},
		{name: "no Redis", bucket: "blobs", want: []string{"redis.url"}, notWant: []string{"storage.s3.bucket"}},
		{name: "a claim for all of them", redis: "redis://redis:6379/0", bucket: "blobs",
			edit: func(v map[string]any) { v["persistence"].(map[string]any)["existingClaim"] = "shared" }, want: []string{"persistence.existingClaim"}},
		{name: "the old name of replicaCount", redis: "redis://redis:6379/0", bucket: "blobs",
			edit: func(v map[string]any) { delete(v, "replicaCount"); v["replicas"] = 3 }, want: []string{"replicas", "replicaCount"}},
		{name: "both in config itself", edit: func(v map[string]any) {
			cfg := v["config"].(map[string]any)
			cfg["redis"] = "redis://redis:6379/0"
			cfg["storage"] = map[string]any{"blobs": "s3://blobs/p"}
		}},
	} {
		v := loadValues(t)
		v["replicaCount"] = 3
		v["redis"] = map[string]any{"url": tc.redis}
		v["storage"].(map[string]any)["s3"].(map[string]any)["bucket"] = tc.bucket
		if tc.edit != nil {
			tc.edit(v)
		}
		_, err := render(t, v)
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: %v, want it rendered", tc.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: rendered, want a refusal", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: refused with %q, want it naming %s", tc.name, err, w)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(err.Error(), w) {
				t.Errorf("%s: refused with %q, which names %s although it is set", tc.name, err, w)
			}
		}
	}
}

// Object-store and Redis settings that cannot work, or that are given two ways
// at once (where one would silently win), refuse the render.
func TestRenderRefusesBrokenStorage(t *testing.T) {
	s3 := func(kv ...any) func(v map[string]any) {
		return func(v map[string]any) {
			m := v["storage"].(map[string]any)["s3"].(map[string]any)
			for i := 0; i+1 < len(kv); i += 2 {
				m[kv[i].(string)] = kv[i+1]
			}
		}
	}
	for _, tc := range []struct {
		name string
		edit func(v map[string]any)
		in   cluster
		want string
	}{
		{"a path in the bucket", s3("bucket", "blobs/condaproxy"), nil, "storage.s3.prefix"},
		{"keys both ways", s3("bucket", "b", "existingSecret", "mine-s3", "accessKey", "a", "secretKey", "s"), nil, "once"},
		{"an access key alone", s3("bucket", "b", "accessKey", "a"), nil, "go together"},
		{"a secret key alone", s3("bucket", "b", "secretKey", "s"), nil, "go together"},
		{"keys without a bucket", s3("existingSecret", "mine-s3"), nil, "storage.s3.bucket"},
		{"the object store both ways", func(v map[string]any) {
			s3("bucket", "b")(v)
			v["config"].(map[string]any)["storage"] = map[string]any{"blobs": "s3://other"}
		}, nil, "config.storage"},
		{"Redis both ways", func(v map[string]any) {
			v["redis"] = map[string]any{"url": "redis://a:6379"}
			v["config"].(map[string]any)["redis"] = "redis://b:6379"
		}, nil, "config.redis"},
		{"the chart's S3 variable in secret.env", func(v map[string]any) {
			s3("bucket", "b", "accessKey", "a", "secretKey", "s")(v)
			v["secret"] = map[string]any{"existingSecret": "", "env": map[string]any{"S3_SECRET_KEY": "other"}}
		}, nil, "S3_SECRET_KEY"},
		{"the chart's S3 variable in secret.existingSecret", func(v map[string]any) {
			s3("bucket", "b", "existingSecret", "mine-s3")(v)
			v["secret"] = map[string]any{"existingSecret": "mine", "env": map[string]any{}}
		}, cluster{"v1/Secret/default/mine": secretObject(map[string]string{"S3_ACCESS_KEY": "other"})}, "S3_ACCESS_KEY"},
	} {
		v := loadValues(t)
		tc.edit(v)
		_, err := renderIn(t, v, tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want a refusal naming %s", tc.name, err, tc.want)
		}
	}
}

// The chart always sets an admin token: without one the binary trusts loopback
// for admin writes, and in a pod loopback is also a sidecar's and kubectl
// port-forward's. Given, it is used as is; empty, one is generated, and an
// upgrade keeps the one the release's Secret holds; a token the configuration
// names itself is left alone.
func TestRenderAdminToken(t *testing.T) {
	const secretKey = "v1/Secret/default/test-condaproxy-admin"
	// token renders v in cl and returns the admin token the binary would load,
	// after checking how it gets there.
	token := func(t *testing.T, v map[string]any, cl cluster) string {
		t.Helper()
		objs, err := renderIn(t, v, cl)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		k := byKind(objs)
		text := fmt.Sprint(get(t, k["ConfigMap"], "data"))
		if !strings.Contains(text, "admin_token: ${CONDAPROXY_ADMIN_TOKEN}") {
			t.Errorf("the ConfigMap does not take the admin token from the environment:\n%s", text)
		}
		sec := secretsByName(objs)["test-condaproxy-admin"]
		if sec == nil {
			t.Fatal("no admin token Secret")
		}
		tok := secretData(t, sec)["admin-token"]
		// The token is in its Secret only: not in the ConfigMap, not in the
		// Deployment (the pod spec is readable more widely than Secrets).
		for _, kind := range []string{"ConfigMap", "Deployment"} {
			if b, _ := json.Marshal(k[kind]); strings.Contains(string(b), tok) {
				t.Errorf("the %s carries the admin token itself", kind)
			}
		}
		cfg := renderedConfig(t, k["ConfigMap"], containerEnv(t, objs))
		if cfg.Auth.AdminToken != tok {
			t.Errorf("the binary would load admin token %q, the Secret holds %q", cfg.Auth.AdminToken, tok)
		}
		return cfg.Auth.AdminToken
	}
	alnum32 := regexp.MustCompile(`^[A-Za-z0-9]{32}$`)

	t.Run("generated", func(t *testing.T) {
		first, second := token(t, loadValues(t), nil), token(t, loadValues(t), nil)
		if !alnum32.MatchString(first) || !alnum32.MatchString(second) {
			t.Errorf("generated tokens %q, %q: want 32 letters and digits", first, second)
		}
		if first == second {
			t.Error("two installs generated the same token: it is not random")
		}
	})
	t.Run("kept across upgrades", func(t *testing.T) {
		const kept = "Kept0123456789Kept0123456789Kept"
		if got := token(t, loadValues(t), cluster{secretKey: secretObject(map[string]string{"admin-token": kept})}); got != kept {
			t.Errorf("upgrade with an existing admin Secret: token %q, want the kept %q", got, kept)
		}
	})
	t.Run("given", func(t *testing.T) {
		v := loadValues(t)
		v["adminToken"] = "given-admin-token-0123"
		// Given wins over what the cluster holds: changing the value rotates it.
		if got := token(t, v, cluster{secretKey: secretObject(map[string]string{"admin-token": "old"})}); got != "given-admin-token-0123" {
			t.Errorf("adminToken given: the binary would load %q", got)
		}
		objs, _ := render(t, v)
		ann := fmt.Sprint(get(t, byKind(objs)["Deployment"], "spec.template.metadata.annotations"))
		if !strings.Contains(ann, "checksum/admin-token") {
			t.Errorf("a given admin token has no checksum annotation, so changing it restarts nothing: %s", ann)
		}
	})
	t.Run("the configuration's own", func(t *testing.T) {
		v := loadValues(t)
		v["secret"] = map[string]any{"existingSecret": "mine", "env": map[string]any{}}
		v["config"].(map[string]any)["auth"] = map[string]any{"tokens": []any{}, "admin_token": "${MY_ADMIN_TOKEN}"}
		objs, err := render(t, v)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		if len(secretsByName(objs)) != 0 {
			t.Errorf("Secrets %v rendered although the configuration names its own admin token", slices.Sorted(maps.Keys(secretsByName(objs))))
		}
		if _, ok := containerEnv(t, objs)["CONDAPROXY_ADMIN_TOKEN"]; ok {
			t.Error("CONDAPROXY_ADMIN_TOKEN set although the configuration names its own admin token")
		}
		cfg := renderedConfig(t, byKind(objs)["ConfigMap"], map[string]string{"MY_ADMIN_TOKEN": "mine-0123"})
		if cfg.Auth.AdminToken != "mine-0123" {
			t.Errorf("admin token %q, want the configuration's own", cfg.Auth.AdminToken)
		}
		// Both ways at once is a mistake: refused, naming both.
		v["adminToken"] = "given"
		if _, err := render(t, v); err == nil || !strings.Contains(err.Error(), "adminToken") || !strings.Contains(err.Error(), "config.auth.admin_token") {
			t.Errorf("adminToken and config.auth.admin_token both set: err %v, want a refusal naming both", err)
		}
	})
	t.Run("a configuration without auth", func(t *testing.T) {
		v := loadValues(t)
		delete(v["config"].(map[string]any), "auth")
		if got := token(t, v, nil); !alnum32.MatchString(got) {
			t.Errorf("config without an auth block: admin token %q", got)
		}
	})
}

// Secrets never land in the ConfigMap (readable by more people than Secrets,
// and kept in the release): a token, a password, a /t/<token>/ or an object
// store's key written into `config` in plain text refuses the render, saying to use a Secret and
// "${VAR}"; the same written as "${VAR}" renders.
func TestRenderRefusesLiteralSecrets(t *testing.T) {
	withConfig := func(edit func(cfg, v map[string]any)) map[string]any {
		v := loadValues(t)
		v["secret"] = map[string]any{"existingSecret": "mine", "env": map[string]any{}}
		edit(v["config"].(map[string]any), v)
		return v
	}
	auth := func(a map[string]any) func(cfg, v map[string]any) {
		return func(cfg, _ map[string]any) { cfg["auth"] = a }
	}
	upstream := func(up map[string]any) func(cfg, v map[string]any) {
		return func(cfg, _ map[string]any) {
			cfg["channels"] = append(cfg["channels"].([]any), map[string]any{"name": "private", "upstreams": []any{up}})
		}
	}
	storage := func(s3 map[string]any) func(cfg, v map[string]any) {
		return func(cfg, _ map[string]any) { cfg["storage"] = map[string]any{"blobs": "s3://b/p", "s3": s3} }
	}
	redis := func(url string) func(cfg, v map[string]any) {
		return func(_, v map[string]any) { v["redis"] = map[string]any{"url": url} }
	}
	for _, tc := range []struct {
		name  string
		edit  func(cfg, v map[string]any)
		where string // named by the refusal; "" = renders
	}{
		{"literal admin_token", auth(map[string]any{"admin_token": "s3cret-admin"}), "config.auth.admin_token"},
		{"admin_token with a variable inside", auth(map[string]any{"admin_token": "x${ADMIN}"}), "config.auth.admin_token"},
		{"admin_token from the environment", auth(map[string]any{"admin_token": "${ADMIN}"}), ""},
		{"literal client token", auth(map[string]any{"tokens": []any{"${T1}", "client-s3cret"}}), "config.auth.tokens[1]"},
		{"literal scoped client token", auth(map[string]any{"tokens": []any{
			map[string]any{"token": "client-s3cret", "channels": []any{"conda-forge"}}}}), "config.auth.tokens[0]"},
		{"client tokens from the environment", auth(map[string]any{"tokens": []any{"${T1}",
			map[string]any{"token": "${T2}", "channels": []any{"conda-forge"}}}}), ""},
		{"redis.url with a password", redis("redis://:s3cret@redis:6379/0"), "redis.url"},
		{"redis.url with a user and password", redis("rediss://default:s3cret@redis:6379/0"), "redis.url"},
		{"config.redis with a password", func(cfg, _ map[string]any) { cfg["redis"] = "redis://u:s3cret@redis:6379" }, "config.redis"},
		{"redis password from the environment", redis("redis://:${REDIS_PASSWORD}@redis:6379/0"), ""},
		{"redis without a password", redis("redis://default@redis:6379/0"), ""},
		{"literal S3 secret key", storage(map[string]any{"access_key": "${S3_AK}", "secret_key": "s3cret-key"}), "config.storage.s3.secret_key"},
		{"literal S3 access key", storage(map[string]any{"access_key": "AKIAs3cret", "secret_key": "${S3_SK}"}), "config.storage.s3.access_key"},
		{"S3 keys from the environment", storage(map[string]any{"access_key": "${S3_AK}", "secret_key": "${S3_SK}"}), ""},
		{"S3 endpoint with a password", func(cfg, _ map[string]any) {
			cfg["storage"] = map[string]any{"blobs": "s3://b/p", "s3": map[string]any{"endpoint": "http://u:s3cret@minio:9000"}}
		}, "config.storage.s3.endpoint"},
		{"storage.s3.endpoint with a password", func(_, v map[string]any) {
			v["storage"].(map[string]any)["s3"].(map[string]any)["endpoint"] = "http://u:s3cret@minio:9000"
		}, "storage.s3.endpoint"},
		{"upstream password", upstream(map[string]any{"url": "https://conda.example.org/private", "username": "u", "password": "s3cret"}), "config.channels[private].upstreams[0].password"},
		{"upstream URL password", upstream(map[string]any{"url": "https://u:s3cret@conda.example.org/private"}), "config.channels[private].upstreams[0].url"},
		{"upstream URL token", upstream(map[string]any{"url": "https://conda.example.org/t/tk-s3cret/private"}), "config.channels[private].upstreams[0].url"},
		{"upstream credentials from the environment", upstream(map[string]any{
			"url": "https://u:${UP_PASS}@conda.example.org/t/${ANACONDA_TOKEN}/private", "password": "${UP_PASS}"}), ""},
	} {
		objs, err := render(t, withConfig(tc.edit))
		if tc.where == "" {
			if err != nil {
				t.Errorf("%s: %v, want it rendered", tc.name, err)
				continue
			}
			if text := fmt.Sprint(get(t, byKind(objs)["ConfigMap"], "data")); strings.Contains(text, "s3cret") {
				t.Errorf("%s: the ConfigMap holds a secret:\n%s", tc.name, text)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: rendered, want a refusal", tc.name)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tc.where) || !strings.Contains(msg, "Secret") || !strings.Contains(msg, "${VAR}") ||
			strings.Contains(msg, "s3cret") {
			t.Errorf("%s: refused with %q, want it naming %s, a Secret and \"${VAR}\", and not quoting the secret", tc.name, msg, tc.where)
		}
	}
}

// The pods read the admin token from the Secret once, at start, so a token the
// render makes anew (helm template, Argo CD, a deleted Secret) or a new given one
// must restart them: the pod template carries an annotation that changes with
// the token. It is no checksum of the token alone, which whoever may read the
// Deployment could test guesses against, but salted with a random value that
// only the chart's Secret holds; an upgrade that keeps token and salt keeps the
// pods. The same holds for secret.env's checksum.
func TestRenderRestartsPodsOnANewToken(t *testing.T) {
	const secretKey = "v1/Secret/default/test-condaproxy-admin"
	type rendering struct {
		token, salt, marker, envMarker string
		secret                         map[string]string
	}
	run := func(t *testing.T, v map[string]any, cl cluster) rendering {
		t.Helper()
		objs, err := renderIn(t, v, cl)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		sec := secretsByName(objs)["test-condaproxy-admin"]
		if sec == nil {
			t.Fatal("no Secret of the chart's own")
		}
		data := secretData(t, sec)
		ann, _ := get(t, byKind(objs)["Deployment"], "spec.template.metadata.annotations").(map[string]any)
		r := rendering{token: containerEnv(t, objs)["CONDAPROXY_ADMIN_TOKEN"], salt: data["checksum-salt"],
			marker: fmt.Sprint(ann["checksum/admin-token"]), secret: data}
		if m, ok := ann["checksum/secret"]; ok {
			r.envMarker = fmt.Sprint(m)
		}
		if r.token == "" || r.token != data["admin-token"] {
			t.Fatalf("the pods read admin token %q, the Secret holds %q", r.token, data["admin-token"])
		}
		if len(r.salt) < 16 {
			t.Fatalf("checksum salt %q: want a random value of 16 characters or more", r.salt)
		}
		if ann["checksum/admin-token"] == nil {
			t.Fatalf("no checksum/admin-token annotation: %v", ann)
		}
		// Nothing of the Deployment is a checksum of the token without the
		// salt: try the token with every string the Deployment and the
		// release's public names hold, on either side, as the old chart did.
		dep, _ := json.Marshal(byKind(objs)["Deployment"])
		public := []string{"", "/", "test-condaproxy-admin", "test-condaproxy-admin/", "test", "default", "\n"}
		for _, p := range public {
			for _, x := range []string{p + r.token, r.token + p} {
				sum := sha256.Sum256([]byte(x))
				if strings.Contains(string(dep), hex.EncodeToString(sum[:])) {
					t.Errorf("the Deployment carries sha256(%q): a reader can test guesses of the token", x)
				}
			}
		}
		return r
	}
	kept := func(r rendering) cluster {
		return cluster{secretKey: secretObject(r.secret)}
	}

	t.Run("generated", func(t *testing.T) {
		first := run(t, loadValues(t), nil)
		// helm template again, or the Secret deleted: a new token, new pods.
		again := run(t, loadValues(t), nil)
		if again.token == first.token || again.marker == first.marker {
			t.Errorf("a render that makes a new token keeps the pods' annotation %q: they keep the old token", first.marker)
		}
		// helm upgrade: token and salt read back, the pods stay.
		up := run(t, loadValues(t), kept(first))
		if up.token != first.token || up.salt != first.salt || up.marker != first.marker {
			t.Errorf("upgrade: token %q salt %q marker %q, want all kept (%q %q %q)", up.token, up.salt, up.marker, first.token, first.salt, first.marker)
		}
		// A Secret of an older chart, without a salt: one restart, then stable.
		old := run(t, loadValues(t), cluster{secretKey: secretObject(map[string]string{"admin-token": first.token})})
		if old.token != first.token || old.salt == "" {
			t.Errorf("upgrade from a Secret without salt: token %q salt %q", old.token, old.salt)
		}
	})
	t.Run("given", func(t *testing.T) {
		v := loadValues(t)
		v["adminToken"] = "weak"
		first := run(t, v, nil)
		up := run(t, v, kept(first))
		if up.marker != first.marker {
			t.Error("upgrade with the same given token changes the pods' annotation")
		}
		// The same weak token in another release: another salt, another
		// annotation, so no table of checksums of weak tokens applies.
		if other := run(t, v, nil); other.marker == first.marker {
			t.Error("two installs of the same given token carry the same annotation: it is not salted at random")
		}
		v["adminToken"] = "weak2"
		if changed := run(t, v, kept(first)); changed.marker == first.marker || changed.salt != first.salt {
			t.Errorf("a new given token: marker %q (was %q), salt kept %v; want a new marker under the kept salt",
				changed.marker, first.marker, changed.salt == first.salt)
		}
	})
	t.Run("checksumSalt given, for helm template", func(t *testing.T) {
		v := loadValues(t)
		v["adminToken"] = "given-admin-token-0123"
		v["checksumSalt"] = "my-own-salt-0123456789"
		first, second := run(t, v, nil), run(t, v, nil)
		if first.marker != second.marker || first.salt != "my-own-salt-0123456789" {
			t.Errorf("helm template twice with adminToken and checksumSalt: markers %q, %q; want the same", first.marker, second.marker)
		}
		v["adminToken"] = "given-admin-token-4567"
		if third := run(t, v, nil); third.marker == first.marker {
			t.Error("a new given token under the same checksumSalt keeps the annotation")
		}
	})
	t.Run("secret.env", func(t *testing.T) {
		v := loadValues(t)
		v["secret"] = map[string]any{"existingSecret": "", "env": map[string]any{"ANACONDA_TOKEN": "weak"}}
		first := run(t, v, nil)
		if first.envMarker == "" {
			t.Fatal("no checksum/secret annotation with secret.env")
		}
		body := "apiVersion: v1\nkind: Secret\n"
		for _, x := range []string{"weak", body} {
			if sum := sha256.Sum256([]byte(x)); first.envMarker == hex.EncodeToString(sum[:]) {
				t.Errorf("checksum/secret is sha256(%q)", x)
			}
		}
		if up := run(t, v, kept(first)); up.envMarker != first.envMarker {
			t.Error("upgrade with the same secret.env changes checksum/secret")
		}
		if other := run(t, v, nil); other.envMarker == first.envMarker {
			t.Error("two installs of the same secret.env carry the same checksum/secret: it is not salted at random")
		}
		v["secret"] = map[string]any{"existingSecret": "", "env": map[string]any{"ANACONDA_TOKEN": "weak2"}}
		if changed := run(t, v, kept(first)); changed.envMarker == first.envMarker {
			t.Error("a changed secret.env keeps checksum/secret: the pods keep the old values")
		}
	})
}

// The chart sets CONDAPROXY_ADMIN_TOKEN itself, and a container's env entry wins
// over envFrom: a Secret that sets it too would be overridden without a word.
// The render refuses it (secret.env; secret.existingSecret when the cluster can
// be read), and values.yaml no longer suggests it.
func TestRenderRefusesAdminTokenInTheSecret(t *testing.T) {
	v := loadValues(t)
	v["secret"] = map[string]any{"existingSecret": "", "env": map[string]any{"CONDAPROXY_ADMIN_TOKEN": "mine", "ANACONDA_TOKEN": "tk"}}
	if _, err := render(t, v); err == nil || !strings.Contains(err.Error(), "CONDAPROXY_ADMIN_TOKEN") || !strings.Contains(err.Error(), "adminToken") {
		t.Errorf("secret.env with CONDAPROXY_ADMIN_TOKEN: err %v, want a refusal naming it and adminToken", err)
	}
	v["secret"] = map[string]any{"existingSecret": "mine", "env": map[string]any{}}
	theirs := cluster{"v1/Secret/default/mine": secretObject(map[string]string{"CONDAPROXY_ADMIN_TOKEN": "mine"})}
	if _, err := renderIn(t, v, theirs); err == nil || !strings.Contains(err.Error(), "CONDAPROXY_ADMIN_TOKEN") {
		t.Errorf("existingSecret with CONDAPROXY_ADMIN_TOKEN: err %v, want a refusal naming it", err)
	}
	// Named by the configuration itself, the Secret's variable is the token.
	v["config"].(map[string]any)["auth"] = map[string]any{"tokens": []any{}, "admin_token": "${CONDAPROXY_ADMIN_TOKEN}"}
	objs, err := renderIn(t, v, theirs)
	if err != nil {
		t.Fatalf("existingSecret with CONDAPROXY_ADMIN_TOKEN named by config.auth.admin_token: %v", err)
	}
	if cfg := renderedConfig(t, byKind(objs)["ConfigMap"], map[string]string{"CONDAPROXY_ADMIN_TOKEN": "mine"}); cfg.Auth.AdminToken != "mine" {
		t.Errorf("admin token %q, want the Secret's", cfg.Auth.AdminToken)
	}
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^\s*#\s*CONDAPROXY_ADMIN_TOKEN:`).Match(data) {
		t.Error("values.yaml suggests CONDAPROXY_ADMIN_TOKEN in secret.env, which the chart's own env entry overrides")
	}
}
