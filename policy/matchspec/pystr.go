package matchspec

import (
	"strings"
	"unicode/utf8"
)

// Conda is written in Python, and several of its parsing steps depend on
// Python's idea of whitespace (str.strip, the regex class \s). Go's
// unicode.IsSpace differs from it in U+001C..U+001F, so we carry our own.
func pyIsSpace(r rune) bool {
	switch {
	case r == ' ' || (r >= '\t' && r <= '\r') || (r >= 0x1c && r <= 0x1f):
		return true
	case r < 0x80:
		return false
	}
	switch r {
	case 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// pyStrip is Python's str.strip() with no arguments.
func pyStrip(s string) string {
	// Fast path: the overwhelmingly common case has ASCII ends.
	start, end := 0, len(s)
	for start < end {
		c := s[start]
		if c < utf8.RuneSelf {
			if !pyIsSpace(rune(c)) {
				break
			}
			start++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[start:])
		if !pyIsSpace(r) {
			break
		}
		start += n
	}
	for end > start {
		c := s[end-1]
		if c < utf8.RuneSelf {
			if !pyIsSpace(rune(c)) {
				break
			}
			end--
			continue
		}
		r, n := utf8.DecodeLastRuneInString(s[start:end])
		if !pyIsSpace(r) {
			break
		}
		end -= n
	}
	return s[start:end]
}

// pyLStripSpace strips leading Python whitespace only.
func pyLStripSpace(s string) string {
	return strings.TrimLeftFunc(s, pyIsSpace)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isLowerAlnum(c byte) bool { return isDigit(c) || (c >= 'a' && c <= 'z') }

// asciiLower lowers ASCII letters and falls back to Unicode lowering for
// anything else, mirroring Python's str.lower() closely enough for the
// character sets conda accepts afterwards.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf || (c >= 'A' && c <= 'Z') {
			return strings.ToLower(s)
		}
	}
	return s
}

// allDigits reports whether s is a non-empty run of ASCII digits (Python's
// str.isdigit() restricted to the characters conda lets through).
func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
