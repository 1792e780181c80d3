package config

import (
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

//go:embed default.yaml
var defaultYAML []byte

// EmbeddedName is the Source of the embedded default configuration.
const EmbeddedName = "embedded default"

// DefaultYAML returns the embedded default configuration file.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }

// Locate picks the configuration file by SPEC's order: the -c flag, then
// $CONDAPROXY_CONFIG, then ./condaproxy.yaml if it exists. An empty result means
// the embedded default.
func Locate(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("CONDAPROXY_CONFIG"); env != "" {
		return env
	}
	if _, err := os.Stat("condaproxy.yaml"); err == nil {
		return "condaproxy.yaml"
	}
	return ""
}

// Load reads and validates the file at path, or the embedded default when path is "".
func Load(path string) (*Config, error) {
	if path == "" {
		return Parse(EmbeddedName, defaultYAML, os.LookupEnv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse validates data, read from the file called name. lookupEnv resolves ${VAR}.
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlSyntaxError(name, err)
	}
	l := &loader{file: name, lines: map[string]int{}, env: lookupEnv}
	cfg := &Config{Source: name}
	if len(doc.Content) == 0 {
		// An empty file is a valid file: every default applies, and no channel is served.
		cfg.fillDefaults()
		return cfg, nil
	}
	root := doc.Content[0]
	if err := l.expandEnv(root, ""); err != nil {
		return nil, err
	}
	if err := l.check(root, reflect.TypeOf(*cfg), ""); err != nil {
		return nil, err
	}
	if err := root.Decode(cfg); err != nil {
		// check has already seen every key and scalar; this is a shape it did not foresee.
		return nil, &Error{File: name, Msg: err.Error()}
	}
	cfg.fillDefaults()
	cfg.lines = l.lines
	if err := l.validate(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func yamlSyntaxError(file string, err error) error {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: n, Msg: "not valid YAML: " + m[2]}
	}
	return &Error{File: file, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
}

// loader carries what a check needs to name a problem: the file, and the line of each key.
type loader struct {
	file  string
	lines map[string]int
	env   func(string) (string, bool)
}

func (l *loader) errAt(key string, line int, format string, args ...any) error {
	return &Error{File: l.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// errKey reports a problem at the line where key was written.
func (l *loader) errKey(key, format string, args ...any) error {
	return l.errAt(key, l.lines[key], format, args...)
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${VAR} in every scalar value. An unset variable is an error:
// silently expanding a missing token to "" would send anonymous requests upstream.
func (l *loader) expandEnv(n *yaml.Node, path string) error {
	switch n.Kind {
	case yaml.ScalarNode:
		var missing string
		orig := n.Value
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name := envRef.FindStringSubmatch(ref)[1]
			v, ok := l.env(name)
			if !ok && missing == "" {
				missing = name
			}
			return v
		})
		if missing != "" {
			return l.errAt(path, n.Line, "environment variable %s is not set", missing)
		}
		if n.Value == "" && orig != "" {
			// "${TOKEN}" with TOKEN set but empty: an empty admin token would turn
			// loopback trust on, an empty password send anonymous requests.
			return l.errAt(path, n.Line, "%s expands to an empty value: set the environment variable, or remove the key", orig)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := l.expandEnv(n.Content[i+1], join(path, n.Content[i].Value)); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if err := l.expandEnv(c, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var (
	scalarType = reflect.TypeOf((*scalar)(nil)).Elem()
	tokenType  = reflect.TypeOf(Token{})
)

// check walks the document beside the Go type it must fill: it rejects unknown keys
// and wrongly shaped values, parses sizes and durations, and records each key's line.
func (l *loader) check(n *yaml.Node, t reflect.Type, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // an empty value keeps the default
	}
	if reflect.PointerTo(t).Implements(scalarType) {
		if n.Kind != yaml.ScalarNode {
			return l.errAt(path, n.Line, "want a single value, not a %s", KindName(n))
		}
		if err := reflect.New(t).Interface().(scalar).parse(n.Value); err != nil {
			return l.errAt(path, n.Line, "%v", err)
		}
		return nil
	}
	if t == tokenType && n.Kind == yaml.ScalarNode {
		return nil // a plain token string: it opens every channel
	}
	switch t.Kind() {
	case reflect.Pointer:
		return l.check(n, t.Elem(), path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return l.errAt(path, n.Line, "want a mapping of keys, not a %s", KindName(n))
		}
		fields := yamlFields(t)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := join(path, k.Value)
			f, ok := fields[k.Value]
			if !ok {
				return l.errAt(key, k.Line, "unknown key (known here: %s)", strings.Join(sortedKeys(fields), ", "))
			}
			if seen[k.Value] {
				return l.errAt(key, k.Line, "key given twice")
			}
			seen[k.Value] = true
			l.lines[key] = k.Line
			if err := l.check(v, f.Type, key); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return l.errAt(path, n.Line, "want a list, not a %s", KindName(n))
		}
		for i, c := range n.Content {
			key := fmt.Sprintf("%s[%d]", path, i)
			l.lines[key] = c.Line
			if err := l.check(c, t.Elem(), key); err != nil {
				return err
			}
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return l.errAt(path, n.Line, "want a single value, not a %s", KindName(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode {
			return l.errAt(path, n.Line, "want true or false, not a %s", KindName(n))
		}
		switch strings.ToLower(n.Value) {
		case "true", "false", "yes", "no", "on", "off":
		default:
			return l.errAt(path, n.Line, "want true or false, not %q", n.Value)
		}
	}
	return nil
}

// KindName names the shape of a YAML node for messages: "mapping", "list" or
// "single value". Shared with the mirror-config reader.
func KindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "single value"
	}
}

func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		out[name] = f
	}
	return out
}

func sortedKeys(m map[string]reflect.StructField) []string {
	return slices.Sorted(maps.Keys(m))
}
