// Package charts holds condaproxy's deployment artefacts: the Helm chart in
// charts/condaproxy and the Grafana dashboard in charts/grafana. It has no Go code
// of its own; its tests check that the artefacts agree with the binary: every
// metric the dashboard queries is one proxy.NewMetrics registers (with the labels
// the queries group by), the chart's default configuration loads through
// config.Parse, and the templates render with the chart's values.
package charts
