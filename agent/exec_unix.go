//go:build unix

package agent

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// canRunJobs: Linux and macOS run jobs (process groups, signals).
func canRunJobs() error { return nil }

// groupLeaderAttr makes the job the leader of a new process group, which Cancel and
// the end of the job signal as a whole.
func groupLeaderAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killGroup signals the process group led by pid.
func killGroup(pid int, sig syscall.Signal) { _ = syscall.Kill(-pid, sig) }

func signalName(sig syscall.Signal) string { return unix.SignalName(sig) }
