package matchspec

import (
	"regexp"
	"strconv"
	"strings"
)

type bnKind uint8

const (
	bnExact bnKind = iota
	bnAny
	bnOperator
	bnRegex
)

// buildNumberSpec is conda's BuildNumberMatch, the matcher behind
// name[build_number=...].
type buildNumberSpec struct {
	text     string
	kind     bnKind
	n        int64
	overflow bool      // an integer that no int can equal
	cmp      *specNode // for bnOperator
	re       *regexp.Regexp
}

// parseBuildNumber accepts what conda accepts, except that conda's fallback
// of comparing the text for string equality with the integer build number
// (which can never succeed) is reported as an error.
func parseBuildNumber(value string) (*buildNumberSpec, error) {
	if text, ok := pyInt(value); ok {
		n, err := strconv.ParseInt(text, 10, 64)
		return &buildNumberSpec{text: text, kind: bnExact, n: n, overflow: err != nil}, nil
	}
	t := pyStrip(value)
	fail := func(reason string, cause error) error {
		return &ParseError{Kind: KindBuildNumber, Input: value, Reason: reason, Err: cause}
	}
	switch {
	case t == "":
		return nil, fail("empty", nil)
	case t == "*":
		return &buildNumberSpec{text: t, kind: bnAny}, nil
	case strings.IndexByte("=<>!", t[0]) >= 0:
		opText, vo, ok := parseRelation(t)
		if !ok {
			return nil, fail("invalid operator", nil)
		}
		ver, err := ParseVersion(vo)
		if err != nil {
			return nil, fail("bad number", err)
		}
		return &buildNumberSpec{text: t, kind: bnOperator,
			cmp: &specNode{form: formOperator, op: opByText[opText], ver: ver}}, nil
	case t[0] == '^' || t[len(t)-1] == '$':
		if t[0] != '^' || t[len(t)-1] != '$' {
			return nil, fail("regex specs must start with '^' and end with '$'", nil)
		}
		re, err := compilePythonRegex(t)
		if err != nil {
			return nil, fail("bad regular expression", err)
		}
		return &buildNumberSpec{text: t, kind: bnRegex, re: re}, nil
	}
	return nil, fail("must be an integer, '*', a comparison such as '>=3', or a ^regex$", nil)
}

// pyInt mirrors Python's int(str): surrounding whitespace, an optional sign,
// and ASCII digits with single underscores between them. It returns the
// canonical decimal text.
func pyInt(s string) (string, bool) {
	t := pyStrip(s)
	neg := false
	if t != "" && (t[0] == '+' || t[0] == '-') {
		neg = t[0] == '-'
		t = t[1:]
	}
	if t == "" || !isDigit(t[0]) || !isDigit(t[len(t)-1]) {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case isDigit(c):
			b.WriteByte(c)
		case c == '_' && t[i+1] != '_':
			// single underscore between digits (t ends with a digit)
		default:
			return "", false
		}
	}
	digits := strings.TrimLeft(b.String(), "0")
	if digits == "" {
		return "0", true
	}
	if neg {
		return "-" + digits, true
	}
	return digits, true
}

func (b *buildNumberSpec) match(n int) bool {
	switch b.kind {
	case bnExact:
		return !b.overflow && int64(n) == b.n
	case bnAny:
		return true
	case bnRegex:
		return b.re.MatchString(strconv.Itoa(n))
	}
	// conda compares VersionOrder(str(build_number)) with the operand.
	v, err := ParseVersion(strconv.Itoa(n))
	if err != nil {
		return false
	}
	return b.cmp.match(v)
}
