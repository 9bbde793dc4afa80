// Command kubebins makes sure the test cluster's Kubernetes binaries are built
// (kubetest.Binaries: ~/.cache/hodei/kube/<version>/, built from the Go module proxy on
// first use) and prints their directory. `make ensure-kube` runs it before the tests.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/hodei-jobs/hodei/internal/kubetest"
)

func main() {
	dir, err := kubetest.Binaries(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubebins:", err)
		os.Exit(1)
	}
	fmt.Printf("kubebins: Kubernetes %s binaries in %s\n", kubetest.Version, dir)
}
