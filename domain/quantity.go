package domain

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Quantities in the Kubernetes style: "256Mi", "1Gi", "512Ki", "64M", "1e9", "1000".

var binarySuffixes = []struct {
	s string
	m int64
}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60}}

var decimalSuffixes = []struct {
	s string
	m int64
}{{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18}}

// ParseMemory parses a memory quantity into bytes: a plain number of bytes ("1048576"),
// or a number with a binary (Ki, Mi, Gi, Ti, Pi, Ei) or decimal (k, M, G, T, P, E)
// suffix; the number may have a fraction ("1.5Gi"). The result must be a whole, positive
// number of bytes, at most MaxMemoryBytes.
func ParseMemory(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, sf := range binarySuffixes {
		if n, ok := strings.CutSuffix(s, sf.s); ok {
			num, mult = n, sf.m
			break
		}
	}
	if mult == 1 {
		for _, sf := range decimalSuffixes {
			if n, ok := strings.CutSuffix(s, sf.s); ok {
				num, mult = n, sf.m
				break
			}
		}
	}
	if !decimalDigits(num) {
		return 0, fmt.Errorf("memory %q: want a number of bytes with an optional suffix (Ki, Mi, Gi, Ti, k, M, G, T), e.g. 256Mi", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("memory %q: want a number of bytes with an optional suffix (Ki, Mi, Gi, Ti, k, M, G, T), e.g. 256Mi", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("memory %q: not a whole number of bytes", s)
	}
	if r.Sign() <= 0 {
		return 0, fmt.Errorf("memory %q: must be positive", s)
	}
	if r.Cmp(new(big.Rat).SetInt64(MaxMemoryBytes)) > 0 {
		return 0, fmt.Errorf("memory %q: exceeds the limit of %s (MaxMemoryBytes)", s, FormatMemory(MaxMemoryBytes))
	}
	return r.Num().Int64(), nil
}

// FormatMemory writes bytes with the largest binary suffix that divides it exactly
// (67108864 → "64Mi", 1500 → "1500").
func FormatMemory(b int64) string {
	for i := len(binarySuffixes) - 1; i >= 0; i-- {
		m := binarySuffixes[i].m
		if b != 0 && b%m == 0 {
			return strconv.FormatInt(b/m, 10) + binarySuffixes[i].s
		}
	}
	return strconv.FormatInt(b, 10)
}

// ParseCPU parses cores as a decimal ("0.5", "2") or millicores ("500m") into
// millicores. The result must be a positive whole number of millicores, at most
// MaxCPUMillis.
func ParseCPU(s string) (int64, error) {
	num, scale := s, 1000.0
	if n, ok := strings.CutSuffix(s, "m"); ok {
		num, scale = n, 1
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || strings.ContainsAny(num, "+_ xXpPeEiInN") {
		return 0, fmt.Errorf("cpu %q: want cores as a decimal (0.5, 2) or millicores (500m)", s)
	}
	m := f * scale
	if math.Abs(m-math.Round(m)) > 1e-6 {
		return 0, fmt.Errorf("cpu %q: finer than a millicore", s)
	}
	if m <= 0 {
		return 0, fmt.Errorf("cpu %q: must be positive", s)
	}
	if m > MaxCPUMillis {
		return 0, fmt.Errorf("cpu %q: exceeds the limit of %d cores (MaxCPUMillis)", s, MaxCPUMillis/1000)
	}
	return int64(math.Round(m)), nil
}

// decimalDigits reports whether s is digits with at most one '.', and at least one digit.
func decimalDigits(s string) bool {
	digits, dots := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}
