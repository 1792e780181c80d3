package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// scalar is implemented by the value types that read themselves from one YAML
// scalar; the loader calls parse while it still knows the key and the line.
type scalar interface {
	parse(s string) error
}

// Size is a byte count written as "50GiB", "256MiB", "512KiB" or a plain number of bytes.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1},
}

func (s *Size) parse(v string) error {
	v = strings.TrimSpace(v)
	mult := int64(1)
	num := v
	for _, u := range sizeUnits {
		if strings.HasSuffix(v, u.suffix) {
			mult, num = u.mult, strings.TrimSpace(strings.TrimSuffix(v, u.suffix))
			break
		}
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n < 0 || num == "" {
		return fmt.Errorf("bad size %q: want a number with KiB, MiB, GiB or TiB, e.g. 50GiB", v)
	}
	total := n * float64(mult)
	if total > float64(1<<62) {
		return fmt.Errorf("bad size %q: too large", v)
	}
	*s = Size(total)
	return nil
}

func (s Size) String() string {
	for _, u := range sizeUnits {
		if s != 0 && int64(s)%u.mult == 0 {
			return fmt.Sprintf("%d%s", int64(s)/u.mult, u.suffix)
		}
	}
	return "0B"
}

// UnmarshalYAML lets Size be decoded directly from a scalar.
func (s *Size) UnmarshalYAML(n *yaml.Node) error { return s.parse(n.Value) }

// MarshalYAML prints the size in the unit it divides evenly.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// Duration is a Go duration string: "10m", "36h", "90s".
type Duration time.Duration

func (d *Duration) parse(v string) error {
	v = strings.TrimSpace(v)
	if v == "" {
		*d = 0
		return nil
	}
	p, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("bad duration %q: want Go's form, e.g. 90s, 10m, 36h", v)
	}
	if p < 0 {
		return fmt.Errorf("bad duration %q: must not be negative", v)
	}
	*d = Duration(p)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string {
	if d == 0 {
		return ""
	}
	return time.Duration(d).String()
}

// UnmarshalYAML lets Duration be decoded directly from a scalar.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error { return d.parse(n.Value) }

// MarshalYAML prints Go's duration form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a token written as a plain string or as {token, channels}.
func (t *Token) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*t = Token{Token: n.Value}
		return nil
	}
	type plain Token // without this method
	if err := n.Decode((*plain)(t)); err != nil {
		return err
	}
	t.Scoped = true
	return nil
}

// MarshalYAML writes a token that opens every channel as the plain string.
func (t Token) MarshalYAML() (any, error) {
	if !t.Scoped {
		return t.Token, nil
	}
	type plain Token
	return plain(t), nil
}
