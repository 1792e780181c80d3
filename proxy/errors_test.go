package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/upstream"
)

// A 502 names the upstream URL that failed (redacted) and how, in the body and in
// the log, so an operator can act on a client's failed solve without the server's
// logs; no secret of the upstream URL reaches either.
func TestBadGatewayNamesUpstream(t *testing.T) {
	up := newUpstream(t, formatRepo(t))
	up.status.Store(http.StatusServiceUnavailable)

	// A token in the upstream path and a password in its user info.
	upURL := strings.Replace(up.URL, "http://", "http://mirror:PASSWORD-71@", 1) + "/t/UPSTREAM-TOKEN-72"
	h := newHarness(t, channelYAML("", upURL))
	r := h.get("/fmt/noarch/repodata.json")
	if r.StatusCode != http.StatusBadGateway {
		t.Fatalf("failing upstream: %d %s, want 502", r.StatusCode, r.body)
	}
	body := string(r.body)
	host := strings.TrimPrefix(up.URL, "http://")
	wantURL := "upstream http://mirror:***@" + host + "/t/***/noarch/repodata.json"
	if !strings.Contains(body, wantURL) || !strings.Contains(body, "HTTP 503") {
		t.Errorf("502 body does not name the upstream URL and its failure:\n%s\nwant it to hold %q and HTTP 503", body, wantURL)
	}
	if strings.Count(strings.TrimSpace(body), "\n") != 0 {
		t.Errorf("502 body is not one line: %q", body)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "/t/***/noarch/repodata.json") {
		t.Errorf("the log does not name the failing upstream URL:\n%s", logs)
	}
	for _, secret := range []string{"PASSWORD-71", "UPSTREAM-TOKEN-72"} {
		if strings.Contains(body, secret) || strings.Contains(logs, secret) {
			t.Errorf("%s reached the body or the log", secret)
		}
	}

	// No answer at all: a port nobody listens on. The body says the network failure.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	h2 := newHarness(t, channelYAML("", dead))
	r = h2.get("/fmt/linux-64/repodata.json")
	if r.StatusCode != http.StatusBadGateway {
		t.Fatalf("unreachable upstream: %d %s, want 502", r.StatusCode, r.body)
	}
	if body := string(r.body); !strings.Contains(body, "upstream "+dead+"/linux-64/repodata.json") ||
		!strings.Contains(body, "connection refused") {
		t.Errorf("502 body for an unreachable upstream: %q; want the URL and 'connection refused'", body)
	}
}

// What an upstream error quotes is cut to one bounded line, redacted before it
// is cut: an upstream (or a resolver) cannot write a page of text, a second line
// or a right-to-left override into a client's error, and a secret that straddles
// the cut is masked whole, not left as a prefix.
func TestUpstreamDetailBounded(t *testing.T) {
	long := strings.Repeat("x", 4000)
	err := fmt.Errorf("load: %w", &upstream.Error{URL: "http://up.test/ch",
		Err: errors.New("line one\nline two\r\u2028three\u0085four\u202efive\xff" + long)})
	red := config.NewRedactor(nil)
	d := upstreamDetail(err, red)
	if strings.ContainsAny(d, "\r\n\u2028\u0085\u202e\xff") || !utf8.ValidString(d) {
		t.Errorf("detail holds a line break, an override or an invalid byte: %q", d[:90])
	}
	if len(d) > maxDetail+len("…") {
		t.Errorf("detail is %d bytes, want at most %d", len(d), maxDetail)
	}
	// A multi-byte rune at the cut is not split.
	err = &upstream.Error{URL: "http://up.test/ch", Err: errors.New(strings.Repeat("é", 2000))}
	if d := upstreamDetail(err, red); !utf8.ValidString(d) {
		t.Errorf("a cut split a rune: %q", d[len(d)-8:])
	}
	// A configured secret across byte maxDetail: masked, no prefix of it left.
	secret := "SECRET-QUERY-TOKEN-0123456789"
	pad := strings.Repeat("p", maxDetail-len("upstream http://up.test/ch: ")-10)
	err = &upstream.Error{URL: "http://up.test/ch", Err: errors.New(pad + secret + " tail")}
	if d := upstreamDetail(err, config.NewRedactor([]string{secret})); strings.Contains(d, "SECRET-QUERY") {
		t.Errorf("a secret at the cut left its prefix: %q", d[len(d)-40:])
	}
	if upstreamDetail(errNotFound, red) != "" {
		t.Error("a non-upstream error got a detail")
	}
}
