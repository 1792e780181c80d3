package bench

// Helpers the programs under bench/ share to run the real condaproxy binary
// and read what it costs: ports, the build, the temp directory, the proxy's
// start and stop, and memory figures from /proc. internal/testproc does the
// like for tests, but its starters need a testing.TB, so the programs, which
// are not tests, have these.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FreePort asks the kernel for a free loopback port. It is released before the
// server takes it, so another process could get there first; the programs run
// on a quiet machine and take that chance.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr is FreePort as a 127.0.0.1:port address.
func FreeAddr() (string, error) {
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// TempDir makes a fresh directory in $TMPDIR (else /tmp) named prefix plus a
// random tail. With keep it prints "temp dir: <dir>" and cleanup leaves it;
// without, cleanup removes it (defer it).
func TempDir(prefix string, keep bool) (dir string, cleanup func(), err error) {
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	if keep {
		fmt.Println("temp dir:", dir)
		return dir, func() {}, nil
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// BuildHere runs `go build -o bin ./cmd/condaproxy` in the working directory,
// its output on ours: the programs that say "run from the repository root".
func BuildHere(bin string) error {
	build := exec.Command("go", "build", "-o", bin, "./cmd/condaproxy")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build (run from the repository root): %w", err)
	}
	return nil
}

// ModuleRoot is the directory of the go.mod this command is run in.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the condaproxy module: run from the repository")
	}
	return filepath.Dir(gomod), nil
}

// BuildProxy builds ./cmd/condaproxy of the module it is run in (from any
// directory of it) into bin, in at most 10 minutes; overlay, if set, is a go
// build -overlay file. note, a line each program words its own way, goes to
// stderr once the module is found and the build starts; the build's output is
// shown only if it fails.
func BuildProxy(ctx context.Context, bin, overlay, note string) error {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return err
	}
	args := []string{"build", "-o", bin}
	if overlay != "" {
		args = append(args, "-overlay", overlay)
	}
	args = append(args, "./cmd/condaproxy")
	fmt.Fprintln(os.Stderr, note)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/condaproxy: %w\n%s", err, out)
	}
	return nil
}

// LoadAvg is the 1, 5 and 15 minute load averages, or "?" where there is no
// /proc: the machine may be shared, and the load says how far to trust the
// figures.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// FindNginx is the nginx on PATH or in the usual sbin directories; hint ends
// the error when there is none (how to install it, or what to do without it).
func FindNginx(hint string) (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if info, err := os.Stat(p); err == nil && !info.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("nginx not found (PATH, /usr/sbin): " + hint)
}

// ServeProxy starts `condaproxy serve -c cfgPath` (output to out, env added to
// ours) and polls http://127.0.0.1:port/healthz every 25 ms until it answers,
// polls+1 times at the most. stop ends it with SIGTERM (so a CPU profile is
// written out), and kills it if it has not exited 30 s later.
func ServeProxy(bin, cfgPath string, port int, out io.Writer, env []string, polls int) (stop func(), pid int, err error) {
	cmd := exec.Command(bin, "serve", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	for i := 0; ; i++ {
		if r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)); err == nil {
			r.Body.Close()
			return stop, cmd.Process.Pid, nil
		}
		if i > polls {
			stop()
			return nil, 0, errors.New("condaproxy did not start")
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// ProcStatus is a size figure of pid now from /proc/<pid>/status, in bytes:
// field is the line's label with its colon ("VmHWM:", the peak resident set;
// "VmRSS:"; "RssAnon:"). It is 0 where there is no such file or line.
func ProcStatus(pid int, field string) int64 {
	v, _ := procStatus(pid, field)
	return v[0]
}

// RSSParts is pid's resident anonymous (the Go heap, stacks) and file-backed
// (mapped documents, the binary) memory, in bytes, from one read of
// /proc/<pid>/status, so the two are of the same moment.
func RSSParts(pid int) (anon, file int64) {
	v, _ := procStatus(pid, "RssAnon:", "RssFile:")
	return v[0], v[1]
}

// procStatus reads the figures of fields (in KiB in the file) from
// /proc/<pid>/status, in bytes, 0 for those not found.
func procStatus(pid int, fields ...string) ([]int64, error) {
	v := make([]int64, len(fields))
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return v, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		for i, name := range fields {
			if f[0] == name {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				v[i] = kb << 10
			}
		}
	}
	return v, nil
}

// ServedTempDir is a fresh directory in base ($TMPDIR, else /tmp, if "") for
// files nginx serves: opened to all (0755), because nginx's workers run as an
// unprivileged user when we are root and must read the channel. cleanup (defer
// it) removes it, or with keep says "<prog>: kept <dir>" on stderr instead, at
// the end of the run where it is seen.
func ServedTempDir(base, prefix, prog string, keep bool) (dir string, cleanup func(), err error) {
	dir, err = os.MkdirTemp(base, prefix)
	if err != nil {
		return "", nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", nil, err
	}
	return dir, func() {
		if keep {
			fmt.Fprintln(os.Stderr, prog+": kept", dir)
			return
		}
		os.RemoveAll(dir)
	}, nil
}
