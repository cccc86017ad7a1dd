package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/version"

	"github.com/vps-exporter/vps_exporter/collector"
	"github.com/vps-exporter/vps_exporter/config"
	"github.com/vps-exporter/vps_exporter/providers"
	"github.com/vps-exporter/vps_exporter/providers/apiclient"
	"github.com/vps-exporter/vps_exporter/providers/e2e"
	"github.com/vps-exporter/vps_exporter/providers/vpnbingo"
	"github.com/vps-exporter/vps_exporter/providers/vpsorg"
)

// buildAccounts turns the configuration into one provider client per
// account, each reporting its requests to api.
func buildAccounts(c *config.Config, api *collector.APIMetrics) ([]collector.Account, error) {
	out := make([]collector.Account, 0, len(c.Providers))
	for _, p := range c.Providers {
		prov, err := buildProvider(c.Global, p, api)
		if err != nil {
			return nil, fmt.Errorf("account %q: %w", p.Name, err)
		}
		out = append(out, collector.Account{
			Provider: prov,
			Interval: time.Duration(c.Global.RefreshInterval),
			Key:      accountKey(c.Global, p),
			// Detail reads in flight; VPS.org's List (not used by the
			// poller) takes the same bound.
			MaxConcurrency: c.Global.MaxConcurrency,
			// 0 (a config built without validation) means 5 intervals.
			StaleAfter: time.Duration(c.Global.StaleAfter),
			Origin:     accountOrigin(p),
		})
	}
	return out, nil
}

func buildProvider(g config.Global, p config.Provider, api *collector.APIMetrics) (providers.Provider, error) {
	hc, err := commoncfg.NewClientFromConfig(commoncfg.HTTPClientConfig{
		TLSConfig:   p.TLSConfig,
		ProxyConfig: commoncfg.ProxyConfig{ProxyURL: p.ProxyURL},
	}, "vps_exporter_"+p.Name, commoncfg.WithUserAgent("vps_exporter/"+version.Version))
	if err != nil {
		return nil, fmt.Errorf("http client: %w", err)
	}
	httpCfg := apiclient.Config{
		HTTPClient:   hc,
		Timeout:      time.Duration(g.RequestTimeout),
		RateLimit:    p.RateLimit,
		DetailBudget: p.DetailBudget,
		Observe:      api.Observer(p.Type, p.Name),
	}
	switch p.Type {
	case config.TypeVPNBingo:
		return vpnbingo.New(vpnbingo.Options{Account: p.Name, BaseURL: p.URL, Token: string(p.Token), Location: p.Loc, HTTP: httpCfg}), nil
	case config.TypeVPSOrg:
		return vpsorg.New(vpsorg.Options{Account: p.Name, BaseURL: p.URL, Token: string(p.Token), MaxConcurrency: g.MaxConcurrency, HTTP: httpCfg}), nil
	case config.TypeE2E:
		return e2e.New(e2e.Options{Account: p.Name, BaseURL: p.URL, APIKey: string(p.APIKey), Token: string(p.Token),
			ProjectID: p.ProjectID, Location: p.Location, HTTP: httpCfg}), nil
	}
	return nil, fmt.Errorf("unknown provider type %q", p.Type)
}

// accountOrigin identifies the API an account reads, without secrets: a
// reload that keeps it (a changed global, a rotated token) hands the
// account's detail data to its new poller.
func accountOrigin(p config.Provider) string {
	base := ""
	if p.URL != nil {
		base = p.URL.Scheme + "://" + p.URL.Host + p.URL.Path
	}
	return fmt.Sprintf("%s|%s|%s|%s", p.Type, base, p.ProjectID, p.Location)
}

// accountKey fingerprints everything a poller depends on, secrets
// included (hashed, never kept in clear), so that a reload restarts
// exactly the accounts whose settings or credentials changed.
func accountKey(g config.Global, p config.Provider) string {
	proxy := ""
	if p.ProxyURL.URL != nil {
		proxy = p.ProxyURL.String()
	}
	h := sha256.New()
	fmt.Fprintf(h, "%v|%v|%d|%v|%s|%s|%s|%s|%s|%s|%s|%s|%v|%v|%+v|%s",
		g.RefreshInterval, g.RequestTimeout, g.MaxConcurrency, g.StaleAfter,
		p.Type, p.Name, p.URL, p.Token, p.APIKey, p.ProjectID, p.Location, p.Loc, p.RateLimit, p.DetailBudget, p.TLSConfig, proxy)
	return hex.EncodeToString(h.Sum(nil))
}
