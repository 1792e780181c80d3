package proxy

// Pages for people: a browser that opens a channel directory (/<channel>/,
// /<channel>/<subdir>/, the same under /t/<token>/) gets a page, as from the
// public channel host, instead of the 404 every conda client gets there.
//
// The proxy only routes: it decides that a request is a browser's (Accept
// prefers text/html), after the token check and for GET and HEAD only, and hands
// it to Options.Pages, which package admin renders. Everything else, and every
// request of a conda client (they send Accept: */*, application/json or none),
// gets exactly what it got before pages existed.

import (
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// PagesFunc renders a channel directory for a browser: the channel's page when
// subdir is "", else the listing of that subdir (which it answers 404 when the
// channel does not serve it). prefix is the path before /<channel>/ exactly as
// the client wrote it: "" or "/t/<token>". The proxy has set Vary, and for a
// token path Cache-Control: no-store and Referrer-Policy: no-referrer, before it
// is called; a HEAD must get the headers only.
//
// readAll says whether the request may read what the admin API shows (hidden
// records and their rules, the cache's state, the upstreams): no client tokens
// are set, or its token opens every channel, as CanRead asks. A token scoped to
// some channels opens this channel's files, not that view.
type PagesFunc func(w http.ResponseWriter, r *http.Request, channel, subdir, prefix string, readAll bool)

// wantsHTML reports whether the Accept header prefers text/html: it names
// text/html itself (not text/* or */*) with a quality above 0 and at least that
// of every other type listed. A browser's navigation does; conda, mamba, pixi
// and rattler send */*, application/json or nothing, and do not.
func wantsHTML(h http.Header) bool {
	html, best := -1.0, 0.0
	for _, v := range h.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if s, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && f <= 1 {
					q = f
				} else {
					continue
				}
			}
			if mt == "text/html" {
				html = max(html, q)
			} else {
				best = max(best, q)
			}
		}
	}
	return html > 0 && html >= best
}

// pageRoute reports whether the answer to rt, whose parse said errNotFound,
// is a page: a channel directory asked for by a browser, with GET or HEAD.
func (s *Server) pageRoute(r *http.Request, rt route) bool {
	return s.pages != nil && rt.dir != dirNone && rt.channel != nil &&
		(r.Method == http.MethodGet || r.Method == http.MethodHead) && wantsHTML(r.Header)
}

// servePage answers a browser's request of a channel directory. The token has
// been checked.
func (s *Server) servePage(w http.ResponseWriter, r *http.Request, rt route) {
	h := w.Header()
	h.Add("Vary", "Accept")
	// The path as the client wrote it: cleanPath refused encoded '/', so its
	// slashes are those of the decoded path.
	raw := r.URL.EscapedPath()
	prefix := ""
	if rt.token != "" {
		// The token is in the URL: no cache keeps the page, no other site hears
		// of the URL through a Referer.
		h.Set("Cache-Control", "no-store")
		h.Set("Referrer-Policy", "no-referrer")
		if i := strings.IndexByte(raw[len("/t/"):], '/'); i >= 0 {
			prefix = raw[:len("/t/")+i]
		}
	}
	if rt.dir == dirChannelNS {
		// Relative, so a /t/<token>/ prefix (or a reverse proxy's path) is kept:
		// "main/" from /pkgs/main.
		h.Set("Location", raw[strings.LastIndexByte(raw, '/')+1:]+"/")
		if h.Get("Cache-Control") == "" {
			h.Set("Cache-Control", "no-cache")
		}
		w.WriteHeader(http.StatusMovedPermanently)
		return
	}
	sub := ""
	if rt.dir == dirSubdir {
		sub = rt.subdir
	}
	// The same token that opened the channel (the path's, else the bearer's),
	// asked to open every channel: CanRead's question.
	readAll := s.authorize(r, rt.token, nil) == nil
	s.pages(w, r, rt.channel.cfg.Name, sub, prefix, readAll)
}
