package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// channelName allows "conda-forge", "pkgs/main": segments of letters, digits, '.', '_', '-'.
var channelName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$`)

// SubdirPattern is the shape of a conda subdir: "noarch", or platform-arch such as
// "linux-64", "osx-arm64", "emscripten-wasm32". Shared with the request path.
var SubdirPattern = regexp.MustCompile(`^(noarch|[a-z0-9]+-[a-z0-9_]+)$`)

// ValidSubdir reports whether s matches SubdirPattern, without a regexp: it is
// asked on every request (a regexp match was 6% of a hot answer's handler).
func ValidSubdir(s string) bool {
	if s == "noarch" {
		return true
	}
	dash := -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-' && dash < 0:
			dash = i
		case c == '_' && dash >= 0:
		default:
			return false
		}
	}
	return dash > 0 && dash < len(s)-1
}

// KnownSubdirs are the subdirs conda knows (conda's KNOWN_SUBDIRS, and
// emscripten/wasi): a channel with no platforms serves these, not any name a
// client makes up (each would cost an upstream request and state kept for it).
var KnownSubdirs = map[string]bool{
	"noarch": true, "emscripten-wasm32": true, "wasi-wasm32": true, "freebsd-64": true,
	"linux-32": true, "linux-64": true, "linux-aarch64": true, "linux-armv6l": true, "linux-armv7l": true,
	"linux-ppc64": true, "linux-ppc64le": true, "linux-riscv64": true, "linux-s390x": true,
	"osx-64": true, "osx-arm64": true, "win-32": true, "win-64": true, "win-arm64": true, "zos-z": true,
}

var pythonVersion = regexp.MustCompile(`^[0-9]+\.[0-9]+(\.[0-9]+)?$`)

// ReservedPath reports whether a URL path's first segment is one the proxy
// answers itself (the admin API, the page, health, metrics, /t/ tokens).
func ReservedPath(first string) bool { return reservedFirstSegments[first] }

// reservedFirstSegments are URL paths the proxy answers itself; a channel there would be unreachable.
var reservedFirstSegments = map[string]bool{
	"t": true, "api": true, "metrics": true, "healthz": true, "readyz": true, "static": true, "ui": true,
}

func (l *loader) validate(c *Config) error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return l.errKey("listen", "bad address %q: want host:port or :port", c.Listen)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return l.errKey("public_url", "bad URL %q: want http(s)://host[/path]", RedactURL(c.PublicURL))
		}
		// public_url is printed on pages anyone who may read a channel sees, in
		// .condarc snippets and at start: it must hold no secret. A client's
		// credentials are its own (a /t/<token>/ path, a bearer token).
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || holdsSecret(c.PublicURL, c.Secrets()) {
			// Not quoted: the query may be a token.
			return l.errKey("public_url", "holds credentials (user:password@, a configured token), a query or a fragment: it is shown to every client; write the bare address clients use (http(s)://host[/path])")
		}
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return l.errKey("tls", "cert and key go together: set both or neither")
	}
	if c.Cache.MaxSize < 1<<20 {
		return l.errKey("cache.max_size", "%s is too small: at least 1MiB", c.Cache.MaxSize)
	}
	if c.Redis != "" {
		if u, err := url.Parse(c.Redis); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return l.errKey("redis", "bad URL %q: want redis://host:port/db", RedactURL(c.Redis))
		}
	}
	for i, t := range c.Auth.Tokens {
		key := fmt.Sprintf("auth.tokens[%d]", i)
		if t.Token == "" || strings.ContainsAny(t.Token, "/ \t\r\n?#%\"'<>\\") || strings.IndexFunc(t.Token, unicode.IsControl) >= 0 {
			return l.errKey(key, "a token must be non-empty, without '/', '%%', '?', '#', quotes, '<', '>', '\\', control characters or spaces (it goes in /t/<token>/ paths)")
		}
		if t.Scoped && len(t.Channels) == 0 {
			return l.errKey(key, "a token written as {token, channels} must name at least one channel (write it as a plain string to open every channel)")
		}
		for j, name := range t.Channels {
			if c.Channel(name) == nil {
				return l.errKey(fmt.Sprintf("%s.channels[%d]", key, j), "no channel %q is configured", name)
			}
		}
	}
	if c.Storage.Blobs != "" {
		bucket, _, ok := c.Storage.BlobBucket()
		if !ok || bucket == "" || strings.ContainsAny(bucket, " \t?#") {
			return l.errKey("storage.blobs", "bad location %q: want \"\" (local disk) or s3://BUCKET/PREFIX", c.Storage.Blobs)
		}
	}
	if e := c.Storage.S3.Endpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return l.errKey("storage.s3.endpoint", "bad URL %q: want http(s)://host[:port], no credentials (they go in access_key, secret_key)", RedactURL(e))
		}
	}
	if (c.Storage.S3.AccessKey == "") != (c.Storage.S3.SecretKey == "") {
		return l.errKey("storage.s3", "access_key and secret_key go together: set both, or neither for the standard AWS credential chain")
	}
	if c.Limits.MaxRequestHeader < 4<<10 {
		return l.errKey("limits.max_request_header", "%s is too small: conda clients send up to a few KiB; at least 4KiB", c.Limits.MaxRequestHeader)
	}
	if c.Limits.MaxURL < 1<<10 {
		return l.errKey("limits.max_url", "%s is too small: at least 1KiB", c.Limits.MaxURL)
	}
	if c.Limits.MaxRepodata < 1<<20 {
		return l.errKey("limits.max_repodata", "%s is too small: at least 1MiB", c.Limits.MaxRepodata)
	}
	if c.Limits.MaxMetadata < 64<<10 {
		return l.errKey("limits.max_metadata", "%s is too small: at least 64KiB", c.Limits.MaxMetadata)
	}
	if c.Limits.UpstreamIdleTimeout.D() < time.Second {
		return l.errKey("limits.upstream_idle_timeout", "%s is too short: at least 1s", c.Limits.UpstreamIdleTimeout)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return l.errKey("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		return l.errKey("log.format", "%q: want json or text", c.Log.Format)
	}
	if fp := c.ForwardProxy; fp != nil {
		if _, _, err := net.SplitHostPort(fp.Listen); err != nil {
			return l.errKey("forward_proxy.listen", "bad address %q: want host:port or :port", fp.Listen)
		}
		if fp.OtherHosts != "deny" && fp.OtherHosts != "tunnel" {
			return l.errKey("forward_proxy.other_hosts", "%q: want deny or tunnel", fp.OtherHosts)
		}
		if fp.CACert == "" {
			return l.errKey("forward_proxy.ca_cert", "missing: the CA that signs intercepted hosts' certificates (condaproxy ca init writes one)")
		}
		if fp.CAKey == "" {
			return l.errKey("forward_proxy.ca_key", "missing: the CA's key (condaproxy ca init writes one)")
		}
	}
	names := map[string]string{}
	for i := range c.Channels {
		if err := l.validateChannel(c, i, names); err != nil {
			return err
		}
	}
	return nil
}

func (l *loader) validateChannel(c *Config, i int, names map[string]string) error {
	ch := &c.Channels[i]
	key := func(k string) string { return fmt.Sprintf("channels[%d].%s", i, k) }
	if !channelName.MatchString(ch.Name) {
		return l.errKey(key("name"), "bad channel name %q: letters, digits, '.', '_', '-', segments joined by '/'", ch.Name)
	}
	first, _, _ := strings.Cut(ch.Name, "/")
	if reservedFirstSegments[first] {
		return l.errKey(key("name"), "channel name %q starts with %q, a path the proxy answers itself", ch.Name, first)
	}
	for other := range names {
		switch {
		case other == ch.Name:
			return l.errKey(key("name"), "channel %q is defined twice", ch.Name)
		case strings.HasPrefix(other, ch.Name+"/"), strings.HasPrefix(ch.Name, other+"/"):
			// One channel inside another's URL tree would make paths ambiguous.
			return l.errKey(key("name"), "channel %q and channel %q nest inside each other's URL tree", ch.Name, other)
		}
	}
	names[ch.Name] = ch.Name
	switch ch.Kind {
	case KindConda, KindFiles:
	default:
		return l.errKey(key("kind"), "%q: want conda or files", ch.Kind)
	}
	// A conda channel with no upstream serves what `condaproxy import` brought (an
	// air-gapped site); a files channel has nothing to serve without one.
	if len(ch.Upstreams) == 0 && ch.Kind == KindFiles {
		return l.errAt(key("upstreams"), l.lines[fmt.Sprintf("channels[%d]", i)], "channel %q needs at least one upstream", ch.Name)
	}
	for j, up := range ch.Upstreams {
		if err := l.validateUpstream(key(fmt.Sprintf("upstreams[%d]", j)), up); err != nil {
			return err
		}
	}
	if len(ch.PackageList) > 0 {
		if len(ch.PkgList) > 0 {
			return l.errKey(key("package_list"), "pkg_list and its alias package_list are both set: keep one")
		}
		ch.PkgList, ch.PackageList = ch.PackageList, nil
		l.lines[key("pkg_list")] = l.lines[key("package_list")]
		for j := range ch.PkgList {
			l.lines[key(fmt.Sprintf("pkg_list[%d]", j))] = l.lines[key(fmt.Sprintf("package_list[%d]", j))]
		}
	}
	if ch.Kind == KindFiles {
		for _, k := range []struct {
			name string
			set  bool
		}{
			{"platforms", len(ch.Platforms) > 0}, {"python_versions", len(ch.PythonVersions) > 0},
			{"pkg_list", len(ch.PkgList) > 0}, {"include_dependencies", ch.IncludeDependencies},
			{"whitelist", len(ch.Whitelist) > 0}, {"blacklist", len(ch.Blacklist) > 0},
			{"license_blacklist", len(ch.LicenseBlacklist) > 0}, {"exclude_newer", ch.ExcludeNewer != ""},
			{"min_age", ch.MinAge != 0},
		} {
			if k.set {
				return l.errKey(key(k.name), "a kind: files channel has no repodata to filter; remove this key")
			}
		}
	}
	for j, p := range ch.Platforms {
		if !SubdirPattern.MatchString(p) {
			return l.errKey(key(fmt.Sprintf("platforms[%d]", j)), "bad platform %q: want a conda subdir such as linux-64, osx-arm64, win-64, noarch", p)
		}
	}
	for j, v := range ch.PythonVersions {
		if !pythonVersion.MatchString(v) {
			return l.errKey(key(fmt.Sprintf("python_versions[%d]", j)), "bad python version %q: want X.Y such as \"3.11\" (quote it: YAML reads 3.10 as 3.1)", v)
		}
	}
	if ch.ExcludeNewer != "" {
		t, err := parseDate(ch.ExcludeNewer)
		if err != nil {
			return l.errKey(key("exclude_newer"), "bad date %q: want RFC 3339, e.g. 2024-06-01 or 2024-06-01T12:00:00Z", ch.ExcludeNewer)
		}
		ch.ExcludeNewerTime = t
	}
	return nil
}

func parseDate(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Parse("2006-01-02", s)
}

func (l *loader) validateUpstream(key string, up Upstream) error {
	u, err := url.Parse(up.URL)
	if err != nil || up.URL == "" {
		return l.errKey(key+".url", "bad URL %q", RedactURL(up.URL))
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return l.errKey(key+".url", "bad URL %q: no host", RedactURL(up.URL))
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return l.errKey(key+".url", "bad URL %q: a file URL is file:///absolute/path", RedactURL(up.URL))
		}
		if !filepath.IsAbs(u.Path) {
			return l.errKey(key+".url", "bad URL %q: a file URL needs an absolute path", RedactURL(up.URL))
		}
	default:
		return l.errKey(key+".url", "bad URL %q: want http://, https:// or file://", RedactURL(up.URL))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return l.errKey(key+".url", "bad URL %q: a channel URL has no query or fragment", RedactURL(up.URL))
	}
	for j, h := range up.Hosts {
		if h == "" || strings.ContainsAny(h, "/@ \t?#") {
			return l.errKey(fmt.Sprintf("%s.hosts[%d]", key, j), "bad host %q: want a host name, or host:port", h)
		}
	}
	if up.Password != "" && up.Username == "" {
		return l.errKey(key+".password", "a password needs a username")
	}
	return nil
}

// holdsSecret reports whether s holds one of secrets (Config.Secrets: 3
// characters or more), as it is or escaped for a URL path.
func holdsSecret(s string, secrets []string) bool {
	for _, sec := range secrets {
		if strings.Contains(s, sec) || strings.Contains(s, url.PathEscape(sec)) {
			return true
		}
	}
	return false
}
