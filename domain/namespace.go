package domain

import (
	"fmt"
	"strings"
)

// DefaultNamespace is the namespace of a job submitted without one.
const DefaultNamespace = "default"

// MaxNamespaceLen bounds a namespace name (a DNS label).
const MaxNamespaceLen = 63

// ValidateNamespace checks a namespace name: 1 to 63 bytes of lower-case letters,
// digits and '-', starting and ending with a letter or digit (a DNS label, like a
// Kubernetes namespace).
func ValidateNamespace(ns string) error {
	switch {
	case ns == "":
		return fmt.Errorf("must not be empty")
	case len(ns) > MaxNamespaceLen:
		return fmt.Errorf("%d bytes exceeds the limit of %d (MaxNamespaceLen)", len(ns), MaxNamespaceLen)
	case strings.HasPrefix(ns, "-") || strings.HasSuffix(ns, "-"):
		return fmt.Errorf("%q must start and end with a letter or digit", ns)
	}
	for _, r := range ns {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("%q may hold only lower-case letters, digits and '-'", ns)
		}
	}
	return nil
}

// NamespaceOf is the namespace of a job (DefaultNamespace for one stored without).
func (j *Job) NamespaceOf() string {
	if j.Spec.Namespace == "" {
		return DefaultNamespace
	}
	return j.Spec.Namespace
}
