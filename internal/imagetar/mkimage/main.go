// Command mkimage writes a single-layer FROM scratch image as a docker-archive tar
// (internal/imagetar), for `make agent-image`:
//
//	go run ./internal/imagetar/mkimage -o bin/agent-image.tar -tag hodei/agent:v1 \
//	    -entrypoint /hodei-agent bin/hodei-agent=/hodei-agent
//
// Each argument is SRC=PATH: the file SRC becomes PATH in the image (mode 0755).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/hodei-jobs/hodei/internal/imagetar"
)

func main() {
	out := flag.String("o", "", "output tar file")
	tag := flag.String("tag", "", "image reference NAME:TAG")
	entry := flag.String("entrypoint", "", "entrypoint (a path in the image)")
	flag.Parse()
	if err := run(*out, *tag, *entry, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(out, tag, entry string, files []string) error {
	if out == "" {
		return fmt.Errorf("-o: an output file is required")
	}
	img := imagetar.Image{Tags: []string{tag}}
	if entry != "" {
		img.Entrypoint = []string{entry}
	}
	for _, a := range files {
		src, dst, ok := strings.Cut(a, "=")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("argument %q: want SRC=PATH", a)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		img.Files = append(img.Files, imagetar.File{Path: dst, Mode: 0o755, Body: b})
	}
	id, err := imagetar.WriteFile(out, img)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s (%s)\n", out, tag, id)
	return nil
}
