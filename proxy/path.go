package proxy

import (
	"net/http"
	"strings"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/repodata"
)

// What a request path names, within a channel.
type kind int

const (
	kindOther       kind = iota
	kindRepodata         // <subdir>/repodata.json[.zst|.bz2], current_repodata.json
	kindShards           // <subdir>/repodata_shards.msgpack.zst, <subdir>/shards/...
	kindPackage          // <subdir>/<name>.conda|.tar.bz2
	kindChannelFile      // channeldata.json, notices.json, <subdir>/run_exports.json, ...
	kindFile             // any path of a kind: files channel
)

func (k kind) String() string {
	return [...]string{"other", "repodata", "shards", "package", "metadata", "file"}[k]
}

// route is a parsed channel request.
type route struct {
	token   string // from /t/<token>/, "" if none
	channel *channel
	kind    kind
	subdir  string
	file    string // the file name within the subdir, or the path within a files channel
	variant string // for kindRepodata: "json", "zst", "bz2", "current"
	// dir says the path names a channel directory (errNotFound for a client:
	// nothing to serve there; a browser gets a page, pages.go).
	dir dirKind
}

// dirKind is the directory a path names, if any.
type dirKind int

const (
	dirNone      dirKind = iota
	dirChannel           // /<channel>/
	dirChannelNS         // /<channel>, no trailing slash
	dirSubdir            // /<channel>/<subdir>/ of a conda channel, subdir well formed
)

// errBadPath answers 400: the request leaves the channel tree or is not a plain path.
var errBadPath = &httpError{status: http.StatusBadRequest, msg: "bad request path"}

// cleanPath checks a request's path before anything looks at it. Refused:
// absolute-form request targets (this is not a forward proxy), encoded '/', '\\'
// or '.', dot segments, empty segments, and control characters. Refusing rather than
// cleaning means no two spellings reach the same file, and nothing reaches outside
// a channel.
func cleanPath(r *http.Request) (string, error) {
	if r.RequestURI != "" && r.RequestURI[0] != '/' {
		return "", errBadPath // "GET http://host/x" or "*"
	}
	// Encoded '/', '\\', '.', NUL or '%': one pass over the path as the client
	// wrote it.
	raw := r.RequestURI
	if raw == "" {
		raw = r.URL.EscapedPath() // a request made in-process
	}
	if q := strings.IndexByte(raw, '?'); q >= 0 {
		raw = raw[:q]
	}
	if strings.IndexByte(raw, '%') >= 0 {
		for i := 0; i+2 < len(raw); i++ {
			if raw[i] != '%' {
				continue
			}
			switch hi, lo := raw[i+1], raw[i+2]|0x20; {
			case hi == '2' && (lo == 'f' || lo == 'e' || lo == '5'), hi == '5' && lo == 'c', hi == '0' && lo == '0':
				return "", errBadPath
			}
		}
	}
	p := r.URL.Path
	if p == "" || p[0] != '/' {
		return "", errBadPath
	}
	// Control characters, backslashes, empty, "." and ".." segments.
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) {
			c := p[i]
			if c < 0x20 || c == 0x7f || c == '\\' {
				return "", errBadPath
			}
			if c != '/' {
				continue
			}
		}
		switch seg := p[segStart:i]; seg {
		case ".", "..":
			return "", errBadPath
		case "":
			if i < len(p) {
				return "", errBadPath // "//"
			}
		}
		segStart = i + 1
	}
	return p, nil
}

// channelFiles are the channel-level files passed through from upstream.
var channelFiles = map[string]bool{
	"channeldata.json": true, "notices.json": true, "run_exports.json": true,
}

// subdirFiles are the subdir-level metadata files passed through from upstream.
var subdirFiles = map[string]bool{
	"run_exports.json": true, "patch_instructions.json": true,
}

// parseRoute maps a clean path to a route. ok is false for paths outside every
// channel (they go to the fallback handler). A path inside a channel that names no
// servable file is errNotFound.
func (s *Server) parseRoute(p string) (rt route, ok bool, err error) {
	if strings.HasPrefix(p, "/t/") {
		tok, rest, found := strings.Cut(p[3:], "/")
		if !found || tok == "" {
			return rt, true, errNotFound
		}
		rt.token, p = tok, "/"+rest
	}
	ch, rest := s.findChannel(p)
	if ch == nil {
		if rt.token != "" {
			return rt, true, errNotFound
		}
		return rt, false, nil
	}
	rt.channel = ch
	if rest == "" {
		rt.dir = dirChannelNS
		if strings.HasSuffix(p, "/") {
			rt.dir = dirChannel
		}
		return rt, true, errNotFound
	}
	if ch.cfg.Kind == config.KindFiles {
		if rest == "" || strings.HasSuffix(rest, "/") {
			return rt, true, errNotFound
		}
		rt.kind, rt.file = kindFile, rest
		return rt, true, nil
	}
	subdir, file, found := strings.Cut(rest, "/")
	if !found {
		if channelFiles[subdir] {
			rt.kind, rt.file = kindChannelFile, subdir
			return rt, true, nil
		}
		return rt, true, errNotFound
	}
	if !config.ValidSubdir(subdir) {
		return rt, true, errNotFound
	}
	rt.subdir = subdir
	if file == "" {
		rt.dir = dirSubdir
		return rt, true, errNotFound
	}
	switch {
	case file == "repodata.json":
		rt.kind, rt.variant = kindRepodata, "json"
	case file == "repodata.json.zst":
		rt.kind, rt.variant = kindRepodata, "zst"
	case file == "repodata.json.bz2":
		rt.kind, rt.variant = kindRepodata, "bz2"
	case file == "current_repodata.json":
		rt.kind, rt.variant = kindRepodata, "current"
	case file == "repodata_shards.msgpack.zst", strings.HasPrefix(file, "shards/"):
		rt.kind = kindShards
	case subdirFiles[file]:
		rt.kind = kindChannelFile
	case repodata.ValidFilename(file):
		rt.kind = kindPackage
	default:
		return rt, true, errNotFound
	}
	rt.file = file
	return rt, true, nil
}

// findChannel returns the channel whose URL tree holds p, and the rest of p below it.
// Channel names never nest (config refuses it), so at most one matches.
func (s *Server) findChannel(p string) (*channel, string) {
	// p is "/name/rest": try each prefix of p that ends before a '/'.
	for i := 1; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		if ch, ok := s.channels[p[1:i]]; ok {
			return ch, p[i+1:]
		}
	}
	if ch, ok := s.channels[p[1:]]; ok {
		return ch, ""
	}
	return nil, ""
}
