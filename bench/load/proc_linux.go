package main

import "syscall"

// sysProcAttr puts a child in its own process group (so stop reaches nginx's
// workers too) and has the kernel send it SIGTERM should this process die without
// cleaning up (kill -9).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

func signalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
