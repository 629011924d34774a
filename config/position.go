package config

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// positions finds the line of a dotted key in a TOML file. The decoder
// keeps key positions to itself, so the lines are found again here: a key
// under a [table] header or written dotted from the top.
type positions struct {
	lines  map[string]int
	folded map[string]int // by lower-case key: the decoder matches keys case-insensitively
}

func newPositions(data []byte) positions {
	p := positions{lines: map[string]int{}, folded: map[string]int{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	table := ""
	arrays := map[string]int{} // how many [[x]] tables each array has so far
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "[["):
			name := cleanKey(strings.Trim(strings.SplitN(line, "]]", 2)[0], "[ "))
			table = fmt.Sprintf("%s.%d", name, arrays[name])
			arrays[name]++
			p.set(table, n)
		case strings.HasPrefix(line, "["):
			table = cleanKey(strings.Trim(strings.SplitN(line, "]", 2)[0], "[ "))
			p.set(table, n)
		default:
			k, _, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			key := cleanKey(k)
			if table != "" {
				key = table + "." + key
			}
			p.set(key, n)
		}
	}
	return p
}

func (p positions) set(key string, line int) {
	if _, ok := p.lines[key]; !ok {
		p.lines[key] = line
	}
	if _, ok := p.folded[strings.ToLower(key)]; !ok {
		p.folded[strings.ToLower(key)] = line
	}
}

// line returns the line key is on, or that of the nearest enclosing table,
// or 0.
func (p positions) line(key string) int {
	for k := key; k != ""; {
		if n, ok := p.lines[k]; ok {
			return n
		}
		if n, ok := p.folded[strings.ToLower(k)]; ok {
			return n
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

// cleanKey normalizes a dotted TOML key: no spaces around dots, no quotes.
func cleanKey(k string) string {
	parts := strings.Split(strings.TrimSpace(k), ".")
	for i, s := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(s), `"'`)
	}
	return strings.Join(parts, ".")
}

// element finds an unknown key that the decoder names without the index of
// its array table element, such as rule.colour for the third [[rule]]: it
// returns the first element's index that has it written, or -1.
func (p positions) element(array, rest string) int {
	for i := 0; ; i++ {
		el := fmt.Sprintf("%s.%d", array, i)
		if _, ok := p.lines[el]; !ok {
			return -1
		}
		if _, ok := p.lines[el+"."+rest]; ok {
			return i
		}
		if _, ok := p.folded[strings.ToLower(el+"."+rest)]; ok {
			return i
		}
	}
}
