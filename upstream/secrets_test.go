package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/config"
)

// No returned error, no error handed to Observe and no log line carries a token or
// password, whatever went wrong.
func TestNoSecretAnywhere(t *testing.T) {
	const token, password, password2 = "SEKRET", "PASSWORD", "OTHERPASS"
	leaks := func(s string) bool {
		return strings.Contains(s, token) || strings.Contains(s, password) || strings.Contains(s, password2)
	}
	var hits sync.Map // path -> count, for the redirect loop
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/fail"):
			w.WriteHeader(http.StatusInternalServerError)
		case strings.HasSuffix(r.URL.Path, "/loop"):
			n, _ := hits.LoadOrStore(r.URL.Path, new(int))
			*n.(*int)++
			http.Redirect(w, r, r.URL.Path+"?n="+fmt.Sprint(*n.(*int)), http.StatusFound)
		case strings.HasSuffix(r.URL.Path, "/busy"):
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(http.StatusTooManyRequests)
		case strings.HasSuffix(r.URL.Path, "/stall"):
			stall(w, r)
		case strings.HasSuffix(r.URL.Path, "/cut"):
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "abc")
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	var logs bytes.Buffer
	var logMu sync.Mutex
	var observed []string
	// A client per case, so that one host's throttling does not hide the next
	// failure.
	newClient := func() *Client {
		c := New(Options{Retries: 1, Backoff: time.Millisecond, IdleTimeout: 100 * time.Millisecond,
			HeaderTimeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))})
		c.Observe = func(host string, status int, d time.Duration, err error) {
			if err != nil {
				logMu.Lock()
				observed = append(observed, err.Error())
				logMu.Unlock()
			}
		}
		return c
	}
	withUser := func(hostport string) Source {
		return source(t, "http://bob:"+password+"@"+hostport+"/t/"+token+"/chan")
	}
	withField := func(hostport string) Source {
		s, err := NewSource(config.Upstream{URL: "http://" + hostport + "/t/" + token + "/chan", Username: "bob", Password: password2})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	host := srv.Listener.Addr().String()
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "t", token, "chan", "noarch"), 0o755)
	os.WriteFile(filepath.Join(tree, "t", token, "chan", "noarch", "repodata.json"), []byte("{}"), 0o644)
	fileSrc := source(t, (&url.URL{Scheme: "file", Path: filepath.Join(tree, "t", token, "chan")}).String())

	type fetch struct {
		name  string
		src   Source
		rel   string
		read  bool   // the failure comes while reading the body
		again bool   // with the previous case's client
		want  string // in the error, to be sure this failure is the one checked
	}
	var cases []fetch
	for _, mk := range []func(string) Source{withUser, withField} {
		cases = append(cases,
			fetch{name: "connection refused", src: mk(closed), rel: "x", want: "connection refused"},
			fetch{name: "500 after retries", src: mk(host), rel: "fail", want: "HTTP 500"},
			fetch{name: "redirect loop", src: mk(host), rel: "loop", want: "stopped after 10 redirects"},
			fetch{name: "throttled answer", src: mk(host), rel: "busy", want: "HTTP 429, retry after 1m0s"},
			fetch{name: "throttled, not asked", src: mk(host), rel: "busy", again: true, want: ErrThrottled.Error()},
			fetch{name: "idle timeout", src: mk(host), rel: "stall", read: true, want: "sent nothing for 100ms"},
			fetch{name: "cut body", src: mk(host), rel: "cut", read: true, want: "unexpected EOF"},
		)
	}
	cases = append(cases, fetch{name: "file not a directory", src: fileSrc, rel: "noarch/repodata.json/x", want: "not a directory"})
	var c *Client
	for _, f := range cases {
		if !f.again {
			c = newClient()
		}
		resp, err := c.Get(context.Background(), f.src, f.rel, Conditional{})
		if f.read && err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		var ue *Error
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), f.want) {
			t.Errorf("%s: %v, want an *Error saying %q", f.name, err, f.want)
			continue
		}
		if !strings.Contains(ue.URL, "/t/***/chan") {
			t.Errorf("%s: the error names %q, not the redacted URL", f.name, ue.URL)
		}
		for e := error(err); e != nil; e = errors.Unwrap(e) {
			if s := e.Error() + fmt.Sprintf(" %+v %#v", e, e); leaks(s) {
				t.Errorf("%s: error leaks a secret: %s", f.name, s)
			}
		}
	}
	logMu.Lock()
	defer logMu.Unlock()
	if logs.Len() == 0 {
		t.Error("nothing was logged; the log check checks nothing")
	}
	if leaks(logs.String()) {
		t.Errorf("log leaks a secret:\n%s", logs.String())
	}
	for _, s := range observed {
		if leaks(s) {
			t.Errorf("Observe got a secret: %s", s)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// errTransport fails every request with its text.
type errTransport struct{ msg string }

func (e errTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, errors.New(e.msg) }

// A configured secret in a cause (a redirect's Location, a header line quoted
// back, another upstream's credential) is masked before the cause is cut to
// one bounded line: a cut through it would leave its prefix in every log line
// and error answer.
func TestCauseRedactedBeforeCut(t *testing.T) {
	const secret = "CONFIG-SECRET-0123456789"
	pad := strings.Repeat("p", maxCause-10)
	c := New(Options{Retries: -1, Transport: errTransport{pad + secret + " tail"}, Secrets: []string{secret},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	_, err := c.Get(context.Background(), source(t, "http://127.0.0.1:1/chan"), "noarch/repodata.json", Conditional{})
	if err == nil {
		t.Fatal("no error from a failing transport")
	}
	if msg := err.Error(); strings.Contains(msg, "CONFIG-SEC") || !strings.Contains(msg, "ppp") {
		t.Errorf("a configured secret across the cut left its prefix: %q", msg[max(0, len(msg)-60):])
	}
}
