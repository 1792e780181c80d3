package config

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

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
	} else if u.User.Username() != "" {
		// A user name with no password is a token in disguise (some channel
		// hosts take the token as the user name of basic auth).
		u.User = url.User(Mask)
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

// Secrets lists every secret value the configuration holds: client and admin
// tokens, upstream passwords, the tokens and passwords inside upstream and Redis
// URLs. A log handler masks them wherever they would appear.
func (c *Config) Secrets() []string {
	var out []string
	add := func(s string) {
		// A secret of one or two characters would mask half of every line; such a
		// value is no secret worth the name, and validation refuses empty ones.
		if len(s) >= 3 {
			out = append(out, s)
		}
	}
	addURL := func(raw string) {
		if m := tokenPath.FindStringSubmatch(raw); m != nil {
			add(strings.TrimSuffix(strings.TrimPrefix(m[0], "/t/"), "/"))
		}
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			if p, ok := u.User.Password(); ok {
				add(p)
			} else {
				add(u.User.Username())
			}
		}
	}
	for _, t := range c.Auth.Tokens {
		add(t.Token)
	}
	add(c.Auth.AdminToken)
	add(c.Storage.S3.AccessKey)
	add(c.Storage.S3.SecretKey)
	addURL(c.Redis)
	for _, ch := range c.Channels {
		for _, up := range ch.Upstreams {
			addURL(up.URL)
			add(up.Password)
		}
	}
	return out // NewRedactor orders and dedupes them
}

// Redactor masks secrets in text: the configured values, and any /t/<token>/
// path segment, configured or guessed (a 401 for a guessed token must not log it).
type Redactor struct{ secrets []string }

// NewRedactor masks the given secrets (usually Config.Secrets), each also as it
// appears escaped in a URL, a quoted Go string or JSON. Values shorter than 3
// characters (an unset admin token, say) are no secrets worth the name and would
// mask half of every line: they are left out.
func NewRedactor(secrets []string) *Redactor {
	r := &Redactor{}
	seen := map[string]bool{}
	for _, s := range secrets {
		if len(s) < 3 {
			continue
		}
		quoted := strconv.Quote(s)
		js, _ := json.Marshal(s)
		for _, form := range []string{s, url.PathEscape(s), url.QueryEscape(s), quoted[1 : len(quoted)-1], string(js[1 : len(js)-1])} {
			if !seen[form] {
				seen[form] = true
				r.secrets = append(r.secrets, form)
			}
		}
	}
	// Longest first: a secret that contains another is masked whole.
	slices.SortFunc(r.secrets, func(a, b string) int { return len(b) - len(a) })
	return r
}

var (
	// tokenInText is a /t/<token> segment inside free text: up to a '/', a
	// space or a quote (configured tokens hold none of them).
	tokenInText = regexp.MustCompile(`/t/[^/\s"'<>]+`)
	// urlInText is a URL inside free text: up to a space or a quote.
	urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+`)
	// urlPassword and urlUser are the user:password@ and user@ of a URL that
	// url.Parse refuses (and RedactURL therefore leaves as it is).
	urlPassword = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:\s]*:)[^/?#@\s]*@`)
	urlUser     = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@:\s]+@`)
)

// String returns s with every secret masked: the configured values in every
// form, any /t/<token> segment, and the credentials of any URL in it.
func (r *Redactor) String(s string) string {
	if r != nil {
		for _, sec := range r.secrets {
			if strings.Contains(s, sec) {
				s = strings.ReplaceAll(s, sec, Mask)
			}
		}
	}
	if strings.Contains(s, "/t/") {
		s = tokenInText.ReplaceAllString(s, "/t/"+Mask)
	}
	if strings.Contains(s, "@") && strings.Contains(s, "://") {
		s = urlInText.ReplaceAllStringFunc(s, func(u string) string {
			if out := RedactURL(u); out != u {
				return out
			}
			if urlPassword.MatchString(u) {
				return urlPassword.ReplaceAllString(u, "${1}"+Mask+"@")
			}
			return urlUser.ReplaceAllString(u, "${1}"+Mask+"@")
		})
	}
	return s
}

// Handler wraps h so that no record it writes holds a secret: the message and
// every attribute (errors and Stringers included) pass through r. It is the one
// place every log line of the process goes through, so a call site that forgets
// to redact still leaks nothing.
func (r *Redactor) Handler(h slog.Handler) slog.Handler { return &redactingHandler{h: h, r: r} }

type redactingHandler struct {
	h slog.Handler
	r *Redactor
}

func (h *redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.h.Enabled(ctx, l)
}

func (h *redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h *redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return &redactingHandler{h: h.h.WithAttrs(red), r: h.r}
}

func (h *redactingHandler) WithGroup(name string) slog.Handler {
	return &redactingHandler{h: h.h.WithGroup(name), r: h.r}
}

func (h *redactingHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = h.attr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.r.String(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, h.r.String(x.String()))
		case []string:
			red := make([]string, len(x))
			for i, s := range x {
				red[i] = h.r.String(s)
			}
			return slog.Any(a.Key, red)
		case []byte:
			return slog.String(a.Key, h.r.String(string(x)))
		default:
			// Maps, headers, structs: printed, then masked, rather than handed
			// to the output handler to print with whatever they hold.
			return slog.String(a.Key, h.r.String(fmt.Sprintf("%+v", x)))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
