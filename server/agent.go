package server

import (
	"os"
	"path/filepath"
)

// AgentBinaryName is the slim agent binary (cmd/hodei-agent) looked for next to the
// hodei executable.
const AgentBinaryName = "hodei-agent"

// AgentCommand is what the local provider starts for each worker: workerBinary (or this
// executable) as `<binary> worker`, unless the binary is the slim agent itself or, with
// no workerBinary given, a hodei-agent file sits next to this executable (as `make
// build` leaves it in bin/): then that, with no arguments. The slim agent is the same
// command (internal/workercmd) at a third of the start-up CPU.
func AgentCommand(workerBinary string) (binary string, args []string) {
	if workerBinary != "" {
		if filepath.Base(workerBinary) == AgentBinaryName {
			return workerBinary, []string{}
		}
		return workerBinary, []string{"worker"}
	}
	exe, err := os.Executable()
	if err != nil {
		return "", nil // the provider's defaults: os.Executable() worker
	}
	slim := filepath.Join(filepath.Dir(exe), AgentBinaryName)
	if fi, err := os.Stat(slim); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return slim, []string{}
	}
	return exe, []string{"worker"}
}
