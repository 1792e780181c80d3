package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

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

// What an upstream error quotes is cut to one bounded line: an upstream (or a
// resolver) cannot write a page of text, or a second line, into a client's error.
func TestUpstreamDetailBounded(t *testing.T) {
	long := strings.Repeat("x", 4000)
	err := fmt.Errorf("load: %w", &upstream.Error{URL: "http://up.test/ch", Err: errors.New("line one\nline two\r" + long)})
	d := upstreamDetail(err)
	if strings.ContainsAny(d, "\r\n") {
		t.Errorf("detail holds a line break: %q", d[:80])
	}
	if len(d) > maxDetail+len("…") {
		t.Errorf("detail is %d bytes, want at most %d", len(d), maxDetail)
	}
	if upstreamDetail(errNotFound) != "" {
		t.Error("a non-upstream error got a detail")
	}
}
