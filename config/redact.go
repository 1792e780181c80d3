package config

import (
	"net/url"
	"reflect"
	"regexp"

	"gopkg.in/yaml.v3"
)

// Mask replaces a secret wherever it would be printed.
const Mask = "***"

// tokenPath matches anaconda.org's /t/<token>/ path segment.
var tokenPath = regexp.MustCompile(`/t/[^/]+(/|$)`)

var escapedMask = regexp.MustCompile(`%2A%2A%2A`)

// RedactURL hides the secrets a URL can carry: a /t/<token>/ segment and the password
// of user:password@. Everything that prints or logs an upstream URL goes through it.
func RedactURL(raw string) string {
	out := tokenPath.ReplaceAllString(raw, "/t/"+Mask+"$1")
	u, err := url.Parse(out)
	if err != nil || u.User == nil {
		return out
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), Mask)
	}
	s := u.String()
	// url.String escapes the mask; keep it readable.
	return escapedMask.ReplaceAllString(s, Mask)
}

// Show returns the effective configuration as YAML with every secret masked.
func (c *Config) Show() ([]byte, error) {
	masked := *c
	v := reflect.ValueOf(&masked).Elem()
	maskSecrets(v)
	return yaml.Marshal(&masked)
}

// maskSecrets walks a copy of the configuration and masks the fields tagged secret.
// Slices are copied before they are changed, so the caller's Config is untouched.
func maskSecrets(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			cp := reflect.New(v.Elem().Type())
			cp.Elem().Set(v.Elem())
			v.Set(cp)
			maskSecrets(cp.Elem())
		}
	case reflect.Slice:
		if v.IsNil() {
			return
		}
		cp := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(cp, v)
		v.Set(cp)
		for i := 0; i < v.Len(); i++ {
			maskSecrets(v.Index(i))
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := v.Field(i)
			if !f.CanSet() {
				continue
			}
			switch t.Field(i).Tag.Get("secret") {
			case "all":
				maskAll(f)
			case "url":
				if f.Kind() == reflect.String {
					f.SetString(RedactURL(f.String()))
				}
			default:
				maskSecrets(f)
			}
		}
	}
}

func maskAll(f reflect.Value) {
	switch f.Kind() {
	case reflect.String:
		if f.String() != "" {
			f.SetString(Mask)
		}
	case reflect.Slice:
		cp := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
		for i := 0; i < f.Len(); i++ {
			cp.Index(i).SetString(Mask)
		}
		f.Set(cp)
	}
}
