// Package testproc runs the real condaproxy binary, and the servers around it,
// as child processes of a test: it builds the binary once per test binary,
// finds free loopback ports, starts processes with their output captured,
// waits for them to answer, and kills them (with the test process, on Linux,
// should that die without running its cleanups).
package testproc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/internal/testdata"
)

// RunWithBinary builds ./cmd/condaproxy once for every test of a package, into
// a temp dir it removes afterwards, sets *bin to its path and runs m. label
// (the package's name) starts the messages it prints. It returns the exit
// code for os.Exit.
func RunWithBinary(m *testing.M, label string, bin *string) int {
	dir, err := os.MkdirTemp("", "condaproxy-"+label+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, label+":", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, label+":", err)
		return 1
	}
	*bin = filepath.Join(dir, "condaproxy")
	build := exec.Command("go", "build", "-o", *bin, "./cmd/condaproxy")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: go build ./cmd/condaproxy: %v\n%s", label, err, out)
		return 1
	}
	return m.Run()
}

// RepoRoot is the directory holding go.mod, above the test's working directory.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// FreePort asks the kernel for a free loopback port. It is released before the
// child takes it, so starters retry when another process got there first
// (OnFreePort).
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// OnFreePort calls start with a fresh free port until the process it starts
// comes up (start returns a nil error). A process that did not come up is
// killed; if it says "address already in use" (another process took the port
// between FreePort and the bind) start is called again with another port, up
// to three attempts in all. Otherwise the process and start's error are
// returned, for the caller's own failure message.
func OnFreePort(t testing.TB, start func(port int) (*Proc, error)) (*Proc, error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := start(FreePort(t))
		if err == nil {
			return p, nil
		}
		p.Kill()
		if attempt < 3 && strings.Contains(p.Out.String(), "address already in use") {
			continue
		}
		return p, err
	}
}

// Proc is one child process a test started. Out collects its stdout and
// stderr, shown when something about it fails.
type Proc struct {
	Cmd  *exec.Cmd
	Out  *testdata.Buffer
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // cmd.Wait's result, once done is closed
}

// Start runs name with args, env added to the test's environment. A Cleanup
// kills what is left running, so a failing test never leaves a process
// behind; and on Linux the kernel kills it if the test process dies first (a
// test timeout runs no Cleanup).
func Start(t testing.TB, env []string, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Out: &testdata.Buffer{}, done: make(chan struct{})}
	p.Cmd = exec.Command(name, args...)
	p.Cmd.Stdout = p.Out
	p.Cmd.Stderr = p.Out
	p.Cmd.Env = append(os.Environ(), env...)
	dieWithTest(p.Cmd)
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s %v: %v", name, args, err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Kill)
	return p
}

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is cmd.Wait's result once the process has exited (nil before).
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Exited says whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL and waits until the process is reaped: only then are its
// locks released and its files and sockets closed, as after a real crash.
func (p *Proc) Kill() {
	if !p.Exited() {
		p.Cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// Wait waits up to limit for the process to end by itself and returns why it
// did not end well: a non-zero status, or no exit in time (then it is killed).
func (p *Proc) Wait(limit time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(limit):
		p.Kill()
		return fmt.Errorf("still running after %v; killed", limit)
	}
}

// Stop sends SIGTERM and waits up to timeout for a clean exit; it returns why
// the stop was not clean (a non-zero status, or no exit in time, then SIGKILL).
func (p *Proc) Stop(timeout time.Duration) error {
	if p.Exited() {
		return fmt.Errorf("had already exited: %v", p.err)
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("exited with %v after SIGTERM, want status 0", p.err)
		}
		return nil
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("did not exit within %v of SIGTERM; killed", timeout)
	}
}

// Tail is the last n bytes of what the process printed, for a failure message.
func (p *Proc) Tail(n int) string {
	s := p.Out.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

// WaitHealthy polls base+"/healthz" through client every 20 ms until it
// answers 200, and returns why it did not within limit: the process exited,
// or time ran out.
func (p *Proc) WaitHealthy(client *http.Client, base string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if resp, err := client.Get(base + "/healthz"); err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.Exited() {
			return errors.New("process exited")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no 200 from /healthz within %v", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
