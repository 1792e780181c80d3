package config

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"gopkg.in/yaml.v3"
)

// fuzzEnv resolves the ${VAR} of the seeds; any other variable is unset.
func fuzzEnv(k string) (string, bool) {
	v, ok := map[string]string{
		"CLIENT_TOKEN":            "ct",
		"ANACONDA_TOKEN":          "at-123",
		"CONDAPROXY_CLIENT_TOKEN": "cct",
		"S3_ACCESS_KEY":           "ak",
		"EMPTY":                   "",
	}[k]
	return v, ok
}

// repoConfigs returns the configuration files written in the repository beside
// this package: the YAML blocks of README.md that are condaproxy.yaml files, and
// the chart's config block. A missing file gives no seeds.
func repoConfigs(f *testing.F) [][]byte {
	var out [][]byte
	if readme, err := os.ReadFile(filepath.Join("..", "README.md")); err == nil {
		for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1) {
			out = append(out, m[1])
		}
	} else {
		f.Logf("no README seeds: %v", err)
	}
	if values, err := os.ReadFile(filepath.Join("..", "charts", "condaproxy", "values.yaml")); err == nil {
		var chart struct {
			Config yaml.Node `yaml:"config"`
		}
		if err := yaml.Unmarshal(values, &chart); err == nil && chart.Config.Kind != 0 {
			if b, err := yaml.Marshal(&chart.Config); err == nil {
				out = append(out, b)
			}
		}
	} else {
		f.Logf("no chart seed: %v", err)
	}
	return out
}

// FuzzParse: whatever the file says, Parse returns a config or an error, never a
// panic; and what `config show` prints of an accepted config is itself a file
// that parses, to a config that shows the same (SPEC: show's output is what one
// copies to condaproxy.yaml).
func FuzzParse(f *testing.F) {
	f.Add(DefaultYAML())
	f.Add([]byte(full))
	for _, b := range repoConfigs(f) {
		f.Add(b)
	}
	for _, s := range []string{
		"",
		"listen: \"127.0.0.1:0\"\n",
		`tls: {cert: a.pem, key: a.key}
redis: redis://:pw@redis:6379/0
public_url: https://conda.example.invalid/base
auth:
  tokens: [plain, {token: scoped, channels: [a, b/c]}]
  admin_token: "${CLIENT_TOKEN}"
limits: {upstream_idle_timeout: 45s, max_repodata: 1GiB, max_metadata: 64KiB, max_request_header: 4KiB, max_url: 1KiB}
log: {level: debug, format: text}
forward_proxy: {listen: ":3128", ca_cert: ca.pem, ca_key: ca.key, other_hosts: tunnel}
channels:
  - name: a
    upstreams: [{url: "https://u:p@example.invalid/t/tok/a", hosts: [cdn.example.invalid]}]
    platforms: [linux-64, osx-arm64]
    pkg_list: ["numpy >=1.26", "python 3.11.*"]
    include_dependencies: true
    python_versions: ["3.11", "3.12.1"]
    license_blacklist: [GPL, AGPL]
    blacklist: ["openssl <3"]
    whitelist: [readline]
    exclude_newer: 2024-06-01
    min_age: 72h
  - name: b/c
    kind: files
    upstreams: [{url: "file:///mnt/usb/c", username: bob, password: "${ANACONDA_TOKEN}"}]
`,
		"channels:\n  - name: c\n    upstreams: [{url: https://x.invalid/c}]\n    package_list: [numpy]\n    pkg_list: [scipy]\n",
		"channels:\n  - name: inside\n",
		"cache:\n  max_size: 1.5GiB\n  metadata_ttl: 1h30m\n  keep_removed: yes\n",
		"listen: [\n", "&a [*a]\n", "a: &x {b: *x}\n", "listen: !!binary aGk=\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data, fuzzEnv)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v, want a *config.Error naming the file", err, err)
			}
			return
		}
		shown, err := c.Show()
		if err != nil {
			t.Fatalf("Show of an accepted config: %v", err)
		}
		c2, err := Parse("shown.yaml", shown, fuzzEnv)
		if err != nil {
			t.Fatalf("Show output does not parse: %v\ninput:\n%s\nshown:\n%s", err, data, shown)
		}
		again, err := c2.Show()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, shown) {
			t.Fatalf("Show output parses to a different config:\ninput:\n%s\nshown:\n%s\nthen:\n%s", data, shown, again)
		}
	})
}
