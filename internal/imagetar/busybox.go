package imagetar

import (
	"debug/elf"
	"fmt"
	"os"
)

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// busyboxApplets are the links of the busybox image.
var busyboxApplets = []string{"sh", "echo", "cat", "sleep", "true", "false", "head", "tr", "ls",
	"kill", "env", "id", "dd", "yes", "ps", "grep", "wc", "seq", "printf", "test", "[",
	"mkdir", "rm", "cp", "touch", "date", "hostname", "wget", "nc", "tail", "stat"}

// Busybox returns an image tagged tag holding Debian's static busybox (/bin/busybox,
// from busybox-static) with links for common applets, an empty /tmp, PATH=/bin and
// CMD ["sh"]: a job image for machines without a registry.
func Busybox(tag string) (Image, error) {
	if err := CheckStatic(BusyboxPath); err != nil {
		return Image{}, fmt.Errorf("imagetar: the busybox image needs Debian's static busybox (apt-get install -y busybox-static): %w", err)
	}
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return Image{}, fmt.Errorf("imagetar: %w", err)
	}
	img := Image{
		Tags: []string{tag},
		Env:  []string{"PATH=/bin"},
		Cmd:  []string{"sh"},
		Files: []File{
			{Path: "bin/busybox", Mode: 0o755, Body: bb},
			{Path: "tmp", Mode: 0o1777, Dir: true},
		},
	}
	for _, a := range busyboxApplets {
		img.Files = append(img.Files, File{Path: "bin/" + a, Link: "busybox"})
	}
	return img, nil
}

// CheckStatic returns an error unless path is a statically linked ELF executable (no
// program interpreter), which is what a FROM scratch image can run.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (it has a program interpreter)", path)
		}
	}
	return nil
}
