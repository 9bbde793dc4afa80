//go:build unix

package server

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// errLockBusy: another process holds the lock.
var errLockBusy = errors.New("held by another process")

// flock takes an exclusive flock(2) without waiting, retrying on EINTR; the lock goes
// with the descriptor (closing it releases the lock).
func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return fmt.Errorf("%w: %w", errLockBusy, err)
		}
		return err
	}
}
