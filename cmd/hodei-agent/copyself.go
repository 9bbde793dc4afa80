package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// copySelfCommand is `hodei-agent copy-self DEST`: the agent image (FROM scratch, no
// shell, no cp) holds only this binary, so the kubernetes provider's init container
// runs it to copy the agent into an emptyDir, where the job's container (any image)
// runs it as its entrypoint.
func copySelfCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "copy-self DEST",
		Short: "Copy this binary to DEST (a file, or a directory to copy it into)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dest, err := copySelf(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "copied to", dest)
			return nil
		},
	}
}

// copySelf copies the running executable to dest (into it when dest is a directory),
// executable by everyone, through a temporary file renamed into place.
func copySelf(dest string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("copy-self: find this binary: %w", err)
	}
	if st, err := os.Stat(dest); err == nil && st.IsDir() {
		dest = filepath.Join(dest, "hodei-agent")
	}
	in, err := os.Open(self)
	if err != nil {
		return "", fmt.Errorf("copy-self: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".hodei-agent-*")
	if err != nil {
		return "", fmt.Errorf("copy-self: DEST %s: %w", dest, err)
	}
	_, err = io.Copy(tmp, in)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o755)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dest)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("copy-self: write %s: %w", dest, err)
	}
	return dest, nil
}
