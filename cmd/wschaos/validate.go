package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/wschaos/wschaos/config"
	"github.com/wschaos/wschaos/rules"
)

// exitError ends the program with a code and no further message: what
// went wrong has been printed already.
type exitError struct{ code int }

func (e *exitError) Error() string { return "exit status " + strconv.Itoa(e.code) }

// validate checks a configuration file: every problem on its own line
// (file:line, rule, key, why and how to fix) and exit 1, or a summary line
// per rule and exit 0.
func validate(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return &usageError{"validate takes one argument: the configuration file"}
	}
	cfg, err := config.Load(args[0])
	if err != nil {
		var errs config.Errors
		if !errors.As(err, &errs) {
			return err
		}
		for _, e := range errs {
			fmt.Fprintln(stdout, e)
		}
		fmt.Fprintf(stdout, "%s: %d %s\n", args[0], len(errs), plural(len(errs), "error", "errors"))
		return &exitError{1}
	}
	n := 0
	if cfg.RuleSet != nil {
		n = len(cfg.RuleSet.Rules)
	}
	fmt.Fprintf(stdout, "%s: valid, %d %s\n", args[0], n, plural(n, "rule", "rules"))
	if cfg.RuleSet != nil {
		for _, r := range cfg.RuleSet.Rules {
			fmt.Fprintln(stdout, "  "+r.String())
		}
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// printCodes prints the close-code table rules are checked against.
func printCodes(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CODE\tNAME\tIANA NAME\tSENDABLE\tMEANING")
	for _, c := range rules.Codes {
		code := strconv.Itoa(c.Low)
		if c.High != c.Low {
			code += "-" + strconv.Itoa(c.High)
		}
		name := c.Name
		if name == "" {
			name = "-"
		}
		send := "yes"
		if !c.Sendable {
			send = "no"
		}
		meaning := c.Meaning
		if c.Instead != "" && !c.Sendable {
			meaning += "; " + c.Instead
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", code, name, c.IANA, send, meaning)
	}
	fmt.Fprintln(tw, "none\tnone\t-\tyes\tan empty close frame: the receiver reports 1005")
	tw.Flush()
}
