package imagetar

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

// epoch is the time stamp of every entry and of the config: images built from the same
// files are byte for byte the same.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// File is one entry of the image's root file system.
type File struct {
	// Path inside the image, e.g. "bin/busybox" or "/hodei-agent" (a leading / is
	// dropped). Missing parent directories are added (mode 0755).
	Path string
	// Mode holds the permission bits (0755 if zero for a file or directory).
	Mode int64
	// Body is a regular file's content.
	Body []byte
	// Link, when set, makes the entry a symbolic link to Link.
	Link string
	// Dir makes the entry a directory.
	Dir bool
}

// Image describes a single-layer image.
type Image struct {
	// Tags are the references the image is loaded as, e.g. "hodei/agent:v1.2.0".
	// At least one is required, each NAME:TAG.
	Tags []string
	// Entrypoint, Cmd, Env ("K=V") and WorkingDir go into the image config.
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	// Files is the root file system.
	Files []File
}

type manifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

type imageConfig struct {
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Created      time.Time       `json:"created"`
	Config       containerConfig `json:"config"`
	RootFS       rootFS          `json:"rootfs"`
	History      []history       `json:"history"`
}

type containerConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type history struct {
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
}

// Write writes img as a docker-archive tar to w and returns the image ID
// ("sha256:<config digest>").
func Write(w io.Writer, img Image) (string, error) {
	if err := img.validate(); err != nil {
		return "", err
	}
	layer, err := img.layer()
	if err != nil {
		return "", err
	}
	layerSum := sha256.Sum256(layer)
	layerHex := hex.EncodeToString(layerSum[:])
	cfg, err := json.Marshal(imageConfig{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      epoch,
		Config:       containerConfig{Entrypoint: img.Entrypoint, Cmd: img.Cmd, Env: img.Env, WorkingDir: img.WorkingDir},
		RootFS:       rootFS{Type: "layers", DiffIDs: []string{"sha256:" + layerHex}},
		History:      []history{{Created: epoch, CreatedBy: "hodei imagetar"}},
	})
	if err != nil {
		return "", err
	}
	cfgSum := sha256.Sum256(cfg)
	cfgHex := hex.EncodeToString(cfgSum[:])
	manifest, err := json.Marshal([]manifestEntry{{
		Config:   cfgHex + ".json",
		RepoTags: img.Tags,
		Layers:   []string{layerHex + "/layer.tar"},
	}})
	if err != nil {
		return "", err
	}
	repos := map[string]map[string]string{}
	for _, t := range img.Tags {
		name, tag := splitTag(t)
		if repos[name] == nil {
			repos[name] = map[string]string{}
		}
		repos[name][tag] = layerHex
	}
	reposJSON, err := json.Marshal(repos)
	if err != nil {
		return "", err
	}
	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		body []byte
	}{
		{layerHex + "/layer.tar", layer},
		{cfgHex + ".json", cfg},
		{"manifest.json", manifest},
		{"repositories", reposJSON},
	}
	if err := tw.WriteHeader(&tar.Header{Name: layerHex + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return "", err
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.body)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return "", err
		}
		if _, err := tw.Write(e.body); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return "sha256:" + cfgHex, nil
}

// WriteFile writes img to the file at path (replacing it atomically) and returns the
// image ID.
func WriteFile(path string, img Image) (string, error) {
	var buf bytes.Buffer
	id, err := Write(&buf, img)
	if err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return id, nil
}

func splitTag(ref string) (name, tag string) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ref, "latest"
	}
	return ref[:i], ref[i+1:]
}

func (img Image) validate() error {
	if len(img.Tags) == 0 {
		return errors.New("imagetar: Tags: at least one tag (NAME:TAG) is required")
	}
	for _, t := range img.Tags {
		name, tag := splitTag(t)
		if name == "" || tag == "" || strings.ContainsAny(t, " \t\n@") || strings.ToLower(name) != name {
			return fmt.Errorf("imagetar: Tags: %q is not a reference of the form name:tag (lower-case name)", t)
		}
	}
	seen := map[string]bool{}
	for i, f := range img.Files {
		p := cleanPath(f.Path)
		if p == "" {
			return fmt.Errorf("imagetar: Files[%d]: path %q names no file", i, f.Path)
		}
		if seen[p] {
			return fmt.Errorf("imagetar: Files[%d]: path %q appears twice", i, f.Path)
		}
		seen[p] = true
	}
	return nil
}

func cleanPath(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "." {
		return ""
	}
	return p
}

// layer returns the uncompressed tar of img's files, parents before children.
func (img Image) layer() ([]byte, error) {
	type entry struct {
		f   File
		dir bool
	}
	all := map[string]entry{}
	for _, f := range img.Files {
		p := cleanPath(f.Path)
		all[p] = entry{f: f, dir: f.Dir}
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = entry{f: File{Path: d, Mode: 0o755, Dir: true}, dir: true}
			}
		}
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names) // a parent sorts before its children
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := all[n]
		mode := e.f.Mode
		if mode == 0 {
			mode = 0o755
		}
		h := &tar.Header{Name: n, Mode: mode, ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case e.dir:
			h.Typeflag, h.Name = tar.TypeDir, n+"/"
		case e.f.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.f.Link, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.f.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("imagetar: %s: %w", n, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.f.Body); err != nil {
				return nil, fmt.Errorf("imagetar: %s: %w", n, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
