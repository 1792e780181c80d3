package s3test

import "syscall"

// sysProcAttr kills versitygw with the test binary, should that die without
// running its cleanups (a timeout panic, a kill): no server outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
