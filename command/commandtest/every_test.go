package commandtest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/command/commandtest"
)

// order is a command with a field of every kind Fill knows.
type order struct {
	Key      string            `json:"key"`
	Count    int               `json:"count,omitempty"`
	Wait     time.Duration     `json:"wait"`
	At       time.Time         `json:"at,omitzero"`
	Rush     bool              `json:"rush,omitempty"`
	Note     *string           `json:"note,omitempty"`
	Items    []string          `json:"items"`
	Labels   map[string]string `json:"labels"`
	Shipping struct {
		City string `json:"city"`
	} `json:"shipping"`
}

func (order) CommandType() string      { return "test.order" }
func (c order) IdempotencyKey() string { return c.Key }

type receipt struct {
	ID    string    `json:"id"`
	Total float64   `json:"total"`
	At    time.Time `json:"at"`
}

// leaky loses its exported Secret in JSON.
type leaky struct {
	Key    string `json:"key"`
	Secret string `json:"-"`
}

func (leaky) CommandType() string      { return "test.leaky" }
func (c leaky) IdempotencyKey() string { return c.Key }

// leakyResult loses Detail in JSON: a repeated idempotency key would answer without it.
type leakyResult struct {
	Detail string `json:"-"`
}

func prodBus() *command.Bus {
	b := command.NewBus()
	command.Register(b, command.HandlerFunc[order, receipt](func(context.Context, order) (receipt, error) { return receipt{}, nil }))
	command.Register(b, command.HandlerFunc[greet, greeting](func(context.Context, greet) (greeting, error) { return greeting{}, nil }))
	return b
}

func TestFillSetsEveryExportedField(t *testing.T) {
	var o order
	commandtest.Fill(&o)
	if o.Key == "" || o.Count == 0 || o.Wait == 0 || o.At.IsZero() || !o.Rush || o.Note == nil || *o.Note == "" ||
		len(o.Items) != 1 || len(o.Labels) != 1 || o.Shipping.City == "" {
		t.Fatalf("Fill left a field zero: %+v", o)
	}
}

func TestCheckEveryCommandPasses(t *testing.T) {
	if !commandtest.CheckEveryCommand(t, prodBus(),
		commandtest.For[order, receipt](),
		commandtest.For[greet, greeting]()) {
		t.Fatal("CheckEveryCommand failed")
	}
}

func TestCheckEveryCommandFails(t *testing.T) {
	withLeaky := prodBus()
	command.Register(withLeaky, command.HandlerFunc[leaky, receipt](func(context.Context, leaky) (receipt, error) { return receipt{}, nil }))
	leakyRes := command.NewBus()
	command.Register(leakyRes, command.HandlerFunc[order, leakyResult](func(context.Context, order) (leakyResult, error) { return leakyResult{}, nil }))
	for _, tc := range []struct {
		name  string
		bus   *command.Bus
		cases []commandtest.Case
		want  string
	}{
		{"registered without a case", prodBus(), []commandtest.Case{commandtest.For[order, receipt]()}, "test.greet is registered but has no contract case"},
		{"case not registered", prodBus(), []commandtest.Case{commandtest.For[order, receipt](), commandtest.For[greet, greeting](),
			commandtest.For[unregistered, int]()}, "no registered handler"},
		{"wrong result type", prodBus(), []commandtest.Case{commandtest.For[order, greeting](), commandtest.For[greet, greeting]()}, "registered with result type"},
		{"duplicate case", prodBus(), []commandtest.Case{commandtest.For[order, receipt](), commandtest.For[order, receipt](),
			commandtest.For[greet, greeting]()}, "two cases"},
		{"command field lost in JSON", withLeaky, []commandtest.Case{commandtest.For[order, receipt](), commandtest.For[greet, greeting](),
			commandtest.For[leaky, receipt]()}, "test.leaky"},
		{"result field lost in JSON", leakyRes, []commandtest.Case{commandtest.For[order, leakyResult]()}, "result JSON round trip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			if commandtest.CheckEveryCommand(r, tc.bus, tc.cases...) {
				t.Fatal("check passed, want a failure")
			}
			if !strings.Contains(strings.Join(r.errs, "\n"), tc.want) {
				t.Fatalf("failures %q do not mention %q", r.errs, tc.want)
			}
		})
	}
}
