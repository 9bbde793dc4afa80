// Command pause is the sandbox ("pause") container of the test Kubernetes node
// (internal/kubetest): it holds the Pod's namespaces, reaps the children orphaned to it
// and exits 0 on SIGTERM or SIGINT. The harness builds it statically and puts it alone
// in a FROM scratch image (internal/imagetar), since no registry is reachable.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
