package saga

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
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

// ProtoCodec encodes payloads in the protocol-buffers wire format (field numbers below,
// zero values omitted), which is about half the size of the JSON form for typical events:
//
//	1 output bytes, 2 error string, 3 final bool, 4 name string, 5 timer_id string,
//	6 fire_at int64 (unix ns), 7 not_before int64 (unix ns), 8 seq int64, 9 index int64
type ProtoCodec struct{}

// Name is "proto".
func (ProtoCodec) Name() string { return "proto" }

// Marshal encodes d in the protobuf wire format.
func (ProtoCodec) Marshal(d *EventData) ([]byte, error) {
	var b []byte
	if len(d.Output) > 0 {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, d.Output)
	}
	if d.Error != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, d.Error)
	}
	if d.Final {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if d.Name != "" {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendString(b, d.Name)
	}
	if d.TimerID != "" {
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendString(b, d.TimerID)
	}
	if !d.FireAt.IsZero() {
		b = protowire.AppendTag(b, 6, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(d.FireAt.UnixNano()))
	}
	if !d.NotBefore.IsZero() {
		b = protowire.AppendTag(b, 7, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(d.NotBefore.UnixNano()))
	}
	if d.Seq != 0 {
		b = protowire.AppendTag(b, 8, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(d.Seq))
	}
	if d.Index != 0 {
		b = protowire.AppendTag(b, 9, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(d.Index)))
	}
	return b, nil
}

// Unmarshal decodes the protobuf wire format into d; unknown fields are skipped.
func (ProtoCodec) Unmarshal(b []byte, d *EventData) error {
	*d = EventData{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("saga: proto codec: tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && num <= 5:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("saga: proto codec: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 1:
				d.Output = append([]byte(nil), v...)
			case 2:
				d.Error = string(v)
			case 4:
				d.Name = string(v)
			case 5:
				d.TimerID = string(v)
			default:
				return fmt.Errorf("saga: proto codec: field %d has wire type bytes", num)
			}
		case typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("saga: proto codec: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 3:
				d.Final = v != 0
			case 6:
				d.FireAt = time.Unix(0, protowire.DecodeZigZag(v)).UTC()
			case 7:
				d.NotBefore = time.Unix(0, protowire.DecodeZigZag(v)).UTC()
			case 8:
				d.Seq = protowire.DecodeZigZag(v)
			case 9:
				d.Index = int(protowire.DecodeZigZag(v))
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("saga: proto codec: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

// ErrUnknownCodec: an event names a codec the engine does not know.
var ErrUnknownCodec = errors.New("saga: unknown codec")

// codecSet finds codecs by name.
type codecSet map[string]Codec

func newCodecSet(extra ...Codec) codecSet {
	cs := codecSet{}
	for _, c := range append([]Codec{JSONCodec{}, ProtoCodec{}}, extra...) {
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
