package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// Runner runs one command line (binary first) and returns what it wrote to
// stdout. A command that ran and failed must be reported as a *CommandError.
type Runner func(ctx context.Context, argv []string) (stdout []byte, err error)

// CommandError is a command that failed: which one, how, and what it said.
type CommandError struct {
	// Args is the command line, binary first.
	Args []string
	// ExitCode is the command's exit status, or -1 when it did not run.
	ExitCode int
	// Stderr is what the command wrote to stderr, trimmed.
	Stderr string
	// Err is the underlying error.
	Err error
}

// Error names the command, how it failed and its stderr.
func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s: %v", ShellQuote(e.Args), e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *CommandError) Unwrap() error { return e.Err }

// ExecRunner runs a command with os/exec, as Config.Run does when nil.
func ExecRunner(ctx context.Context, argv []string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty command line")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		code := -1
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			code = exitErr.ExitCode()
		}
		return stdout.Bytes(), &CommandError{Args: argv, ExitCode: code, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.Bytes(), nil
}

// run runs one command through the configured runner, logging it.
func (c Config) run(ctx context.Context, argv []string) ([]byte, error) {
	if c.Log != nil {
		c.Log.InfoContext(ctx, "iptables", "cmd", ShellQuote(argv))
	}
	run := c.Run
	if run == nil {
		run = ExecRunner
	}
	out, err := run(ctx, argv)
	if err != nil {
		var ce *CommandError
		if !errors.As(err, &ce) {
			err = &CommandError{Args: argv, ExitCode: -1, Err: err}
		}
		return out, err
	}
	return out, nil
}

// natTable lists the nat table of one binary with -S.
func (c Config) natTable(ctx context.Context, bin string) (*listing, error) {
	out, err := c.run(ctx, []string{bin, "-w", "-t", "nat", "-S"})
	if err != nil {
		return nil, fmt.Errorf("listing the nat table: %w", err)
	}
	return parseListing(string(out)), nil
}

// Apply installs cfg's rules in the current network namespace. It is
// idempotent: chains that exist are flushed and refilled, and a jump rule is
// added to PREROUTING or OUTPUT only if an identical one is not there yet. The
// error names the command that failed and what it wrote to stderr.
func Apply(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid iptables configuration: %w", err)
	}
	for _, f := range cfg.families() {
		nat, err := cfg.natTable(ctx, f.bin)
		if err != nil {
			return err
		}
		for _, s := range cfg.plan(f) {
			switch s.kind {
			case newChain:
				argv := s.argv
				if nat.hasChain(s.chain) {
					argv = withOp(s.argv, "-F")
				}
				if _, err := cfg.run(ctx, argv); err != nil {
					return err
				}
			case appendRule:
				if _, err := cfg.run(ctx, s.argv); err != nil {
					return err
				}
			case jump:
				present, err := cfg.check(ctx, s.argv)
				if err != nil {
					return err
				}
				if present {
					continue
				}
				if _, err := cfg.run(ctx, s.argv); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// check runs a rule with -C and reports whether the rule exists.
func (c Config) check(ctx context.Context, argv []string) (bool, error) {
	_, err := c.run(ctx, withOp(argv, "-C"))
	if err == nil {
		return true, nil
	}
	var ce *CommandError
	if errors.As(err, &ce) && ce.ExitCode == 1 {
		return false, nil // "Bad rule (does a matching rule exist in that chain?)"
	}
	return false, err
}

// Cleanup removes Sluice's chains and every rule that jumps to them, in the
// current network namespace. It is idempotent: with nothing installed it runs
// only the listing commands.
func Cleanup(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid iptables configuration: %w", err)
	}
	ours := []string{InboundChain, OutboundChain}
	for _, f := range cfg.families() {
		nat, err := cfg.natTable(ctx, f.bin)
		if err != nil {
			return err
		}
		// Delete jumps by rule number, highest first, so numbers stay valid.
		for _, chain := range nat.order {
			if slices.Contains(ours, chain) {
				continue
			}
			rules := nat.rules[chain]
			for i := len(rules) - 1; i >= 0; i-- {
				if !slices.Contains(ours, jumpTarget(rules[i])) {
					continue
				}
				argv := []string{f.bin, "-w", "-t", "nat", "-D", chain, fmt.Sprint(i + 1)}
				if _, err := cfg.run(ctx, argv); err != nil {
					return err
				}
			}
		}
		// Flush both chains before deleting either: the outbound chain
		// jumps to the inbound one.
		for _, op := range []string{"-F", "-X"} {
			for _, chain := range ours {
				if !nat.hasChain(chain) {
					continue
				}
				if _, err := cfg.run(ctx, []string{f.bin, "-w", "-t", "nat", op, chain}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// withOp returns a copy of a "-A CHAIN ..." or "-N CHAIN" command line with
// its operation replaced.
func withOp(argv []string, op string) []string {
	out := slices.Clone(argv)
	for i, a := range out {
		if a == "-A" || a == "-N" {
			out[i] = op
			return out
		}
	}
	return out
}

// listing is the nat table as iptables -S prints it.
type listing struct {
	chains map[string]bool     // user-defined chains (-N)
	rules  map[string][]string // chain -> its rules in order, each the text after "-A CHAIN "
	order  []string            // chains with rules, in first-seen order
}

func parseListing(out string) *listing {
	l := &listing{chains: map[string]bool{}, rules: map[string][]string{}}
	for line := range strings.Lines(out) {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "-N":
			l.chains[fields[1]] = true
		case "-A":
			chain := fields[1]
			if _, seen := l.rules[chain]; !seen {
				l.order = append(l.order, chain)
			}
			l.rules[chain] = append(l.rules[chain], strings.Join(fields[2:], " "))
		}
	}
	return l
}

func (l *listing) hasChain(name string) bool { return l.chains[name] }

// jumpTarget returns the chain a rule's -j (or --jump) names, or "".
func jumpTarget(rule string) string {
	fields := strings.Fields(rule)
	for i := 0; i+1 < len(fields); i++ {
		if fields[i] == "-j" || fields[i] == "--jump" {
			return fields[i+1]
		}
	}
	return ""
}
