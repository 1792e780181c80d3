package admin

// Channel directory pages: what a browser gets at a channel's own URL
// (/<channel>/, /<channel>/<subdir>/, the same under /t/<token>/), as from the
// public channel host. The proxy decides which requests are a browser's and
// checks the token (proxy.PagesFunc); this renders them with the web page's
// templates, on the same Backend calls.
//
// Every link is relative, so a /t/<token>/ prefix (or a reverse proxy's path)
// is kept from page to page. The token is shown in one place only: the .condarc
// snippet, which quotes the URL the browser opened, token included, as the
// address bar does. Nothing else of the request is quoted but the visitor's own
// search text, in its field.
//
// Who sees what. A request that may read the admin view (no client tokens are
// set, or its token opens every channel, or it carries the admin token: what
// the admin API and /ui ask) gets it all: hidden records with their rule, the
// cache's state, the upstreams. Any other (a token scoped to some channels,
// which opens this channel's files and nothing more) gets what a conda client
// of the channel gets: the served records, without their cached state, and no
// upstream. Hidden means hidden everywhere.

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxDirQuery bounds the filename filter of a subdir page.
const maxDirQuery = 200

// subdirsWait bounds how long a channel's page waits for its subdir list: with
// no platforms, the list is upstream's channeldata.json, fetched when no copy
// is kept.
var subdirsWait = 10 * time.Second

// ChannelPages returns the renderer of the channel directory pages, for
// proxy.Options.Pages (its type is proxy.PagesFunc): channel's page when subdir
// is "", else subdir's file listing; prefix is the path before /<channel>/ as
// the client wrote it ("" or "/t/<token>"); readAll says whether the request may
// read the admin view (see the top of this file). Nil when o has no Backend.
func ChannelPages(o Options) func(w http.ResponseWriter, r *http.Request, channel, subdir, prefix string, readAll bool) {
	if o.Backend == nil {
		return nil
	}
	o.Backend = newRedacting(o.Backend, append(slices.Clone(o.Secrets), o.AdminToken))
	w, err := newWeb(o)
	if err != nil {
		panic(err) // the templates are embedded: a parse error is a build bug
	}
	return w.dirPage
}

type dirPage struct {
	base
	Channel ChannelInfo
	URL     string   // the channel's URL as the browser reached it
	Subdirs []string // those served, each a link "<subdir>/"
	Guessed string   // why Subdirs is a guess; "" when it is the channel's list
	Condarc string
	AliasRC string // the channel_alias form; "" where it does not fit
	TokenRC string // the /t/<token>/ form, when tokens are set and none was used
}

type subdirPage struct {
	base
	Channel ChannelInfo
	Subdir  string
	URL     string // the channel's URL as the browser reached it
	Q       string
	Results *PackagePage
	Admin   bool // the admin view: hidden records, their rule, the cached state
	Explain bool // the "why?" links reach /ui/explain (no client tokens)
	pageNav
	Repodata []string
}

// repodataFiles are the metadata files of a subdir the proxy serves.
var repodataFiles = []string{"repodata.json", "repodata.json.zst", "repodata.json.bz2", "current_repodata.json", "repodata_shards.msgpack.zst"}

// dirPage is ChannelPages' renderer.
func (w *web) dirPage(rw http.ResponseWriter, r *http.Request, channel, subdir, prefix string, readAll bool) {
	pageHeaders(rw.Header())
	// The page may be below /t/<token>/: no other site hears of its URL.
	rw.Header().Set("Referrer-Policy", "no-referrer")
	ctx := r.Context()
	var info *ChannelInfo
	for _, ch := range w.o.Backend.Channels(ctx) {
		if ch.Name == channel {
			info = &ch
			break
		}
	}
	if info == nil {
		w.dirFail(rw, r, http.StatusNotFound, "404 not found", "This proxy has no channel here.")
		return
	}
	readAll = readAll || w.o.hasAdminToken(r)
	if !readAll {
		info.Upstreams = nil // upstream topology is the admin view's
	}
	chURL := w.origin(r) + prefix + "/" + escapeSegments(info.Name)
	if subdir == "" {
		w.channelDir(rw, r, info, chURL, prefix, readAll)
		return
	}
	if info.Kind == "files" {
		w.dirFail(rw, r, http.StatusNotFound, "404 not found", "A files channel has no subdirs.")
		return
	}
	p := subdirPage{base: base{Title: info.Name + "/" + subdir + " · condaproxy"}, Channel: *info, Subdir: subdir,
		URL: chURL, Repodata: repodataFiles, Admin: readAll, Explain: readAll && !w.o.ClientTokens}
	p.Q = strings.TrimSpace(r.URL.Query().Get("q"))
	if len(p.Q) > maxDirQuery {
		w.dirFail(rw, r, http.StatusBadRequest, "400 bad request",
			"The filename filter is too long (at most "+strconv.Itoa(maxDirQuery)+" characters).")
		return
	}
	p.setPage(r.URL.Query().Get("page"))
	res, err := w.o.Backend.Packages(ctx, info.Name, subdir, p.Q, !readAll, p.offset(), pageSize)
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
			// The answer a conda client gets here, as a page.
			w.dirFail(rw, r, http.StatusNotFound, "404 not found", "This channel does not serve that subdir: "+err.Error()+".")
			return
		}
		text := "Reading the repodata of " + info.Name + "/" + subdir + " from upstream failed, and no cached copy is available"
		if readAll {
			text += ": " + err.Error() // it names the upstream
		} else {
			text += "."
		}
		w.dirFail(rw, r, http.StatusBadGateway, "502 upstream failed", text)
		return
	}
	p.Results = &res
	p.paginate(res, func(n int) string {
		v := url.Values{}
		if p.Q != "" {
			v.Set("q", p.Q)
		}
		if n > 1 {
			v.Set("page", strconv.Itoa(n))
		}
		if len(v) == 0 {
			return "./" // this subdir's own URL, no query
		}
		return "?" + v.Encode()
	})
	w.renderHTTP(rw, r, http.StatusOK, "subdir", p)
}

func (w *web) channelDir(rw http.ResponseWriter, r *http.Request, info *ChannelInfo, chURL, prefix string, readAll bool) {
	p := dirPage{base: base{Title: info.Name + " · condaproxy"}, Channel: *info, URL: chURL}
	if info.Kind != "files" {
		p.Subdirs, p.Guessed = w.channelSubdirs(r.Context(), info, readAll)
		p.Condarc = "channels:\n  - " + chURL + "\n"
		if !strings.Contains(info.Name, "/") {
			// conda resolves a bare name against channel_alias; not a name with
			// '/': pkgs/main and its like are conda's own defaults.
			p.AliasRC = "channel_alias: " + w.origin(r) + prefix + "\nchannels:\n  - " + info.Name + "\n"
		}
		if w.o.ClientTokens && prefix == "" {
			p.TokenRC = "channels:\n  - " + w.origin(r) + "/t/<token>/" + escapeSegments(info.Name) + "\n"
		}
	}
	w.renderHTTP(rw, r, http.StatusOK, "dir", p)
}

// dirFail answers a channel directory's failure as a page.
func (w *web) dirFail(rw http.ResponseWriter, r *http.Request, status int, title, text string) {
	w.renderHTTP(rw, r, status, "message", message{base: base{Title: title}, Text: text})
}

// origin is where clients reach this proxy: public_url when configured (behind
// a reverse proxy that rewrites the Host or serves below a path), else the
// request's scheme and Host.
func (w *web) origin(r *http.Request) string {
	if u := strings.TrimRight(w.o.PublicURL, "/"); u != "" {
		return u
	}
	return scheme(r) + "://" + r.Host
}

// channelSubdirs are a conda channel's subdirs as its pages list them: the
// Backend's list (the proxy's one answer: the platforms, else what upstream's
// channeldata.json lists...), waited for subdirsWait at most. When that fails,
// the Backend's guess (or the platforms and noarch) and why, to show: the
// error itself only to a request that may read the admin view (it may name
// the upstream).
func (w *web) channelSubdirs(ctx context.Context, info *ChannelInfo, readAll bool) (subs []string, guessed string) {
	ctx, cancel := context.WithTimeout(ctx, subdirsWait)
	defer cancel()
	subs, err := w.o.Backend.Subdirs(ctx, info.Name)
	if err == nil {
		return subs, ""
	}
	if len(subs) == 0 {
		subs = []string{"noarch"}
		for _, p := range info.Platforms {
			if p != "noarch" {
				subs = append(subs, p)
			}
		}
	}
	guessed = "Upstream did not say which subdirs this channel has"
	if readAll {
		guessed += " (" + err.Error() + ")"
	}
	return subs, guessed + ": those listed are a guess, and some may answer 404."
}

// escapeSegments escapes each '/'-separated segment of a channel name on its own.
func escapeSegments(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// pageNav is where a page of search results stands, as the "pager" template
// shows it: the page, the rows on it and the links to the others. The channel
// page of /ui and a subdir's directory page both embed it.
type pageNav struct {
	Page       int
	Pages      []pageLink
	Prev, Next string
	First      int // 1-based index of the first row shown; 0 when none
	Last       int
}

// setPage takes the page asked for (the "page" query parameter), bounded.
func (n *pageNav) setPage(q string) {
	n.Page = 1
	if v, err := strconv.Atoi(q); err == nil && v > 1 {
		n.Page = min(v, 1_000_000)
	}
}

// offset is the index of the page's first record, for Backend.Packages.
func (n *pageNav) offset() int { return (n.Page - 1) * pageSize }

// paginate sets the rows res shows and the previous, next and numbered links
// (1 … p-2 p-1 p p+1 p+2 … last), each made by link.
func (n *pageNav) paginate(res PackagePage, link func(int) string) {
	if len(res.Packages) > 0 {
		n.First = n.offset() + 1
		n.Last = n.First + len(res.Packages) - 1
	}
	n.Prev, n.Next, n.Pages = pager(n.Page, (res.Total+pageSize-1)/pageSize, link)
}

// pager makes the previous, next and numbered links of page of pages.
func pager(page, pages int, link func(int) string) (prev, next string, list []pageLink) {
	if page > 1 {
		prev = link(min(page-1, max(pages, 1)))
	}
	if page < pages {
		next = link(page + 1)
	}
	if pages > 1 {
		last := 0
		for n := 1; n <= pages; n++ {
			if n != 1 && n != pages && (n < page-2 || n > page+2) {
				continue
			}
			if last != 0 && n > last+1 {
				list = append(list, pageLink{Gap: true})
			}
			list = append(list, pageLink{N: n, URL: link(n), Current: n == page})
			last = n
		}
	}
	return prev, next, list
}
