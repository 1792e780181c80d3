// Package scale tests condaproxy run as several replicas, as an operator runs it
// past one machine: real processes of the real binary (built once per run) on one
// real redis-server and one real S3 server (versitygw), all on 127.0.0.1, before
// one upstream that the test serves itself and counts.
//
// What it checks is the SPEC's "Scale" contract seen from outside: one upstream
// fetch per missing file across replicas, files shared through the object store,
// repodata revalidated once per metadata_ttl across replicas, purges that reach
// every replica, and what a client sees when Redis, the object store or the
// replica doing a fill dies. It reads only the product's HTTP answers, its
// metrics, its data directories and the object store's keys: no product package
// is imported, so the tests hold whatever the inside becomes.
//
// redis-server and versitygw are started by the tests; without them a test is
// skipped, or fails under CI, which installs both.
//
// The package has no code of its own: everything is in its _test.go files.
package scale
