package upstream

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/condaproxy/condaproxy/config"
)

// A watchdog cancels one request when the upstream keeps it waiting too long: for
// its response headers (the whole phase, from dialling on), then for each read of
// the body. A stalled upstream otherwise holds a fill, and every client joined to
// it, until TCP gives up, which can take hours.
type watchdog struct {
	parent context.Context
	cancel context.CancelFunc
	timer  *time.Timer
	fired  atomic.Bool
}

// watch returns the request's context and its watchdog, armed for d.
func watch(parent context.Context, d time.Duration) (context.Context, *watchdog) {
	ctx, cancel := context.WithCancel(parent)
	w := &watchdog{parent: parent, cancel: cancel}
	w.timer = time.AfterFunc(d, func() {
		w.fired.Store(true)
		cancel()
	})
	return ctx, w
}

func (w *watchdog) arm(d time.Duration) { w.timer.Reset(d) }
func (w *watchdog) disarm()             { w.timer.Stop() }

// release ends the request: the timer and the context go.
func (w *watchdog) release() {
	w.timer.Stop()
	w.cancel()
}

// idleBody fails a read that gets no byte for idle.
type idleBody struct {
	body     io.ReadCloser
	w        *watchdog
	idle     time.Duration
	redacted string
	secrets  []string
	redact   *config.Redactor
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.w.fired.Load() {
		return 0, b.idleError()
	}
	// Armed only while we wait: a slow reader is not a silent upstream.
	b.w.arm(b.idle)
	n, err := b.body.Read(p)
	b.w.disarm()
	if err == nil || err == io.EOF {
		return n, err
	}
	switch {
	case b.w.fired.Load():
		return n, b.idleError()
	case b.w.parent.Err() != nil:
		// The caller gave up: say so plainly, so that a deadline still reads as one.
		return n, b.w.parent.Err()
	}
	return n, &Error{URL: b.redacted, Err: scrub(err, b.secrets, b.redact)}
}

func (b *idleBody) idleError() error {
	return &Error{URL: b.redacted, Err: &IdleError{Idle: b.idle}}
}

// Close releases the connection, the timer and the request's context.
func (b *idleBody) Close() error {
	err := b.body.Close()
	b.w.release()
	return err
}

// IdleError is an upstream that sent nothing for Idle: no response headers, or no
// byte of the body. It comes wrapped in an *Error naming the URL.
type IdleError struct {
	Idle    time.Duration
	Headers bool // still waiting for the response headers
}

func (e *IdleError) Error() string {
	if e.Headers {
		return fmt.Sprintf("sent no response headers for %v", e.Idle)
	}
	return fmt.Sprintf("sent nothing for %v", e.Idle)
}

// Timeout marks it as a timeout for net.Error-style checks.
func (e *IdleError) Timeout() bool { return true }
