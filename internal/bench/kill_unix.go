//go:build unix

package bench

import "syscall"

// killPID is kill(2): a negative pid signals that process group.
func killPID(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }
