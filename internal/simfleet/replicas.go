package simfleet

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers/sim"
)

// MaxReplicas bounds Options.Replicas.
const MaxReplicas = 16

// ReplicaLabel is replica i's (from 1) credential label in the action
// records and the actions log.
func ReplicaLabel(i int) string { return fmt.Sprintf("replica-%d", i) }

// ReplicaPath is where WriteReplicaConfigs writes replica i's (from 1)
// configuration for the path given: ".replica-<i>" before the extension
// (sim.yml: sim.replica-1.yml).
func ReplicaPath(path string, i int) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "." + ReplicaLabel(i) + ext
}

// replicaCredentials makes up each replica's credentials (o.Replicas above
// 1) and adds them to so as labelled clients.
func replicaCredentials(o Options, so *sim.Options) []map[sim.API]sim.Credentials {
	if o.Replicas <= 1 {
		return nil
	}
	so.Clients = map[sim.API][]sim.Client{}
	out := make([]map[sim.API]sim.Credentials, 0, o.Replicas)
	for i := 1; i <= o.Replicas; i++ {
		creds := map[sim.API]sim.Credentials{
			sim.VPNBingo: {Token: randomHex()},
			sim.VPSOrg:   {Token: randomHex()},
			sim.E2E:      {Token: randomHex(), APIKey: randomHex(), ProjectID: o.Prefix},
		}
		for _, api := range sim.APIs() {
			so.Clients[api] = append(so.Clients[api], sim.Client{Label: ReplicaLabel(i), Credentials: creds[api]})
		}
		out = append(out, creds)
	}
	return out
}

// WriteReplicaConfigs writes one configuration per replica (Options.Replicas
// above 1), each at ReplicaPath(path, i) with that replica's own
// credentials and its own state file beside it, as WriteConfig does, and
// returns their paths. The simulator tells the replicas' calls apart by
// their credentials (sim.ActionLine's client).
func (f *Fleet) WriteReplicaConfigs(path string) ([]string, error) {
	if len(f.replicas) == 0 {
		return nil, fmt.Errorf("simulated fleet: no replicas (Options.Replicas is %d)", f.opts.Replicas)
	}
	paths := make([]string, 0, len(f.replicas))
	for i, creds := range f.replicas {
		p := ReplicaPath(path, i+1)
		if _, err := f.writeConfigWith(p, creds); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// ReplicaConfig is replica i's (from 1) configuration as the exporter
// loads it, its state file stateFile.
func (f *Fleet) ReplicaConfig(i int, stateFile string) (*config.Config, error) {
	if i < 1 || i > len(f.replicas) {
		return nil, fmt.Errorf("simulated fleet: no replica %d (%d replicas)", i, len(f.replicas))
	}
	b, err := render(f.opts, f.srv.URL, f.replicas[i-1], f.webhookToken, stateFile)
	if err != nil {
		return nil, err
	}
	c, err := config.Parse(b, filepath.Dir(stateFile))
	if err != nil {
		return nil, fmt.Errorf("simulated fleet configuration: %w", err)
	}
	return c, nil
}

// ActionsLogErr is the actions log's first write failure, or nil.
func (f *Fleet) ActionsLogErr() error {
	if f.alog == nil {
		return nil
	}
	return f.alog.Err()
}
