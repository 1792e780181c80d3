// Package matchspec implements conda's version ordering, version specs and
// match specs, so that the proxy can decide which repodata records a policy
// rule such as "numpy >=1.20,<2" or "conda-forge::openssl=3.*" refers to.
//
// The behaviour follows conda's own implementation (conda/models/version.py
// and conda/models/match_spec.py) rather than PEP 440 or any other ecosystem,
// because policy authors write rules in the syntax their conda clients accept
// and expect the proxy to select exactly the records conda would select.
// Where conda is ambiguous, silently drops part of a spec, or prints a string
// that does not parse back to the same spec, this package fails closed with
// an error instead; those places are documented on the functions concerned.
//
// The package is pure computation. It must never touch the network, the file
// system, the environment or global mutable state, and must never log: the
// proxy calls it for millions of records and from many goroutines, and every
// value it returns is immutable and safe to share.
//
// Parse once, match many times: ParseVersionSpec and Parse compile
// everything up front (including any regular expressions), so Match does no
// compilation and allocates only to parse the candidate's version string.
package matchspec
