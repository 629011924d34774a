package rules_test

import (
	"fmt"

	"github.com/wschaos/wschaos/rules"
)

func ExampleCompile() {
	reason := "service restart"
	set, errs := rules.Compile([]rules.Spec{
		{
			Name:   "deploy-restart",
			Match:  rules.MatchSpec{Path: "/chat/*"},
			After:  "10s..30s",
			Action: "close",
			Code:   "service_restart",
			Reason: &reason,
		},
		{
			Name:   "maintenance",
			On:     "connect",
			Action: "reject",
		},
	}, rules.Options{})
	if errs != nil {
		fmt.Println(errs)
		return
	}
	for _, r := range set.Rules {
		fmt.Println(r)
	}

	_, errs = rules.Compile([]rules.Spec{
		{Name: "broken", After: "30s", Action: "close", Code: int64(1006)},
		{After: "soon", Action: "reset"},
	}, rules.Options{})
	for _, e := range errs {
		fmt.Println(e)
	}
	// Output:
	// deploy-restart: after 10s..30s -> close 1012 (service_restart) "service restart" to client; match path=/chat/*
	// maintenance: on connect -> reject with 503
	// rule "broken": code: 1006 cannot be sent in a close frame (Abnormal Closure: reported when the transport broke without a close frame); use action = "reset" or "drop" to make the client observe 1006
	// rule #2: name: is required; add name = "..." so that logs and the admin API can name the rule
	// rule #2: after: "soon" is not a duration or a range; write "30s" or "10s..30s"
}

func ExampleParseCode() {
	for _, v := range []any{int64(1001), "try_again_later", "4000", "none", int64(1005)} {
		code, err := rules.ParseCode(v)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(code, rules.CodeName(code))
	}
	// Output:
	// 1001 going_away
	// 1013 try_again_later
	// 4000 4000
	// 0 none
	// error: 1005 cannot be sent in a close frame (No Status Rcvd: reported when a close frame carried no status code); write code = "none" to send an empty close frame, which the client reports as 1005
}
