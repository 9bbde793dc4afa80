package local

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat is the part of /proc/<pid>/stat the provider uses.
type procStat struct {
	state     byte
	pgrp      int
	session   int
	startTime uint64
}

// readStat reads /proc/<pid>/stat with three system calls (open, one read, close): a
// session scan reads it for every process of the machine, and os.ReadFile needs five.
func readStat(pid int) (procStat, error) {
	fd, err := syscall.Open("/proc/"+strconv.Itoa(pid)+"/stat", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return procStat{}, err
	}
	var buf [1024]byte // the line is ~300 bytes; comm is at most 64
	n, err := syscall.Read(fd, buf[:])
	syscall.Close(fd)
	if err != nil {
		return procStat{}, err
	}
	if n <= 0 {
		return procStat{}, errors.New("stat: empty")
	}
	return parseStat(string(buf[:n]))
}

// parseStat parses /proc/<pid>/stat; the command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("stat: no ')'")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("stat: %d fields after comm, want >= 20", len(f))
	}
	pgrp, err1 := strconv.Atoi(f[2])
	sess, err2 := strconv.Atoi(f[3])
	start, err3 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("stat: %w", err)
	}
	return procStat{state: f[0][0], pgrp: pgrp, session: sess, startTime: start}, nil
}

// sessionMembers lists the live (non-zombie) processes whose session id is sid.
func sessionMembers(sid int) []int { return sessionMembersFrom(sid, 0) }

// leftInSession lists what is left in the session of a worker (rec) whose agent exited:
// sessionMembers(rec.PID), reading the stat of fewer processes when it safely can. Every
// member of the session was forked after its leader, so it has a pid above the
// leader's unless the kernel's pid counter wrapped since. When the counter's last pid is
// still at or above the leader's, and the worker lived too briefly for a full cycle of
// pids (at an assumed 20,000 forks a second at most), the processes with lower pids are
// skipped: on a machine with many long-lived processes that is most of /proc. This scan
// ran for every job and was an eighth of the control plane's CPU under load.
func leftInSession(rec record) []int {
	sid := rec.PID
	if last, pidMax, ok := pidCursor(); ok && last >= sid && pidMax > 300 &&
		time.Since(rec.StartedAt) < time.Duration(float64(pidMax-300)/20000*float64(time.Second)) {
		return sessionMembersFrom(sid, sid)
	}
	return sessionMembers(sid)
}

// pidCursor returns the last pid the kernel gave out (in this pid namespace) and
// pid_max.
func pidCursor() (last, pidMax int, ok bool) {
	la, err1 := os.ReadFile("/proc/loadavg") // "0.00 0.01 0.05 1/123 4567"
	pm, err2 := os.ReadFile("/proc/sys/kernel/pid_max")
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(la))
	if len(f) < 5 {
		return 0, 0, false
	}
	last, err1 = strconv.Atoi(f[4])
	pidMax, err2 = strconv.Atoi(strings.TrimSpace(string(pm)))
	return last, pidMax, err1 == nil && err2 == nil
}

// sessionMembersFrom is sessionMembers among the processes whose pid is at least min.
func sessionMembersFrom(sid, min int) []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, err := d.Readdirnames(-1) // unsorted, no per-entry stat
	d.Close()
	if err != nil {
		return nil
	}
	var pids []int
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid < min {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.session != sid || st.state == 'Z' || st.state == 'X' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}
