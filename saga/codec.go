package saga

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// EventData is the payload of a history event. Only the fields an event type uses are set.
type EventData struct {
	Output    []byte    `json:"output,omitempty"` // step output, signal payload (JSON)
	Error     string    `json:"error,omitempty"`
	Final     bool      `json:"final,omitempty"` // a failure that will not be retried
	Name      string    `json:"name,omitempty"`  // signal or timer name
	TimerID   string    `json:"timer_id,omitempty"`
	FireAt    time.Time `json:"fire_at,omitzero"`
	NotBefore time.Time `json:"not_before,omitzero"` // earliest run of a scheduled attempt
	Seq       int64     `json:"seq,omitempty"`       // snapshot-taken: seq of the snapshot
	Index     int       `json:"index,omitempty"`     // step index
}

// Codec encodes event payloads. The codec's Name is stored with every event, so events
// written with an older default stay readable. Implementations must be safe for
// concurrent use.
type Codec interface {
	Name() string
	Marshal(d *EventData) ([]byte, error)
	Unmarshal(b []byte, d *EventData) error
}

// JSONCodec encodes payloads as JSON (readable in psql).
type JSONCodec struct{}

// Name is "json".
func (JSONCodec) Name() string { return "json" }

// Marshal encodes d as JSON.
func (JSONCodec) Marshal(d *EventData) ([]byte, error) { return json.Marshal(d) }

// Unmarshal decodes JSON into d.
func (JSONCodec) Unmarshal(b []byte, d *EventData) error {
	if len(b) == 0 {
		*d = EventData{}
		return nil
	}
	return json.Unmarshal(b, d)
}

// ErrUnknownCodec: an event names a codec the engine does not know.
var ErrUnknownCodec = errors.New("saga: unknown codec")

// codecSet finds codecs by name.
type codecSet map[string]Codec

func newCodecSet(extra ...Codec) codecSet {
	cs := codecSet{}
	for _, c := range append([]Codec{JSONCodec{}}, extra...) {
		if c != nil {
			cs[c.Name()] = c
		}
	}
	return cs
}

func (cs codecSet) decode(name string, b []byte) (*EventData, error) {
	c, ok := cs[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCodec, name)
	}
	var d EventData
	if err := c.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("saga: decode %s payload: %w", name, err)
	}
	return &d, nil
}
