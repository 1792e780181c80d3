package repodata

import (
	"encoding/binary"
	"testing"
)

// TestSpecialWord checks the word test against the byte table for every byte
// value in every position of a word of otherwise plain bytes, and for words
// mixing high bytes (UTF-8) with specials, where a borrow could mislead it.
func TestSpecialWord(t *testing.T) {
	for pos := 0; pos < 8; pos++ {
		for c := 0; c < 256; c++ {
			w := []byte("abcdefgh")
			w[pos] = byte(c)
			got := special(binary.LittleEndian.Uint64(w))
			if want := !plain[c]; got != want {
				t.Fatalf("byte %#x at %d: special %v, want %v", c, pos, got, want)
			}
		}
	}
	for _, w := range []string{"\xff\xff\xff\xff\xff\xff\xff\xff", "\x80\x80\x80\x80\x80\x80\x80\x80", "é€😀a"[:8], "\x20\x21\x23\x5b\x5d\x7f\x80\xff"} {
		if special(binary.LittleEndian.Uint64([]byte(w))) {
			t.Errorf("%q: special, but every byte is plain", w)
		}
	}
	for _, w := range []string{"\xff\xff\xff\x00\xff\xff\xff\xff", "\x80\"\x80\x80\x80\x80\x80\x80", "\xff\xff\xff\xff\xff\xff\xff\\", "\x21\x1f\x21\x21\x21\x21\x21\x21"} {
		if !special(binary.LittleEndian.Uint64([]byte(w))) {
			t.Errorf("%q: not special, but a byte is", w)
		}
	}
}
