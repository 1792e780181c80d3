// Command condaproxy is a caching pull-through proxy for conda channels.
//
// Exit status: 0 success, 1 runtime failure, 2 bad usage or bad configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/condaproxy/condaproxy/config"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

// exitError carries an exit status with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func usageErr(format string, args ...any) error {
	return &exitError{2, fmt.Errorf(format, args...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole command line, separated from main for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0 // asked for: the help is the answer
	}
	fmt.Fprintln(stderr, "condaproxy:", err)
	var ee *exitError
	var ce *config.Error
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ce):
		return 2
	default:
		return 1
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText())
		return usageErr("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, stdout, stderr)
	case "config":
		return cmdConfig(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "condaproxy", buildVersion())
		return nil
	case "explain":
		return cmdExplain(ctx, rest, stdout, stderr)
	case "sync":
		return cmdSync(ctx, rest, stdout, stderr)
	case "clean":
		return cmdClean(ctx, rest, stdout, stderr)
	case "export":
		return cmdExport(ctx, rest, stdout, stderr)
	case "import":
		return cmdImport(ctx, rest, stdout, stderr)
	case "ca":
		return cmdCA(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText())
		return nil
	default:
		fmt.Fprint(stderr, usageText())
		return usageErr("unknown command %q", cmd)
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("condaproxy "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = helpUsage(name, fs)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	return nil
}

func cmdConfig(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "show" && args[0] != "check") {
		return usageErr("usage: condaproxy config (show | check) [-c FILE]")
	}
	fs := newFlags("config "+args[0], stderr)
	file := fs.String("c", "", "configuration file")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("config %s: unexpected argument %q", args[0], fs.Arg(0))
	}
	cfg, err := config.Load(config.Locate(*file))
	if err != nil {
		return err
	}
	if _, err := compilePolicies(cfg); err != nil {
		return err
	}
	if args[0] == "check" {
		fmt.Fprintf(stdout, "%s: ok (%d channels)\n", cfg.Source, len(cfg.Channels))
		return nil
	}
	out, err := cfg.Show()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# effective configuration from %s\n", cfg.Source)
	_, err = stdout.Write(out)
	return err
}
