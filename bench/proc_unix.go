//go:build unix

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Proc is a server subprocess (nginx, condaproxy, redis-server...) in its own
// process group, so Stop reaches what it forks too (nginx's workers).
type Proc struct {
	Name string // what it is, for messages
	Cmd  *exec.Cmd
	Log  string // the file to look at when it fails
	prog string // the program that started it, the prefix of Stop's message
	done chan struct{}
}

// StartProc starts cmd, its stdout and stderr to a new file logPath, in its own
// process group (SysProcAttr). prog names the calling program in Stop's
// message.
func StartProc(prog, name, logPath string, cmd *exec.Cmd) (*Proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = SysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, prog: prog, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited says whether the process has ended (and been reaped).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop asks the process group to end (SIGTERM), then kills it after 5 s.
func (p *Proc) Stop() {
	pid := p.Cmd.Process.Pid
	SignalGroup(pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		fmt.Fprintf(os.Stderr, "%s: %s did not stop on SIGTERM; killing it\n", p.prog, p.Name)
		SignalGroup(pid, syscall.SIGKILL)
		<-p.done
	}
	// nginx's workers leave with their master; make sure of it.
	SignalGroup(pid, syscall.SIGKILL)
}

// SignalGroup sends sig to the process group whose leader is pid.
func SignalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }

// WaitHTTP polls url through c every 50 ms until it answers 200, p (if not
// nil) exits, 20 s pass or ctx ends.
func WaitHTTP(ctx context.Context, c *http.Client, url string, p *Proc) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("exited before serving (%v)", p.Cmd.ProcessState)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 20 s: %v", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// nginxConf: nginx as a plain static server of a channel directory, the
// yardstick the proxy's figures are read against.
const nginxConf = `# condaproxy {{prog}}: nginx as a plain static server of the channel.
daemon off;
master_process on;
worker_processes auto;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
events {
    worker_connections 4096;
}
http {
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 75s;
    access_log off;
    types {
        application/json json;
    }
    default_type application/octet-stream;
    client_body_temp_path {{dir}}/client_body;
    proxy_temp_path {{dir}}/proxy;
    fastcgi_temp_path {{dir}}/fastcgi;
    uwsgi_temp_path {{dir}}/uwsgi;
    scgi_temp_path {{dir}}/scgi;
    server {
        listen {{addr}};
        root {{root}};
    }
}
`

// StartNginx writes an nginx.conf into dir serving root on addr, has nginx
// check it (-t), and starts nginx on it; the Proc's Log is nginx's error.log.
// prog is as for StartProc.
func StartNginx(prog, nginx, dir, addr, root string) (*Proc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := strings.NewReplacer("{{prog}}", prog, "{{dir}}", dir, "{{addr}}", addr, "{{root}}", root).Replace(nginxConf)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	errLog := filepath.Join(dir, "error.log")
	check := exec.Command(nginx, "-t", "-q", "-e", errLog, "-p", dir+"/", "-c", confPath)
	if out, err := check.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx -t rejected %s: %v\n%s", confPath, err, out)
	}
	p, err := StartProc(prog, "nginx", filepath.Join(dir, "stderr.log"),
		exec.Command(nginx, "-e", errLog, "-p", dir+"/", "-c", confPath))
	if err != nil {
		return nil, err
	}
	p.Log = errLog
	return p, nil
}
