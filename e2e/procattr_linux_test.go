package e2e

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill a child process when the test binary
// dies, so that no gateway outlives an interrupted run.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
