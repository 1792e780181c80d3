// Package config reads, validates and prints condaproxy's configuration file.
//
// The file is YAML. It is checked once, at start, and every problem is reported as
// "FILE:LINE: KEY: what is wrong", so an operator can fix it without reading code.
// Unknown keys are errors (a misspelt key that is silently ignored is a rule that does
// not hold). The package never touches the network or the data directory.
package config

import (
	"fmt"
	"strings"
	"time"
)

// Config is the whole configuration file, defaults filled in.
type Config struct {
	Listen    string `yaml:"listen"`
	Data      string `yaml:"data"`
	PublicURL string `yaml:"public_url"`
	TLS       TLS    `yaml:"tls"`
	Cache     Cache  `yaml:"cache"`
	// Redis is a redis:// URL; when set, several replicas share fill locks,
	// repodata freshness and purge events.
	Redis    string    `yaml:"redis" secret:"url"`
	Storage  Storage   `yaml:"storage"`
	Auth     Auth      `yaml:"auth"`
	Limits   Limits    `yaml:"limits"`
	Log      Log       `yaml:"log"`
	Channels []Channel `yaml:"channels"`
	// ForwardProxy is the optional HTTPS_PROXY-style listener.
	ForwardProxy *ForwardProxy `yaml:"forward_proxy,omitempty"`

	// Source names where this configuration came from (a path, or "embedded default"),
	// for messages.
	Source string `yaml:"-"`
	// lines maps each key's dotted path to its line, for errors found after loading.
	lines map[string]int
}

// Errorf reports a problem with key, located at the key's line in the file. Packages
// that compile parts of the configuration (the filter rules) use it so their errors
// read like the loader's.
func (c *Config) Errorf(key, format string, args ...any) error {
	return &Error{File: c.Source, Line: c.lines[key], Key: key, Msg: fmt.Sprintf(format, args...)}
}

// TLS makes serve answer HTTPS directly.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Cache sizes the stores and sets how long metadata is trusted.
type Cache struct {
	MaxSize     Size     `yaml:"max_size"`
	Memory      Size     `yaml:"memory"`
	MetadataTTL Duration `yaml:"metadata_ttl"`
	NegativeTTL Duration `yaml:"negative_ttl"`
	KeepRemoved bool     `yaml:"keep_removed"`
}

// Storage says where package blobs live: on local disk (Blobs "", under data), or
// in an S3-compatible object store shared by several replicas (s3://BUCKET/PREFIX),
// each replica keeping a local tier of hot files in its own data directory.
type Storage struct {
	Blobs string `yaml:"blobs"`
	S3    S3     `yaml:"s3"`
}

// S3 configures the object store of storage.blobs: s3://...
type S3 struct {
	Endpoint  string `yaml:"endpoint"` // "" = AWS's own
	Region    string `yaml:"region"`
	AccessKey string `yaml:"access_key" secret:"all"` // "" = the standard AWS credential chain
	SecretKey string `yaml:"secret_key" secret:"all"`
	PathStyle bool   `yaml:"path_style"`
}

// BlobBucket returns the bucket and prefix of storage.blobs, ok false when blobs
// stay on local disk.
func (s Storage) BlobBucket() (bucket, prefix string, ok bool) {
	rest, found := strings.CutPrefix(s.Blobs, "s3://")
	if !found {
		return "", "", false
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	return bucket, strings.Trim(prefix, "/"), true
}

// Auth holds client and admin tokens.
type Auth struct {
	Tokens     []Token `yaml:"tokens"`
	AdminToken string  `yaml:"admin_token" secret:"all"`
}

// Token is one client token. Written as a plain string it opens every channel;
// written as {token, channels} it opens only the channels it names. A token
// listed twice opens what either entry opens.
type Token struct {
	Token    string   `yaml:"token" secret:"all"`
	Channels []string `yaml:"channels,omitempty"`
	// Scoped is set for the {token, channels} form: it opens only what Channels
	// names, and an empty list is a configuration error, never "every channel".
	Scoped bool `yaml:"-"`
}

// Opens reports whether the token may read channel.
func (t Token) Opens(channel string) bool {
	if !t.Scoped {
		return true
	}
	for _, c := range t.Channels {
		if c == channel {
			return true
		}
	}
	return false
}

// Limits bound what untrusted peers can make the proxy hold or wait for. Each
// has a default well above what real channels and conda clients need.
type Limits struct {
	// UpstreamIdleTimeout fails an upstream transfer that sends nothing for this
	// long: a stalled upstream must not hold a fill, and every client joined to it.
	UpstreamIdleTimeout Duration `yaml:"upstream_idle_timeout"`
	// MaxRepodata bounds one upstream repodata document once decoded (json, zst,
	// bz2), in the proxy and in imported tars.
	MaxRepodata Size `yaml:"max_repodata"`
	// MaxMetadata bounds the other metadata files: run_exports.json,
	// channeldata.json, notices.json, patch_instructions.json.
	MaxMetadata Size `yaml:"max_metadata"`
	// MaxRequestHeader bounds a client request's header lines (431 past it).
	MaxRequestHeader Size `yaml:"max_request_header"`
	// MaxURL bounds a client request's target (414 past it).
	MaxURL Size `yaml:"max_url"`
}

// Log sets the structured log output.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json, text
}

// Channel is one served channel: a conda channel (kind "conda", the default) or a
// plain pull-through file tree (kind "files").
type Channel struct {
	Name      string     `yaml:"name"`
	Kind      string     `yaml:"kind"`
	Upstreams []Upstream `yaml:"upstreams"`

	// The filter keys carry the names of the Anaconda mirror tools.
	Platforms           []string `yaml:"platforms"`
	PythonVersions      []string `yaml:"python_versions"`
	PkgList             []string `yaml:"pkg_list"`
	PackageList         []string `yaml:"package_list,omitempty"` // alias of pkg_list, merged at load
	IncludeDependencies bool     `yaml:"include_dependencies"`
	Whitelist           []string `yaml:"whitelist"`
	Blacklist           []string `yaml:"blacklist"`
	LicenseBlacklist    []string `yaml:"license_blacklist"`
	ExcludeNewer        string   `yaml:"exclude_newer"`
	MinAge              Duration `yaml:"min_age"`

	// ExcludeNewerTime is ExcludeNewer parsed; zero when unset.
	ExcludeNewerTime time.Time `yaml:"-"`
}

// Channel kinds.
const (
	KindConda = "conda"
	KindFiles = "files"
)

// Upstream is one source of a channel. Its URL may carry an anaconda.org token
// (/t/<token>/) or user:password@; both are secrets and never printed.
type Upstream struct {
	URL      string `yaml:"url" secret:"url"`
	Username string `yaml:"username,omitempty"`
	Password string `yaml:"password,omitempty" secret:"all"`
	// Hosts are other hosts this upstream's repodata may send package downloads
	// to through a CEP-15 base_url (a CDN). Any other host a document names is
	// refused: a hostile repodata must not steer the proxy.
	Hosts []string `yaml:"hosts,omitempty"`
}

// ForwardProxy configures the HTTPS_PROXY-style listener.
type ForwardProxy struct {
	Listen     string `yaml:"listen"`
	CACert     string `yaml:"ca_cert"`
	CAKey      string `yaml:"ca_key"`
	OtherHosts string `yaml:"other_hosts"` // deny | tunnel
}

// Defaults, documented in SPEC "Configuration file".
const (
	DefaultListen      = ":8080"
	DefaultData        = "./condaproxy-data"
	DefaultMaxSize     = 50 << 30
	DefaultMemory      = 256 << 20
	DefaultMetadataTTL = 10 * time.Minute
	DefaultNegativeTTL = time.Minute

	DefaultUpstreamIdleTimeout = 30 * time.Second
	DefaultMaxRepodata         = 2 << 30
	DefaultMaxMetadata         = 256 << 20
	DefaultMaxRequestHeader    = 16 << 10
	DefaultMaxURL              = 8 << 10
)

func (c *Config) fillDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Data == "" {
		c.Data = DefaultData
	}
	if c.Cache.MaxSize == 0 {
		c.Cache.MaxSize = DefaultMaxSize
	}
	if c.Cache.Memory == 0 {
		c.Cache.Memory = DefaultMemory
	}
	if c.Cache.MetadataTTL == 0 {
		c.Cache.MetadataTTL = Duration(DefaultMetadataTTL)
	}
	if c.Cache.NegativeTTL == 0 {
		c.Cache.NegativeTTL = Duration(DefaultNegativeTTL)
	}
	if c.Limits.UpstreamIdleTimeout == 0 {
		c.Limits.UpstreamIdleTimeout = Duration(DefaultUpstreamIdleTimeout)
	}
	if c.Limits.MaxRepodata == 0 {
		c.Limits.MaxRepodata = DefaultMaxRepodata
	}
	if c.Limits.MaxMetadata == 0 {
		c.Limits.MaxMetadata = DefaultMaxMetadata
	}
	if c.Limits.MaxRequestHeader == 0 {
		c.Limits.MaxRequestHeader = DefaultMaxRequestHeader
	}
	if c.Limits.MaxURL == 0 {
		c.Limits.MaxURL = DefaultMaxURL
	}
	if c.Storage.S3.Region == "" {
		c.Storage.S3.Region = "us-east-1"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	for i := range c.Channels {
		ch := &c.Channels[i]
		if ch.Kind == "" {
			ch.Kind = KindConda
		}
	}
	if fp := c.ForwardProxy; fp != nil && fp.OtherHosts == "" {
		fp.OtherHosts = "deny"
	}
}

// Channel returns the channel called name, or nil.
func (c *Config) Channel(name string) *Channel {
	for i := range c.Channels {
		if c.Channels[i].Name == name {
			return &c.Channels[i]
		}
	}
	return nil
}

// Error is a configuration problem, located in the file.
type Error struct {
	File string
	Line int    // 0 when the problem has no single line (a missing key)
	Key  string // dotted path, e.g. channels[0].upstreams[1].url
	Msg  string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", loc, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
}
