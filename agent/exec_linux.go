package agent

import (
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// limitAddressSpace applies RLIMIT_AS = bytes to the running process pid (prlimit(2)).
func limitAddressSpace(pid int, bytes int64) error {
	lim := unix.Rlimit{Cur: uint64(bytes), Max: uint64(bytes)}
	return unix.Prlimit(pid, unix.RLIMIT_AS, &lim, nil)
}

// waitExitedNoReap blocks until the child pid has exited, leaving it unreaped (waitid
// with WNOWAIT), so that its pid (its process group's id) is not reused meanwhile.
func waitExitedNoReap(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// becomeSubreaper makes the agent the child subreaper of everything its jobs start
// (prctl PR_SET_CHILD_SUBREAPER): a process that leaves its job's group (setsid, a
// double-forked daemon) is re-parented to the agent instead of init, so that
// killStrays finds it between two jobs.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// killStrays SIGKILLs and reaps every child of the agent (with becomeSubreaper: every
// process left by earlier jobs, whatever its group or session), repeating while
// killing one re-parents its own children to the agent, until none is left or
// deadline passes. It returns how many it reaped. Call it only when no job runs.
func killStrays(deadline time.Time) int {
	n := 0
	for time.Now().Before(deadline) {
		kids := childrenOf(os.Getpid())
		if len(kids) == 0 {
			return n
		}
		for _, pid := range kids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		for _, pid := range kids {
			var ws unix.WaitStatus
			for {
				_, err := unix.Wait4(pid, &ws, 0, nil)
				if err != unix.EINTR {
					break
				}
			}
			n++
		}
	}
	return n
}

// childrenOf lists the pids whose parent is ppid (from /proc/*/stat).
func childrenOf(ppid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if p, err := strconv.Atoi(f[1]); err == nil && p == ppid {
			out = append(out, pid)
		}
	}
	return out
}
