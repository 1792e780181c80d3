package repodata

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// scanner walks a JSON document in place. It validates what it skips, so a document it
// accepts is valid JSON, and it hands out sub-slices of the input instead of copies:
// a 300 MB repodata is held once, not twice.
type scanner struct {
	data []byte
	pos  int
	// view makes str return strings that alias data instead of copies. Only for
	// callers that keep data alive and unchanged while they use the strings.
	view bool
	// depth is how many objects and arrays enclose the cursor.
	depth int
}

// MaxDepth bounds how deeply objects and arrays may nest in a document, counted
// from its top. Every walk recurses once per level (skip through object and
// array), so without a bound a few megabytes of "[[[[" from a hostile upstream
// cost hundreds of megabytes of stack, and tens of megabytes overflow it and kill
// the process. Real repodata nests 5 levels at most (document, "packages",
// record, run_exports, its list); 64 leaves room for any extension upstream may
// add and keeps the worst case a few kilobytes of stack.
const MaxDepth = 64

// SyntaxError says where a repodata document stops being what it must be.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("repodata: at byte %d: %s", e.Offset, e.Msg) }

func (s *scanner) errorf(format string, args ...any) error {
	return &SyntaxError{Offset: s.pos, Msg: fmt.Sprintf(format, args...)}
}

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.pos >= len(s.data) {
		return 0
	}
	return s.data[s.pos]
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		if s.pos >= len(s.data) {
			return s.errorf("unexpected end, want %q", c)
		}
		return s.errorf("want %q, found %q", c, s.data[s.pos])
	}
	s.pos++
	return nil
}

// enter moves into one more level of nesting, just past its opening bracket,
// refusing to go past MaxDepth. object and array call it, and every walk nests
// through them: this is the one place the bound is kept. They leave the level
// where they consume the closing bracket; after an error the scanner is not used
// again, so its depth no longer matters.
func (s *scanner) enter() error {
	if s.depth >= MaxDepth {
		return &SyntaxError{Offset: s.pos - 1, Msg: fmt.Sprintf("nested deeper than %d", MaxDepth)}
	}
	s.depth++
	return nil
}

// object calls member for each key of the object at the cursor; member must consume
// the value.
func (s *scanner) object(member func(key string) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		key, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			s.depth--
			return nil
		case 0:
			return s.errorf("unexpected end of document")
		default:
			return s.errorf("want ',' or '}' in object")
		}
	}
}

// array calls elem for each element of the array at the cursor.
func (s *scanner) array(elem func() error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			s.depth--
			return nil
		case 0:
			return s.errorf("unexpected end of document")
		default:
			return s.errorf("want ',' or ']' in array")
		}
	}
}

// rawString returns the bytes of the string at the cursor, quotes included, and
// whether it holds an escape.
func (s *scanner) rawString() ([]byte, bool, error) {
	if s.peek() != '"' {
		return nil, false, s.errorf("want a string")
	}
	start := s.pos
	s.pos++
	escaped := false
	data := s.data
	for {
		// Plain characters are most of a repodata: skip them eight at a time
		// with one word test where there is room, then through a table.
		i := s.pos
		for i+8 <= len(data) && !special(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
		}
		for i < len(data) && plain[data[i]] {
			i++
		}
		s.pos = i
		if i >= len(data) {
			return nil, false, s.errorf("unterminated string")
		}
		switch c := data[i]; {
		case c == '"':
			s.pos++
			return data[start:s.pos], escaped, nil
		case c == '\\':
			escaped = true
			if err := s.escape(); err != nil {
				return nil, false, err
			}
		default:
			return nil, false, s.errorf("control character in string")
		}
	}
}

// special reports whether any of the eight bytes of x ends a run of plain
// string bytes: '"', '\\' or a control character (below 0x20). Each test is
// the classic "has a zero byte" word trick, exact as an any-test:
// (v - 0x01..) &^ v & 0x80.. is non-zero exactly when some byte of v is zero,
// and with 0x20.. in place of 0x01.. when some byte is below 0x20.
func special(x uint64) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	q := x ^ (lo * '"')
	b := x ^ (lo * '\\')
	return ((q-lo)&^q|(b-lo)&^b|(x-lo*0x20)&^x)&hi != 0
}

// plain marks the bytes a JSON string holds as they are: not '"', '\\' or a
// control character.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// escape moves past one backslash escape, checking it is one JSON allows.
func (s *scanner) escape() error {
	if s.pos+1 >= len(s.data) {
		return s.errorf("unterminated string")
	}
	switch s.data[s.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos += 2
		return nil
	case 'u':
		if s.pos+6 > len(s.data) {
			return s.errorf("unterminated string")
		}
		for _, h := range s.data[s.pos+2 : s.pos+6] {
			if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
				return s.errorf("bad \\u escape")
			}
		}
		s.pos += 6
		return nil
	}
	return s.errorf("bad escape in string")
}

func (s *scanner) str() (string, error) {
	raw, escaped, err := s.rawString()
	if err != nil {
		return "", err
	}
	// Keys and decided-on fields must be text: two different invalid byte runs
	// would otherwise print as the same replacement character.
	if !utf8.Valid(raw) {
		return "", &SyntaxError{Offset: s.pos - len(raw), Msg: "string is not UTF-8"}
	}
	if !escaped {
		if s.view {
			return unsafe.String(&raw[1], len(raw)-2), nil
		}
		return string(raw[1 : len(raw)-1]), nil
	}
	// Escapes are rare in repodata; let the standard library get them exactly right.
	var out string
	if err := json.Unmarshal(raw, &out); err != nil {
		return "", &SyntaxError{Offset: s.pos - len(raw), Msg: "bad string escape"}
	}
	return out, nil
}

// optStr reads a string, or null as "". Other types are an error naming the field.
func (s *scanner) optStr(field string) (string, error) {
	if s.peek() == 'n' {
		return "", s.literal("null")
	}
	v, err := s.str()
	if err != nil {
		return "", s.errorf("%s: want a string", field)
	}
	return v, nil
}

func (s *scanner) strList(field string) ([]string, error) {
	return s.appendStrList(nil, field)
}

// appendStrList reads a list of strings into dst[:0], reusing its array.
func (s *scanner) appendStrList(dst []string, field string) ([]string, error) {
	if s.peek() == 'n' {
		return dst[:0], s.literal("null")
	}
	out := dst[:0]
	err := s.array(func() error {
		v, err := s.str()
		if err != nil {
			return s.errorf("%s: want a list of strings", field)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

func (s *scanner) literal(word string) error {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return s.errorf("bad literal")
	}
	s.pos += len(word)
	return nil
}

func (s *scanner) number() ([]byte, error) {
	s.ws()
	start := s.pos
	if s.pos < len(s.data) && s.data[s.pos] == '-' {
		s.pos++
	}
	digits := 0
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		if c >= '0' && c <= '9' {
			digits++
		} else if c != '.' && c != 'e' && c != 'E' && c != '+' && c != '-' {
			break
		}
		s.pos++
	}
	if digits == 0 {
		s.pos = start
		return nil, s.errorf("want a number")
	}
	raw := s.data[start:s.pos]
	if !json.Valid(raw) {
		s.pos = start
		return nil, s.errorf("bad number %q", raw)
	}
	return raw, nil
}

// int reads a number as an integer; fractions are truncated (timestamps are
// sometimes written as floats). null reads as 0.
func (s *scanner) int(field string) (int64, error) {
	if s.peek() == 'n' {
		return 0, s.literal("null")
	}
	raw, err := s.number()
	if err != nil {
		return 0, s.errorf("%s: want a number", field)
	}
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return 0, s.errorf("%s: bad number %q", field, raw)
	}
	return int64(f), nil
}

// skip moves past one value of any type, checking that it is well formed.
func (s *scanner) skip() error {
	switch c := s.peek(); c {
	case '{':
		return s.object(func(string) error { return s.skip() })
	case '[':
		return s.array(s.skip)
	case '"':
		_, _, err := s.rawString()
		return err
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	case 0:
		return s.errorf("unexpected end of document")
	default:
		_, err := s.number()
		return err
	}
}

// raw moves past one value and returns its bytes.
func (s *scanner) raw() ([]byte, error) {
	s.ws()
	start := s.pos
	if err := s.skip(); err != nil {
		return nil, err
	}
	return s.data[start:s.pos], nil
}
