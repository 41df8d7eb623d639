// A RoadRunner-side client of rrjobs' goridge RPC: goridge's own net/rpc codec
// (v3.8.3, what RoadRunner's tooling uses) and RoadRunner's own jobs.v1 Go
// messages (api v4.24.0). integration/test_goridge_interop.py builds and runs
// it against a server and checks what it prints: one JSON object.
package main

import (
	"encoding/json"
	"net"
	"net/rpc"
	"os"

	jobsv1 "github.com/roadrunner-server/api/v4/build/jobs/v1"
	goridgeRpc "github.com/roadrunner-server/goridge/v3/pkg/rpc"
)

type stat struct {
	Pipeline, Driver, Queue   string
	Active, Delayed, Reserved int64
	Ready                     bool
	Priority                  uint64
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func main() {
	conn, err := net.Dial("tcp", os.Args[1])
	must(err)
	client := rpc.NewClientWithCodec(goridgeRpc.NewClientCodec(conn))
	out := map[string]any{}

	var list jobsv1.Pipelines
	must(client.Call("jobs.List", &jobsv1.Empty{}, &list))
	out["list"] = list.GetPipelines()

	must(client.Call("jobs.Push", &jobsv1.PushRequest{Job: &jobsv1.Job{
		Job: "rec", Id: "go-1", Payload: []byte("from go"),
		Headers: map[string]*jobsv1.HeaderValue{"h": {Value: []string{"a", "b"}}},
		Options: &jobsv1.Options{Pipeline: "p1", Priority: 3}}}, &jobsv1.Empty{}))
	must(client.Call("jobs.PushBatch", &jobsv1.PushBatchRequest{Jobs: []*jobsv1.Job{
		{Job: "rec", Id: "go-2", Options: &jobsv1.Options{Pipeline: "p2"}},
		{Job: "rec", Id: "go-3", Options: &jobsv1.Options{Pipeline: "p2", Delay: 60}}}},
		&jobsv1.Empty{}))
	must(client.Call("jobs.Pause", &jobsv1.Pipelines{Pipelines: []string{"p1"}}, &jobsv1.Empty{}))
	must(client.Call("jobs.Declare", &jobsv1.DeclareRequest{Pipeline: map[string]string{
		"name": "dyn", "driver": "memory", "priority": "7"}}, &jobsv1.Empty{}))

	var stats jobsv1.Stats
	must(client.Call("jobs.Stat", &jobsv1.Empty{}, &stats))
	var st []stat
	for _, s := range stats.GetStats() {
		st = append(st, stat{s.Pipeline, s.Driver, s.Queue, s.Active, s.Delayed, s.Reserved,
			s.Ready, s.Priority})
	}
	out["stat"] = st

	// Resume also starts p2, which was never consumed
	must(client.Call("jobs.Resume", &jobsv1.Pipelines{Pipelines: []string{"p1", "p2"}},
		&jobsv1.Empty{}))
	var destroyed jobsv1.Pipelines
	must(client.Call("jobs.Destroy", &jobsv1.Pipelines{Pipelines: []string{"dyn"}}, &destroyed))
	out["destroyed"] = destroyed.GetPipelines()

	out["empty_id"] = errText(client.Call("jobs.Push", &jobsv1.PushRequest{Job: &jobsv1.Job{
		Job: "x", Options: &jobsv1.Options{Pipeline: "p1"}}}, &jobsv1.Empty{}))
	out["unknown_method"] = errText(client.Call("jobs.Nope", &jobsv1.Empty{}, &jobsv1.Empty{}))
	out["unknown_pipeline"] = errText(client.Call("jobs.Pause",
		&jobsv1.Pipelines{Pipelines: []string{"nope"}}, &jobsv1.Empty{}))

	must(client.Call("jobs.List", &jobsv1.Empty{}, &list))
	out["list_after_errors"] = list.GetPipelines()
	must(json.NewEncoder(os.Stdout).Encode(out))
}
