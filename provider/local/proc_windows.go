package local

import (
	"errors"
	"syscall"
)

// errWindows: workers as processes need sessions, process groups and POSIX signals.
var errWindows = errors.New("the local provider runs workers on Linux and macOS only; on Windows run jobs in containers: hodei dev --provider docker (Docker Desktop)")

// CheckPlatform refuses the local provider on Windows, pointing to docker.
func CheckPlatform() error { return errWindows }

// The rest is never reached (New fails); it lets the package build.

type procStat struct {
	state     byte
	pgrp      int
	session   int
	startTime uint64
}

func readStat(int) (procStat, error) { return procStat{}, errWindows }

func sessionMembers(int) []int { return nil }

func newSessionAttr() *syscall.SysProcAttr { return nil }

func kill(int, syscall.Signal) error { return errWindows }

func leftInSession(record) []int { return nil }
