package local_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/provider/local"
	"github.com/hodei-jobs/hodei/provider/providertest"
)

// The local provider passes the provider conformance suite with real `hodei worker`
// processes.
func TestConformance(t *testing.T) {
	bin := providertest.Agent(t)
	var stateDir string
	pidOf := func(t *testing.T, id string) int {
		b, err := os.ReadFile(filepath.Join(stateDir, id+".pid"))
		if err != nil {
			t.Fatalf("pid record of %s: %v", id, err)
		}
		var rec struct {
			PID int `json:"pid"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatal(err)
		}
		return rec.PID
	}
	providertest.Run(t, providertest.Harness{
		New: func(t *testing.T, maxWorkers int) provider.Provider {
			stateDir = t.TempDir()
			p, err := local.New(local.Config{Binary: bin, StateDir: stateDir, MaxWorkers: maxWorkers, KeepLogs: true})
			if err != nil {
				t.Fatal(err)
			}
			return p
		},
		Kill: func(t *testing.T, id string) {
			if err := syscall.Kill(pidOf(t, id), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		},
		Exists: func(t *testing.T, id string) bool {
			if _, err := os.Stat(filepath.Join(stateDir, id+".pid")); err == nil {
				return true
			}
			return processWithEnv("HODEI_WORKER_ID=" + id)
		},
		Exposed: func(t *testing.T, id string) []string {
			pid := pidOf(t, id)
			cmdline, err := os.ReadFile("/proc/" + itoa(pid) + "/cmdline")
			if err != nil {
				t.Fatal(err)
			}
			log, _ := os.ReadFile(filepath.Join(stateDir, id+".log"))
			return []string{string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})), string(log)}
		},
	})
}

// processWithEnv reports whether a live process has kv in its environment.
func processWithEnv(kv string) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, v := range strings.Split(string(b), "\x00") {
			if v == kv {
				if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
					if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && (st[i+2] == 'Z' || st[i+2] == 'X') {
						return false
					}
				}
				return true
			}
		}
	}
	return false
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
