//go:build unix && !linux

package bench

import "syscall"

// SysProcAttr puts a child in its own process group, so Stop reaches nginx's
// workers too.
func SysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
