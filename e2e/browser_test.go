package e2e

// The operators' web page in a real browser: Debian's headless Chromium
// (/usr/bin/chromium, installed by .ci/run) driven by chromedp, against the real
// binary (built by TestMain) whose upstream is the testdata channel.
//
// Everything is on 127.0.0.1; Chromium runs with the flags this machine needs
// (no background networking, no QUIC, no component updates, a fresh profile).
// Artifacts: e2e/artifacts/ui.png (the channel page), overview.png and job.png; with
// UPDATE_SCREENSHOT=1, ui.png is also copied to docs/screenshot.png, the
// README's screenshot.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"

	"github.com/condaproxy/condaproxy/internal/testdata"
)

const chromiumPath = "/usr/bin/chromium"

// browserTimeout bounds each browser test as a whole.
const browserTimeout = 90 * time.Second

// requireChromium skips on a developer machine without Chromium and fails in CI
// (CI set), which must run the test.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		testdata.Skipf(t, testdata.Browser, "%s is missing: the browser test needs Debian's chromium (make deps-system)", chromiumPath)
	}
}

// newBrowser starts a headless Chromium for the test and returns its tab's
// context; everything ends with ctx or at cleanup.
func newBrowser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	var out testdata.Buffer
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("no-proxy-server", true), // 127.0.0.1 directly, whatever the environment says
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.WSURLReadTimeout(30*time.Second),
		chromedp.CombinedOutput(&out),
	)
	bctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
	// Start it now, so a browser that cannot start fails here, clearly.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v\n%s", chromiumPath, err, out.String())
	}
	return bctx
}

// resultRow is one row of the channel page's results table, as the browser shows it.
type resultRow struct {
	Filename string `json:"filename"`
	State    string `json:"state"`
	Badge    string `json:"badge"`
	Rule     string `json:"rule"`
	Cached   string `json:"cached"`
	Why      string `json:"why"`
}

const readRows = `Array.from(document.querySelectorAll('#results tbody tr')).map(tr => ({
	filename: tr.dataset.filename,
	state: tr.dataset.state,
	badge: tr.querySelector('td.state .badge').innerText.trim(),
	rule: (tr.querySelector('td.state .rule') || {innerText: ''}).innerText.trim(),
	cached: tr.querySelector('td.cached').innerText.trim(),
	why: (tr.querySelector('td.state a.why') || {href: ''}).href,
}))`

func rowsByFile(rows []resultRow) map[string]resultRow {
	m := map[string]resultRow{}
	for _, r := range rows {
		m[r.Filename] = r
	}
	return m
}

// watchConsole records the page's console errors, exceptions and CSP violations.
func watchConsole(t *testing.T, bctx context.Context) func() []string {
	t.Helper()
	var mu sync.Mutex
	var bad []string
	msgs := chromedp.Console(bctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError || strings.Contains(m.Text, "Content Security Policy") {
				mu.Lock()
				bad = append(bad, m.String())
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), bad...)
	}
}

func saveArtifact(t *testing.T, name string, png []byte) {
	t.Helper()
	if err := os.MkdirAll("artifacts", 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join("artifacts", name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(p)
	t.Logf("screenshot: %s (%d bytes)", abs, len(png))
}

func TestBrowserOperatorsPage(t *testing.T) {
	requireChromium(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), browserTimeout)
	defer cancel()

	up := startUpstreamDir(t, testdata.Path(t, "conda_format_repo"), "linux-64")
	px := startProxy(t, ctx, up.srv.URL, "    platforms: [linux-64]\n    license_blacklist: [GPL]\n")
	// Some traffic first, so the page has something to show: the linux-64
	// repodata twice (a miss, then a hit) and one package, which is then cached.
	for range 2 {
		if code, body := get(t, ctx, px.base+"/anaconda/linux-64/repodata.json"); code != http.StatusOK {
			t.Fatalf("repodata: %d %s", code, body)
		}
	}
	const cachedFile = "zlib-1.2.11-h7b6447c_3.conda"
	if code, _ := get(t, ctx, px.base+"/anaconda/linux-64/"+cachedFile); code != http.StatusOK {
		t.Fatalf("GET %s: %d", cachedFile, code)
	}

	bctx := newBrowser(t, ctx)
	consoleErrors := watchConsole(t, bctx)

	// The overview: the channel, its health, the cache.
	if err := chromedp.Do(bctx,
		chromedp.Navigate(px.base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#channels tr[data-channel="anaconda"]`)),
	); err != nil {
		t.Fatalf("overview: %v", err)
	}
	overview, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"anaconda", "Cache size", "Hit ratio", "Sync jobs", strings.TrimPrefix(up.srv.URL, "http://")} {
		if !strings.Contains(strings.ToLower(overview), strings.ToLower(want)) { // innerText follows text-transform
			t.Errorf("the overview lacks %q:\n%s", want, overview)
		}
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveArtifact(t, "overview.png", png)

	// To the channel page, by its link.
	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`#channels a[href="/ui/channels/anaconda"]`)),
		chromedp.WaitVisible(chromedp.ID("search")),
	); err != nil {
		t.Fatalf("channel page: %v", err)
	}
	snippet, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#condarc pre")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(snippet, px.base+"/anaconda") {
		t.Errorf(".condarc snippet %q lacks %s/anaconda", snippet, px.base)
	}

	// Search libgcc in linux-64: hidden, by the license rule.
	if err := chromedp.Do(bctx,
		chromedp.SetValue(chromedp.ID("subdir"), "linux-64"),
		chromedp.SendKeys(chromedp.ID("q"), "libgcc"),
		chromedp.Submit(chromedp.ID("q")),
		chromedp.WaitVisible(chromedp.CSS(`#results tr[data-filename^="libgcc-ng"]`)),
	); err != nil {
		t.Fatalf("search libgcc: %v", err)
	}
	loc, _ := chromedp.Run(bctx, chromedp.Location())
	if !strings.Contains(loc, "q=libgcc") || !strings.Contains(loc, "subdir=linux-64") {
		t.Errorf("search URL %s: want subdir=linux-64 and q=libgcc", loc)
	}
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[[]resultRow](readRows))
	if err != nil {
		t.Fatal(err)
	}
	lib, ok := rowsByFile(rows)["libgcc-ng-8.2.0-hdf63c60_1.tar.bz2"]
	if !ok || len(rows) != 1 {
		t.Fatalf("libgcc search: rows %+v, want libgcc-ng-8.2.0-hdf63c60_1.tar.bz2 alone", rows)
	}
	if lib.State != "hidden" || lib.Badge != "hidden" || lib.Rule != "license_blacklist: GPL" {
		t.Errorf("libgcc-ng: %+v, want hidden by license_blacklist: GPL", lib)
	}
	if !strings.Contains(lib.Why, "/ui/explain?") {
		t.Errorf("libgcc-ng has no explain link: %+v", lib)
	}

	// Search zlib: served; the .conda fetched above is cached, the .tar.bz2 not.
	if err := chromedp.Do(bctx,
		chromedp.Clear(chromedp.ID("q")),
		chromedp.SendKeys(chromedp.ID("q"), "zlib"),
		chromedp.Submit(chromedp.ID("q")),
		chromedp.WaitVisible(chromedp.CSS(`#results tr[data-filename^="zlib"]`)),
	); err != nil {
		t.Fatalf("search zlib: %v", err)
	}
	rows, err = chromedp.Run(bctx, chromedp.Evaluate[[]resultRow](readRows))
	if err != nil {
		t.Fatal(err)
	}
	byFile := rowsByFile(rows)
	if len(rows) != 2 {
		t.Errorf("zlib search: %d rows %+v, want the .conda and the .tar.bz2", len(rows), rows)
	}
	for _, fn := range []string{cachedFile, "zlib-1.2.11-h7b6447c_3.tar.bz2"} {
		r, ok := byFile[fn]
		if !ok || r.State != "served" || r.Badge != "served" || r.Rule != "" {
			t.Errorf("%s: %+v, want served", fn, r)
		}
	}
	if r := byFile[cachedFile]; r.Cached != "cached" {
		t.Errorf("%s: cached mark %q, want cached (it was just downloaded)", cachedFile, r.Cached)
	}
	if r := byFile["zlib-1.2.11-h7b6447c_3.tar.bz2"]; r.Cached != "not cached" {
		t.Errorf("zlib .tar.bz2: cached mark %q, want not cached", r.Cached)
	}

	// The explain page, from the hidden record's link.
	if err := chromedp.Do(bctx,
		chromedp.Navigate(lib.Why),
		chromedp.WaitVisible(chromedp.CSS(`#explain tr[data-state="hidden"]`)),
	); err != nil {
		t.Fatalf("explain page: %v", err)
	}
	rule, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#explain td.rule`)))
	if err != nil || !strings.Contains(rule, "license_blacklist: GPL") {
		t.Errorf("explain page rule %q (%v), want license_blacklist: GPL", rule, err)
	}

	// The whole of linux-64 by the subdir link: the screenshot.
	if err := chromedp.Do(bctx,
		chromedp.Navigate(px.base+"/ui/channels/anaconda"),
		chromedp.Click(chromedp.CSS(`nav.subdirs a[href$="subdir=linux-64"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#results tr[data-filename^="libgcc-ng"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#condarc button.copy`)), // app.js ran (CSP allows it)
	); err != nil {
		t.Fatalf("browse linux-64: %v", err)
	}
	png, err = chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveArtifact(t, "ui.png", png)
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		if err := os.MkdirAll(filepath.Join("..", "docs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "docs", "screenshot.png"), png, 0o644); err != nil {
			t.Fatalf("docs/screenshot.png: %v", err)
		}
		t.Log("updated docs/screenshot.png")
	}

	// A sync from the page (loopback, no admin token: allowed) lands on the
	// job's page, which reloads itself until the job ends.
	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`#sync button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`.job-progress`)),
	); err != nil {
		t.Fatalf("start a sync: %v", err)
	}
	jobURL, _ := chromedp.Run(bctx, chromedp.Location())
	if !strings.Contains(jobURL, "/ui/jobs/") {
		t.Fatalf("after the sync form: at %s, want a job page", jobURL)
	}
	state := ""
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		// The page may be reloading under the query: retry on errors.
		qctx, qcancel := context.WithTimeout(bctx, 3*time.Second)
		s, err := chromedp.Run(qctx, chromedp.Text(chromedp.CSS(`h1 .badge`)))
		qcancel()
		if err == nil && s != "running" {
			state = s
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if state != "done" {
		body, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("main")))
		t.Errorf("sync job at %s: state %q, want done:\n%s", jobURL, state, body)
	}
	if png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)); err == nil {
		saveArtifact(t, "job.png", png)
	}
	if err := chromedp.Do(bctx,
		chromedp.Navigate(px.base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#jobs a[href^="/ui/jobs/"]`)),
	); err != nil {
		t.Errorf("the overview does not list the job: %v", err)
	}

	if bad := consoleErrors(); len(bad) > 0 {
		t.Errorf("the browser console has errors:\n%s", strings.Join(bad, "\n"))
	}
}

// With client tokens set, the page asks for one the way browsers do (Basic
// auth), the token is never in a URL, and the snippets carry a placeholder.
func TestBrowserAsksForToken(t *testing.T) {
	requireChromium(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), browserTimeout)
	defer cancel()

	const token = "sekret-b7"
	up := startUpstreamDir(t, testdata.Path(t, "conda_format_repo"), "linux-64")
	px := startProxy(t, ctx, up.srv.URL, "auth:\n  tokens: ["+token+"]\n")
	bctx := newBrowser(t, ctx)

	// Intercept every request: each one is let through; an auth challenge is
	// answered as a user would in the browser's dialog.
	var mu sync.Mutex
	var urls, challenges []string
	paused := chromedp.Events(bctx, fetch.RequestPaused)
	auths := chromedp.Events(bctx, fetch.AuthRequired)
	go func() {
		for ev, err := range paused {
			if err != nil {
				return
			}
			mu.Lock()
			urls = append(urls, ev.Request.URL)
			mu.Unlock()
			chromedp.Call(bctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
		}
	}()
	go func() {
		for ev, err := range auths {
			if err != nil {
				return
			}
			mu.Lock()
			challenges = append(challenges, fmt.Sprintf("%s %s", ev.AuthChallenge.Scheme, ev.AuthChallenge.Realm))
			mu.Unlock()
			chromedp.Call(bctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID,
				AuthChallengeResponse: &fetch.AuthChallengeResponse{
					Response: fetch.AuthChallengeResponseResponseProvideCredentials, Username: "operator", Password: token}})
		}
	}()
	handle := true
	if _, err := chromedp.Call(bctx, fetch.Enable, fetch.EnableParams{HandleAuthRequests: &handle}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx,
		chromedp.Navigate(px.base+"/ui/channels/anaconda"),
		chromedp.WaitVisible(chromedp.CSS("#condarc")),
	); err != nil {
		t.Fatalf("channel page with a token: %v", err)
	}
	text, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID("condarc")))
	if err != nil {
		t.Fatal(err)
	}
	if want := px.base + "/t/<token>/anaconda"; !strings.Contains(text, want) {
		t.Errorf("the snippets lack %q:\n%s", want, text)
	}
	html, err := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(html, token) {
		t.Error("the page shows the token")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(challenges) == 0 || !strings.EqualFold(challenges[0], "basic condaproxy") {
		t.Errorf("auth challenges %v, want one Basic realm=condaproxy", challenges)
	}
	for _, u := range urls {
		if strings.Contains(u, token) {
			t.Errorf("the token is in a URL: %s", u)
		}
	}
	if len(urls) == 0 {
		t.Error("no request was intercepted")
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("ran out of time")
	}
}

// A browser that opens a channel's own URL, below /t/<token>/, gets its pages:
// the channel with its subdirs and snippet, a subdir's listing; every link
// keeps the token path, and nothing is blocked by the pages' CSP.
func TestBrowserChannelURL(t *testing.T) {
	requireChromium(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), browserTimeout)
	defer cancel()

	const token = "pages-tok-3c"
	up := startUpstreamDir(t, testdata.Path(t, "conda_format_repo"), "linux-64")
	px := startProxyWith(t, ctx, up.srv.URL, "    platforms: [linux-64]\n    license_blacklist: [GPL]\n",
		"auth:\n  tokens: ["+token+"]\n", nil)
	bctx := newBrowser(t, ctx)
	consoleErrors := watchConsole(t, bctx)
	tp := px.base + "/t/" + token

	// Without the slash: redirected to the channel's page.
	if err := chromedp.Do(bctx,
		chromedp.Navigate(tp+"/anaconda"),
		chromedp.WaitVisible(chromedp.CSS(`#condarc button.copy`)), // app.js ran
	); err != nil {
		t.Fatalf("channel page: %v", err)
	}
	if loc, _ := chromedp.Run(bctx, chromedp.Location()); loc != tp+"/anaconda/" {
		t.Errorf("at %s, want %s/anaconda/", loc, tp)
	}
	snippet, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#condarc pre")))
	if err != nil || !strings.Contains(snippet, tp+"/anaconda") {
		t.Errorf(".condarc snippet %q (%v) lacks %s/anaconda", snippet, err, tp)
	}

	// To linux-64 by its link: the listing, hidden libgcc with its rule.
	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`nav.subdirs a[href="linux-64/"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#results tr[data-filename^="libgcc-ng"]`)),
	); err != nil {
		t.Fatalf("subdir page: %v", err)
	}
	if loc, _ := chromedp.Run(bctx, chromedp.Location()); loc != tp+"/anaconda/linux-64/" {
		t.Errorf("at %s, want %s/anaconda/linux-64/", loc, tp)
	}
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[[]resultRow](readRows))
	if err != nil {
		t.Fatal(err)
	}
	byFile := rowsByFile(rows)
	if lib := byFile["libgcc-ng-8.2.0-hdf63c60_1.tar.bz2"]; lib.State != "hidden" || lib.Rule != "license_blacklist: GPL" {
		t.Errorf("libgcc-ng: %+v, want hidden by license_blacklist: GPL", lib)
	}
	if z := byFile["zlib-1.2.11-h7b6447c_3.conda"]; z.State != "served" {
		t.Errorf("zlib: %+v, want served", z)
	}
	links, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('main a')).map(a => a.href)`))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if !strings.HasPrefix(l, tp+"/anaconda/") {
			t.Errorf("a link leaves the token path: %s", l)
		}
	}
	if png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)); err == nil {
		saveArtifact(t, "subdir.png", png)
	}
	// The filter.
	if err := chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.ID("q"), "zlib"),
		chromedp.Submit(chromedp.ID("q")),
		chromedp.WaitNotPresent(chromedp.CSS(`#results tr[data-filename^="libgcc-ng"]`)),
	); err != nil {
		t.Fatalf("filter: %v", err)
	}
	if loc, _ := chromedp.Run(bctx, chromedp.Location()); loc != tp+"/anaconda/linux-64/?q=zlib" {
		t.Errorf("filtered at %s", loc)
	}
	if bad := consoleErrors(); len(bad) > 0 {
		t.Errorf("the browser console has errors:\n%s", strings.Join(bad, "\n"))
	}
}
