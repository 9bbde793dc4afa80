package server

import (
	"errors"
	"fmt"
	"github.com/google/uuid"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// LockFile is the name of the lock file LockDataDir takes inside a data directory.
const LockFile = "LOCK"

// DataDirInUseError is returned by LockDataDir when another process holds the lock.
type DataDirInUseError struct {
	Dir string
	// PID of the holder as it wrote it into the lock file; 0 when unknown.
	PID int
}

func (e *DataDirInUseError) Error() string {
	pid := "pid unknown"
	if e.PID > 0 {
		pid = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data dir %s is in use by another hodei dev or hodei server (%s)", e.Dir, pid)
}

// DataDirLock is an exclusive lock on a data directory: an flock on DIR/LOCK, held
// while the file stays open and released by Release or by the process's end (also a
// crash or SIGKILL: the kernel drops the flock with the last descriptor). The file
// holds the holder's pid, for the error message of the next one.
type DataDirLock struct {
	f   *os.File
	dir string
}

// LockDataDir creates dir (0700) if needed and takes its lock without waiting. If
// another process holds it, the error is a *DataDirInUseError naming that process's
// pid, and nothing in dir was created or changed (the lock file is opened, not
// truncated, before the lock is tried). The descriptor is close-on-exec, so processes
// started by the holder (workers) do not inherit the lock.
func LockDataDir(dir string) (*DataDirLock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(abs, LockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open data dir lock: %w", err)
	}
	if err := flock(f); err != nil {
		_ = f.Close()
		if errors.Is(err, errLockBusy) {
			return nil, &DataDirInUseError{Dir: abs, PID: holderPID(path)}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("write pid to %s: %w", path, err)
	}
	return &DataDirLock{f: f, dir: abs}, nil
}

// holderPID reads the pid the holder wrote. The holder writes it right after taking
// the lock, so an empty file is retried briefly.
func holderPID(path string) int {
	for range 20 {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0
}

// Dir is the absolute path of the locked directory.
func (l *DataDirLock) Dir() string { return l.dir }

// Release drops the lock (the pid stays in the file; it is only read while locked).
func (l *DataDirLock) Release() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("release data dir lock: %w", err)
	}
	return nil
}

// InstanceFile holds, in a data directory, the id of the server instance that uses it.
const InstanceFile = "instance-id"

// instanceID returns the id stored in dir/InstanceFile, creating it (a random UUID) the
// first time. Only the holder of the directory's lock may rely on it being its own.
func instanceID(dir string) (string, error) {
	path := filepath.Join(dir, InstanceFile)
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("server: read %s: %w", path, err)
	}
	id := uuid.NewString()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("server: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("server: %w", err)
	}
	return id, nil
}
