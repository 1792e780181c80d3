package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// Secrets of the guessing test, shaped like subdirs (<os>-<arch>) so that a
// guess passes the subdir check and goes as far as a real one would.
const (
	guessAdmin  = "adm1n-t0k9"
	guessClient = "cl1ent-t0k"
	guessPass   = "upp4ss-w0rd"
)

// guessSameShape is a value of s's length and shape that is no secret.
func guessSameShape(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9':
			return '7'
		case r >= 'a' && r <= 'z':
			return 'q'
		}
		return r
	}, s)
}

// The admin API masks every configured secret in what it answers. On the real
// app, a request quoting a guess of one (the admin token, a client token, an
// upstream's password or URL token) gets exactly the answer a wrong guess of
// the same length gets: no error quotes a channel, subdir, package, filename or
// job id asked for, not even one an upstream's error names.
func TestBackendAnswersNoGuess(t *testing.T) {
	up := newCountingUpstream(t)
	// An upstream that refuses everything: its errors quote the URL asked for.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "forbidden", http.StatusForbidden)
	}))
	t.Cleanup(down.Close)
	upstream := func(u string) string {
		return "    upstreams:\n      - url: " + u + "\n        username: mirror\n        password: " + guessPass + "\n"
	}
	yaml := "data: " + filepath.Join(t.TempDir(), "data") + "\n" +
		"auth:\n  tokens: [" + guessClient + "]\n  admin_token: " + guessAdmin + "\n" +
		"channels:\n" +
		"  - name: fmt\n    platforms: [linux-64]\n" + upstream(up.URL+"/t/"+upTok) +
		"  - name: open\n" + upstream(up.URL+"/t/"+upTok) + // no platforms: any subdir is asked upstream
		"  - name: down\n" + upstream(down.URL+"/t/"+upTok)
	srv := serveApp(t, yaml, slog.DiscardHandler)

	ask := func(method, path, body string) string {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+guessAdmin)
		switch {
		case strings.HasPrefix(path, "/api/"):
			req.Header.Set("Content-Type", "application/json")
		case method == http.MethodPost:
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", srv.URL)
			req.Header.Set("Sec-Fetch-Site", "same-origin")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return fmt.Sprintf("%d %s\n%s", res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/api/v1/packages?channel=GUESS&subdir=linux-64", ""},
		{"GET", "/api/v1/packages?channel=fmt&subdir=GUESS", ""},
		{"GET", "/api/v1/packages?channel=open&subdir=GUESS", ""},
		{"GET", "/api/v1/packages?channel=down&subdir=GUESS", ""},
		{"GET", "/api/v1/packages?channel=fmt&subdir=linux-64&q=GUESS", ""},
		{"GET", "/api/v1/explain?channel=GUESS&subdir=linux-64&package=zlib", ""},
		{"GET", "/api/v1/explain?channel=fmt&subdir=GUESS&package=zlib", ""},
		{"GET", "/api/v1/explain?channel=open&subdir=GUESS&package=zlib", ""},
		{"GET", "/api/v1/explain?channel=down&subdir=GUESS&package=zlib", ""},
		{"GET", "/api/v1/explain?channel=fmt&subdir=linux-64&package=GUESS", ""},
		{"GET", "/api/v1/jobs/GUESS", ""},
		{"POST", "/api/v1/sync", `{"channels":["GUESS"]}`},
		{"POST", "/api/v1/purge", `{"channel":"GUESS"}`},
		{"POST", "/api/v1/purge", `{"channel":"fmt","subdir":"GUESS"}`},
		{"POST", "/api/v1/purge", `{"channel":"open","subdir":"GUESS"}`},
		{"POST", "/api/v1/purge", `{"channel":"fmt","subdir":"linux-64","filename":"GUESS"}`},
		{"POST", "/api/v1/purge", `{"channel":"fmt","subdir":"linux-64","filename":"GUESS-1-0.conda"}`},
		{"GET", "/ui/channels/GUESS", ""},
		{"GET", "/ui/jobs/GUESS", ""},
		{"POST", "/ui/sync", url.Values{"channel": {"GUESS"}, "admin_token": {guessAdmin}}.Encode()},
	} {
		for _, secret := range []string{guessAdmin, guessClient, guessPass, upTok} {
			wrong := guessSameShape(secret)
			got := ask(tc.method, strings.ReplaceAll(tc.path, "GUESS", secret), strings.ReplaceAll(tc.body, "GUESS", secret))
			want := ask(tc.method, strings.ReplaceAll(tc.path, "GUESS", wrong), strings.ReplaceAll(tc.body, "GUESS", wrong))
			if got != want {
				t.Errorf("%s %s %s: a guess equal to a secret is answered\n%s\nand a wrong guess of its length\n%s",
					tc.method, tc.path, tc.body, got, want)
			}
		}
	}
}
