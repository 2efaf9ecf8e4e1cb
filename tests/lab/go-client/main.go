// Pod-lab client: one lookup with Go's own (pure Go) stub resolver, as a Go program in a
// container built with CGO_ENABLED=0 resolves: net.Resolver{PreferGo: true}.LookupIPAddr,
// both families, reading /etc/resolv.conf (which `ip netns exec` bind-mounts: search list,
// ndots, timeout, attempts).  run.sh builds it with the `netgo` tag and the lab also runs it
// with GODEBUG=netdns=go, so the cgo resolver is never used.
//
// Prints one JSON line, in the shape of the other clients:
//
//	{"ok":..,"addresses":[..],"error":"...","kind":"notfound|timeout|temporary|other","elapsed_ms":F,"go":"go1.x"}
//
// and exits 0 on success, 1 on failure, 2 on usage error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"
)

type result struct {
	OK        bool     `json:"ok"`
	Addresses []string `json:"addresses"`
	Error     *string  `json:"error"`
	Kind      *string  `json:"kind"`
	ElapsedMs float64  `json:"elapsed_ms"`
	Go        string   `json:"go"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintf(os.Stderr, "usage: %s NAME\n", os.Args[0])
		os.Exit(2)
	}
	r := &net.Resolver{PreferGo: true}
	// Only so a wedged lookup cannot hang the lab; the harness has its own, larger, bound.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	addrs, err := r.LookupIPAddr(ctx, os.Args[1])
	out := result{Addresses: []string{}, ElapsedMs: float64(time.Since(start).Microseconds()) / 1000, Go: runtime.Version()}
	if err == nil {
		out.OK = true
		for _, a := range addrs {
			out.Addresses = append(out.Addresses, a.IP.String())
		}
	} else {
		msg := err.Error()
		kind := "other"
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			switch {
			case dnsErr.IsNotFound:
				kind = "notfound"
			case dnsErr.IsTimeout:
				kind = "timeout"
			case dnsErr.IsTemporary:
				kind = "temporary"
			}
		}
		out.Error, out.Kind = &msg, &kind
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
	if !out.OK {
		os.Exit(1)
	}
}
