// Package mountroot runs a daemon whose children need "/" to be a mount point, from a
// chroot where it is not (a debootstrap tree, as on a fresh test machine).
//
// Container runtimes change the propagation of "/" (runc's "mount /, flags: 0x84000",
// dockerd's image unpacking); in a plain chroot "/" is a directory, not a mount point,
// and the kernel refuses with EINVAL. Command runs the daemon in a mount namespace of its
// own where the tree is bind-mounted (recursively, then made private) onto a directory of
// its own and chrooted into: paths stay the same, the root is now a mount point, and
// nothing is mounted outside that namespace (it goes with the daemon's last process).
// Mounts made later outside the namespace are not seen inside; files are (it is the
// same tree).
package mountroot

import (
	"os"
	"os/exec"
	"strings"
)

// RootIsMountPoint reports whether this process's "/" is a mount point (it is not in a
// plain chroot): /proc/self/mountinfo lists mount points relative to the root. When it
// cannot tell, it answers true (run things as they are).
func RootIsMountPoint() bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == "/" {
			return true
		}
	}
	return false
}

// Command returns the command that runs bin with args: as it is when "/" is a mount
// point, else through unshare(1) and chroot(1) (util-linux and coreutils, in every
// Debian) with the tree bound onto newRoot, an empty directory the caller owns (and
// removes after the daemon ended).
func Command(newRoot, bin string, args ...string) (*exec.Cmd, error) {
	if RootIsMountPoint() {
		return exec.Command(bin, args...), nil
	}
	if err := os.MkdirAll(newRoot, 0o700); err != nil {
		return nil, err
	}
	// "/" is not a mount point, so its propagation cannot be changed (unshare's default
	// would try): keep it, and make the new bind private at once.
	script := `mount --rbind / "$1" && mount --make-rprivate "$1" && shift && exec chroot "$0" "$@"`
	return exec.Command("unshare", append([]string{"--mount", "--propagation", "unchanged", "sh", "-c", script,
		newRoot, newRoot, bin}, args...)...), nil
}
