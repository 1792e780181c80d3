package admin

// The operators' web page.
//
// Server-rendered HTML (html/template, contextual auto-escaping everywhere) with
// its templates and assets embedded by go:embed: no build step, no CDN, no
// external URL of any kind, so it works on an air-gapped site. Every page is
// readable without JavaScript; admin/static/app.js only adds copy buttons and
// live updates of the overview's job list.
//
// It is built on the Backend calls the JSON API uses, and on nothing else.
//
// Routes (all under the same read check as the API, except /static/):
//
//	GET  /                    overview: channels (upstream health, freshness), cache
//	                          size against its limit, hit ratio, bytes by source,
//	                          sync jobs with progress, a form to start a sync
//	GET  /ui/channels/*name   one channel: subdirs, server-side search and paging
//	                          (?subdir=&q=&page=, 50 a page), served/hidden + rule,
//	                          cached, and the .condarc snippets
//	GET  /ui/explain          ?channel=&subdir=&package=: Backend.Explain
//	POST /ui/sync             form: channel (repeatable; none = all conda channels),
//	                          admin_token (in the body, never the URL); 303 to the
//	                          job's page
//	GET  /ui/jobs/:id         one job; refreshes itself every 2 s while it runs
//	GET  /static/*file        CSS and JS, cached for a year (URLs carry a content hash)
//
// Auth. When Options.CanRead rejects a request, the page answers 401 with
// `WWW-Authenticate: Basic realm="condaproxy"`, so the browser asks for the token
// in its own dialog and resends it on every request; the token is the Basic
// password (or the user name when the password is empty). The proxy's CanRead
// knows bearer tokens only, so the Basic credentials are turned into a bearer
// header on a copy of the request before asking it. The admin token also opens
// the page. Tokens never go in a URL, a log line or a page: the .condarc snippets
// carry the literal placeholder <token>.
//
// Writes (POST /ui/sync) pass Options.writeDenial (guard.go), as the API's do:
// they come from this page in a browser (Origin and Sec-Fetch-Site say so, and
// one of them must be there; 403 otherwise), and
// carry the admin token, typed into the form's password field and sent in the
// POST body, or, with no admin token set, come from a browser on the proxy's own
// host that asked for it by a loopback name (http://localhost:PORT/). The pages
// are served with Referrer-Policy: same-origin, so that the browser's form posts
// carry the page's real Origin (under no-referrer they say "null").
//
// No message quotes what the request asked for (admin.go, "Nothing asked is
// quoted"); the forms show their visitor's own input back as typed.
//
// The channels' own URLs (/<channel>/, /<channel>/<subdir>/) have pages for
// browsers too, rendered here but routed by the proxy: dirpages.go.
//
// Note: /ui is the first path segment of these pages, so a channel named "ui"
// would shadow them (the proxy answers channel paths first).

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"math"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// webClock is the page's clock (tests set it).
var webClock = time.Now

// pageSize is the number of records on one page of a channel's search.
const pageSize = 50

// maxJobsShown bounds the overview's job list (newest first).
const maxJobsShown = 20

// asset is one embedded static file.
type asset struct {
	body  []byte
	ctype string
	hash  string // hex sha256, first 16 digits: the cache-busting version and ETag
}

type web struct {
	o      Options
	pages  map[string]*template.Template
	assets map[string]asset
	now    func() time.Time
}

// mountWeb adds the operators' web page at /.
func mountWeb(r *gin.Engine, o Options) {
	w, err := newWeb(o)
	if err != nil {
		panic(err) // the templates are embedded: a parse error is a build bug
	}
	r.GET("/static/*file", w.static)
	ui := r.Group("/")
	ui.Use(w.secureHeaders, w.readGuard)
	ui.GET("/", w.overview)
	ui.GET("/ui/channels/*name", w.channel)
	ui.GET("/ui/explain", w.explain)
	ui.POST("/ui/sync", w.sync)
	ui.GET("/ui/jobs/:id", w.job)
}

func newWeb(o Options) (*web, error) {
	w := &web{o: o, pages: map[string]*template.Template{}, assets: map[string]asset{}, now: webClock}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		w.assets[strings.TrimPrefix(p, "static/")] = asset{body: b, ctype: ct, hash: hex.EncodeToString(sum[:8])}
		return nil
	})
	if err != nil {
		return nil, err
	}
	funcs := template.FuncMap{
		"asset":      w.assetURL,
		"bytes":      humanBytes,
		"pct":        func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + " %" },
		"ago":        w.ago,
		"when":       fmtTime,
		"join":       strings.Join,
		"channelURL": channelURL,
		"explainURL": explainURL,
		"pathEscape": url.PathEscape,
		"jobURL":     func(id string) string { return "/ui/jobs/" + url.PathEscape(id) },
		"plural": func(n int, one, many string) string {
			if n == 1 {
				return "1 " + one
			}
			return strconv.Itoa(n) + " " + many
		},
	}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"overview", "channel", "explain", "job", "message", "dir", "subdir"} {
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		w.pages[name] = t
	}
	return w, nil
}

// --- middleware ------------------------------------------------------------------------

// secureHeaders: pages are live data, maybe behind a token: never cached. The CSP
// allows nothing but this origin's own CSS and JS.
func (w *web) secureHeaders(c *gin.Context) {
	pageHeaders(c.Writer.Header())
	c.Next()
}

// pageHeaders are the headers of every page (secureHeaders; the channel
// directories' pages set a stricter Referrer-Policy on top).
func pageHeaders(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// Not no-referrer: under it a browser sends "Origin: null" on the page's own
	// form posts, and the write guard could not tell them from a sandboxed
	// frame's. same-origin sends nothing to any other site.
	h.Set("Referrer-Policy", "same-origin")
}

// readGuard answers 401 + WWW-Authenticate: Basic when the request may not read.
func (w *web) readGuard(c *gin.Context) {
	if w.canRead(c.Request) {
		c.Next()
		return
	}
	c.Header("WWW-Authenticate", `Basic realm="condaproxy", charset="UTF-8"`)
	w.render(c, http.StatusUnauthorized, "message", message{
		base: base{Title: "Token required"},
		Text: "This proxy requires a token. Reload the page and enter it as the password (the user name is ignored).",
	})
	c.Abort()
}

func (w *web) canRead(r *http.Request) bool {
	if w.o.CanRead == nil {
		return true
	}
	br := withBearer(r, basicToken(r))
	return w.o.CanRead(br) || w.o.hasAdminToken(br)
}

// basicToken is the token of "Authorization: Basic": the password, or the user
// name when the password is empty. "" when the header is not Basic.
func basicToken(r *http.Request) string {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return ""
	}
	if pass != "" {
		return pass
	}
	return user
}

// withBearer returns r itself when tok is "", else a copy of r whose (copied)
// headers say "Authorization: Bearer tok". r is never modified.
func withBearer(r *http.Request, tok string) *http.Request {
	if tok == "" {
		return r
	}
	cp := *r
	cp.Header = r.Header.Clone()
	cp.Header.Set("Authorization", "Bearer "+tok)
	return &cp
}

// --- static files -------------------------------------------------------------------

func (w *web) assetURL(name string) string {
	a, ok := w.assets[name]
	if !ok {
		panic("admin: no static file " + name)
	}
	return "/static/" + name + "?v=" + a.hash
}

func (w *web) static(c *gin.Context) {
	a, ok := w.assets[strings.TrimPrefix(c.Param("file"), "/")]
	if !ok {
		c.String(http.StatusNotFound, "404 not found\n")
		return
	}
	etag := `"` + a.hash + `"`
	h := c.Writer.Header()
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("ETag", etag)
	h.Set("X-Content-Type-Options", "nosniff")
	if c.GetHeader("If-None-Match") == etag {
		c.Status(http.StatusNotModified)
		return
	}
	c.Data(http.StatusOK, a.ctype, a.body)
}

// --- pages ------------------------------------------------------------------------

// base is what the layout needs on every page.
type base struct {
	Title   string
	Refresh int  // seconds; 0: no meta refresh
	Nav     bool // show the link back to the overview
}

type message struct {
	base
	Text string
	Back string // a link, optional
}

func (w *web) render(c *gin.Context, status int, page string, data any) {
	w.renderHTTP(c.Writer, c.Request, status, page, data)
}

// renderHTTP answers page; a HEAD gets its headers only.
func (w *web) renderHTTP(rw http.ResponseWriter, r *http.Request, status int, page string, data any) {
	var buf bytes.Buffer
	h := rw.Header()
	if err := w.pages[page].ExecuteTemplate(&buf, "layout.html", data); err != nil {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		rw.WriteHeader(http.StatusInternalServerError)
		io.WriteString(rw, "template error\n")
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	rw.WriteHeader(status)
	if r.Method != http.MethodHead {
		rw.Write(buf.Bytes())
	}
}

func (w *web) fail(c *gin.Context, status int, title, text string) {
	w.render(c, status, "message", message{base: base{Title: title, Nav: true}, Text: text, Back: "/"})
}

type overviewPage struct {
	base
	Channels   []ChannelInfo
	Conda      []string // the channels a sync can name
	Stats      Stats
	UsedFrac   float64 // cache bytes / limit, 0..1; 0 when no limit
	Sources    []sourceBytes
	Jobs       []Job
	Running    bool
	SyncForm   bool // writes are possible from here
	NeedsToken bool // the form asks for the admin token
}

type sourceBytes struct {
	Source string
	Bytes  int64
}

func (w *web) overview(c *gin.Context) {
	ctx := c.Request.Context()
	b := w.o.Backend
	p := overviewPage{base: base{Title: "condaproxy"}, Channels: b.Channels(ctx), Stats: b.Stats(ctx)}
	for _, ch := range p.Channels {
		if ch.Kind == "" || ch.Kind == "conda" {
			p.Conda = append(p.Conda, ch.Name)
		}
	}
	if p.Stats.CacheLimit > 0 {
		p.UsedFrac = math.Min(1, float64(p.Stats.CacheBytes)/float64(p.Stats.CacheLimit))
	}
	for s, n := range p.Stats.BytesBySource {
		p.Sources = append(p.Sources, sourceBytes{s, n})
	}
	slices.SortFunc(p.Sources, func(a, b sourceBytes) int { return strings.Compare(a.Source, b.Source) })
	p.Jobs = slices.Clone(b.Jobs())
	slices.SortStableFunc(p.Jobs, func(a, b Job) int { return b.Started.Compare(a.Started) })
	if len(p.Jobs) > maxJobsShown {
		p.Jobs = p.Jobs[:maxJobsShown]
	}
	for _, j := range p.Jobs {
		if j.State == "running" {
			p.Running = true
		}
	}
	p.NeedsToken = w.o.AdminToken != ""
	p.SyncForm = w.o.writeFormShown(c.Request)
	w.render(c, http.StatusOK, "overview", p)
}

type channelPage struct {
	base
	Channel ChannelInfo
	Subdirs []string
	Guessed string // why Subdirs is a guess; "" when it is the channel's list
	Subdir  string // the one searched; "" before one is chosen
	Q       string
	Results *PackagePage
	Error   string
	pageNav
	Condarc  string
	TokenRC  string // "" when the proxy has no client tokens
	SyncForm bool
	NeedsTok bool
}

type pageLink struct {
	N       int
	URL     string
	Current bool
	Gap     bool // an ellipsis, no link
}

func (w *web) channel(c *gin.Context) {
	ctx := c.Request.Context()
	name := strings.Trim(c.Param("name"), "/")
	var info *ChannelInfo
	for _, ch := range w.o.Backend.Channels(ctx) {
		if ch.Name == name {
			info = &ch
			break
		}
	}
	if info == nil {
		w.fail(c, http.StatusNotFound, "No such channel", "This proxy has no channel of that name.")
		return
	}
	p := channelPage{base: base{Title: info.Name + " · condaproxy", Nav: true}, Channel: *info}
	if info.Kind != "files" {
		p.Subdirs, p.Guessed = w.channelSubdirs(ctx, info, true)
	}
	base := scheme(c.Request) + "://" + c.Request.Host
	p.Condarc = "channels:\n  - " + base + "/" + info.Name + "\n"
	if w.o.ClientTokens {
		p.TokenRC = "channels:\n  - " + base + "/t/<token>/" + info.Name + "\n"
	}
	p.NeedsTok = w.o.AdminToken != ""
	p.SyncForm = info.Kind != "files" && w.o.writeFormShown(c.Request)

	p.Subdir, p.Q = c.Query("subdir"), strings.TrimSpace(c.Query("q"))
	if p.Subdir == "" || info.Kind == "files" {
		w.render(c, http.StatusOK, "channel", p)
		return
	}
	p.setPage(c.Query("page"))
	res, err := w.o.Backend.Packages(ctx, info.Name, p.Subdir, p.Q, false, p.offset(), pageSize)
	status := http.StatusOK
	if err != nil {
		status = http.StatusBadGateway
		if errors.Is(err, ErrNotFound) {
			status = http.StatusNotFound
		}
		p.Error = err.Error()
		w.render(c, status, "channel", p)
		return
	}
	p.Results = &res
	p.paginate(res, func(n int) string {
		v := url.Values{"subdir": {p.Subdir}}
		if p.Q != "" {
			v.Set("q", p.Q)
		}
		if n > 1 {
			v.Set("page", strconv.Itoa(n))
		}
		return channelURL(info.Name) + "?" + v.Encode()
	})
	w.render(c, status, "channel", p)
}

type explainPage struct {
	base
	Channel, Subdir, Package string
	Subdirs                  []string
	Records                  []Explanation
	Asked                    bool
	Error                    string
}

func (w *web) explain(c *gin.Context) {
	p := explainPage{base: base{Title: "Explain · condaproxy", Nav: true},
		Channel: c.Query("channel"), Subdir: c.Query("subdir"), Package: strings.TrimSpace(c.Query("package"))}
	status := http.StatusOK
	if p.Channel != "" && p.Subdir != "" && p.Package != "" {
		p.Asked = true
		recs, err := w.o.Backend.Explain(c.Request.Context(), p.Channel, p.Subdir, p.Package)
		if err != nil {
			status = http.StatusBadGateway
			if errors.Is(err, ErrNotFound) {
				status = http.StatusNotFound
			}
			p.Error = err.Error()
		}
		p.Records = recs
	}
	w.render(c, status, "explain", p)
}

type jobPage struct {
	base
	Job Job
}

func (w *web) job(c *gin.Context) {
	j, ok := w.o.Backend.Job(c.Param("id"))
	if !ok {
		w.fail(c, http.StatusNotFound, "No such job", "There is no job with that id (jobs are kept in memory and lost on restart).")
		return
	}
	kind := "Sync"
	switch j.Kind {
	case "clean":
		kind = "Clean"
	case "import":
		kind = "Import"
	}
	p := jobPage{base: base{Title: kind + " " + j.ID + " · condaproxy", Nav: true}, Job: j}
	if j.State == "running" {
		p.Refresh = 2 // live progress without JavaScript
	}
	w.render(c, http.StatusOK, "job", p)
}

// sync starts a sync job from the form. The admin token comes from the POST body
// only (PostForm never holds the URL's query).
func (w *web) sync(c *gin.Context) {
	r := c.Request
	if d := browserOnly(r); d != nil {
		w.o.logDenial(r, d)
		w.fail(c, d.status, "Forbidden", d.reason)
		return
	}
	r.Body = http.MaxBytesReader(c.Writer, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		w.fail(c, http.StatusBadRequest, "Bad request", "The form could not be read.")
		return
	}
	wr := r
	if w.o.AdminToken != "" {
		// The token typed into the form. Without one, r is checked as it is: a
		// script may send "Authorization: Bearer <admin token>" itself.
		wr = withBearer(r, r.PostForm.Get("admin_token"))
	}
	if d := w.o.writeDenial(wr); d != nil {
		w.o.logDenial(r, d)
		text := d.reason
		if d.status == http.StatusUnauthorized {
			// Not Basic: the browser would ask for a password the page's reads
			// do not need. A Bearer challenge shows this page instead.
			c.Header("WWW-Authenticate", `Bearer realm="condaproxy admin"`)
			switch {
			case w.o.AdminToken == "":
			case r.PostForm.Get("admin_token") == "" && bearer(r) == "":
				text = "Starting a sync needs the admin token: go back and type it into the form."
			default:
				text = "That is not the admin token: go back and type it again."
			}
		}
		title := "Not allowed"
		if d.status == http.StatusForbidden {
			title = "Forbidden"
		}
		w.fail(c, d.status, title, text)
		return
	}
	var chans []string
	for _, ch := range r.PostForm["channel"] {
		if ch = strings.TrimSpace(ch); ch != "" {
			chans = append(chans, ch)
		}
	}
	j, err := w.o.Backend.StartSync(chans)
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrBusy):
			status = http.StatusConflict
		case errors.Is(err, ErrNotFound):
			status = http.StatusNotFound
		}
		w.fail(c, status, "Sync not started", err.Error())
		return
	}
	c.Redirect(http.StatusSeeOther, "/ui/jobs/"+url.PathEscape(j.ID))
}

// --- helpers ------------------------------------------------------------------------

// channelURL is the page of a channel; each segment of a name with slashes is
// escaped on its own.
func channelURL(name string) string { return "/ui/channels/" + escapeSegments(name) }

func explainURL(channel, subdir, pkg string) string {
	return "/ui/explain?" + url.Values{"channel": {channel}, "subdir": {subdir}, "package": {pkg}}.Encode()
}

// scheme is what a client uses to reach this proxy: https behind TLS or a
// TLS-terminating reverse proxy that says so.
func scheme(r *http.Request) string {
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		return "https"
	}
	return "http"
}

func humanBytes(n int64) string {
	if n < 0 {
		return "—"
	}
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	f, unit := float64(n), 0
	for f >= 1024 && unit < 5 {
		f /= 1024
		unit++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + " " + []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}[unit]
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// ago is a short age: "never", "12 s ago", "5 min ago", "3 h ago", "2 d ago".
func (w *web) ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := w.now().Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d d ago", int(d.Hours()/24))
}
