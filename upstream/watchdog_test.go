package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// stall answers "abc" and then nothing, until the client goes away.
func stall(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "100")
	io.WriteString(w, "abc")
	w.(http.Flusher).Flush()
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

// A body that stops sending fails the read after the idle timeout, naming the URL.
func TestIdleBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(stall))
	defer srv.Close()
	c := New(Options{Retries: -1, IdleTimeout: 200 * time.Millisecond})
	resp, err := c.Get(context.Background(), source(t, srv.URL+"/t/SEKRET/chan"), "x.conda", Conditional{})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(resp.Body)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		var ue *Error
		var idle *IdleError
		if string(r.b) != "abc" || !errors.As(r.err, &ue) || !errors.As(r.err, &idle) || idle.Headers {
			t.Fatalf("read %q, %v; want abc then an idle *Error", r.b, r.err)
		}
		msg := r.err.Error()
		if !strings.Contains(msg, "sent nothing for 200ms") || !strings.Contains(msg, "/t/***/chan/x.conda") || strings.Contains(msg, "SEKRET") {
			t.Errorf("error %q", msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled body still blocks the read after 5s")
	}
	if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
		t.Error("a read after the idle timeout succeeded")
	}
}

// The wait for response headers is bounded as a whole, whatever the transport.
func TestIdleHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	c := New(Options{Retries: 1, Backoff: time.Millisecond, HeaderTimeout: 200 * time.Millisecond,
		Transport: &http.Transport{}})
	start := time.Now()
	_, err := c.Get(context.Background(), source(t, srv.URL), "x", Conditional{})
	var idle *IdleError
	if !errors.As(err, &idle) || !idle.Headers || !strings.Contains(err.Error(), "sent no response headers for 200ms") {
		t.Fatalf("got %v, want a header idle *Error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

// The idle clock runs only while a read waits: a slow reader is not a silent
// upstream.
func TestIdleSlowReader(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	defer srv.Close()
	c := New(Options{IdleTimeout: 50 * time.Millisecond})
	resp, err := c.Get(context.Background(), source(t, srv.URL), "x", Conditional{})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(first)+string(rest) != "hello" {
		t.Errorf("slow reader: %q %v", rest, err)
	}
}
