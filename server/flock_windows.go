package server

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/windows"
)

// errLockBusy: another process holds the lock.
var errLockBusy = errors.New("held by another process")

// flock takes an exclusive lock on the file's first byte without waiting
// (LockFileEx); closing the handle releases it.
func flock(f *os.File) error {
	var ol windows.Overlapped
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return fmt.Errorf("%w: %w", errLockBusy, err)
	}
	return err
}
