package local

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// procStat is what the provider needs of a process: on darwin from sysctl
// kern.proc.pid (there is no /proc) and getsid(2).
type procStat struct {
	state     byte // 'Z' for a zombie, else 'R'
	pgrp      int
	session   int
	startTime uint64 // microseconds since the epoch (p_starttime)
}

// readStat describes process pid, or fails when there is none.
func readStat(pid int) (procStat, error) {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil {
		return procStat{}, err
	}
	if kp.Proc.P_pid != int32(pid) {
		return procStat{}, fmt.Errorf("no process %d", pid)
	}
	return statOf(kp)
}

func statOf(kp *unix.KinfoProc) (procStat, error) {
	pid := int(kp.Proc.P_pid)
	st := procStat{state: 'R', pgrp: int(kp.Eproc.Pgid),
		startTime: uint64(kp.Proc.P_starttime.Sec)*1_000_000 + uint64(kp.Proc.P_starttime.Usec)}
	if kp.Proc.P_stat == 5 { // SZOMB
		st.state = 'Z'
		return st, nil // a zombie has no session to ask for
	}
	sid, err := unix.Getsid(pid)
	if err != nil {
		return procStat{}, fmt.Errorf("getsid %d: %w", pid, err)
	}
	st.session = sid
	return st, nil
}

// sessionMembers lists the live (non-zombie) processes whose session id is sid.
func sessionMembers(sid int) []int {
	procs, err := unix.SysctlKinfoProcSlice("kern.proc.all")
	if err != nil {
		return nil
	}
	var pids []int
	for i := range procs {
		st, err := statOf(&procs[i])
		if err != nil || st.state == 'Z' || st.session != sid {
			continue
		}
		pids = append(pids, int(procs[i].Proc.P_pid))
	}
	return pids
}

// leftInSession lists what is left in the session of a worker whose agent exited.
func leftInSession(rec record) []int { return sessionMembers(rec.PID) }
