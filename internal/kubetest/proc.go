package kubetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hodei-jobs/hodei/internal/mountroot"
)

// proc is one component process (etcd, kube-apiserver, containerd, kubelet …), this
// process's child in a process group of its own, logging to <dir>/logs/<name>.log.
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(dir, name, bin string, args ...string) (*proc, error) {
	return runProc(dir, name, exec.Command(bin, args...))
}

// startWithMountRoot is startProc for a daemon whose children need "/" to be a mount
// point (containerd: runc changes the propagation of "/"): in a chroot where it is not
// (a fresh test machine), the daemon runs in a mount namespace of its own with the tree
// bound onto dir/<name>-root (package mountroot).
func startWithMountRoot(dir, name, bin string, args ...string) (*proc, error) {
	cmd, err := mountroot.Command(filepath.Join(dir, name+"-root"), bin, args...)
	if err != nil {
		return nil, err
	}
	return runProc(dir, name, cmd)
}

func runProc(dir, name string, cmd *exec.Cmd) (*proc, error) {
	bin := cmd.Path
	logPath := filepath.Join(dir, "logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	// SIGKILL if the test process dies without stopping it: nothing of the cluster
	// outlives the test binary for long (the teardown's cleaning is then skipped).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// errExited describes an early exit with the end of the log.
func (p *proc) errExited() error {
	return fmt.Errorf("%s exited (%v): %s", p.name, p.cmd.ProcessState, tailFile(p.log, 2500))
}

// stop sends SIGTERM, waits up to grace, then kills the whole process group.
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	// Children left in the group (none expected) go too.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	return tail(string(b), n)
}
