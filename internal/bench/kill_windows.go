package bench

import (
	"errors"
	"syscall"
)

// killPID: the recovery benchmark kills local workers, which Windows does not run.
func killPID(int, syscall.Signal) error {
	return errors.New("bench recovery kills local workers, which run on Linux and macOS only")
}
