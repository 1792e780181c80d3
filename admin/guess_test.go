package admin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Secrets of the guessing tests. The admin token has the shape of a subdir
// (<os>-<arch>), so that a Backend checking the shape lets it through.
const (
	guessAdminTok = "adm1n-t0ken"
	guessClient   = "cl1ent_t0k"
	guessUpPass   = "up_pass_99"
)

// echoBackend quotes every value it is asked for in its errors and details, as
// a Backend written without the guessing attack in mind does.
type echoBackend struct{}

func (echoBackend) Channels(context.Context) []ChannelInfo {
	return []ChannelInfo{{Name: "fmt", Kind: "conda", Platforms: []string{"linux-64"},
		Upstreams: []string{"https://mirror:***@conda.example.org/fmt"}}}
}

func (echoBackend) Subdirs(context.Context, string) ([]string, error) { return []string{"noarch"}, nil }

func (echoBackend) Packages(_ context.Context, ch, sub, q string, _ bool, _, _ int) (PackagePage, error) {
	switch {
	case ch != "fmt":
		return PackagePage{}, fmt.Errorf("%w: no conda channel %q", ErrNotFound, ch)
	case sub != "linux-64" && sub != "noarch":
		return PackagePage{}, fmt.Errorf("%w: fmt/%s is not served", ErrNotFound, sub)
	case q != "":
		return PackagePage{}, fmt.Errorf("upstream https://conda.example.org/fmt/%s/repodata.json?q=%s: HTTP 503", sub, q)
	}
	return PackagePage{}, nil
}

func (echoBackend) Explain(_ context.Context, ch, sub, pkg string) ([]Explanation, error) {
	if ch != "fmt" {
		return nil, fmt.Errorf("%w: no conda channel %q", ErrNotFound, ch)
	}
	return []Explanation{{Filename: "a-1-0.conda", Name: "a", Rule: "platforms",
		Detail: "subdir " + sub + " is not served, asked for " + pkg}}, nil
}

func (echoBackend) Stats(context.Context) Stats { return Stats{} }

func (echoBackend) StartSync(channels []string) (Job, error) {
	return Job{}, fmt.Errorf("%w: no conda channel %q", ErrNotFound, strings.Join(channels, ","))
}

func (echoBackend) Job(string) (Job, bool) { return Job{}, false }
func (echoBackend) Jobs() []Job            { return nil }

func (echoBackend) Purge(_ context.Context, ch, sub, fn string) error {
	return fmt.Errorf("%w: nothing cached under %s/%s/%s", ErrNotFound, ch, sub, fn)
}

// wrongGuess is a value of guess's length and shape (letters, digits and
// punctuation in the same places) that is no secret.
func wrongGuess(guess string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9':
			return '7'
		case r >= 'a' && r <= 'z':
			return 'q'
		}
		return r
	}, guess)
}

// answer is everything a client sees of a response but its Date.
func answer(t *testing.T, client *http.Client, method, u, ctype, body string, hdr map[string]string) string {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	res.Header.Del("Date")
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d\n", res.StatusCode)
	res.Header.Write(&sb)
	sb.WriteString("\n")
	sb.Write(b)
	return sb.String()
}

// Masking secrets in the texts of an answer must not turn the answer into an
// oracle: a request that quotes a guess gets exactly the answer a wrong guess of
// the same length gets, in every API call (byte for byte) and on every page
// (the page may show the visitor's own search text in its form, as typed: then
// the answers are the same once the guess is swapped for the wrong one).
func TestNoAnswerTellsAGuess(t *testing.T) {
	l := newLiveAdmin(t, Options{AdminToken: guessAdminTok, ClientTokens: true, Backend: echoBackend{},
		Secrets: []string{guessClient, guessUpPass},
		CanRead: func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+guessClient }})
	apiHdr := map[string]string{"Authorization": "Bearer " + guessAdminTok}
	pageHdr := map[string]string{"Authorization": webBasic("", guessAdminTok), "Origin": l.url, "Sec-Fetch-Site": "same-origin"}
	const json, form = "application/json", "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		method, path, ctype, body string // GUESS in path or body is the guess
		page                      bool
	}{
		{"GET", "/api/v1/packages?channel=GUESS&subdir=linux-64", "", "", false},
		{"GET", "/api/v1/packages?channel=fmt&subdir=GUESS", "", "", false},
		{"GET", "/api/v1/packages?channel=fmt&subdir=linux-64&q=GUESS", "", "", false},
		{"GET", "/api/v1/explain?channel=GUESS&subdir=linux-64&package=x", "", "", false},
		{"GET", "/api/v1/explain?channel=fmt&subdir=GUESS&package=x", "", "", false},
		{"GET", "/api/v1/explain?channel=fmt&subdir=linux-64&package=GUESS", "", "", false},
		{"GET", "/api/v1/jobs/GUESS", "", "", false},
		{"GET", "/api/v1/GUESS", "", "", false},
		{"GET", "/api/v1/jobs/GUESS/x", "", "", false},
		{"POST", "/api/v1/sync", json, `{"channels":["GUESS"]}`, false},
		{"POST", "/api/v1/sync", json, `{"channels":[GUESS]}`, false},
		{"POST", "/api/v1/sync", json, `{"channels":"GUESS"}`, false},
		{"POST", "/api/v1/purge", json, `{"channel":"GUESS"}`, false},
		{"POST", "/api/v1/purge", json, `{"channel":"fmt","subdir":"GUESS"}`, false},
		{"POST", "/api/v1/purge", json, `{"channel":"fmt","subdir":"linux-64","filename":"GUESS-1-0.conda"}`, false},
		{"POST", "/api/v1/purge", "text/GUESS", `{"channel":"fmt"}`, false},

		{"GET", "/ui/channels/GUESS", "", "", true},
		{"GET", "/ui/channels/fmt?subdir=GUESS", "", "", true},
		{"GET", "/ui/channels/fmt?subdir=linux-64&q=GUESS", "", "", true},
		{"GET", "/ui/explain?channel=GUESS&subdir=linux-64&package=x", "", "", true},
		{"GET", "/ui/explain?channel=fmt&subdir=GUESS&package=x", "", "", true},
		{"GET", "/ui/explain?channel=fmt&subdir=linux-64&package=GUESS", "", "", true},
		{"GET", "/ui/jobs/GUESS", "", "", true},
		{"POST", "/ui/sync", form, url.Values{"channel": {"GUESS"}, "admin_token": {guessAdminTok}}.Encode(), true},
	} {
		hdr := apiHdr
		if tc.page {
			hdr = pageHdr
		}
		for _, secret := range []string{guessAdminTok, guessClient, guessUpPass} {
			wrong := wrongGuess(secret)
			ask := func(guess string) string {
				return answer(t, l.client, tc.method, l.url+strings.ReplaceAll(tc.path, "GUESS", guess),
					tc.ctype, strings.ReplaceAll(tc.body, "GUESS", guess), hdr)
			}
			got, want := ask(secret), ask(wrong)
			if tc.page {
				// The page shows its visitor's own text back as it was typed
				// (the search field): never masked, so the same for any guess.
				got = strings.ReplaceAll(got, secret, wrong)
			}
			if got != want {
				t.Errorf("%s %s %s: a guess equal to a secret is answered\n%s\nand a wrong guess\n%s",
					tc.method, tc.path, tc.body, got, want)
			}
		}
	}
}
