package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Loaded is a hodei.yaml that was read and checked against File.
type Loaded struct {
	// Path is the file's name as given, used in error messages.
	Path string
	// File holds every key of the file; keys it does not set are zero.
	File File
	// settings are the flag-bound keys the file sets, in file order.
	settings []Setting
}

// Setting is one key of the file that has a flag.
type Setting struct {
	// Key is the key's path, e.g. docker.max_workers.
	Key string
	// Flag is the flag's name without dashes in front, e.g. docker-max-workers.
	Flag string
	// Pos is "FILE:LINE" of the value.
	Pos string
	// Value is a scalar's text as written (when !IsList).
	Value string
	// IsList: the value is a list (List holds its items) or, for a mapping such as
	// docker.labels, its K=V pairs sorted by key.
	IsList bool
	List   []string
}

// Settings returns the flag-bound keys the file sets, in file order.
func (l *Loaded) Settings() []Setting {
	if l == nil {
		return nil
	}
	return l.settings
}

// Load reads and checks the file at path (see Parse).
func Load(path string) (*Loaded, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	return Parse(path, data)
}

// Parse checks data, named path in errors, against File and decodes it strictly. An
// unknown key, a value of the wrong type, a key without a value or given twice, or more
// than one YAML document is refused with "PATH:LINE: KEY: what is wrong".
func Parse(path string, data []byte) (*Loaded, error) {
	l := &Loaded{Path: path}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return l, nil // empty file: nothing set
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s:%d: want one YAML document, found another", path, extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return l, nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return l, nil // only comments
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: want a mapping of settings (key: value) at the top", path, root.Line)
	}
	if err := l.checkMapping(root, reflect.TypeFor[File](), "", true); err != nil {
		return nil, err
	}
	// The walk above refused what the schema does not hold; this strict decode is the
	// one that fills File.
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&l.File); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// checkMapping checks the mapping node n against struct type t. top: n is the file or
// a section, whose fields (other than sections and file-only ones) have flags.
func (l *Loaded) checkMapping(n *yaml.Node, t reflect.Type, prefix string, top bool) error {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key := prefix + kn.Value
		if kn.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s:%d: a key must be a plain name", l.Path, kn.Line)
		}
		if line, dup := seen[kn.Value]; dup {
			return fmt.Errorf("%s:%d: %s: given twice (first at line %d)", l.Path, kn.Line, key, line)
		}
		seen[kn.Value] = kn.Line
		f, ok := fieldByTag(t, kn.Value)
		if !ok {
			where := "top-level keys"
			if prefix != "" {
				where = strings.TrimSuffix(prefix, ".") + " keys"
			}
			return fmt.Errorf("%s:%d: unknown key %s (%s: %s)", l.Path, kn.Line, key, where, strings.Join(tags(t), ", "))
		}
		if vn.Kind == yaml.AliasNode {
			vn = vn.Alias
		}
		if vn.Kind == yaml.ScalarNode && vn.Tag == "!!null" {
			return fmt.Errorf("%s:%d: %s: no value (remove the key to keep the default)", l.Path, vn.Line, key)
		}
		fileOnly := f.Tag.Get("config") == "file-only"
		switch {
		case top && prefix == "" && isSection(f.Type) && !fileOnly:
			if vn.Kind != yaml.MappingNode {
				return fmt.Errorf("%s:%d: %s: want a mapping (the %s section)", l.Path, vn.Line, key, key)
			}
			if err := l.checkMapping(vn, f.Type, key+".", true); err != nil {
				return err
			}
		case top && !fileOnly:
			if err := l.checkValue(vn, f.Type, key); err != nil {
				return err
			}
			l.settings = append(l.settings, l.setting(vn, key))
		default:
			if err := l.checkValue(vn, f.Type, key); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkValue checks node n against type t.
func (l *Loaded) checkValue(n *yaml.Node, t reflect.Type, key string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch {
	case isSection(t):
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%s:%d: %s: want a mapping", l.Path, n.Line, key)
		}
		return l.checkMapping(n, t, key+".", false)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s:%d: %s: want %s", l.Path, n.Line, key, describe(t))
		}
		for i, item := range n.Content {
			if err := l.checkValue(item, t.Elem(), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%s:%d: %s: want %s", l.Path, n.Line, key, describe(t))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := l.checkValue(n.Content[i], t.Key(), key); err != nil {
				return err
			}
			if err := l.checkValue(n.Content[i+1], t.Elem(), key+"."+n.Content[i].Value); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s:%d: %s: want %s", l.Path, n.Line, key, describe(t))
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		return fmt.Errorf("%s:%d: %s: want %s, got %q", l.Path, n.Line, key, describe(t), n.Value)
	}
	return nil
}

// setting records the flag-bound key's value n (already checked).
func (l *Loaded) setting(n *yaml.Node, key string) Setting {
	s := Setting{Key: key, Flag: FlagForKey(key), Pos: fmt.Sprintf("%s:%d", l.Path, n.Line), Value: n.Value}
	switch n.Kind {
	case yaml.SequenceNode:
		s.IsList, s.List = true, []string{}
		for _, item := range n.Content {
			s.List = append(s.List, item.Value)
		}
	case yaml.MappingNode:
		s.IsList, s.List = true, []string{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			s.List = append(s.List, n.Content[i].Value+"="+n.Content[i+1].Value)
		}
		slices.Sort(s.List)
	}
	return s
}

var durationType = reflect.TypeFor[time.Duration]()

// isSection: t is decoded as a mapping with known keys.
func isSection(t reflect.Type) bool { return t.Kind() == reflect.Struct }

func describe(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration such as 30s or 5m"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "an integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(describe(t.Elem()), "a "), "an ") + "s"
	case t.Kind() == reflect.Map:
		return "a mapping of " + strings.TrimPrefix(strings.TrimPrefix(describe(t.Elem()), "a "), "an ") + "s"
	case t.Kind() == reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

// fieldByTag finds the field of struct t whose yaml key is name.
func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if yamlKey(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func yamlKey(f reflect.StructField) string {
	k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return k
}

func tags(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if k := yamlKey(t.Field(i)); k != "" && k != "-" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Keys that differ from their flag's name beyond "-" and "_" / ".".
var keyOfFlag = map[string]string{"provider": "providers", "kubeconfig": "kube.kubeconfig"}

// FlagForKey is the flag of a key: docker.max_workers → docker-max-workers,
// providers → provider, kube.kubeconfig → kubeconfig.
func FlagForKey(key string) string {
	for f, k := range keyOfFlag {
		if k == key {
			return f
		}
	}
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// KeyForFlag is the key of a flag: the inverse of FlagForKey. A flag whose first word
// names a section of File (docker-…) has its key in that section.
func KeyForFlag(flag string) string {
	if k, ok := keyOfFlag[flag]; ok {
		return k
	}
	if sec, rest, ok := strings.Cut(flag, "-"); ok {
		if f, ok := fieldByTag(reflect.TypeFor[File](), sec); ok && isSection(f.Type) && f.Tag.Get("config") != "file-only" {
			return sec + "." + strings.ReplaceAll(rest, "-", "_")
		}
	}
	return strings.ReplaceAll(flag, "-", "_")
}
