//go:build unix && !linux

package main

import "syscall"

// sysProcAttr puts a child in its own process group, so stop reaches nginx's
// workers too.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func signalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
