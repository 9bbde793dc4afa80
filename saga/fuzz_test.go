package saga

import (
	"bytes"
	"testing"

	"github.com/hodei-jobs/hodei/store"
)

// sameData compares two payloads as the engine sees them (an empty output is none).
func sameData(a, b *EventData) bool {
	return bytes.Equal(a.Output, b.Output) && a.Error == b.Error && a.Final == b.Final &&
		a.Name == b.Name && a.TimerID == b.TimerID && a.FireAt.Equal(b.FireAt) &&
		a.NotBefore.Equal(b.NotBefore) && a.Seq == b.Seq && a.Index == b.Index
}

// fuzzCodec: whatever c decodes, it encodes again and decodes to the same payload, and
// the second encoding equals the first (the stored form is canonical).
func fuzzCodec(t *testing.T, c Codec, b []byte) {
	var d EventData
	if err := c.Unmarshal(b, &d); err != nil {
		return
	}
	enc, err := c.Marshal(&d)
	if err != nil {
		return // e.g. a JSON time beyond year 9999: read, never written back
	}
	var d2 EventData
	if err := c.Unmarshal(enc, &d2); err != nil {
		t.Fatalf("%s: decode own encoding %q of %q: %v", c.Name(), enc, b, err)
	}
	if !sameData(&d, &d2) {
		t.Fatalf("%s: round trip changed the payload:\n%+v\n%+v", c.Name(), d, d2)
	}
	enc2, err := c.Marshal(&d2)
	if err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("%s: encoding not stable: %q then %q (%v)", c.Name(), enc, enc2, err)
	}
	// The engine's path: decodeEvents with the codec's name.
	if _, err := decodeEvents(newCodecSet(), []*store.SagaEvent{{SagaID: "s", Seq: 1, Type: "x", Codec: c.Name(), Payload: b}}); err != nil {
		t.Fatalf("%s: decodeEvents refused what Unmarshal accepted: %v", c.Name(), err)
	}
}

func codecSeeds(f *testing.F, c Codec) {
	f.Helper()
	for _, d := range []EventData{
		{},
		{Output: []byte(`{"ok":true}`), Index: 3},
		{Error: "boom", Final: true, Index: -1},
		{Name: "cancel", TimerID: "t1", Seq: 42},
	} {
		b, err := c.Marshal(&d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzJSONCodec fuzzes the JSON decoder of saga event payloads.
func FuzzJSONCodec(f *testing.F) {
	codecSeeds(f, JSONCodec{})
	f.Add([]byte(`{"fire_at":"2031-05-06T07:08:09.123456789+02:00","not_before":"0001-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"output":"bm90IGpzb24=","index":1e3}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCodec(t, JSONCodec{}, b) })
}
