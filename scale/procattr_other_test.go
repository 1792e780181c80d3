//go:build !linux

package scale

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
