//go:build unix

package local

import "syscall"

// CheckPlatform reports whether this OS runs local workers: Linux and macOS do.
func CheckPlatform() error { return nil }

// newSessionAttr starts the worker in a new session (and process group) of its own.
func newSessionAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

// kill is kill(2): a negative pid signals that process group.
func kill(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }
