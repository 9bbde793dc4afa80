package domain

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits of a JobSpec. A spec outside them is refused by Validate.
const (
	MaxNameLen = 128 // bytes of JobSpec.Name

	MaxArgs        = 256       // elements of JobSpec.Command
	MaxArgBytes    = 32 << 10  // total bytes of all Command elements
	MaxPathLen     = 4096      // bytes of WorkingDir and Script.Interpreter
	MaxScriptBytes = 256 << 10 // bytes of Script.Content

	MaxEnvVars  = 128      // entries of JobSpec.Env
	MaxEnvBytes = 64 << 10 // total bytes of all keys and values of Env

	MaxLabels        = 64  // entries of JobSpec.Labels
	MaxLabelKeyLen   = 128 // bytes of a label key
	MaxLabelValueLen = 256 // bytes of a label value

	MaxTimeout = 7 * 24 * time.Hour // JobSpec.Timeout; 0 means no timeout

	DefaultMaxAttempts = 1  // used by WithDefaults when MaxAttempts is 0
	MaxMaxAttempts     = 10 // highest JobSpec.MaxAttempts

	MinPriority = -1000
	MaxPriority = 1000

	MaxImageLen    = 512 // bytes of JobSpec.Image
	MaxProviderLen = 64  // bytes of JobSpec.Provider
	MaxSelectors   = 16  // entries of JobSpec.Selector

	MaxCPUMillis   = 256_000 // 256 cores
	MaxMemoryBytes = 1 << 40 // 1 TiB

	DefaultInterpreter = "/bin/sh" // used by WithDefaults for a script without one
)

// ErrInvalidSpec matches (with errors.Is) every *ValidationError and ValidationErrors.
var ErrInvalidSpec = errors.New("invalid job spec")

// ValidationError is one problem with one field of a JobSpec.
type ValidationError struct {
	Field string // "command[0]", "env[FOO]", "labels[team]", "timeout", …
	Msg   string // what is wrong, naming the limit
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Msg }

// Is makes errors.Is(err, ErrInvalidSpec) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidSpec }

// ValidationErrors is every problem Validate found, in field order. errors.As(err,
// &*ValidationError) finds the first; range over the list for all of them.
type ValidationErrors []*ValidationError

func (es ValidationErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return "invalid job spec: " + strings.Join(parts, "; ")
}

// Unwrap exposes each *ValidationError to errors.Is and errors.As.
func (es ValidationErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Is makes errors.Is(err, ErrInvalidSpec) true even for an empty list.
func (es ValidationErrors) Is(target error) bool { return target == ErrInvalidSpec }

// WithDefaults returns a copy of s with defaults filled in: MaxAttempts 0 becomes
// DefaultMaxAttempts, a script without an interpreter gets DefaultInterpreter and an
// empty Namespace becomes DefaultNamespace.
// Maps and slices are shared with s.
func (s JobSpec) WithDefaults() JobSpec {
	if s.MaxAttempts == 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	if s.Namespace == "" {
		s.Namespace = DefaultNamespace
	}
	if s.Script != nil && s.Script.Interpreter == "" {
		sc := *s.Script
		sc.Interpreter = DefaultInterpreter
		s.Script = &sc
	}
	return s
}

// Validate checks s against the limits above and returns nil or ValidationErrors
// listing every problem. It accepts MaxAttempts 0 and an empty Script.Interpreter
// (WithDefaults fills them).
func (s JobSpec) Validate() error {
	var v validator
	v.name(s.Name)
	v.body(s.Command, s.Script)
	v.env(s.Env)
	v.secrets(s.Secrets, s.Env)
	if s.WorkingDir != "" {
		v.absPath("working_dir", s.WorkingDir)
	}
	v.resources(s.Resources)
	v.labels(s.Labels)
	if s.Timeout < 0 {
		v.add("timeout", "must not be negative (0 means no timeout), got %s", s.Timeout)
	} else if s.Timeout > MaxTimeout {
		v.add("timeout", "%s exceeds the limit of %s (MaxTimeout)", s.Timeout, MaxTimeout)
	}
	if s.MaxAttempts < 0 || s.MaxAttempts > MaxMaxAttempts {
		v.add("max_attempts", "must be between 1 and %d (MaxMaxAttempts), or 0 for the default of %d, got %d",
			MaxMaxAttempts, DefaultMaxAttempts, s.MaxAttempts)
	}
	if s.Namespace != "" {
		if err := ValidateNamespace(s.Namespace); err != nil {
			v.add("namespace", "%s", err.Error())
		}
	}
	if s.Priority < MinPriority || s.Priority > MaxPriority {
		v.add("priority", "must be between %d and %d (MinPriority, MaxPriority), got %d",
			MinPriority, MaxPriority, s.Priority)
	}
	v.placement(s)
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

// placement checks Image, Pull, Provider and Selector.
func (v *validator) placement(s JobSpec) {
	if len(s.Image) > MaxImageLen {
		v.add("image", "%d bytes exceeds the limit of %d (MaxImageLen)", len(s.Image), MaxImageLen)
	} else if strings.IndexFunc(s.Image, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		v.add("image", "must not contain spaces or control characters, got %q", s.Image)
	}
	if s.Pull != "" {
		if _, err := ParsePullPolicy(string(s.Pull)); err != nil {
			v.add("pull", "%v", err)
		} else if s.Image == "" {
			v.add("pull", "is set (%s) but image is empty", s.Pull)
		}
	}
	if len(s.Provider) > MaxProviderLen {
		v.add("provider", "%d bytes exceeds the limit of %d (MaxProviderLen)", len(s.Provider), MaxProviderLen)
	} else if s.Provider != "" && !validProviderName(s.Provider) {
		v.add("provider", "%q: want letters, digits, '-' or '_'", s.Provider)
	}
	if len(s.Selector) > MaxSelectors {
		v.add("selector", "%d entries exceed the limit of %d (MaxSelectors)", len(s.Selector), MaxSelectors)
	}
	for _, k := range slices.Sorted(maps.Keys(s.Selector)) {
		field := "selector[" + k + "]"
		if k == "" || len(k) > MaxLabelKeyLen {
			v.add(field, "key must be 1-%d bytes (MaxLabelKeyLen)", MaxLabelKeyLen)
		}
		if len(s.Selector[k]) > MaxLabelValueLen {
			v.add(field, "value exceeds %d bytes (MaxLabelValueLen)", MaxLabelValueLen)
		}
		v.printable(field, k+s.Selector[k])
	}
}

func validProviderName(s string) bool {
	for _, r := range s {
		if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

type validator struct{ errs ValidationErrors }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) name(n string) {
	if len(n) > MaxNameLen {
		v.add("name", "%d bytes exceeds the limit of %d (MaxNameLen)", len(n), MaxNameLen)
	}
	v.printable("name", n)
}

// printable refuses invalid UTF-8 and control characters in a one-line text field.
func (v *validator) printable(field, s string) {
	if !utf8.ValidString(s) {
		v.add(field, "must be valid UTF-8")
		return
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		v.add(field, "must not contain control characters (found %U at byte %d)", r, i)
	}
}

// noNUL refuses NUL bytes, which exec and the environment cannot carry.
func (v *validator) noNUL(field, s string) bool {
	if i := strings.IndexByte(s, 0); i >= 0 {
		v.add(field, "must not contain a NUL byte (found at byte %d)", i)
		return false
	}
	return true
}

func (v *validator) body(cmd []string, sc *Script) {
	switch {
	case len(cmd) == 0 && sc == nil:
		v.add("command", "exactly one of command and script must be set, neither is")
		return
	case len(cmd) > 0 && sc != nil:
		v.add("command", "exactly one of command and script must be set, both are")
		return
	}
	if sc != nil {
		switch {
		case sc.Content == "":
			v.add("script.content", "must not be empty")
		case len(sc.Content) > MaxScriptBytes:
			v.add("script.content", "%d bytes exceeds the limit of %d (MaxScriptBytes)", len(sc.Content), MaxScriptBytes)
		default:
			v.noNUL("script.content", sc.Content)
		}
		if sc.Interpreter != "" {
			v.absPath("script.interpreter", sc.Interpreter)
		}
		return
	}
	if len(cmd) > MaxArgs {
		v.add("command", "%d arguments exceeds the limit of %d (MaxArgs)", len(cmd), MaxArgs)
	}
	total := 0
	for i, a := range cmd {
		total += len(a)
		field := fmt.Sprintf("command[%d]", i)
		if i == 0 && a == "" {
			v.add(field, "the program must not be empty")
			continue
		}
		v.noNUL(field, a)
	}
	if total > MaxArgBytes {
		v.add("command", "%d bytes of arguments exceeds the limit of %d (MaxArgBytes)", total, MaxArgBytes)
	}
}

func (v *validator) absPath(field, p string) {
	if len(p) > MaxPathLen {
		v.add(field, "%d bytes exceeds the limit of %d (MaxPathLen)", len(p), MaxPathLen)
		return
	}
	if !v.noNUL(field, p) {
		return
	}
	if !path.IsAbs(p) {
		v.add(field, "must be an absolute path, got %q", p)
	}
}

func validEnvKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func (v *validator) env(env map[string]string) {
	if len(env) > MaxEnvVars {
		v.add("env", "%d variables exceeds the limit of %d (MaxEnvVars)", len(env), MaxEnvVars)
	}
	total := 0
	for _, k := range slices.Sorted(maps.Keys(env)) {
		val := env[k]
		total += len(k) + len(val)
		field := keyField("env", k)
		if !validEnvKey(k) {
			v.add(field, "the name must match [A-Za-z_][A-Za-z0-9_]*")
		}
		v.noNUL(field, val)
	}
	if total > MaxEnvBytes {
		v.add("env", "%d bytes of names and values exceeds the limit of %d (MaxEnvBytes)", total, MaxEnvBytes)
	}
}

func validLabelKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		alnum := 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		inner := c == '.' || c == '_' || c == '-' || c == '/'
		if !alnum && !(inner && i > 0 && i < len(k)-1) {
			return false
		}
	}
	return true
}

func (v *validator) labels(labels map[string]string) {
	if len(labels) > MaxLabels {
		v.add("labels", "%d labels exceeds the limit of %d (MaxLabels)", len(labels), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		val := labels[k]
		field := keyField("labels", k)
		switch {
		case len(k) > MaxLabelKeyLen:
			v.add(field, "key of %d bytes exceeds the limit of %d (MaxLabelKeyLen)", len(k), MaxLabelKeyLen)
		case !validLabelKey(k):
			v.add(field, "key must be letters, digits and . _ - / (not first or last)")
		}
		if len(val) > MaxLabelValueLen {
			v.add(field, "value of %d bytes exceeds the limit of %d (MaxLabelValueLen)", len(val), MaxLabelValueLen)
		}
		v.printable(field, val)
	}
}

func (v *validator) resources(r Resources) {
	if r.CPUMillis < 0 || r.CPUMillis > MaxCPUMillis {
		v.add("resources.cpu_millis", "must be between 0 and %d (MaxCPUMillis), got %d", MaxCPUMillis, r.CPUMillis)
	}
	if r.MemoryBytes < 0 || r.MemoryBytes > MaxMemoryBytes {
		v.add("resources.memory_bytes", "must be between 0 and %d (MaxMemoryBytes), got %d", MaxMemoryBytes, r.MemoryBytes)
	}
}

// keyField names a map entry as prefix[key]. A key that is long or not plain printable
// text is shortened and quoted so that the error message stays readable.
func keyField(prefix, k string) string {
	const show = 64
	plain := utf8.ValidString(k) && strings.IndexFunc(k, func(r rune) bool {
		return unicode.IsControl(r) || r == '[' || r == ']'
	}) < 0
	if len(k) > show {
		k = strings.ToValidUTF8(k[:show], "") + "…"
	}
	if !plain {
		k = strconv.Quote(k)
	}
	return prefix + "[" + k + "]"
}
