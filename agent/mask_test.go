package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/url"
	"strings"
	"testing"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// maskAll feeds the writes one by one through a masker and returns everything released.
func maskAll(values []string, writes ...string) string {
	m := newMasker(values)
	var out bytes.Buffer
	for _, w := range writes {
		out.Write(m.write([]byte(w)))
	}
	out.Write(m.flush())
	return out.String()
}

func TestMaskerSplitAcrossWrites(t *testing.T) {
	const s = "hunter2-S3cr3t"
	for _, tc := range []struct {
		name   string
		values []string
		writes []string
		want   string
	}{
		{"whole", []string{s}, []string{"token=" + s + "\n"}, "token=***\n"},
		{"split in two", []string{s}, []string{"token=hunter2-", "S3cr3t\n"}, "token=***\n"},
		{"one byte at a time", []string{s}, strings.Split("a "+s+" b "+s, ""), "a *** b ***"},
		{"split then not a value", []string{s}, []string{"hunter2-", "x\n"}, "hunter2-x\n"},
		{"prefix at the end", []string{s}, []string{"ends with hunter"}, "ends with hunter"},
		{"twice in a row", []string{s}, []string{s + s}, "******"},
		{"longest wins", []string{"abc", "abcdef"}, []string{"xabcd", "efy abc"}, "x***y ***"},
		{"inner value", []string{"abcd", "bc"}, []string{"ab", "cx"}, "a***x"},
		{"no values", nil, []string{"plain ", "text"}, "plain text"},
		{"multi-line value", []string{"line1\nline2"}, []string{"a line1\n", "line2 b"}, "a *** b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := maskAll(tc.values, tc.writes...); got != tc.want {
				t.Fatalf("masked %q = %q, want %q", tc.writes, got, tc.want)
			}
		})
	}
}

// chunkReader returns its chunks one per Read, like a pipe written in pieces.
type chunkReader struct{ chunks []string }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func TestMaskReaderSplitReads(t *testing.T) {
	r := newMaskReader(&chunkReader{chunks: []string{"a=S3", "CRET-val", "ue\nS3CRET-value tail S3"}}, []string{"S3CRET-value"})
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "a=***\n*** tail S3"; got != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

// TestExecSecretEnvAndMasking runs a real job that sees its secret in its
// environment and prints it whole and in two writes with a pause between them:
// every line shows *** instead (also its base64), and the job's own hash shows it got
// the value.
func TestExecSecretEnvAndMasking(t *testing.T) {
	const value = "p4ss-W0rd-xyz"
	script := `printf 'whole=%s\n' "$MY_SECRET"
printf 'split=%s' "${MY_SECRET%????}"; sleep 0.2; printf '%s\n' "${MY_SECRET#${MY_SECRET%????}}"
printf '%s' "$MY_SECRET" | sha256sum | cut -d' ' -f1
printf 'err=%s\n' "$MY_SECRET" >&2
echo "$MY_SECRET" | base64
env | grep -c p4ss-W0rd || true`
	res, c := run(t, &hodeiv1.JobSpec{Script: &hodeiv1.Script{Content: script}},
		execOptions{Secrets: map[string]string{"MY_SECRET": value}})
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s; lines %q", res.ExitCode, res.Err, c.lines(0))
	}
	sum := sha256.Sum256([]byte(value))
	out := c.lines(stdout)
	want := []string{"whole=***", "split=***", hex.EncodeToString(sum[:]), "***go=", "1"}
	if strings.Join(out, "|") != strings.Join(want, "|") {
		t.Fatalf("stdout = %q, want %q", out, want)
	}
	if got := c.lines(stderr); len(got) != 1 || got[0] != "err=***" {
		t.Fatalf("stderr = %q", got)
	}
	for _, l := range c.all() {
		if strings.Contains(l.Line, "p4ss") {
			t.Fatalf("line %q holds the secret", l.Line)
		}
	}
}

// TestMaskerEncodedForms: the encoded forms a job commonly prints a secret in are
// masked too, whole and split across writes.
func TestMaskerEncodedForms(t *testing.T) {
	const value = `S3cr"et\<&>/?= +é-long-enough`
	jsonForm, _ := json.Marshal(value)
	b64 := func(enc *base64.Encoding, s string) string { return enc.EncodeToString([]byte(s)) }
	for _, tc := range []struct{ name, printed string }{
		{"json", `{"password":` + string(jsonForm) + `}`},
		{"json no html escaping", `{"password":"S3cr\"et\\<&>/?= +é-long-enough"}`},
		{"url query", "https://x.example/?p=" + url.QueryEscape(value) + "&q=1"},
		{"url path", "https://x.example/" + url.PathEscape(value) + "/y"},
		{"base64", b64(base64.StdEncoding, value)},
		{"base64 of echo (value and newline)", b64(base64.StdEncoding, value+"\n")},
		{"basic auth (value after 5 bytes)", "Authorization: Basic " + b64(base64.StdEncoding, "user:"+value)},
		{"base64 after 1 byte", b64(base64.StdEncoding, "x"+value+"yz")},
		{"base64url raw after 3 bytes", b64(base64.RawURLEncoding, "abc"+value)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The middle of the printed form holds only the value's bytes.
			mid := tc.printed[len(tc.printed)/2-4 : len(tc.printed)/2+4]
			for _, split := range []int{0, len(tc.printed) / 2, len(tc.printed) - 3} {
				got := maskAll([]string{value}, "out: "+tc.printed[:split], tc.printed[split:]+"\n")
				if !strings.Contains(got, Mask) || strings.Contains(got, mid) {
					t.Fatalf("printed %q (split at %d) masked as %q: want *** and no %q", tc.printed, split, got, mid)
				}
			}
		})
	}
	// Encoded forms of a short value are not masked (they would mask ordinary text);
	// the value itself is.
	if got := maskAll([]string{"ab"}, "ab YWI= abc"); got != "*** YWI= ***c" {
		t.Fatalf("short value: %q", got)
	}
	// Text that is no form of the value passes unchanged.
	plain := "aGVsbG8gd29ybGQ= https://x.example/?p=S3cr%22 {\"p\":\"S3cr\"}"
	if got := maskAll([]string{value}, plain); got != plain {
		t.Fatalf("unrelated text masked: %q", got)
	}
}

// FuzzMasker: whatever surrounds a secret and wherever the output is split, no form
// the masker promises to mask (maskedForms: the value and its encodings) comes out.
// Values holding '*' are skipped: the mask itself could spell them.
func FuzzMasker(f *testing.F) {
	f.Add("p4ss-W0rd", "token=", "\n", uint8(0), uint8(3))
	f.Add(`S3cr"et\<&>/?= +é`, `{"p":"`, `"}`, uint8(1), uint8(10))
	f.Add("hunter22", "Authorization: Basic dXNlcjo", "==", uint8(5), uint8(200))
	f.Add("abcabc", "abcab", "cabc", uint8(2), uint8(7))
	f.Fuzz(func(t *testing.T, value, prefix, suffix string, form, split uint8) {
		if value == "" || strings.Contains(value, "*") || len(value) > 256 {
			t.Skip()
		}
		forms := maskedForms(value)
		text := prefix + forms[int(form)%len(forms)] + suffix
		k := int(split) % (len(text) + 1)
		got := maskAll([]string{value}, text[:k], text[k:])
		for _, fm := range forms {
			if strings.Contains(got, fm) {
				t.Fatalf("value %q in %q split at %d: output %q holds the form %q", value, text, k, got, fm)
			}
		}
	})
}
