package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestEmbeddedDefault(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ch := range c.Channels {
		names = append(names, ch.Name)
		if ch.Kind != KindConda || len(ch.Upstreams) != 1 {
			t.Errorf("channel %s: kind %q, %d upstreams", ch.Name, ch.Kind, len(ch.Upstreams))
		}
	}
	if got, want := strings.Join(names, ","), "conda-forge,bioconda,pkgs/main,pkgs/r,pkgs/msys2"; got != want {
		t.Errorf("channels = %s, want %s", got, want)
	}
	if c.Listen != ":8080" || c.Data != "./condaproxy-data" || c.Cache.MaxSize != 50<<30 ||
		c.Cache.MetadataTTL.D() != 10*time.Minute || c.Cache.NegativeTTL.D() != time.Minute {
		t.Errorf("defaults not filled: %+v", c)
	}
}

const full = `listen: "127.0.0.1:9000"
data: /var/lib/condaproxy
cache:
  max_size: 2GiB
  memory: 64MiB
  metadata_ttl: 5m
  negative_ttl: 30s
  keep_removed: true
auth:
  tokens: ["${CLIENT_TOKEN}"]
  admin_token: s3cret
channels:
  - name: conda-forge
    upstreams:
      - url: https://conda.anaconda.org/t/${ANACONDA_TOKEN}/conda-forge
      - url: file:///mnt/usb/conda-forge
    platforms: [linux-64, noarch]
    python_versions: ["3.11", "3.12"]
    package_list: [numpy]
    exclude_newer: 2024-06-01
    min_age: 72h
  - name: installers
    kind: files
    upstreams:
      - url: https://example.invalid/miniconda
        username: bob
        password: hunter2
`

func TestFullFile(t *testing.T) {
	c, err := Parse("c.yaml", []byte(full), env(map[string]string{"CLIENT_TOKEN": "ct", "ANACONDA_TOKEN": "at-123"}))
	if err != nil {
		t.Fatal(err)
	}
	cf := c.Channel("conda-forge")
	if cf == nil {
		t.Fatal("no conda-forge")
	}
	if got := cf.Upstreams[0].URL; got != "https://conda.anaconda.org/t/at-123/conda-forge" {
		t.Errorf("env not expanded: %s", got)
	}
	if len(cf.PkgList) != 1 || cf.PkgList[0] != "numpy" || cf.PackageList != nil {
		t.Errorf("package_list alias not merged: %v / %v", cf.PkgList, cf.PackageList)
	}
	if !cf.ExcludeNewerTime.Equal(time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)) || cf.MinAge.D() != 72*time.Hour {
		t.Errorf("dates: %v %v", cf.ExcludeNewerTime, cf.MinAge)
	}
	if c.Cache.MaxSize != 2<<30 || c.Cache.Memory != 64<<20 || !c.Cache.KeepRemoved {
		t.Errorf("cache: %+v", c.Cache)
	}
	out, err := c.Show()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, secret := range []string{"at-123", "hunter2", "s3cret", "ct\n", "- ct"} {
		if strings.Contains(s, secret) {
			t.Errorf("config show leaks %q:\n%s", secret, s)
		}
	}
	for _, want := range []string{"/t/***/conda-forge", "max_size: 2GiB", "metadata_ttl: 5m0s", "password: '***'"} {
		if !strings.Contains(s, want) {
			t.Errorf("config show lacks %q:\n%s", want, s)
		}
	}
	// Show must not have changed the live configuration.
	if c.Auth.AdminToken != "s3cret" || cf.Upstreams[0].URL != "https://conda.anaconda.org/t/at-123/conda-forge" {
		t.Error("Show modified the configuration")
	}
	// What show prints must load again.
	if _, err := Parse("shown.yaml", out, env(nil)); err != nil {
		t.Errorf("config show output does not load: %v\n%s", err, s)
	}
}

func TestErrors(t *testing.T) {
	ch := "channels:\n  - name: c\n    upstreams: [{url: https://x.invalid/c}]\n"
	tests := []struct {
		name, yaml string
		want       string // substring of the error: file, line and key
	}{
		{"unknown top key", "listne: :80\n", "c.yaml:1: listne: unknown key"},
		{"unknown nested key", "cache:\n  max_sise: 1GiB\n", "c.yaml:2: cache.max_sise: unknown key"},
		{"bad size", "cache:\n  max_size: 50GB\n", `c.yaml:2: cache.max_size: bad size "50GB"`},
		{"size too small", "cache:\n  max_size: 10KiB\n", "cache.max_size: 10KiB is too small"},
		{"bad duration", "cache:\n  metadata_ttl: 10 minutes\n", `c.yaml:2: cache.metadata_ttl: bad duration "10 minutes"`},
		{"negative duration", "cache:\n  negative_ttl: -1m\n", "must not be negative"},
		{"bad bool", "cache:\n  keep_removed: maybe\n", "c.yaml:2: cache.keep_removed: want true or false"},
		{"list for scalar", "listen: [a]\n", "c.yaml:1: listen: want a single value"},
		{"bad listen", "listen: nowhere\n", `c.yaml:1: listen: bad address "nowhere"`},
		{"bad yaml", "listen: [\n", "c.yaml:1: not valid YAML"},
		{"unset env", "redis: redis://${NOPE}:6379\n", "c.yaml:1: redis: environment variable NOPE is not set"},
		{"bad redis", "redis: http://x\n", "redis: bad URL"},
		{"bad channel name", "channels:\n  - name: ../etc\n    upstreams: [{url: https://x.invalid}]\n", `c.yaml:2: channels[0].name: bad channel name "../etc"`},
		{"reserved name", "channels:\n  - name: api\n    upstreams: [{url: https://x.invalid}]\n", "channels[0].name: channel name \"api\""},
		{"duplicate channel", ch + "  - name: c\n    upstreams: [{url: https://x.invalid/c}]\n", "c.yaml:4: channels[1].name: channel \"c\" is defined twice"},
		{"nested channel", ch + "  - name: c/sub\n    upstreams: [{url: https://x.invalid/c}]\n", "nest inside"},
		{"no upstream", "channels:\n  - name: c\n    kind: files\n", "channels[0].upstreams: channel \"c\" needs at least one upstream"},
		{"bad upstream scheme", "channels:\n  - name: c\n    upstreams: [{url: ftp://x/c}]\n", "c.yaml:3: channels[0].upstreams[0].url: bad URL \"ftp://x/c\""},
		{"relative file url", "channels:\n  - name: c\n    upstreams: [{url: \"file://mnt/x\"}]\n", "a file URL is file:///absolute/path"},
		{"token redacted in error", "channels:\n  - name: c\n    upstreams: [{url: \"ftp://h/t/SECRET/c\"}]\n", "/t/***/c"},
		{"bad kind", "channels:\n  - name: c\n    kind: pypi\n    upstreams: [{url: https://x.invalid}]\n", "c.yaml:3: channels[0].kind: \"pypi\""},
		{"bad platform", ch + "    platforms: [linux64]\n", "c.yaml:4: channels[0].platforms[0]: bad platform \"linux64\""},
		{"unquoted python", ch + "    python_versions: [3]\n", "channels[0].python_versions[0]: bad python version \"3\""},
		{"bad date", ch + "    exclude_newer: yesterday\n", "c.yaml:4: channels[0].exclude_newer: bad date"},
		{"both pkg_list keys", ch + "    pkg_list: [a]\n    package_list: [b]\n", "channels[0].package_list: pkg_list and its alias"},
		{"filter on files", "channels:\n  - name: f\n    kind: files\n    upstreams: [{url: https://x.invalid}]\n    blacklist: [a]\n", "c.yaml:5: channels[0].blacklist: a kind: files channel"},
		{"tls half", "tls: {cert: a.pem}\n", "tls: cert and key go together"},
		{"bad token", "auth:\n  tokens: [\"a/b\"]\n", "auth.tokens[0]: a token must be"},
		{"other_hosts", "forward_proxy:\n  listen: :3128\n  other_hosts: allow\n", "forward_proxy.other_hosts: \"allow\""},
		{"password without user", "channels:\n  - name: c\n    upstreams: [{url: https://x.invalid, password: p}]\n", "channels[0].upstreams[0].password: a password needs a username"},
		{"token for no channel", ch + "auth:\n  tokens: [{token: abc, channels: [nope]}]\n", "auth.tokens[0].channels[0]: no channel \"nope\" is configured"},
		{"token unknown key", "auth:\n  tokens: [{token: abc, chanels: [c]}]\n", "auth.tokens[0].chanels: unknown key"},
		{"scoped token with no channel", "auth:\n  tokens: [{token: abcdefgh, channels: []}]\n", "auth.tokens[0]: a token written as {token, channels} must name at least one channel"},
		{"scoped token with null channels", "auth:\n  tokens: [{token: abcdefgh}]\n", "auth.tokens[0]: a token written as {token, channels} must name at least one channel"},
		{"quote in token", "auth:\n  tokens: [\"ab\\\"cd\"]\n", "auth.tokens[0]: a token must be"},
		{"bad blobs", "storage:\n  blobs: /var/blobs\n", "c.yaml:2: storage.blobs: bad location"},
		{"s3 half keys", "storage:\n  blobs: s3://b/p\n  s3:\n    access_key: a\n", "storage.s3: access_key and secret_key go together"},
		{"s3 endpoint with user", "storage:\n  s3:\n    endpoint: http://u:SECRET@h:9000\n", "storage.s3.endpoint: bad URL"},
		{"scoped token bad", "auth:\n  tokens: [{token: \"a b\"}]\n", "auth.tokens[0]: a token must be"},
		{"tiny header limit", "limits:\n  max_request_header: 100\n", "c.yaml:2: limits.max_request_header: 100B is too small"},
		{"tiny url limit", "limits:\n  max_url: 10B\n", "limits.max_url: 10B is too small"},
		{"tiny repodata limit", "limits:\n  max_repodata: 1KiB\n", "limits.max_repodata: 1KiB is too small"},
		{"tiny metadata limit", "limits:\n  max_metadata: 1KiB\n", "limits.max_metadata: 1KiB is too small"},
		{"short idle timeout", "limits:\n  upstream_idle_timeout: 10ms\n", "limits.upstream_idle_timeout: 10ms is too short"},
		{"bad idle timeout", "limits:\n  upstream_idle_timeout: soon\n", "c.yaml:2: limits.upstream_idle_timeout: bad duration"},
		{"bad upstream host", "channels:\n  - name: c\n    upstreams: [{url: https://x.invalid, hosts: [\"cdn/x\"]}]\n", "channels[0].upstreams[0].hosts[0]: bad host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tt.yaml), env(nil))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error is %T, want *config.Error", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error leaks a token: %q", err)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://conda.anaconda.org/t/abc-123/private", "https://conda.anaconda.org/t/***/private"},
		{"https://h/t/abc", "https://h/t/***"},
		{"https://bob:pw@h/c", "https://bob:***@h/c"},
		{"https://h/c", "https://h/c"},
		{"redis://:pw@h:6379/0", "redis://:***@h:6379/0"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"50GiB", 50 << 30, true}, {"256MiB", 256 << 20, true}, {"1.5KiB", 1536, true}, {"1024", 1024, true},
		{"10B", 10, true}, {"50GB", 0, false}, {"MiB", 0, false}, {"-1MiB", 0, false}, {"", 0, false},
	}
	for _, tt := range tests {
		var s Size
		err := s.parse(tt.in)
		if (err == nil) != tt.ok || (tt.ok && s != tt.want) {
			t.Errorf("Size(%q) = %d, %v; want %d ok=%v", tt.in, s, err, tt.want, tt.ok)
		}
	}
}

// Scoped tokens read as a plain string or {token, channels}; both print back the
// way they were written, masked.
func TestTokens(t *testing.T) {
	yaml := "auth:\n  tokens: [plain-TOKEN1, {token: scoped-TOKEN2, channels: [c]}]\nchannels:\n  - name: c\n    upstreams: [{url: https://x.invalid/c}]\n  - name: d\n    upstreams: [{url: https://x.invalid/d}]\n"
	cfg, err := Parse("c.yaml", []byte(yaml), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	toks := cfg.Auth.Tokens
	if len(toks) != 2 || toks[0].Token != "plain-TOKEN1" || len(toks[0].Channels) != 0 || toks[1].Token != "scoped-TOKEN2" {
		t.Fatalf("tokens: %+v", toks)
	}
	if !toks[0].Opens("d") || !toks[1].Opens("c") || toks[1].Opens("d") {
		t.Error("Opens is wrong")
	}
	out, err := cfg.Show()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "TOKEN") {
		t.Errorf("config show prints a token:\n%s", out)
	}
	if !strings.Contains(string(out), "- c") {
		t.Errorf("config show lost the scope:\n%s", out)
	}
	// What Show prints parses again: masked tokens are alike, and a token given
	// twice opens what either entry opens.
	if _, err := Parse("shown.yaml", out, env(nil)); err != nil {
		t.Errorf("config show output does not parse: %v\n%s", err, out)
	}
}

// The log redactor masks configured secrets and any /t/<token>/ path wherever a
// log line holds them: message, string attributes, errors, groups, WithAttrs.
func TestRedactingHandler(t *testing.T) {
	yaml := "auth:\n  tokens: [client-SEKRET1]\n  admin_token: admin-SEKRET2\nredis: redis://:redis-SEKRET3@127.0.0.1:6379/0\n" +
		"channels:\n  - name: c\n    upstreams:\n      - url: https://x.invalid/t/up-SEKRET4/c\n        username: u\n        password: pw-SEKRET5\n      - url: https://u:url-SEKRET6@x.invalid/d\n"
	cfg, err := Parse("c.yaml", []byte(yaml), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(NewRedactor(cfg.Secrets()).Handler(slog.NewJSONHandler(&buf, nil)))
	log = log.With("path", "/t/client-SEKRET1/c/x")
	log.Info("got admin-SEKRET2 and pw-SEKRET5",
		"err", errors.New("dial https://x.invalid/t/up-SEKRET4/c: refused; redis-SEKRET3"),
		slog.Group("g", "u", "https://u:url-SEKRET6@x.invalid/d"),
		"guessed", "/t/GUESSED-TOKEN/c/linux-64/repodata.json",
		"list", []string{"client-SEKRET1"})
	// The same secrets escaped, quoted, in a header map, as a URL user name.
	log.Warn("escaped",
		"q", fmt.Sprintf("%q", "/t/client-SEKRET1/x"),
		"enc", "https://u:"+url.QueryEscape("pw-SEKRET5")+"@x.invalid/",
		"hdr", http.Header{"Authorization": {"Bearer client-SEKRET1"}},
		"userinfo", "https://user-SEKRET7@x.invalid/c",
		"unparsable", "https://u:p%zzSEKRET8@x.invalid/")
	if strings.Contains(buf.String(), "SEKRET") || strings.Contains(buf.String(), "GUESSED") {
		t.Errorf("a secret reached the log:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), Mask) {
		t.Errorf("nothing was masked:\n%s", buf.String())
	}
}

// A ${VAR} set but empty is refused where it would leave a key empty: an empty
// admin token would silently turn loopback trust on.
func TestEmptyVariable(t *testing.T) {
	_, err := Parse("c.yaml", []byte("auth:\n  admin_token: \"${EMPTY}\"\n"), env(map[string]string{"EMPTY": ""}))
	if err == nil || !strings.Contains(err.Error(), "c.yaml:2: auth.admin_token: ${EMPTY} expands to an empty value") {
		t.Errorf("got %v", err)
	}
	// Part of a longer value, an empty variable is just text.
	if _, err := Parse("c.yaml", []byte("auth:\n  admin_token: \"adm-${EMPTY}-token\"\n"), env(map[string]string{"EMPTY": ""})); err != nil {
		t.Error(err)
	}
}

// A mirror tool's filter copied as it is: pkg_list with include_dependencies and
// no platforms. The closure runs over the subdirs upstream lists (SPEC "The
// filter, exactly", step 2), so it loads.
func TestIncludeDependenciesWithoutPlatforms(t *testing.T) {
	c, err := Parse("t.yaml", []byte("channels:\n  - name: m\n    upstreams: [{url: https://x.invalid/m}]\n    package_list: [numpy]\n    include_dependencies: true\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	ch := c.Channels[0]
	if !ch.IncludeDependencies || len(ch.PkgList) != 1 || len(ch.Platforms) != 0 {
		t.Errorf("channel = %+v", ch)
	}
}

// public_url is shown to every client (pages, snippets, the start banner): one
// holding credentials is refused, and the refusal does not print them.
func TestPublicURLHoldsNoSecret(t *testing.T) {
	for _, bad := range []string{
		"https://ops:PUBLIC-PASS-9@conda.example.com",
		"https://PUBLIC-USER-9@conda.example.com",
		"https://conda.example.com/t/PUBLIC-TOKEN-9",
		"https://conda.example.com/t/PUBLIC-TOKEN-9/sub",
		"https://conda.example.com/mirror/PUBLIC-TOKEN-9",
		"https://conda.example.com/?token=PUBLIC-QUERY-9",
	} {
		_, err := Parse("c.yaml", []byte("public_url: "+bad+"\nauth:\n  tokens: [PUBLIC-TOKEN-9]\n"), func(string) (string, bool) { return "", false })
		if err == nil || !strings.Contains(err.Error(), "public_url") {
			t.Errorf("%s: %v, want an error naming public_url", bad, err)
			continue
		}
		if strings.Contains(err.Error(), "-9") {
			t.Errorf("the error quotes the secret: %v", err)
		}
	}
	// A path with a "t" segment is only a path (no configured token in it).
	for _, good := range []string{"https://conda.example.com", "http://10.0.0.5:8080/conda/", "https://host/tools/t/conda", "https://host/t/mirror"} {
		if _, err := Parse("c.yaml", []byte("public_url: "+good+"\n"), func(string) (string, bool) { return "", false }); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
}
