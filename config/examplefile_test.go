package config

import (
	"errors"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"testing"
)

// exampleFile is the documented configuration at the repository's top.
const exampleFile = "../config.example.toml"

func TestExampleFile(t *testing.T) {
	data, err := os.ReadFile(exampleFile)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s is missing: the repository must ship it with every key of [proxy] and [log] at its default", exampleFile)
	}
	if err != nil {
		t.Fatalf("read %s: got %v; want %v", exampleFile, err, nil)
	}
	got, err := Parse("config.example.toml", data)
	if err != nil {
		t.Fatalf("Parse: got %v; want %v", err, nil)
	}
	want := Default()
	for _, sec := range []struct {
		name      string
		got, want reflect.Value
	}{
		{"proxy", reflect.ValueOf(got.Proxy), reflect.ValueOf(want.Proxy)},
		{"log", reflect.ValueOf(got.Log), reflect.ValueOf(want.Log)},
	} {
		for i := range sec.got.NumField() {
			f := sec.got.Type().Field(i)
			key := f.Tag.Get("toml")
			t.Run(sec.name+"."+key, func(t *testing.T) {
				g, w := sec.got.Field(i).Interface(), sec.want.Field(i).Interface()
				if g != w {
					t.Errorf("got %v; want %v (the default)", g, w)
				}
				// The error for an unknown key sends readers to this file
				// for the list of keys, so each is written there, set or
				// commented out.
				re := regexp.MustCompile(`(?m)^[ \t]*#?[ \t]*` + regexp.QuoteMeta(key) + `[ \t]*=`)
				if !re.Match(data) {
					t.Errorf("%s does not mention %s.%s; want a line %q", exampleFile, sec.name, key, key+" = ...")
				}
			})
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v; want %+v", got, want)
	}
}
