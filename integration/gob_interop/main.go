// Command gob_interop speaks RoadRunner's beanstalk job body: Go's encoding/gob of
// the Item of github.com/roadrunner-server/beanstalk (beanstalkjobs/item.go), its
// exported fields copied field for field, and a minimal beanstalkd client.
//
//	gob_interop fixtures                 print {name: hex of the gob body} as JSON
//	gob_interop put ADDR TUBE            put the items of items(), print them as JSON
//	gob_interop take ADDR TUBE COUNT     reserve COUNT jobs, gob-decode each into Item,
//	                                     delete it, print the items as JSON
package main

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
)

// Item is RoadRunner's beanstalk Item (v6: Payload []byte, Hdrs).
type Item struct {
	Job     string
	Ident   string
	Payload []byte
	Hdrs    map[string][]string
	Options *Options
}

// Options is RoadRunner's beanstalk Options (its unexported fields are not encoded).
type Options struct {
	Priority int64
	Pipeline string
	Delay    int
	AutoAck  bool
	Queue    string
}

func encode(v any) []byte {
	var bb bytes.Buffer
	if err := gob.NewEncoder(&bb).Encode(v); err != nil {
		panic(err)
	}
	return bb.Bytes()
}

func items() []Item {
	return []Item{
		{Job: "App\\Jobs\\Mail", Ident: "go-1", Payload: []byte(`{"to":"a@example.com"}`),
			Hdrs:    map[string][]string{"h": {"a", "b"}, "rr_attempts": {"2"}},
			Options: &Options{Priority: 7, Pipeline: "p-go", AutoAck: false, Queue: "t"}},
		{Job: "auto", Ident: "go-2", Payload: []byte{0, 1, 2, 255},
			Options: &Options{Priority: 0, AutoAck: true}},
		{Job: "none", Ident: "go-3", Payload: []byte("été"),
			Hdrs: map[string][]string{"ü": {"ñ"}}},
	}
}

func fixtures() map[string]string {
	// RoadRunner's beanstalk Item before v4.5.0 (Payload string, Headers).
	type OptionsV4 struct {
		Priority int64
		Pipeline string
		Delay    int64
		AutoAck  bool
	}
	type ItemV4 struct {
		Job     string
		Ident   string
		Payload string
		Headers map[string][]string
		Options *OptionsV4
	}
	out := map[string]string{}
	for i, it := range items() {
		out[fmt.Sprintf("v6_%d", i+1)] = hex.EncodeToString(encode(it))
	}
	out["v6_empty"] = hex.EncodeToString(encode(Item{}))
	out["v6_big"] = hex.EncodeToString(encode(Item{Job: "big", Ident: strings.Repeat("x", 300),
		Payload: bytes.Repeat([]byte{7}, 1000),
		Options: &Options{Priority: -9223372036854775808, Delay: 4294967295, Pipeline: "p"}}))
	out["v4_1"] = hex.EncodeToString(encode(ItemV4{Job: "old", Ident: "v4-1", Payload: "hello",
		Headers: map[string][]string{"k": {"v"}},
		Options: &OptionsV4{Priority: 3, Pipeline: "p4", Delay: 5, AutoAck: true}}))
	// RoadRunner's v6 Item in a process that gave other types the first ids.
	type Shifted Item
	out["v6_shifted"] = hex.EncodeToString(encode(Shifted{Job: "shifted", Ident: "s-1",
		Payload: []byte("p"), Hdrs: map[string][]string{"k": {"v"}},
		Options: &Options{Priority: 2, AutoAck: true}}))
	return out
}

type conn struct {
	c net.Conn
	r *bufio.Reader
}

func (c *conn) cmd(line string, body []byte) []string {
	msg := []byte(line + "\r\n")
	if body != nil {
		msg = append(append(msg, body...), '\r', '\n')
	}
	if _, err := c.c.Write(msg); err != nil {
		panic(err)
	}
	reply, err := c.r.ReadString('\n')
	if err != nil {
		panic(err)
	}
	return strings.Fields(reply)
}

func dial(addr, tube string) *conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		panic(err)
	}
	cn := &conn{c, bufio.NewReader(c)}
	cn.cmd("use "+tube, nil)
	cn.cmd("watch "+tube, nil)
	cn.cmd("ignore default", nil)
	return cn
}

func main() {
	var out any
	switch os.Args[1] {
	case "fixtures":
		out = fixtures()
	case "put":
		c := dial(os.Args[2], os.Args[3])
		for _, it := range items() {
			if r := c.cmd("put 0 0 60 "+strconv.Itoa(len(encode(it))), encode(it)); r[0] != "INSERTED" {
				panic(strings.Join(r, " "))
			}
		}
		out = items()
	case "take":
		c := dial(os.Args[2], os.Args[3])
		n, _ := strconv.Atoi(os.Args[4])
		got := []Item{}
		for range n {
			r := c.cmd("reserve-with-timeout 30", nil)
			if r[0] != "RESERVED" {
				panic(strings.Join(r, " "))
			}
			size, _ := strconv.Atoi(r[2])
			body := make([]byte, size+2)
			if _, err := io.ReadFull(c.r, body); err != nil {
				panic(err)
			}
			var it Item
			if err := gob.NewDecoder(bytes.NewReader(body[:size])).Decode(&it); err != nil {
				panic(err)
			}
			got = append(got, it)
			if d := c.cmd("delete "+r[1], nil); d[0] != "DELETED" {
				panic(strings.Join(d, " "))
			}
		}
		out = got
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		panic(err)
	}
}
