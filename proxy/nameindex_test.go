package proxy

import (
	"fmt"
	"strings"
	"testing"
)

// TestNameIndex checks the index against a Go map over more entries than one
// chunk holds, with repeated names (the later value wins), a name longer than
// a whole name chunk, and the empty name.
func TestNameIndex(t *testing.T) {
	var x nameIndex[int]
	want := map[string]int{}
	add := func(name string, v int) {
		x.add(name, v)
		want[name] = v
	}
	for i := 0; i < 3*entChunk+17; i++ {
		add(fmt.Sprintf("pkg-%d-0_h%d.conda", i%(2*entChunk), i), i)
		if i%1000 == 0 {
			add(fmt.Sprintf("pkg-%d-0_h%d.conda", i%(2*entChunk), i), -i) // repeat: last wins
		}
	}
	long := strings.Repeat("x", nameChunk+5) + ".conda"
	add(long, 7)
	add("", 9)
	add("after-long.conda", 11)
	x.seal()
	if x.size() != len(want) {
		t.Fatalf("size %d, want %d", x.size(), len(want))
	}
	for name, v := range want {
		got, ok := x.get(name)
		if !ok || got != v {
			t.Fatalf("get(%.40q) = %d, %v; want %d", name, got, ok, v)
		}
	}
	for _, absent := range []string{"nope.conda", "pkg-1-0_h2.conda", long[:len(long)-1]} {
		if x.has(absent) {
			t.Fatalf("has(%.40q) for a name never added", absent)
		}
	}
	seen := map[string]int{}
	x.each(func(name string, v int) bool { seen[name] = v; return true })
	if len(seen) != len(want) {
		t.Fatalf("each visited %d names, want %d", len(seen), len(want))
	}
	for name, v := range want {
		if seen[name] != v {
			t.Fatalf("each gave %.40q = %d, want %d", name, seen[name], v)
		}
	}
	var none *nameIndex[int]
	if none.has("a.conda") || none.size() != 0 {
		t.Fatal("a nil index has something")
	}
}
