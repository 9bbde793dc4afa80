package commandtest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
)

// Case is the contract case of one command type: a command of Go type C and the
// result type R its production handler is registered with. Build it with For.
type Case struct {
	cmd     command.Command
	cmdType reflect.Type
	resType reflect.Type
	// check runs CheckRoundTrip and CheckTypeMismatch on a bus whose only handler is
	// a stub of (C, R) returning a filled R.
	check func(t testing.TB) bool
}

// For returns the case of command type C with result type R. The command and the
// stub's result have every exported field set to a non-zero value (Fill), so that a
// field the JSON round trip loses (an unexported field, a lossy type, a wrong tag)
// fails the check.
func For[C command.Command, R any]() Case {
	var cmd C
	Fill(&cmd)
	var want R
	Fill(&want)
	return Case{
		cmd:     cmd,
		cmdType: reflect.TypeFor[C](),
		resType: reflect.TypeFor[R](),
		check: func(t testing.TB) bool {
			t.Helper()
			b := command.NewBus()
			command.Register(b, command.HandlerFunc[C, R](func(context.Context, C) (R, error) { return want, nil }))
			ok := CheckRoundTrip(t, b, cmd, want)
			// The stub ignores the command, so compare the decoded command itself: a
			// field lost on the way through the outbox is lost for the real handler.
			if payload, err := json.Marshal(cmd); err == nil {
				if got, err := b.Decode(cmd.CommandType(), payload); err == nil && !reflect.DeepEqual(got, any(cmd)) {
					t.Errorf("command %s: JSON round trip loses fields: %#v became %#v", cmd.CommandType(), cmd, got)
					ok = false
				}
			}
			return CheckTypeMismatch(t, b, cmd) && ok
		},
	}
}

// Command returns the case's command (with its fields filled).
func (c Case) Command() command.Command { return c.cmd }

// CheckEveryCommand runs the contract checks over every command type prod has a
// handler for (user story 62.2). prod is a bus wired like production (the handlers of
// a real service registered on it). It checks that:
//
//   - every command type registered on prod has a case, and every case's command is
//     registered on prod, for Go type C, with result type R;
//   - each case survives the erased path: CheckRoundTrip and CheckTypeMismatch, run on
//     a bus where a stub handler of (C, R) returns a filled R (the real handler, with
//     its database effects, need not run: the erased path depends only on the types).
//
// It reports with t.Errorf and returns whether everything passed.
func CheckEveryCommand(t testing.TB, prod *command.Bus, cases ...Case) bool {
	t.Helper()
	ok := true
	covered := map[string]bool{}
	for _, c := range cases {
		typ := c.cmd.CommandType()
		if covered[typ] {
			t.Errorf("command %s has two cases", typ)
			ok = false
			continue
		}
		covered[typ] = true
		if !CheckRegistered(t, prod, c.cmd) {
			ok = false
			continue
		}
		if rt, err := prod.ResultType(typ); err != nil || rt != c.resType {
			t.Errorf("command %s (%v): registered with result type %v (err %v), the case says %v", typ, c.cmdType, rt, err, c.resType)
			ok = false
			continue
		}
		if !c.check(t) {
			ok = false
		}
	}
	for _, typ := range prod.Types() {
		if !covered[typ] {
			t.Errorf("command %s is registered but has no contract case (add commandtest.For[C, R]())", typ)
			ok = false
		}
	}
	return ok
}

// fillTime is the time Fill puts in time.Time fields: UTC, no monotonic reading, so
// that it survives a JSON round trip unchanged.
var fillTime = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

// Fill sets every exported field reachable from ptr (a pointer) to a non-zero value:
// strings to "<field>-x", numbers (durations included) to 7, booleans to true,
// time.Time to a fixed UTC time, json.RawMessage to a JSON number; pointers, slices and
// maps get one filled element. Interfaces, functions and channels stay zero. It panics
// if ptr is not a non-nil pointer.
func Fill(ptr any) {
	v := reflect.ValueOf(ptr)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		panic(fmt.Sprintf("commandtest: Fill needs a non-nil pointer, got %T", ptr))
	}
	fill(v.Elem(), "value", 0)
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

func fill(v reflect.Value, name string, depth int) {
	if depth > 8 || !v.CanSet() {
		return // a recursive type, or an unexported field
	}
	switch t := v.Type(); {
	case t == timeType:
		v.Set(reflect.ValueOf(fillTime))
		return
	case t == rawType:
		v.Set(reflect.ValueOf(json.RawMessage("7")))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(name + "-x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		v.SetUint(7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(7.5)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), name, depth+1)
		v.Set(p)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), name, depth+1)
		v.Set(s)
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i), name, depth+1)
		}
	case reflect.Map:
		m := reflect.MakeMapWithSize(v.Type(), 1)
		k := reflect.New(v.Type().Key()).Elem()
		fill(k, name+"-key", depth+1)
		e := reflect.New(v.Type().Elem()).Elem()
		fill(e, name, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() {
				fill(v.Field(i), f.Name, depth+1)
			}
		}
	}
}
