package agent

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// limitAddressSpace: macOS has no prlimit(2) for another process (and does not enforce
// RLIMIT_AS); a job that asks for a memory limit is refused rather than run unlimited.
func limitAddressSpace(pid int, bytes int64) error {
	return errors.New("memory limits are not enforced on darwin; run the job on a container provider (--provider docker)")
}

// waitExitedNoReap polls (every 10ms) until the child pid is a zombie or gone, leaving
// it unreaped: darwin has no waitid(WNOWAIT).
func waitExitedNoReap(pid int) {
	for {
		kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
		if err != nil || kp.Proc.P_pid != int32(pid) || kp.Proc.P_stat == 5 { // SZOMB
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// becomeSubreaper: darwin has no child subreaper; a reused worker relies on killing
// its job's process group only (a job that leaves its group may outlive it).
func becomeSubreaper() error { return nil }

// killStrays does nothing on darwin (see becomeSubreaper).
func killStrays(deadline time.Time) int { return 0 }
