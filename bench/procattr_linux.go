package bench

import "syscall"

// SysProcAttr puts a child in its own process group (so Stop reaches nginx's
// workers too) and has the kernel send it SIGTERM should this process die
// without cleaning up (kill -9).
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
