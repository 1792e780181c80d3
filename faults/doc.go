// Package faults holds tests that hurt condaproxy on purpose, from the outside: the
// real binary, built once, is killed with SIGKILL at random moments of its work
// (serving, filling, revalidating, importing) and run on a disk that fills up, and
// after each fault the test checks what a user would see and what the data
// directory holds.
//
// The product is used only as a black box: its command line, its HTTP answers and
// the files of its data directory, read directly. Upstreams are httptest servers in
// the test process on 127.0.0.1, serving the real channels of ../shared/testdata
// plus synthetic packages whose records carry their true sha256 and size.
//
// The package has no code of its own: everything is in its _test.go files.
package faults
