package testproc

import (
	"os/exec"
	"syscall"
)

// dieWithTest has the kernel SIGKILL the process when the test process dies:
// a test killed by its timeout (or by hand) runs no Cleanup, and would leave a
// server holding its port and data directory behind.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
