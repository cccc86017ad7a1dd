package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// HA configures highly available remediation: every replica polls and
// exports, one of them (elected on etcd) remediates, and every write of the
// remediation state is fenced on the leader key's revision (docs/ha.md).
// Without it remediation runs in one process on its bbolt state_file.
type HA struct {
	// AdvertiseURL is how the other replicas reach this one: the value of
	// the election's leader key, to which standbys forward webhook and
	// control requests. A ${NAME} in it is the environment's NAME,
	// replaced by validation (an unset NAME is an error).
	AdvertiseURL string `yaml:"advertise_url"`
	Etcd         Etcd   `yaml:"etcd"`

	// Advertise is AdvertiseURL parsed.
	Advertise *url.URL `yaml:"-"`
}

// Etcd is the etcd cluster that holds the election and the remediation
// state.
type Etcd struct {
	// Endpoints are the cluster's client URLs (http or https).
	Endpoints []string `yaml:"endpoints"`
	// Prefix is the key prefix of everything this exporter writes: the
	// leader key is Prefix + "/leader".
	Prefix string `yaml:"prefix"`
	// LeaseTTL is the lease of the leader's session: a leader that cannot
	// renew it for this long is deposed, and another replica takes over.
	// A whole number of seconds, at least MinLeaseTTL.
	LeaseTTL model.Duration `yaml:"lease_ttl"`
	TLS      EtcdTLS        `yaml:"tls,omitempty"`
	// Username and PasswordFile (read at load, never shown) authenticate
	// to etcd when etcd's auth is on.
	Username     string `yaml:"username,omitempty"`
	PasswordFile string `yaml:"password_file,omitempty"`

	// Password is PasswordFile's content.
	Password commoncfg.Secret `yaml:"-"`
}

// EtcdTLS is the TLS of the connection to etcd. Relative paths are
// resolved against the configuration file's directory by validation.
type EtcdTLS struct {
	// CAFile verifies etcd's certificate (the system's roots when empty).
	CAFile string `yaml:"ca_file,omitempty"`
	// CertFile and KeyFile are this client's certificate, both or neither.
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
}

// Enabled reports whether any TLS file is set.
func (t EtcdTLS) Enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != ""
}

// HA defaults.
const (
	// DefaultEtcdPrefix is etcd.prefix when the file does not set it.
	DefaultEtcdPrefix = "/vps_exporter"
	// DefaultLeaseTTL is etcd.lease_ttl when the file does not set it.
	DefaultLeaseTTL = 10 * time.Second
	// MinLeaseTTL is the shortest etcd.lease_ttl: the session renews its
	// lease every third of it, and a send deadline keeps a margin.
	MinLeaseTTL = 2 * time.Second
	// MaxLeaseTTL is the longest etcd.lease_ttl: a failover takes about as
	// long, during which nobody remediates.
	MaxLeaseTTL = 5 * time.Minute
)

// DefaultHA returns the defaults of a remediation.ha block.
func DefaultHA() HA {
	return HA{Etcd: Etcd{Prefix: DefaultEtcdPrefix, LeaseTTL: model.Duration(DefaultLeaseTTL)}}
}

// UnmarshalYAML sets defaults before decoding.
func (h *HA) UnmarshalYAML(unmarshal func(any) error) error {
	*h = DefaultHA()
	type plain HA
	return unmarshal((*plain)(h))
}

// UnmarshalYAML sets defaults before decoding (an etcd block written
// without a prefix or lease_ttl gets theirs).
func (e *Etcd) UnmarshalYAML(unmarshal func(any) error) error {
	*e = DefaultHA().Etcd
	type plain Etcd
	return unmarshal((*plain)(e))
}

func (h *HA) validate(baseDir string, errs *errorList) {
	const at = "remediation.ha"
	// A ${NAME} is the environment's NAME: one file for every replica,
	// e.g. http://${POD_NAME}.vps-exporter-peers:9877 in Kubernetes.
	expanded, unset := expandEnv(h.AdvertiseURL)
	switch {
	case h.AdvertiseURL == "":
		errs.add(at+".advertise_url", "required: how the other replicas reach this one, e.g. http://10.0.0.5:9877")
	case unset != "":
		errs.add(at+".advertise_url", "names ${%s}, which is not set in the environment (in Kubernetes, set it from the downward API, e.g. fieldRef metadata.name)", unset)
	default:
		h.AdvertiseURL = expanded
		if u, ok := checkHTTPURL(at+".advertise_url", h.AdvertiseURL, errs); ok {
			if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
				// A listen address, not an address another replica can
				// reach: forwarding to it would fail.
				errs.add(at+".advertise_url", "%s is no address another replica can reach (it listens on every address): name this replica's own address or DNS name, e.g. http://10.0.0.5:9877", u.Hostname())
			} else {
				h.Advertise = u
			}
		}
	}
	e := &h.Etcd
	if len(e.Endpoints) == 0 {
		errs.add(at+".etcd.endpoints", "at least one etcd client URL is required, e.g. [http://etcd-0:2379]")
	}
	seen := map[string]int{}
	for i, ep := range e.Endpoints {
		p := fmt.Sprintf("%s.etcd.endpoints[%d]", at, i)
		if _, ok := checkHTTPURL(p, ep, errs); !ok {
			continue
		}
		if j, dup := seen[ep]; dup {
			errs.add(p, "duplicate of endpoints[%d]", j)
		} else {
			seen[ep] = i
		}
	}
	switch {
	case e.Prefix == "":
		errs.add(at+".etcd.prefix", "must not be empty (default %s)", DefaultEtcdPrefix)
	case !strings.HasPrefix(e.Prefix, "/") || strings.HasSuffix(e.Prefix, "/") || strings.Contains(e.Prefix, "//"):
		errs.add(at+".etcd.prefix", "want a key path like %s (starting with /, no trailing /), got %q", DefaultEtcdPrefix, e.Prefix)
	case strings.ContainsFunc(e.Prefix, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }):
		errs.add(at+".etcd.prefix", "must not contain spaces or control characters, got %q", e.Prefix)
	}
	ttl := time.Duration(e.LeaseTTL)
	switch {
	case ttl < MinLeaseTTL || ttl > MaxLeaseTTL:
		errs.add(at+".etcd.lease_ttl", "must be between %s and %s, got %s", model.Duration(MinLeaseTTL), model.Duration(MaxLeaseTTL), e.LeaseTTL)
	case ttl%time.Second != 0:
		errs.add(at+".etcd.lease_ttl", "must be a whole number of seconds (an etcd lease's TTL), got %s", e.LeaseTTL)
	}
	e.TLS.validate(at+".etcd.tls", baseDir, errs)
	readSecret(&e.Password, e.PasswordFile, at+".etcd", "password", baseDir, errs)
	switch {
	case e.Username == "" && e.PasswordFile != "":
		errs.add(at+".etcd.username", "required with password_file")
	case e.Username != "" && e.PasswordFile == "":
		errs.add(at+".etcd.password_file", "required with username")
	}
}

// checkHTTPURL checks an absolute http(s) URL with a host and no user info,
// query or fragment. Its value is not repeated when it may carry a
// credential.
func checkHTTPURL(at, raw string, errs *errorList) (*url.URL, bool) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || strings.ContainsAny(raw, "@?#") || u.User != nil || u.RawQuery != "" || u.Fragment != "":
		errs.add(at, "want an absolute http(s) URL without query, fragment or user info (the value is not shown: it may carry a credential)")
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "":
		errs.add(at, "want an absolute http(s) URL with a host, e.g. http://10.0.0.5:9877, got %q", raw)
	case u.Path != "" && u.Path != "/":
		errs.add(at, "want a URL without a path, got %q", raw)
	default:
		return u, true
	}
	return nil, false
}

// notShownTLS says why a TLS file's name is not repeated in an error.
const notShownTLS = "the value is not shown: if it is a key, a certificate or a password itself, put it in a file and name that file here"

func (t *EtcdTLS) validate(at, baseDir string, errs *errorList) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		missing := "key_file"
		if t.CertFile == "" {
			missing = "cert_file"
		}
		errs.add(at+"."+missing, "cert_file and key_file go together")
	}
	for _, f := range []struct {
		name string
		path *string
	}{{"ca_file", &t.CAFile}, {"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}} {
		if *f.path == "" {
			continue
		}
		value := *f.path
		if !filepath.IsAbs(*f.path) {
			*f.path = filepath.Join(baseDir, *f.path)
		}
		if _, err := os.Stat(*f.path); err != nil {
			// Named by its key only, as readSecret does: what was
			// written there may be a key or a password pasted into the
			// wrong place.
			errs.secret(value)
			errs.fail(at+"."+f.name, 0, fmt.Sprintf("cannot read the file it names: %s (%s)", reason(err), notShownTLS))
		}
	}
}
