package scale

import "syscall"

// sysProcAttr kills a child with the test binary, should that die without running
// its cleanups (a timeout panic, a kill): no replica or redis-server outlives its
// test and keeps a port or a Redis key.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
