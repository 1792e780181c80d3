package upstream

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/condaproxy/condaproxy/config"
)

// ErrBadPath is a path the proxy was asked to fetch that is not a plain relative
// path below the upstream (empty, absolute, with '.', '..', '\' or control bytes).
// It comes from a client or a repodata document, never from the upstream itself.
var ErrBadPath = errors.New("not a path below the upstream")

// ErrRefused is a URL outside what an upstream may reach: another host than its own
// and its configured Hosts, another scheme, an https→http downgrade, or a file://
// path outside its tree. A hostile repodata names such URLs in base_url.
var ErrRefused = errors.New("refused")

// Source is one upstream of a channel.
type Source struct {
	Base     *url.URL
	Username string
	Password string
	// Hosts are the other hosts (host or host:port) a CEP-15 base_url of this
	// upstream may send package downloads to, such as a CDN.
	Hosts []string
}

// NewSource parses a configured upstream.
func NewSource(u config.Upstream) (Source, error) {
	base, err := url.Parse(strings.TrimRight(u.URL, "/"))
	if err != nil {
		// url.Parse's error quotes the URL, token and all: name it redacted instead.
		return Source{}, fmt.Errorf("upstream %s: not a URL", config.RedactURL(u.URL))
	}
	switch base.Scheme {
	case "http", "https":
		if base.Host == "" {
			return Source{}, fmt.Errorf("upstream %s: no host", config.RedactURL(u.URL))
		}
	case "file":
	default:
		return Source{}, fmt.Errorf("upstream %s: want http://, https:// or file://", config.RedactURL(u.URL))
	}
	base.RawQuery, base.ForceQuery, base.Fragment, base.RawFragment = "", false, "", ""
	return Source{Base: base, Username: u.Username, Password: u.Password,
		Hosts: append([]string(nil), u.Hosts...)}, nil
}

// credentials are the configured username and password, else those of the URL's
// user:password@.
func (s Source) credentials() (user, pass string, ok bool) {
	if s.Username != "" {
		return s.Username, s.Password, true
	}
	if s.Base != nil && s.Base.User != nil {
		pass, _ := s.Base.User.Password()
		return s.Base.User.Username(), pass, true
	}
	return "", "", false
}

// String is the redacted base URL.
func (s Source) String() string {
	if s.Base == nil {
		return "(no upstream)"
	}
	return config.RedactURL(s.Base.String())
}

// Resolve returns the URL of rel, a slash-separated path below the base. rel is a
// name, never a URL: "file:/etc/x" is the three segments "file:", "etc" and "x"
// below the base, and '?', '#' and '%' are escaped as part of a name. Anything that
// could climb out (empty segments, ".", "..", '\') is ErrBadPath.
func (s Source) Resolve(rel string) (*url.URL, error) {
	if s.Base == nil {
		return nil, fmt.Errorf("path %q: no upstream: %w", rel, ErrBadPath)
	}
	return Join(s.Base, rel)
}

// Join returns the URL of rel below the directory dir (with or without a trailing
// '/'), with Resolve's rules for rel. The proxy joins package filenames onto a
// PackageBase with it.
func Join(dir *url.URL, rel string) (*url.URL, error) {
	if dir == nil {
		return nil, fmt.Errorf("path %q: no base URL: %w", rel, ErrBadPath)
	}
	if err := checkRel(rel); err != nil {
		return nil, err
	}
	segs := strings.Split(rel, "/")
	escaped := make([]string, len(segs))
	for i, s := range segs {
		escaped[i] = url.PathEscape(s)
	}
	u := *dir
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", false, "", ""
	u.Path = strings.TrimRight(dir.Path, "/") + "/" + rel
	// Joined on the escaped form too, so that an escaped '/' in the base stays one.
	u.RawPath = strings.TrimRight(dir.EscapedPath(), "/") + "/" + strings.Join(escaped, "/")
	return &u, nil
}

// checkRel refuses what is not a plain relative slash path.
func checkRel(rel string) error {
	bad := func(why string) error { return fmt.Errorf("path %q: %s: %w", rel, why, ErrBadPath) }
	if rel == "" {
		return bad("empty")
	}
	for _, seg := range strings.Split(rel, "/") {
		switch seg {
		case "":
			return bad("empty segment")
		case ".", "..":
			return bad("dot segment")
		}
	}
	for _, r := range rel {
		if r == '\\' {
			return bad("backslash")
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return bad("control character")
		}
	}
	return nil
}

// PackageBase returns the directory URL (ending in '/') where this upstream keeps
// subdir's packages: the repodata's CEP-15 base_url, resolved against
// <base>/<subdir>/repodata.json, or <base>/<subdir>/ when baseURL is empty. A
// base_url that Allows refuses is ErrRefused: the caller may fall back to the
// default.
func (s Source) PackageBase(subdir, baseURL string) (*url.URL, error) {
	dir, err := s.Resolve(subdir)
	if err != nil {
		return nil, err
	}
	if baseURL == "" {
		dir.Path += "/"
		dir.RawPath += "/"
		return dir, nil
	}
	refuse := func(why string) error {
		return fmt.Errorf("upstream %s: %s base_url %q %s: %w", s, subdir, config.RedactURL(baseURL), why, ErrRefused)
	}
	ref, err := url.Parse(baseURL)
	switch {
	case err != nil:
		return nil, refuse("is not a URL")
	case ref.RawQuery != "" || ref.ForceQuery || ref.Fragment != "":
		return nil, refuse("has a query or fragment")
	case ref.User != nil:
		return nil, refuse("carries credentials")
	case ref.Opaque != "":
		return nil, refuse("is not a hierarchical URL")
	}
	repodata, err := Join(dir, "repodata.json")
	if err != nil {
		return nil, err
	}
	u := repodata.ResolveReference(ref)
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	if err := s.Allows(u); err != nil {
		return nil, err
	}
	return u, nil
}

// Allows says whether this upstream may fetch u: http(s) to its own host or one of
// its Hosts, never downgrading https to http; file:// only below its own file://
// tree. The error names u, redacted, and wraps ErrRefused.
func (s Source) Allows(u *url.URL) error {
	if u == nil {
		return fmt.Errorf("no URL: %w", ErrRefused)
	}
	refuse := func(why string) error {
		return fmt.Errorf("upstream %s: %s %s: %w", s, config.RedactURL(u.String()), why, ErrRefused)
	}
	if s.Base == nil {
		return refuse("has no upstream to belong to")
	}
	if u.Opaque != "" {
		return refuse("is not a hierarchical URL")
	}
	switch u.Scheme {
	case "http", "https":
		switch {
		case s.Base.Scheme != "http" && s.Base.Scheme != "https":
			return refuse("is not on the upstream's scheme")
		case s.Base.Scheme == "https" && u.Scheme == "http":
			return refuse("would downgrade https to http")
		case u.Host == "":
			return refuse("has no host")
		case s.ownHost(u):
			return nil
		}
		for _, h := range s.Hosts {
			if sameHost(u, h) {
				return nil
			}
		}
		return refuse("is on a host the upstream may not send the proxy to (upstream hosts)")
	case "file":
		if s.Base.Scheme != "file" {
			return refuse("is not on the upstream's scheme")
		}
		if !localHost(u.Host) {
			return refuse("names a remote host")
		}
		root := path.Clean("/" + s.Base.Path)
		p := path.Clean("/" + u.Path)
		if p != root && !strings.HasPrefix(p, strings.TrimSuffix(root, "/")+"/") {
			return refuse("is outside the upstream's directory")
		}
		return nil
	default:
		return refuse("is not http, https or file")
	}
}

// ownHost says whether u is on the upstream's own host, the only one that gets its
// credentials.
func (s Source) ownHost(u *url.URL) bool { return s.Base != nil && onHostOf(u, s.Base) }

// onHostOf says whether u is on base's host. A base on its scheme's default port
// matches the default port of u's scheme, so an http upstream may move to https on
// the same host.
func onHostOf(u, base *url.URL) bool {
	if base.Host == "" {
		return false
	}
	host := base.Host
	if p := base.Port(); p != "" && p == defaultPort(base.Scheme) {
		host = base.Hostname()
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
	}
	return sameHost(u, host)
}

func localHost(h string) bool { return h == "" || strings.EqualFold(h, "localhost") }

// sameHost compares u's host:port with hostport (host, or host:port), ignoring case
// and a trailing dot; a missing port is the default port of u's scheme.
func sameHost(u *url.URL, hostport string) bool {
	want := &url.URL{Host: hostport}
	wantPort := want.Port()
	if wantPort == "" {
		wantPort = defaultPort(u.Scheme)
	}
	gotPort := u.Port()
	if gotPort == "" {
		gotPort = defaultPort(u.Scheme)
	}
	return gotPort == wantPort && canonicalName(u.Hostname()) == canonicalName(want.Hostname())
}

func canonicalName(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

func defaultPort(scheme string) string {
	switch scheme {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

// hostKey names u's host for throttling and metrics: lower case, with its port only
// when it is not the scheme's default.
func hostKey(u *url.URL) string {
	name := canonicalName(u.Hostname())
	if strings.Contains(name, ":") {
		name = "[" + name + "]"
	}
	if p := u.Port(); p != "" && p != defaultPort(u.Scheme) {
		return name + ":" + p
	}
	return name
}
