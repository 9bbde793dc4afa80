package saga

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// eventTypeConstants reads the package's source (test files excluded) and returns the
// value of every string constant named Event…, so that an event type added anywhere in
// the package is enumerated here without anyone listing it.
func eventTypeConstants(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	out := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Event") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out[name.Name] = v
				}
			}
		}
	}
	return out
}

func TestEveryEventTypeHasACategory(t *testing.T) {
	consts := eventTypeConstants(t)
	if len(consts) < 20 || consts["EventStepCompleted"] != EventStepCompleted {
		t.Fatalf("found %d event type constants (%v): the source scan is broken", len(consts), consts)
	}
	used := map[EventCategory]bool{}
	for name, typ := range consts {
		c := CategoryOf(typ)
		if c == "" {
			t.Errorf("%s (%q) has no category: add it to CategoryOf", name, typ)
			continue
		}
		if !slices.Contains(Categories(), c) {
			t.Errorf("%s (%q) has category %q, which Categories() does not list", name, typ, c)
		}
		used[c] = true
	}
	for _, c := range Categories() {
		if !used[c] {
			t.Errorf("category %q has no event type", c)
		}
	}
	if c := CategoryOf("no.such.event"); c != "" {
		t.Errorf("unknown type has category %q, want none", c)
	}
}

func TestEventCategoriesOfARun(t *testing.T) {
	for typ, want := range map[string]EventCategory{
		EventStarted:             CategoryLifecycle,
		EventCompleted:           CategoryLifecycle,
		EventCancelRequested:     CategoryLifecycle,
		EventStepFailed:          CategoryStep,
		EventStepWaiting:         CategoryStep,
		EventCompensationStarted: CategoryCompensation,
		EventTimerFired:          CategoryTimer,
		EventSignalReceived:      CategorySignal,
		EventIncidentRecorded:    CategoryIncident,
	} {
		if got := (&Event{Type: typ}).Category(); got != want {
			t.Errorf("category of %s = %q, want %q", typ, got, want)
		}
	}
}
