package agent

import "golang.org/x/sys/unix"

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
