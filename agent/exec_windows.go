package agent

import (
	"errors"
	"syscall"
	"time"
)

// errNoWindowsJobs: the agent's executor relies on process groups and POSIX signals.
var errNoWindowsJobs = errors.New("hodei worker does not run jobs on Windows: run workers on Linux or macOS, or in containers (hodei dev --provider docker)")

// canRunJobs refuses: startJob reports this as the job's start failure.
func canRunJobs() error { return errNoWindowsJobs }

// The rest is never reached (startJob stops at canRunJobs); it lets the package build.

func groupLeaderAttr() *syscall.SysProcAttr { return nil }

func killGroup(int, syscall.Signal) {}

func signalName(sig syscall.Signal) string { return sig.String() }

func limitAddressSpace(int, int64) error { return errNoWindowsJobs }

func waitExitedNoReap(int) {}

// becomeSubreaper: the agent does not run on Windows (see errWindows).
func becomeSubreaper() error { return nil }

// killStrays does nothing on Windows (see becomeSubreaper).
func killStrays(deadline time.Time) int { return 0 }
