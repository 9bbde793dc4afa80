package agent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/url"
	"slices"
	"strings"
)

// Mask replaces a secret value in job output.
const Mask = "***"

// masker replaces every secret value in a byte stream by Mask, also a value that
// arrives split across writes (reads): it holds back the end of the output that could
// still be the beginning of a value (a carry-over buffer, the way GitHub Actions masks
// secrets) until the next bytes decide it, or the stream ends. One masker per stream;
// not safe for concurrent use.
type masker struct {
	values  [][]byte // longest first, so that a value containing another wins
	pending []byte   // held back: a proper prefix of some value
}

func newMasker(values []string) *masker {
	m := &masker{}
	seen := map[string]bool{}
	for _, v := range values {
		for _, f := range maskedForms(v) {
			if !seen[f] {
				seen[f] = true
				m.values = append(m.values, []byte(f))
			}
		}
	}
	slices.SortFunc(m.values, func(a, b []byte) int { return len(b) - len(a) })
	return m
}

// minEncodedLen is the shortest encoded form of a value that is masked: shorter
// fragments (the base64 of a short value cut to its aligned part) would mask ordinary
// text.
const minEncodedLen = 6

// maskedForms is what masks value in output: the value itself, and the forms a job
// commonly prints it in. Each is masked also when split across writes.
//
//   - JSON string escaping (encoding/json, with and without HTML escaping), as in
//     `jq -n --arg v "$S" '{v:$v}'` or a program logging a struct;
//   - URL encoding (query and path escaping), as in a URL a job prints;
//   - base64 in the standard and URL alphabets, padded and raw, as in
//     `echo "$S" | base64` or a Basic auth header: the whole encoding of the value, and
//     for each of the three alignments the value can have inside longer base64 text
//     (what precedes it modulo 3 bytes) the characters that depend on the value's
//     bytes only.
//
// Not covered: other encodings (hex, double encodings such as the base64 of JSON),
// base64 wrapped across lines (values over 57 bytes, as base64(1) prints them),
// transformations (upper case, reversed) and values printed a few characters at a time
// with other output between them. Encoded forms shorter than minEncodedLen are left
// out; the value itself is masked at any length.
func maskedForms(value string) []string {
	if value == "" {
		return nil
	}
	forms := []string{value}
	add := func(f string) {
		if f != value && len(f) >= minEncodedLen {
			forms = append(forms, f)
		}
	}
	for _, html := range []bool{false, true} {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(html)
		if enc.Encode(value) == nil {
			q := strings.TrimSuffix(b.String(), "\n") // "value", quoted
			add(q[1 : len(q)-1])
		}
	}
	add(url.QueryEscape(value))
	add(url.PathEscape(value))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		add(enc.EncodeToString([]byte(value)))
		raw := enc.WithPadding(base64.NoPadding)
		for k := range 3 {
			// k bytes before the value: characters [ceil(8k/6), floor(8(k+n)/6)) hold
			// bits of the value only.
			b := raw.EncodeToString(append(make([]byte, k), value...))
			from, to := (8*k+5)/6, 8*(k+len(value))/6
			if from < to && to <= len(b) {
				add(b[from:to])
			}
		}
	}
	return forms
}

// write masks p (after what is held back) and returns what can be released now.
func (m *masker) write(p []byte) []byte { return m.mask(p, false) }

// mask masks p after what is held back; at the end (final) nothing is held back.
func (m *masker) mask(p []byte, final bool) []byte {
	if len(m.values) == 0 {
		return p
	}
	buf := append(m.pending, p...)
	m.pending = nil
	var out []byte
	i := 0
scan:
	for i < len(buf) {
		rest := buf[i:]
		// Longest first: a longer value that the next bytes may still complete
		// wins over a shorter one complete here.
		for _, v := range m.values {
			if bytes.HasPrefix(rest, v) {
				out = append(out, Mask...)
				i += len(v)
				continue scan
			}
			if !final && len(rest) < len(v) && bytes.HasPrefix(v, rest) {
				m.pending = append([]byte(nil), rest...)
				break scan
			}
		}
		out = append(out, buf[i])
		i++
	}
	return out
}

// flush releases what is held back at the end of the stream, masking the whole
// values in it (the rest is only the start of a value, shown as written).
func (m *masker) flush() []byte { return m.mask(nil, true) }

// maskReader reads r through a masker.
type maskReader struct {
	r    io.Reader
	m    *masker
	out  []byte
	buf  []byte
	done bool
	err  error
}

func newMaskReader(r io.Reader, values []string) io.Reader {
	m := newMasker(values)
	if len(m.values) == 0 {
		return r
	}
	return &maskReader{r: r, m: m}
}

func (mr *maskReader) Read(p []byte) (int, error) {
	if mr.buf == nil {
		mr.buf = make([]byte, 32<<10)
	}
	for len(mr.out) == 0 {
		if mr.done {
			return 0, mr.err
		}
		n, err := mr.r.Read(mr.buf)
		mr.out = append(mr.out, mr.m.write(mr.buf[:n])...)
		if err != nil {
			mr.out = append(mr.out, mr.m.flush()...)
			mr.done, mr.err = true, err
		}
	}
	n := copy(p, mr.out)
	mr.out = mr.out[n:]
	return n, nil
}

// validEnvName reports whether name is [A-Za-z_][A-Za-z0-9_]*.
func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
