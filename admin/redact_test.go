package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/condaproxy/condaproxy/config"
)

// The secrets a careless Backend could let through: an upstream's password and
// its /t/<token>/ segment (anaconda.org's), besides the tests' admin and client
// tokens.
const (
	upstreamPass = "mirror-pass-77"
	upstreamTok  = "upstream-tok-123"
)

var (
	leakyURL = "https://mirror-user:" + upstreamPass + "@conda.example.org/t/" + upstreamTok + "/private"
	// A URL url.Parse refuses (its port is not a number), so that
	// config.RedactURL alone would leave its password.
	leakyBadURL = "https://mirror-user:" + upstreamPass + "@conda.example.org:port/private"
)

// leakyBackend quotes secrets everywhere a text can: upstream addresses, errors,
// a job's error and failures, an explanation's detail, a stats source.
type leakyBackend struct{}

func (leakyBackend) Channels(context.Context) []ChannelInfo {
	return []ChannelInfo{{Name: "private", Kind: "conda", Platforms: []string{"linux-64"},
		Upstreams: []string{leakyURL, leakyBadURL, "https://conda.example.org/t/" + adminTok + "/x", "file:///mnt/usb/private"}}}
}

func (leakyBackend) Subdirs(_ context.Context, ch string) ([]string, error) {
	return []string{"noarch"}, fmt.Errorf("upstream %s/channeldata.json: HTTP 503", leakyURL)
}

func (leakyBackend) Packages(_ context.Context, ch, sub, q string, _ bool, offset, limit int) (PackagePage, error) {
	if ch == "down" {
		return PackagePage{}, fmt.Errorf("upstream %s/%s/repodata.json: HTTP 503", leakyURL, sub)
	}
	// A client's request path, as a message could quote it.
	return PackagePage{}, fmt.Errorf("%w: GET /t/%s/%s/%s/repodata.json: upstream %s: HTTP 404", ErrNotFound, clientTok, ch, sub, leakyURL)
}

func (leakyBackend) Explain(_ context.Context, ch, sub, pkg string) ([]Explanation, error) {
	if ch != "private" {
		return nil, fmt.Errorf("%w: channel %s at %s", ErrNotFound, ch, leakyBadURL)
	}
	return []Explanation{{Filename: pkg, Served: true, Detail: "from " + leakyURL + "/" + sub + "/" + pkg}}, nil
}

func (leakyBackend) Stats(context.Context) Stats {
	return Stats{BytesBySource: map[string]int64{leakyURL: 5, "cache": 7}}
}

func (leakyBackend) StartSync([]string) (Job, error) {
	return Job{}, fmt.Errorf("%w: sync of %s runs (job j1)", ErrBusy, leakyURL)
}

func (b leakyBackend) Job(id string) (Job, bool) {
	if id != "j1" {
		return Job{}, false
	}
	return b.Jobs()[0], true
}

func (leakyBackend) Jobs() []Job {
	return []Job{{ID: "j1", Channels: []string{"private"}, State: "failed",
		Error: "GET " + leakyURL + "/noarch/repodata.json: 401 (admin " + adminTok + ")",
		Failed: []string{
			"private/noarch/x-1-0.conda: GET " + leakyURL + "/noarch/x-1-0.conda: HTTP 500",
			"private/noarch/y-1-0.conda: GET " + leakyBadURL + "/noarch/y-1-0.conda: refused",
			"private/noarch/z-1-0.conda: path /t/" + upstreamTok + "/private/noarch: gone",
		}}}
}

func (leakyBackend) Purge(context.Context, string, string, string) error {
	return errors.New("cannot reach " + leakyURL)
}

// The API's reads, the page, and the errors of the writes print no token and no
// password, whatever the Backend hands them: admin masks them on the way out,
// and keeps what is not secret (the host, the path) for the operator.
func TestNoSecretInAnswers(t *testing.T) {
	l := newLiveAdmin(t, Options{AdminToken: adminTok, ClientTokens: true, Backend: leakyBackend{},
		CanRead: func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+clientTok }})
	// Sec-Fetch-Site: the form's post comes from the page in a browser.
	admin := map[string]string{"Authorization": "Bearer " + adminTok, "Sec-Fetch-Site": "same-origin"}
	all := ""
	for _, tc := range []struct {
		req    liveReq
		status int
	}{
		{liveReq{method: "GET", path: "/api/v1/channels"}, 200},
		{liveReq{method: "GET", path: "/api/v1/packages?channel=private&subdir=linux-64"}, 404},
		{liveReq{method: "GET", path: "/api/v1/packages?channel=down&subdir=linux-64"}, 502},
		{liveReq{method: "GET", path: "/api/v1/explain?channel=private&subdir=linux-64&package=x-1-0.conda"}, 200},
		{liveReq{method: "GET", path: "/api/v1/explain?channel=nochan&subdir=linux-64&package=x"}, 404},
		{liveReq{method: "GET", path: "/api/v1/stats"}, 200},
		{liveReq{method: "GET", path: "/api/v1/jobs"}, 200},
		{liveReq{method: "GET", path: "/api/v1/jobs/j1"}, 200},
		{liveReq{method: "POST", path: "/api/v1/sync", body: `{"channels":["private"]}`}, 409},
		{liveReq{method: "POST", path: "/api/v1/purge", body: `{"channel":"private"}`}, 502},
		{liveReq{method: "GET", path: "/"}, 200},
		{liveReq{method: "GET", path: "/ui/channels/private"}, 200},
		{liveReq{method: "GET", path: "/ui/channels/private?subdir=linux-64"}, 404},
		{liveReq{method: "GET", path: "/ui/explain?channel=private&subdir=linux-64&package=x-1-0.conda"}, 200},
		{liveReq{method: "GET", path: "/ui/explain?channel=nochan&subdir=linux-64&package=x"}, 404},
		{liveReq{method: "GET", path: "/ui/jobs/j1"}, 200},
		{liveReq{method: "POST", path: "/ui/sync", body: url.Values{"channel": {"private"}, "admin_token": {adminTok}}.Encode()}, 409},
	} {
		tc.req.header = admin
		status, body, _ := l.send(t, tc.req)
		if status != tc.status {
			t.Errorf("%s %s: %d, want %d\n%s", tc.req.method, tc.req.path, status, tc.status, body)
		}
		for _, secret := range []string{upstreamPass, upstreamTok, adminTok, clientTok} {
			if strings.Contains(body, secret) {
				t.Errorf("%s %s shows a secret (%s):\n%s", tc.req.method, tc.req.path, secret, body)
			}
		}
		all += body
	}
	// What is not secret stays, masked where it was secret.
	for _, want := range []string{
		"https://mirror-user:***@conda.example.org/t/***/private", // the upstream, as config.RedactURL shows it
		"https://mirror-user:***@conda.example.org:port/private",
		"https://conda.example.org/t/***/x",
		"file:///mnt/usb/private",
		"/t/***/private/noarch",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no answer shows %q: masking took too much, or nothing was asked", want)
		}
	}
}

func TestRedactText(t *testing.T) {
	for in, want := range map[string]string{
		"":                         "",
		"no conda channel \"fmt\"": "no conda channel \"fmt\"",
		"GET https://u:p@h/t/tk/c/linux-64/repodata.json: 503": "GET https://u:***@h/t/***/c/linux-64/repodata.json: 503",
		"upstream http://h:8080/c: HTTP 404":                   "upstream http://h:8080/c: HTTP 404",
		"user only https://u@h/c":                              "user only https://***@h/c", // a user name alone is a token
		"a path /t/tk/c and \"https://h/t/tk2\" quoted":        "a path /t/***/c and \"https://h/t/***\" quoted",
		"the admin token " + adminTok + " itself":              "the admin token *** itself",
	} {
		if got := redactText(in, config.NewRedactor([]string{adminTok})); got != want {
			t.Errorf("redactText(%q) = %q, want %q", in, got, want)
		}
	}
}

// withheld masks a value the request asked for whatever it is, and a secret in
// it or around it as one stretch: the text reads the same for a guess that is a
// secret, holds one or is part of one, and for a wrong guess of its length.
func TestWithheldAnswersNoGuess(t *testing.T) {
	const secret = "s3cret-tok"
	x := newRedacting(echoBackend{}, []string{secret, "ab"})
	ctx := context.Background()
	for _, guess := range []string{secret, "xx" + secret, secret + "yy", secret[:6], secret[3:], "x" + secret[:5]} {
		wrong := wrongGuess(guess)
		for _, format := range []string{
			`no conda channel %q`,
			`upstream https://h/fmt/%s/repodata.json: 503`,
			`%s%s`,
			`asked %s, and the server's own ` + secret + ` leaked`,
		} {
			text := func(g string) string {
				if strings.Count(format, "%") == 2 {
					return fmt.Sprintf(format, g, g)
				}
				return fmt.Sprintf(format, g)
			}
			got, want := x.withheld(ctx, text(guess), "fmt", guess), x.withheld(ctx, text(wrong), "fmt", wrong)
			if got != want {
				t.Errorf("guess %q in %q: %q, and for a wrong guess %q", guess, format, got, want)
			}
			if strings.Contains(got, secret) || strings.Contains(got, guess) {
				t.Errorf("guess %q in %q: %q quotes it", guess, format, got)
			}
		}
	}
	// Public names stay: the configured channel, its platforms, noarch. Values
	// too short to be a secret stay as well.
	for in, want := range map[string]string{
		`no subdir fmt/linux-64`: `no subdir fmt/linux-64`,
		`no subdir fmt/noarch`:   `no subdir fmt/noarch`,
		`no subdir fmt/osx-64`:   `no subdir fmt/***`,
		`q ab in ab-1-0.conda`:   `q ab in ab-1-0.conda`,
	} {
		if got := x.withheld(ctx, in, "fmt", "linux-64", "noarch", "osx-64", "ab"); got != want {
			t.Errorf("withheld(%q) = %q, want %q", in, got, want)
		}
	}
}
